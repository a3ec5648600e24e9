"""Applying delivery reports (from callbacks or polling) to messages.

``apply_delivery_reports`` is the one place a provider's word about a message's fate is written.
It is idempotent and order-proof, so providers may repeat reports, send them out of order, or send
them before our worker has written the send result. The moves a report may make are the
``report`` rows of ``crm_sms.transitions.MESSAGE_MOVES`` (docs/statuses.md):

- A report says ``sent``, ``delivered``, ``undelivered`` or ``failed``; any other status is
  counted invalid. Statuses only move forward: queued < sending < uncertain < sent < final
  (delivered, undelivered, failed, cancelled). A report that would move a message back (a late
  ``sent`` after ``delivered``) is ignored; a report that repeats the current status adds
  nothing (no event, no signal).
- A report for an ``uncertain`` message (the answer to its send was lost) is applied: the
  provider's word settles whether it was sent.
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
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from .backends.base import DeliveryReport
from .events import jsonable
from .models import FINAL_STATUSES, EventSource, Message, MessageEvent, MessageStatus
from .transitions import MESSAGE_MOVES, Actor, MessageMove, can_move_message, move_messages

logger = logging.getLogger("crm_sms.reports")

#: Error code of the ``undelivered`` that polling writes when a provider never reported.
NO_REPORT = "no_report"

#: The statuses a report may carry: where the table's report moves lead.
REPORTED_STATUSES = frozenset(m.new for m in MESSAGE_MOVES if m.actor is Actor.REPORT)

#: The keys of the dict ``apply_delivery_reports`` returns.
COUNT_KEYS = ("received", "applied", "duplicate", "stale", "unknown", "invalid")

#: Reports applied in one transaction (its SELECT names at most twice as many ids).
CHUNK = 500
#: The longest error text kept from a report (the columns are unbounded TEXT).
MAX_ERROR_MESSAGE = 1000
#: How deep a report's raw data is stored; deeper parts are replaced by a note.
MAX_RAW_DEPTH = 20
#: Examples in the one log line per kind of ignored report.
LOG_SAMPLES = 3


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
    reports: Iterable[DeliveryReport],
    *,
    provider: str,
    source: str = EventSource.CALLBACK,
    cleaned: bool = False,
) -> dict[str, int]:
    """Apply provider ``reports`` to the messages of provider alias ``provider``.

    Cleans each report first (``clean_report``: values cut to their columns, text PostgreSQL
    can store), finds the messages in bulk (by our ``msg_id``, else by
    ``provider_message_id``), moves each one forward by the rules in the module docstring, sets
    ``delivered_at``, ``error_code`` and ``error_message``, and writes one ``MessageEvent``
    (``source``: "callback" or "poll", ``payload``: the report's raw data) per change through
    ``transitions.move_messages``, which sends ``message_status_changed``.

    Reports are applied in transactions of up to CHUNK reports. When the database refuses a
    chunk's writes (a DataError or IntegrityError a report caused), its reports are applied
    again one by one, each in its own savepoint, so one bad report costs only itself (it is
    counted invalid and logged). An unavailable database (OperationalError, InterfaceError)
    and errors that are not the database's propagate: a callback then spools the reports
    (``crm_sms.inbox``) or answers 500. Ignored reports are logged as one line per kind.

    ``cleaned=True``: the reports are ``clean_report``'s output already (the report queue and
    the spool store them so), not cleaned a second time.

    Returns counts: received, applied (status changed), duplicate (already in that status),
    stale (a report the rules ignore), unknown (no such message), invalid (a status that is not
    one a report may carry, or a report the database refused).
    """
    given = list(reports)
    counts = dict.fromkeys(COUNT_KEYS, 0)
    counts["received"] = len(given)
    notes = _Notes()
    for start in range(0, len(given), CHUNK):
        chunk = given[start : start + CHUNK]
        clean = chunk if cleaned else [clean_report(r) for r in chunk]
        _apply_chunk(clean, chunk, provider, source, counts, notes)
    notes.log(provider)
    return counts


def _apply_chunk(
    reports: list[DeliveryReport],
    given: list[DeliveryReport],
    provider: str,
    source: str,
    counts: dict[str, int],
    notes: _Notes,
) -> None:
    """Apply cleaned ``reports`` (``given``: as the backend made them, for the log) in one
    transaction; when the database refuses it, each report in its own (see above)."""
    batch_notes = _Notes()
    try:
        with transaction.atomic():
            batch_counts = _apply_batch(reports, given, provider, source, batch_notes)
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError as exc:
        if len(reports) == 1:
            counts["invalid"] += 1
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            notes.add("refused", f"{_name(given[0])}: {reason}")
            return
        for report, original in zip(reports, given, strict=True):
            _apply_chunk([report], [original], provider, source, counts, notes)
        return
    for key in COUNT_KEYS[1:]:
        counts[key] += batch_counts[key]
    notes.merge(batch_notes)


def _apply_batch(
    reports: list[DeliveryReport],
    given: list[DeliveryReport],
    provider: str,
    source: str,
    notes: _Notes,
) -> dict[str, int]:
    """One transaction's work: lock the messages, judge each report, move them; the counts."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    now = timezone.now()
    by_msg_id, by_provider_id = _lookup(reports, provider)
    moves: list[MessageMove] = []
    for report, original in zip(reports, given, strict=True):
        message = by_msg_id.get(report.msg_id) if report.msg_id else None
        if message is None and report.provider_message_id:
            message = by_provider_id.get(report.provider_message_id)
        verdict = _check(report, message)
        counts[verdict] += 1
        if verdict == "applied":
            moves.append(_move(message, report, source, now))
        elif verdict == "unknown":
            notes.add("unknown", _name(original))
        elif verdict == "invalid":
            notes.add("invalid", f"{report.status[:30]!r} for {message.msg_id}")
        elif verdict == "stale":
            notes.add("stale", f"{report.status} for {message.msg_id} (now {message.status})")
    # The rows are locked: each message moved once is written by one UPDATE per set of equal
    # values (a batch of receipts has few), else row by row.
    once = len({move.message.pk for move in moves}) == len(moves)
    move_messages(moves, now=now, where=() if once else None)
    return counts


def _check(report: DeliveryReport, message: Message | None) -> str:
    """ "unknown", "invalid", or what ``classify`` says."""
    if message is None:
        return "unknown"
    if report.status not in REPORTED_STATUSES:
        return "invalid"
    return classify(message, report.status)


def _move(message: Message, report: DeliveryReport, source: str, now: datetime) -> MessageMove:
    """The move ``report`` makes of ``message``. The instance moves at once, so the next report
    of the batch about it is judged against its new state."""
    new_status = report.status
    values: dict[str, Any] = {
        "provider_message_id": message.provider_message_id or report.provider_message_id,
        # The provider had it, so it was sent; the outbox overwrites this with its own time.
        "sent_at": message.sent_at or now,
        "maybe_sent": False,  # the provider has it: no longer a guess
    }
    if new_status in FINAL_STATUSES:
        delivered = new_status == MessageStatus.DELIVERED
        values["delivered_at"] = (report.delivered_at or now) if delivered else None
        values["error_code"] = report.error_code
        values["error_message"] = report.error_message
    move = MessageMove(
        message,
        new_status,
        source,
        # Only what changes: messages whose changes are equal share one UPDATE.
        {name: value for name, value in values.items() if getattr(message, name) != value},
        description=report.error_message or "",
        error_code=report.error_code,
        payload=jsonable(report.raw),
    )
    move.apply(now)
    return move


# --- ignored reports: one log line per kind and batch ------------------------------------

_NOTE_LINES = {
    "unknown": (logging.WARNING, "for unknown messages, ignored"),
    "invalid": (logging.WARNING, "with a status a report cannot carry, ignored"),
    "stale": (logging.INFO, "ignored: statuses only move forward"),
    "refused": (logging.WARNING, "refused by the database, ignored"),
}


@dataclass
class _Notes:
    """The reports a call ignored, by kind: how many, and a few examples."""

    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, sample: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        examples = self.samples.setdefault(kind, [])
        if len(examples) < LOG_SAMPLES:
            examples.append(sample)

    def merge(self, other: _Notes) -> None:
        for kind, count in other.counts.items():
            self.counts[kind] = self.counts.get(kind, 0) + count
            room = LOG_SAMPLES - len(self.samples.setdefault(kind, []))
            self.samples[kind].extend(other.samples[kind][: max(room, 0)])

    def log(self, provider: str) -> None:
        for kind, count in self.counts.items():
            level, what = _NOTE_LINES[kind]
            logger.log(
                level,
                "%d delivery report(s) from %s %s; e.g. %s",
                count,
                provider,
                what,
                "; ".join(self.samples[kind]),
            )


def _name(report: DeliveryReport) -> str:
    """How the log names a report's message (shortened: the ids come from outside)."""
    msg_id, provider_id = _shorten(report.msg_id), _shorten(report.provider_message_id)
    if msg_id and provider_id:
        return f"msg_id {msg_id!r} (provider id {provider_id!r})"
    return f"msg_id {msg_id!r}" if msg_id else f"provider id {provider_id!r}"


def _shorten(value: Any, limit: int = 40) -> str:
    text = clean_text(value)
    return text if len(text) <= limit else text[:limit] + "…"


# --- cleaning: values as the database stores them ----------------------------------------

_MESSAGE = Message._meta
STATUS_LENGTH = _MESSAGE.get_field("status").max_length
MSG_ID_LENGTH = _MESSAGE.get_field("msg_id").max_length
PROVIDER_ID_LENGTH = _MESSAGE.get_field("provider_message_id").max_length
ERROR_CODE_LENGTH = min(
    _MESSAGE.get_field("error_code").max_length,
    MessageEvent._meta.get_field("error_code").max_length,
)


def clean_text(value: Any) -> str:
    """``value`` as text every database stores: no NUL character (PostgreSQL refuses it) and
    no lone surrogate (it cannot be encoded), numbers as text, anything else as ""."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        text = str(value)
    else:
        return ""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _identifier(value: Any, limit: int) -> str:
    """An id as text; "" when it is longer than its column, so it can be none of ours (cutting
    it could name another message, and writing it would fail)."""
    text = clean_text(value)
    return text if len(text) <= limit else ""


def clean_raw(raw: Any, depth: int = 0) -> Any:
    """A report's raw data as a JSON column stores it on every database: text cleaned
    (``clean_text``), keys as text, NaN and infinities as text, bytes decoded, other objects
    as their text, and nesting cut at MAX_RAW_DEPTH."""
    if raw is None or isinstance(raw, bool | int):
        return raw
    if isinstance(raw, float):
        return raw if math.isfinite(raw) else str(raw)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return clean_text(raw)
    if depth >= MAX_RAW_DEPTH:
        return f"(nested deeper than {MAX_RAW_DEPTH} levels: left out)"
    if isinstance(raw, dict):
        return {clean_text(str(key)): clean_raw(value, depth + 1) for key, value in raw.items()}
    if isinstance(raw, list | tuple):
        return [clean_raw(value, depth + 1) for value in raw]
    return clean_text(str(raw))


def clean_report(report: DeliveryReport) -> DeliveryReport:
    """``report`` as the database can store it, whatever a provider (or an attacker with the
    callback token) sent: the one place values are cut to their columns.

    The status and error code are cut to their columns (a status no report may carry is
    counted invalid anyway), the error text to MAX_ERROR_MESSAGE; an id longer than its
    column becomes "" (no message of ours has it); ``delivered_at`` that is not a time is
    dropped; raw data is cleaned by ``clean_raw``.
    """
    delivered_at = report.delivered_at if isinstance(report.delivered_at, datetime) else None
    return DeliveryReport(
        clean_text(report.status)[:STATUS_LENGTH],
        msg_id=_identifier(report.msg_id, MSG_ID_LENGTH),
        provider_message_id=_identifier(report.provider_message_id, PROVIDER_ID_LENGTH),
        error_code=clean_text(report.error_code)[:ERROR_CODE_LENGTH],
        error_message=clean_text(report.error_message)[:MAX_ERROR_MESSAGE],
        delivered_at=delivered_at,
        raw=clean_raw(report.raw),
    )
