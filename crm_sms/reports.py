"""Applying delivery reports (from callbacks or polling) to messages.

``apply_delivery_reports`` is the one place a provider's word about a message's fate is written.
It is idempotent and order-proof, so providers may repeat reports, send them out of order, or send
them before our worker has written the send result. The moves a report may make are the
``report`` rows of ``crm_sms.transitions.MESSAGE_MOVES`` (docs/statuses.md):

- A report says ``sent``, ``delivered``, ``undelivered`` or ``failed``; any other status is
  counted invalid. Statuses only move forward: queued < sending < sent < final (delivered,
  undelivered, failed, cancelled). A report that would move a message back (a late ``sent``
  after ``delivered``) is ignored; a report that repeats the current status adds nothing (no
  event, no signal).
- Between two final statuses the first one wins (``delivered`` stays ``delivered`` when a late
  ``undelivered`` arrives, and the other way round) -- with one exception: a final status that is
  *our own verdict* made without the provider's word (``failed`` after exhausted retries,
  ``cancelled``, or ``undelivered`` with error code ``no_report`` written when polling gave up) is
  replaced by a final status the provider reports, because the provider knows what happened to the
  SMS and we only guessed.
- A report for a message that is still ``queued`` or ``sending`` (the provider answered the
  callback faster than our worker wrote the send result) is applied; the outbox then keeps that
  status and only fills in ``provider_message_id`` and ``sent_at``.
- A report for a message we do not know is counted and logged, not an error: the provider would
  otherwise repeat it forever.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .backends.base import DeliveryReport
from .events import jsonable
from .models import FINAL_STATUSES, EventSource, Message, MessageStatus
from .transitions import MESSAGE_MOVES, Actor, MessageMove, can_move_message, move_messages

logger = logging.getLogger("crm_sms.reports")

#: Error code of the ``undelivered`` that polling writes when a provider never reported.
NO_REPORT = "no_report"

#: The statuses a report may carry: where the table's report moves lead.
REPORTED_STATUSES = frozenset(m.new for m in MESSAGE_MOVES if m.actor is Actor.REPORT)

#: The keys of the dict ``apply_delivery_reports`` returns.
COUNT_KEYS = ("received", "applied", "duplicate", "stale", "unknown", "invalid")


def _is_our_verdict(message: Message) -> bool:
    """A final status we wrote without the provider's word, which a provider report may correct."""
    return message.status in (MessageStatus.FAILED, MessageStatus.CANCELLED) or (
        message.status == MessageStatus.UNDELIVERED and message.error_code == NO_REPORT
    )


def classify(message: Message, new_status: str) -> str:
    """What a report of ``new_status`` does to ``message``: "applied", "duplicate" or "stale".

    This is the whole order-proof rule set; see the module docstring.
    """
    old_status = message.status
    if new_status == old_status:
        return "duplicate"
    if not can_move_message(old_status, new_status, Actor.REPORT):
        return "stale"
    if old_status in FINAL_STATUSES and not _is_our_verdict(message):
        return "stale"
    return "applied"


def _lookup(reports: list[DeliveryReport], provider: str) -> tuple[dict, dict]:
    """The messages the reports name, locked for update: two dicts, by msg_id and by the
    provider's id. One query per batch, on both indexes."""
    msg_ids = {r.msg_id for r in reports if r.msg_id}
    provider_ids = {r.provider_message_id for r in reports if r.provider_message_id}
    condition = Q()
    if msg_ids:
        condition |= Q(msg_id__in=msg_ids)
    if provider_ids:
        condition |= Q(provider_message_id__in=provider_ids)
    if not condition:
        return {}, {}
    # Locked in primary-key order, so two concurrent batches never wait on each other in a cycle.
    rows = (
        Message.objects.select_for_update()
        .filter(condition, provider=provider)
        .order_by("pk")
        .defer("last_response")
    )
    by_msg_id: dict[str, Message] = {}
    by_provider_id: dict[str, Message] = {}
    for message in rows:
        by_msg_id[message.msg_id] = message
        if message.provider_message_id:
            by_provider_id[message.provider_message_id] = message
    return by_msg_id, by_provider_id


def apply_delivery_reports(
    reports: Iterable[DeliveryReport], *, provider: str, source: str = EventSource.CALLBACK
) -> dict[str, int]:
    """Apply provider ``reports`` to the messages of provider alias ``provider``.

    Finds the messages in bulk (by our ``msg_id``, else by ``provider_message_id``), moves each
    one forward by the rules in the module docstring, sets ``delivered_at``, ``error_code`` and
    ``error_message``, and writes one ``MessageEvent`` (``source``: "callback" or "poll",
    ``payload``: the report's raw data) per change through ``transitions.move_messages``, which
    sends ``message_status_changed``. All in one transaction: either the whole batch is applied
    or nothing is (the error propagates, so a callback answers 500 and the provider retries).

    Returns counts: received, applied (status changed), duplicate (already in that status),
    stale (a report the rules ignore), unknown (no such message), invalid (a status that is not
    one a report may carry).
    """
    reports = list(reports)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["received"] = len(reports)
    if not reports:
        return counts
    now = timezone.now()
    with transaction.atomic():
        by_msg_id, by_provider_id = _lookup(reports, provider)
        moves: list[MessageMove] = []
        for report in reports:
            message = by_msg_id.get(report.msg_id) if report.msg_id else None
            if message is None and report.provider_message_id:
                message = by_provider_id.get(report.provider_message_id)
            verdict = _check(report, message, provider)
            counts[verdict] += 1
            if verdict == "applied":
                moves.append(_move(message, report, source, now))
        move_messages(moves, now=now)
    return counts


def _check(report: DeliveryReport, message: Message | None, provider: str) -> str:
    """ "unknown", "invalid", or what ``classify`` says; logs the reports it ignores."""
    if message is None:
        logger.warning(
            "Delivery report for an unknown message (provider %s, msg_id %r, "
            "provider id %r, status %s): ignored",
            provider,
            report.msg_id,
            report.provider_message_id,
            report.status,
        )
        return "unknown"
    if report.status not in REPORTED_STATUSES:
        logger.warning(
            "Delivery report with an invalid status %r for %s: ignored",
            report.status,
            message.msg_id,
        )
        return "invalid"
    verdict = classify(message, report.status)
    if verdict == "stale":
        logger.info(
            "Delivery report %s for %s (now %s) ignored: statuses only move forward",
            report.status,
            message.msg_id,
            message.status,
        )
    return verdict


def _move(message: Message, report: DeliveryReport, source: str, now: datetime) -> MessageMove:
    """The move ``report`` makes of ``message``. The instance moves at once, so the next report
    of the batch about it is judged against its new state."""
    new_status = report.status
    values = {
        "provider_message_id": message.provider_message_id or report.provider_message_id,
        "sent_at": message.sent_at,
        "delivered_at": message.delivered_at,
        "error_code": message.error_code,
        "error_message": message.error_message,
    }
    if values["sent_at"] is None:
        # The provider had it, so it was sent; the outbox overwrites this with its own time.
        values["sent_at"] = now
    if new_status in FINAL_STATUSES:
        delivered = new_status == MessageStatus.DELIVERED
        values["delivered_at"] = (report.delivered_at or now) if delivered else None
        values["error_code"] = report.error_code
        values["error_message"] = report.error_message
    move = MessageMove(
        message,
        new_status,
        source,
        values,
        description=report.error_message or "",
        error_code=report.error_code,
        payload=jsonable(report.raw),
    )
    move.apply(now)
    return move
