from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CrmSmsConfig(AppConfig):
    name = "crm_sms"
    verbose_name = _("SMS")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
        from .backends import connect_signals

        connect_signals()
