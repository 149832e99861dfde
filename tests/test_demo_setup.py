from io import StringIO

from django.core.management import call_command

from governance.models import IngestKey, Membership
from policies.models import Policy


def run_demo_setup() -> str:
    out = StringIO()
    call_command("demo_setup", stdout=out)
    return out.getvalue()


def test_it_creates_the_admin_the_demo_project_its_key_and_an_active_policy_once(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    first = run_demo_setup()
    assert "Admin login: admin / " in first and "ingest key: cwk_" in first
    key = (tmp_path / "demo_ingest_key").read_text()
    assert IngestKey.objects.get(project__slug="demo").hint == key[:10]
    assert Membership.objects.get(user__username="admin", project__slug="demo").role == "admin"
    policy = Policy.objects.get(project__slug="demo")
    assert policy.active_version.number == 1
    second = run_demo_setup()
    assert "cwk_" not in second and "admin / " not in second
    assert IngestKey.objects.count() == 1 and Policy.objects.count() == 1
