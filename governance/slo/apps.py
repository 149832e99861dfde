from django.apps import AppConfig


class SloConfig(AppConfig):
    """SLIs, SLOs, alert rules, alerts, silences and notification channels."""

    name = "governance.slo"
    label = "slo"
    default_auto_field = "django.db.models.BigAutoField"
