import os

from celery import Celery
from celery.schedules import crontab

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

app = Celery("causeway")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # The debounce: hand on traces quiet for TRACE_QUIET_SECONDS; late spans reopen a trace
    # and this same sweep analyses it again.
    "traces-sweep-quiet": {"task": "traces.sweep_quiet", "schedule": 2.0},
    # Retention: delete spans past each project's retention, in bounded batches.
    "traces-retention": {"task": "traces.retention", "schedule": crontab(minute="*/10")},
}
