import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from governance.models import Membership, Role
from governance.services import ingest_key_create, project_get_or_create


class Command(BaseCommand):
    help = "Create the admin login and a demo project with an ingest key; prints both once."

    def handle(self, *args, **options):
        users = get_user_model().objects
        project, _ = project_get_or_create(slug_or_name="demo")
        key_file = settings.DATA_DIR / "demo_ingest_key"
        if not users.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            admin = users.create_superuser("admin", "admin@localhost", password)
            Membership.objects.get_or_create(user=admin, project=project, defaults={"role": Role.ADMIN})
            self.stdout.write(f"Admin login: admin / {password}  (shown once; change it with manage.py changepassword admin)")
        else:
            self.stdout.write("Admin login: admin (password was shown at the first run)")
        if not key_file.exists():
            _, raw = ingest_key_create(project=project, name="demo agents", check_role=False)
            key_file.write_text(raw)
            key_file.chmod(0o600)
            self.stdout.write(f"Demo project 'demo', ingest key: {raw}  (shown once)")
        else:
            self.stdout.write(f"Demo project 'demo', ingest key in {key_file}")
