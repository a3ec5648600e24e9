"""Polling delivery statuses from providers that can be asked (``backend.query_status``).

``poll_statuses`` is run periodically (the Celery beat task ``crm_sms.tasks.poll_statuses``, or
``manage.py sms_status`` from cron). It asks about every ``sent`` message of each pollable provider
and applies the answers through ``reports.apply_delivery_reports`` with source ``poll``, so polling
and callbacks can both run for one provider without conflict.

A message that stays ``sent`` longer than its provider's ``report_window`` (seconds after
``sent_at``; SMS.RU: 24 hours) will not get a status any more: polling stops asking about it and
marks it ``undelivered`` with error code ``no_report`` and the error message
"No delivery report within N hours" (a ``poll`` event records it). That keeps campaign figures
final and stops polling it. Should the provider still report it later, the report wins (see
``crm_sms.reports``: ``no_report`` is our verdict, not the provider's). Providers without
``query_status`` (MegaFon: reports are push-only) are never touched here.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext

from . import conf
from .backends import get_backend
from .backends.base import BaseBackend, DeliveryReport
from .models import EventSource, Message, MessageStatus
from .reports import NO_REPORT, apply_delivery_reports

logger = logging.getLogger("crm_sms.polling")

#: Keys of the dict ``poll_statuses`` returns.
POLL_KEYS = ("providers", "checked", "changed", "unchanged", "expired", "errors")


def pollable_providers(provider: str | None = None) -> list[tuple[str, BaseBackend]]:
    """(alias, backend) of the configured providers that have ``query_status``."""
    aliases = [provider] if provider else conf.provider_aliases()
    result = []
    for alias in aliases:
        backend = get_backend(alias)
        if callable(getattr(backend, "query_status", None)):
            result.append((alias, backend))
    return result


def poll_statuses(provider: str | None = None, batch_size: int = 500) -> dict[str, int]:
    """Ask pollable providers (or just ``provider``) about their ``sent`` messages and apply
    the answers; give up on messages past the provider's report window (module docstring).

    Messages are read ``batch_size`` at a time in primary-key order, each batch is one
    ``query_status`` call and one ``apply_delivery_reports`` call. A provider that cannot be
    reached is logged and counted in ``errors``; the others are still polled.
    Returns counts: providers polled, messages checked, changed (a status moved), unchanged,
    expired (given up), errors (failed provider queries).
    """
    counts = dict.fromkeys(POLL_KEYS, 0)
    for alias, backend in pollable_providers(provider):
        counts["providers"] += 1
        cutoff = timezone.now() - timedelta(seconds=backend.report_window)
        _poll(alias, backend, cutoff, batch_size, counts)
        counts["expired"] += _expire(alias, cutoff, backend.report_window, batch_size)
    return counts


def _sent(alias: str):
    return Message.objects.filter(provider=alias, status=MessageStatus.SENT)


def _poll(alias: str, backend: BaseBackend, cutoff, batch_size: int, counts: dict) -> None:
    last_pk = 0
    while True:
        batch = list(
            _sent(alias)
            .filter(_within(cutoff), pk__gt=last_pk)
            .exclude(provider_message_id="")
            .order_by("pk")
            .only("pk", "msg_id", "provider_message_id", "provider", "status")[:batch_size]
        )
        if not batch:
            return
        last_pk = batch[-1].pk
        try:
            reports = backend.query_status(batch)
        except Exception:
            # The provider is down or refuses the query: stop asking it; the next run retries.
            # (Database errors, outside this try, propagate.)
            counts["errors"] += 1
            logger.exception("Polling delivery statuses from %s failed", alias)
            return
        applied = apply_delivery_reports(reports, provider=alias, source=EventSource.POLL)
        counts["checked"] += len(batch)
        counts["changed"] += applied["applied"]
        counts["unchanged"] += len(batch) - applied["applied"]


def _within(cutoff) -> Q:
    # sent_at is set by the outbox; rows without one count from their creation.
    return Q(sent_at__gte=cutoff) | Q(sent_at__isnull=True, created_at__gte=cutoff)


def _expire(alias: str, cutoff, window: float, batch_size: int) -> int:
    """Mark ``sent`` messages older than the report window undelivered (``no_report``)."""
    hours = round(window / 3600, 1)
    hours_text = f"{hours:g}"
    message = gettext("No delivery report within %(hours)s hours") % {"hours": hours_text}
    expired = 0
    while True:
        batch = list(
            _sent(alias).exclude(_within(cutoff)).values_list("msg_id", flat=True)[:batch_size]
        )
        if not batch:
            return expired
        reports = [
            DeliveryReport(
                MessageStatus.UNDELIVERED,
                msg_id=msg_id,
                error_code=NO_REPORT,
                error_message=message,
                raw={"reason": NO_REPORT, "report_window_hours": hours},
            )
            for msg_id in batch
        ]
        result = apply_delivery_reports(reports, provider=alias, source=EventSource.POLL)
        expired += result["applied"]
        if not result["applied"]:
            return expired  # nothing moved (a concurrent run took them): do not loop
