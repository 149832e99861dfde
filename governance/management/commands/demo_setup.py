import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from governance.models import Membership, Role
from governance.services import ingest_key_create, project_get_or_create
from policies.models import Policy
from policies.services import policy_create, policy_version_activate

DEMO_POLICY = """\
policy: demo-guardrails
description: What the demo agents may do
mode: monitor
rules:
  - id: ledger-single-writer
    kind: single_writer
    description: Only agent-0 appends to the ledger
    key: "ledger/*"
    writer: agent-0
  - id: confirm-needs-idempotency-key
    kind: idempotency_required
    description: Confirming an order is an external side effect
    match: {name: order.confirm}
"""


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
        admin = users.get(username="admin")
        if not Policy.objects.filter(project=project).exists():
            # A policy in force from the start, so the demo also shows violations.
            policy = policy_create(project=project, source=DEMO_POLICY, comment="demo", actor=admin)
            policy_version_activate(policy=policy, version=policy.versions.get(number=1), actor=admin)
            self.stdout.write("Demo policy 'demo-guardrails' is active (monitor mode)")
        if not key_file.exists():
            _, raw = ingest_key_create(project=project, name="demo agents", check_role=False)
            key_file.write_text(raw)
            key_file.chmod(0o600)
            self.stdout.write(f"Demo project 'demo', ingest key: {raw}  (shown once)")
        else:
            self.stdout.write(f"Demo project 'demo', ingest key in {key_file}")
