from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from governance.models import Project, Role
from governance.services import LastAdmin, member_set_role


class Command(BaseCommand):
    help = "Add USERNAME to PROJECT with a role, or change their role (audited as done by the installation)."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug")
        parser.add_argument("username")
        parser.add_argument("--role", choices=Role.values, default=Role.VIEWER, help="default: viewer")

    def handle(self, *args, project, username, role, **options):
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project {project!r}; create it with manage.py create_project {project}")
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"no user {username!r}; create one with manage.py createsuperuser or in /admin/")
        try:
            member_set_role(project=found, user=user, role=role, actor=None, check_role=False)
        except LastAdmin as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{username} is {role} of {found.slug}.")
