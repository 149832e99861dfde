from django.apps import AppConfig


class GovernanceConfig(AppConfig):
    name = "governance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.core.signals import request_finished

        from governance.logs import request_id_clear

        request_finished.connect(request_id_clear, dispatch_uid="causeway-request-id-clear")
