"""Claiming: which queued messages are due, taking them for a worker (``queued`` -> ``sending``
with a claim time), and taking back claims a stopped worker left behind.

Several workers may claim at once: PostgreSQL skips rows another worker has locked
(``SKIP LOCKED``); on SQLite the transaction is the one writer; the moves are conditional
(``WHERE status = 'queued'``) on both.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import conf
from ..models import Campaign, CampaignStatus, EventSource, Message, MessageStatus
from ..transitions import MessageMove, move_messages

logger = logging.getLogger("crm_sms.outbox")

#: Stale claims taken back per call.
RELEASE_BATCH = 5000


def due_messages(provider: str | None = None, now: datetime | None = None) -> QuerySet[Message]:
    """Queued messages due now whose campaign (if any) is running."""
    now = now or timezone.now()
    running = list(
        Campaign.objects.filter(status=CampaignStatus.RUNNING).values_list("pk", flat=True)
    )
    qs = Message.objects.filter(status=MessageStatus.QUEUED, next_attempt_at__lte=now).filter(
        Q(campaign__isnull=True) | Q(campaign_id__in=running)
    )
    if provider:
        qs = qs.filter(provider=provider)
    return qs


def claim_messages(queryset: Any, limit: int, now: datetime | None = None) -> list[Message]:
    """Claim up to ``limit`` queued rows of ``queryset``: move them to ``sending`` with a claim
    time (an event each: "Attempt N") and return them, in due order."""
    now = now or timezone.now()
    with transaction.atomic():
        qs = queryset.filter(status=MessageStatus.QUEUED).order_by("next_attempt_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        moves = [
            MessageMove(
                message,
                MessageStatus.SENDING,
                EventSource.RETRY if message.attempts else EventSource.SEND,
                {"claimed_at": now},
                description=_("Attempt %(n)d") % {"n": message.attempts + 1},
            )
            for message in qs[:limit]
        ]
        moved = move_messages(moves, now=now, where=())
    return [move.message for move in moved]


def claim_due_messages(
    limit: int, provider: str | None = None, now: datetime | None = None
) -> list[Message]:
    """Claim up to ``limit`` due messages (see ``claim_messages``)."""
    return claim_messages(due_messages(provider, now), limit, now)


def release_stale_claims(now: datetime | None = None) -> int:
    """Take back rows left ``sending`` longer than CLAIM_TIMEOUT (their worker died): they are
    ``queued`` again with the same msg_id, so the provider drops a copy it already has.
    Returns how many were taken back."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=float(conf.get_setting("CLAIM_TIMEOUT")))
    with transaction.atomic():
        stale = Message.objects.filter(status=MessageStatus.SENDING, claimed_at__lt=cutoff)
        stale = stale.order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            stale = stale.select_for_update(skip_locked=True)
        moves = [
            MessageMove(
                message,
                MessageStatus.QUEUED,
                EventSource.RETRY,
                {"claimed_at": None, "next_attempt_at": now},
                description=_("Claim expired (the worker stopped); sending again"),
            )
            for message in stale.defer("text", "last_response")[:RELEASE_BATCH]
        ]
        # Conditional on the claim time too: a worker finishing just now keeps its result.
        taken = move_messages(moves, now=now, where=("claimed_at",))
    if taken:
        logger.warning("Took back %d message(s) left in 'sending' by a stopped worker", len(taken))
    return len(taken)
