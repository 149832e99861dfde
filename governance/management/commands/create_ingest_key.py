from django.core.management.base import BaseCommand, CommandError

from governance.services import ingest_key_create, project_get_or_create


class Command(BaseCommand):
    help = "Create an ingest key for PROJECT (creating the project if needed); prints the key alone."

    def add_arguments(self, parser):
        parser.add_argument("project", help="project slug or name")
        parser.add_argument("--name", default="cli", help="a name to tell the key apart")

    def handle(self, *args, project, name, **options):
        try:
            project, created = project_get_or_create(slug_or_name=project)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        _, raw = ingest_key_create(project=project, name=name, check_role=False)
        if created:
            # stdout carries the key alone, for scripts; the hint goes beside it.
            self.stderr.write(f"Created project {project.slug!r}: superusers see it; add members with "
                              f"manage.py add_member {project.slug} USERNAME --role admin")
        self.stdout.write(raw)
