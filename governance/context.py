from governance.selectors import projects_for_user
from governance.views import can_create_project


def projects(request):
    if not request.user.is_authenticated:
        return {}
    return {"my_projects": projects_for_user(user=request.user), "can_create_project": can_create_project(request.user)}
