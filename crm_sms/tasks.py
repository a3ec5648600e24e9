"""Celery tasks: thin wrappers over ``crm_sms.outbox`` (and ``crm_sms.polling``).

Schedule them with Celery beat (the demo's ``config/celery.py`` does): ``dispatch_due`` every
few seconds, ``start_due_campaigns`` and ``release_stale_claims`` every minute or so,
``poll_statuses`` every minute. Several Celery workers on several machines may run them at
once: rows are claimed, so no message is sent twice.

``run_import_job`` runs a background contact import; the admin sends it when
``CRM_SMS["IMPORT_CELERY"]`` is on (jobs are claimed too: a job never runs twice at once).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from celery import shared_task

logger = logging.getLogger("crm_sms.tasks")

#: A dispatch run stops claiming after this many seconds, so runs don't overlap for long.
DISPATCH_MAX_SECONDS = 50.0


@shared_task(name="crm_sms.tasks.dispatch_due", ignore_result=True)
def dispatch_due(
    provider: str | None = None, batch_size: int | None = None, concurrency: int | None = None
) -> dict[str, Any]:
    """Send everything due now (within ~50 s); returns the summary dict."""
    from .outbox import dispatch_due as run

    summary = run(
        provider=provider,
        batch_size=batch_size,
        concurrency=concurrency,
        max_seconds=DISPATCH_MAX_SECONDS,
    )
    if summary["claimed"]:
        logger.info("dispatch_due: %s", summary)
    return summary


@shared_task(name="crm_sms.tasks.release_stale_claims", ignore_result=True)
def release_stale_claims() -> int:
    """Take back messages left 'sending' longer than CLAIM_TIMEOUT; returns how many."""
    from .outbox import release_stale_claims as run

    return run()


@shared_task(name="crm_sms.tasks.start_due_campaigns", ignore_result=True)
def start_due_campaigns() -> int:
    """Start scheduled campaigns whose time has come; returns how many."""
    from .outbox import start_due_campaigns as run

    return run()


@shared_task(name="crm_sms.tasks.poll_statuses", ignore_result=True)
def poll_statuses(provider: str | None = None, batch_size: int = 500) -> dict[str, Any] | None:
    """Ask pollable providers for delivery statuses (``crm_sms.polling.poll_statuses``).
    Returns its counts, or None when this installation has no polling module."""
    try:
        polling = importlib.import_module("crm_sms.polling")
    except ImportError as exc:
        logger.warning("poll_statuses: crm_sms.polling is not available (%s); skipped", exc)
        return None
    return polling.poll_statuses(provider=provider, batch_size=batch_size)


@shared_task(name="crm_sms.tasks.run_import_job", ignore_result=True)
def run_import_job(job_id: int | None = None) -> int:
    """Run the queued contact import ``job_id`` (without it: every due one, jobs whose runner
    died included); returns how many ran."""
    from .importing.jobs import run_import_jobs

    return run_import_jobs(job_id=job_id)
