from django.apps import AppConfig


class RolloutsConfig(AppConfig):
    """Canary rollouts of agent versions: steps, canary analysis, approval gates, rollback, OFREP flags."""

    name = "governance.rollouts"
    label = "rollouts"
    default_auto_field = "django.db.models.BigAutoField"
