"""The Celery app of the demo site: ``celery -A config worker`` and ``celery -A config beat``.

Settings come from Django's settings with the ``CELERY_`` prefix (``CELERY_BROKER_URL``...).
The beat schedule starts scheduled campaigns, takes back stale claims and dispatches due
messages every few seconds, and polls delivery statuses every minute.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Seconds between dispatch runs; a run sends everything due (for at most ~50 s).
DISPATCH_EVERY = float(os.environ.get("SMS_DISPATCH_EVERY", "5"))

app.conf.beat_schedule = {
    "crm-sms-start-due-campaigns": {
        "task": "crm_sms.tasks.start_due_campaigns",
        "schedule": 30.0,
    },
    "crm-sms-release-stale-claims": {
        "task": "crm_sms.tasks.release_stale_claims",
        "schedule": 60.0,
    },
    "crm-sms-dispatch-due": {
        "task": "crm_sms.tasks.dispatch_due",
        "schedule": DISPATCH_EVERY,
        # A run that finds nothing to do ends at once; one that is busy must not pile up.
        "options": {"expires": DISPATCH_EVERY * 2},
    },
    "crm-sms-poll-statuses": {
        "task": "crm_sms.tasks.poll_statuses",
        "schedule": 60.0,
        "options": {"expires": 120},
    },
}
