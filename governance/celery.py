import os

from celery import Celery
from celery.schedules import crontab
from kombu import Exchange, Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

from governance.task_base import QUEUES, route

app = Celery("causeway")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Every task names its queue (governance.task_base); a worker started without -Q consumes them all.
app.conf.task_queues = [Queue(name, Exchange(name), routing_key=name) for name in QUEUES]
app.conf.task_default_queue = "control"
app.conf.task_routes = (route,)
app.autodiscover_tasks()

app.conf.beat_schedule = {
    # The debounce and the pipeline's safety net: hand on traces quiet for TRACE_QUIET_SECONDS (late
    # spans reopen a trace and this same sweep hands it on again), and queue tasks for work nobody has
    # taken (new, backed off, or left by a worker that died).
    "pipeline-sweep": {"task": "pipeline.sweep", "schedule": 2.0},
    # Retention: delete spans past each project's retention, each project with a fair share of the time.
    "traces-retention": {"task": "traces.retention", "schedule": crontab(minute="*/10")},
    # PostgreSQL's span partitions: a week of days ahead created, days past every retention dropped whole.
    # Hourly, though the days change daily: a run that lost its lock to ingest (lock_timeout) is soon redone.
    "traces-span-partitions": {"task": "traces.span_partitions", "schedule": crontab(minute=7)},
    # SLI rollups older than the longest SLO window (90 days) are deleted, a batch an hour; they
    # outlive the spans they count, which retention deletes sooner.
    "slo-rollups-expire": {"task": "slo.rollups_expire", "schedule": crontab(minute=17)},
}


@app.on_after_configure.connect
def _slo_schedule(sender, **kwargs):
    # Added once the settings are read: their intervals come from the environment (governance/settings.py).
    from django.conf import settings

    sender.conf.beat_schedule.update({
        # The SLO and alert tick: every SLO and alert rule of every project, then the notifications due.
        "slo-evaluate": {"task": "slo.evaluate", "schedule": settings.ALERT_EVAL_INTERVAL_SECONDS},
        # The rollout tick: guards, pauses, analyses and gates of every active rollout (governance/rollouts).
        "rollouts-tick": {"task": "rollouts.tick", "schedule": settings.ROLLOUT_TICK_SECONDS},
    })
