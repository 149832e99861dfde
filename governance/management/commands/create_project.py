from django.core.management.base import BaseCommand, CommandError

from governance.services import audit_record, project_get_or_create


class Command(BaseCommand):
    help = "Create a project (or say that it exists). Add people to it with add_member."

    def add_arguments(self, parser):
        parser.add_argument("slug", help="the project's slug, as in /p/<slug>/")
        parser.add_argument("--name", default="", help="its display name (default: the slug)")

    def handle(self, *args, slug, name, **options):
        try:
            project, created = project_get_or_create(slug_or_name=slug)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not created:
            self.stdout.write(f"Project {project.slug!r} exists already.")
            return
        if name:
            project.name = name[:100]
            project.save(update_fields=["name"])
        audit_record(project=project, actor=None, action="project.create", obj_type="project", obj_id=project.pk,
                     detail={"slug": project.slug, "name": project.name, "by": "manage.py create_project"})
        self.stdout.write(f"Project {project.slug!r} created; add members with manage.py add_member {project.slug} USERNAME "
                          "--role admin")
