from django.apps import AppConfig


class PipelineConfig(AppConfig):
    """The stages that run on traces once they are quiet: declared in stages.py, run by tasks.py."""

    name = "governance.pipeline"
    label = "pipeline"
    default_auto_field = "django.db.models.BigAutoField"
