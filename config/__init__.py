"""The demo site. Its Celery app is loaded when Celery is installed (``crm-sms[celery]``), so
``@shared_task`` tasks bind to it; without Celery the site runs ``manage.py sms_worker``."""

from importlib.util import find_spec

if find_spec("celery") is not None:
    from .celery import app as celery_app
else:  # Celery is optional
    celery_app = None

__all__ = ["celery_app"]
