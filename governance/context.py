from governance.selectors import projects_for_user


def projects(request):
    if not request.user.is_authenticated:
        return {}
    return {"my_projects": projects_for_user(user=request.user)}
