"""The demo site's WSGI application: Django's, with the delivery-report callbacks past the
browser middleware (``crm_sms.handler``). To compare (bench/callbacks.py): ``SMS_CALLBACK_LEAN=0``
takes them through the full middleware like any page; ``SMS_REPORT_GROUP_COMMIT=0`` gives each
queued callback its own INSERT and commit (``crm_sms.inbox``)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def _off(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() in ("0", "false", "no", "off")


if _off("SMS_CALLBACK_LEAN"):
    from django.core.wsgi import get_wsgi_application
else:
    from crm_sms.handler import get_wsgi_application

application = get_wsgi_application()

if _off("SMS_REPORT_GROUP_COMMIT"):
    from crm_sms import inbox

    inbox.GROUP_COMMIT = False
