"""Claiming: which queued messages are due, taking them for a worker (``queued`` -> ``sending``
with a claim time), and taking back claims a stopped worker left behind.

Several workers may claim at once: PostgreSQL skips rows another worker has locked
(``SKIP LOCKED``); on SQLite the transaction is the one writer; the moves are conditional
(``WHERE status = 'queued'``) on both.

A campaign's status is read by the statement that claims its messages (a subquery of the
``SELECT ... FOR UPDATE``), never by an earlier query: a pause or cancel committed before that
statement stops the batch. Writers that decide a message's status from its campaign's
(results, expired claims, cancel) lock the campaign row first and the messages after
(``lock_campaigns``), so a cancel cannot commit between their reading and their writing, and
they take their locks in one order. A message whose campaign was cancelled while it was in
flight is never queued again (``settle_cancelled``).

Quiet hours (``crm_sms.quiet_hours``): a message is claimed only while its window is open for
at least ``CLAIM_MARGIN`` more (``window_end_at``, checked in the same indexed query); those
whose window closed unsent are moved to its next opening first (``reschedule_closed``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from .. import conf
from ..backends.base import RetrySafety
from ..event_text import EventText
from ..models import Campaign, CampaignStatus, EventSource, Message, MessageStatus
from ..quiet_hours import CLAIM_MARGIN, reschedule_closed
from ..transitions import MessageMove, move_messages
from .resending import safety_of

logger = logging.getLogger("crm_sms.outbox")

#: Stale claims taken back per call.
RELEASE_BATCH = 5000


def running_campaigns() -> QuerySet[Campaign]:
    """The running campaigns' ids, as a subquery (evaluated by the statement that uses it)."""
    return Campaign.objects.filter(status=CampaignStatus.RUNNING).values("pk")


def window_open(now: datetime) -> Q:
    """Messages whose send window (if any) stays open past ``now`` + CLAIM_MARGIN."""
    return Q(window_end_at__isnull=True) | Q(window_end_at__gt=now + CLAIM_MARGIN)


def due_messages(provider: str | None = None, now: datetime | None = None) -> QuerySet[Message]:
    """Queued messages due now, inside their send window, whose campaign (if any) is running.
    The campaign's status is a subquery of this queryset: it is read when the queryset runs
    (the claim), not now."""
    now = now or timezone.now()
    qs = Message.objects.filter(status=MessageStatus.QUEUED, next_attempt_at__lte=now).filter(
        window_open(now), Q(campaign__isnull=True) | Q(campaign_id__in=running_campaigns())
    )
    if provider:
        qs = qs.filter(provider=provider)
    return qs


def claim_messages(queryset: Any, limit: int, now: datetime | None = None) -> list[Message]:
    """Claim up to ``limit`` queued rows of ``queryset``: move them to ``sending`` with a claim
    time (an event each: "Attempt N") and return them, in due order. One statement reads the
    rows, the campaigns' status (in ``due_messages``) and locks the rows (``FOR UPDATE OF`` the
    messages only: workers do not queue behind each other on a campaign row). A message whose
    send window is closed now is never claimed."""
    now = now or timezone.now()
    with transaction.atomic():
        qs = queryset.filter(window_open(now), status=MessageStatus.QUEUED)
        qs = qs.order_by("next_attempt_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        moves = [
            MessageMove(
                message,
                MessageStatus.SENDING,
                EventSource.RETRY if message.attempts else EventSource.SEND,
                {"claimed_at": now},
                description=EventText(gettext_noop("Attempt %(n)d"), n=message.attempts + 1),
            )
            for message in qs[:limit]
        ]
        moved = move_messages(moves, now=now, where=())
    return [move.message for move in moved]


def claim_due_messages(
    limit: int, provider: str | None = None, now: datetime | None = None
) -> list[Message]:
    """Claim up to ``limit`` due messages (see ``claim_messages``), after moving those whose
    window closed unsent to its next opening (``quiet_hours.reschedule_closed``)."""
    reschedule_closed(now)
    return claim_messages(due_messages(provider, now), limit, now)


def lock_campaigns(campaign_ids: Iterable[int | None]) -> dict[int, str]:
    """Lock these campaigns' rows until the transaction ends (in id order; ``None`` ids are
    skipped) and return their statuses. Call inside a transaction, before locking messages.

    Pause and cancel update the campaign row, so they wait for the caller to commit; the
    caller decides on the status it read. (No-key lock on PostgreSQL: inserting messages of a
    campaign is not held up. SQLite has one writer anyway.)"""
    ids = sorted({pk for pk in campaign_ids if pk is not None})
    if not ids:
        return {}
    no_key = connection.features.has_select_for_no_key_update
    rows = Campaign.objects.filter(pk__in=ids).order_by("pk")
    rows = rows.select_for_update(no_key=True) if no_key else rows.select_for_update()
    return dict(rows.values_list("pk", "status"))


def settle_cancelled(moves: Sequence[MessageMove], campaigns: dict[int, str]) -> None:
    """Cancel is final: each move back to ``queued`` (a retry, a claim given back or expired)
    of a message whose campaign is cancelled (``campaigns``, from ``lock_campaigns``) becomes
    a move to ``cancelled``. A paused campaign's messages stay ``queued``: they are not due
    until it is resumed (``due_messages``)."""
    for move in moves:
        cancelled = campaigns.get(move.message.campaign_id) == CampaignStatus.CANCELLED
        if move.new == MessageStatus.QUEUED and cancelled:
            move.new = MessageStatus.CANCELLED
            move.values.pop("next_attempt_at", None)
            move.description = gettext_noop("The campaign is cancelled: not sent again")


def _take_back(message: Message, now: datetime, safety: RetrySafety) -> MessageMove:
    """The move of one expired claim: the request may have gone out before the worker died."""
    if safety is RetrySafety.NONE:
        return MessageMove(
            message,
            MessageStatus.UNCERTAIN,
            EventSource.RETRY,
            {"claimed_at": None, "maybe_sent": True},
            description=gettext_noop(
                "Claim expired (the worker stopped, perhaps while sending); not sent again "
                "without an operator's confirmation"
            ),
        )
    return MessageMove(
        message,
        MessageStatus.QUEUED,
        EventSource.RETRY,
        # LOOKUP providers are asked before the next attempt (``maybe_sent``).
        {"claimed_at": None, "next_attempt_at": now, "maybe_sent": True},
        description=gettext_noop("Claim expired (the worker stopped); sending again"),
    )


def release_stale_claims(now: datetime | None = None) -> int:
    """Take back rows left ``sending`` longer than CLAIM_TIMEOUT (their worker died, perhaps
    in the middle of a request): ``queued`` again with the same msg_id where the provider drops
    a copy it already has, ``queued`` and to be looked up first where it can be asked, and
    ``uncertain`` where it can do neither (never twice). Those of a cancelled campaign are
    ``cancelled``. Returns how many were taken back."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=float(conf.get_setting("CLAIM_TIMEOUT")))
    stale = Message.objects.filter(status=MessageStatus.SENDING, claimed_at__lt=cutoff)
    with transaction.atomic():
        # The campaigns first (see lock_campaigns); a row of another campaign that went stale
        # meanwhile waits for the next call.
        campaigns = lock_campaigns(
            stale.order_by().values_list("campaign_id", flat=True).distinct()
        )
        rows = stale.filter(Q(campaign__isnull=True) | Q(campaign_id__in=list(campaigns)))
        rows = rows.order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        cache: dict[str, RetrySafety] = {}
        moves = [
            _take_back(message, now, safety_of(message.provider, cache))
            for message in rows.defer("text", "last_response")[:RELEASE_BATCH]
        ]
        settle_cancelled(moves, campaigns)
        # Conditional on the claim time too: a worker finishing just now keeps its result.
        taken = move_messages(moves, now=now, where=("claimed_at",))
    if taken:
        logger.warning("Took back %d message(s) left in 'sending' by a stopped worker", len(taken))
    return len(taken)
