"""Writing the audit trail: every status change becomes a MessageEvent and a signal.

``record_events`` takes the events as ``EventRow``s (what ``transitions.move_messages`` passes)
or as ``MessageEvent`` instances. When nobody listens to ``message_status_changed``, rows are
inserted with one prepared statement per batch (COPY on PostgreSQL, ``bulk.RowInserter``) and
no instances are made: at thousands of messages a second the ORM's ``bulk_create`` was half of
the worker's main thread. When someone listens, instances are created (with their ids) so each
receiver gets its ``event``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection
from django.utils import timezone

from .bulk import RowInserter
from .event_text import event_params
from .models import Message, MessageEvent
from .signals import message_status_changed


class EventRow(NamedTuple):
    """One event to store: its message (whose ``status`` is already the new one) and fields,
    named as MessageEvent's."""

    message: Message
    source: str
    old_status: str
    new_status: str
    error_code: str = ""
    description: str = ""
    payload: Any = None
    created_at: datetime | None = None


#: The MessageEvent fields an EventRow fills, in its order (``message`` as its id).
_FIELDS = EventRow._fields


def record_events(events: Sequence[EventRow | MessageEvent]) -> list[MessageEvent]:
    """Store ``events``, then send ``message_status_changed`` for each when anyone listens.

    Nobody listening: ``EventRow``s are inserted as rows (one prepared statement, COPY on
    PostgreSQL) and no instances are made; the result is empty. Someone listening, or
    ``MessageEvent`` instances given: instances are stored in one query (they get their ids)
    and returned, and each receiver gets ``message``, ``old_status``, ``new_status`` and
    ``event``.

    Call it after the messages' new status is saved (inside the same transaction where there is
    one: receivers then see the committed state only if they use ``transaction.on_commit``).
    Each event must carry its ``message`` instance, whose ``status`` is already the new one.
    """
    if not events:
        return []
    listening = message_status_changed.has_listeners(Message)
    if not listening and all(isinstance(event, EventRow) for event in events):
        insert_event_rows(events)
        return []
    created = MessageEvent.objects.bulk_create([_instance(event) for event in events])
    if listening:
        for event in created:
            message_status_changed.send(
                sender=Message,
                message=event.message,
                old_status=event.old_status,
                new_status=event.new_status,
                event=event,
            )
    return created


def _instance(event: EventRow | MessageEvent) -> MessageEvent:
    if isinstance(event, MessageEvent):
        return event
    values = event._asdict()
    if values["created_at"] is None:
        del values["created_at"]  # the model's default: now
    values["params"] = event_params(values["description"])
    values["description"] = str(values["description"])
    return MessageEvent(**values)


def insert_event_rows(rows: Sequence[EventRow]) -> int:
    """INSERT ``rows`` as MessageEvents without instances (``bulk.RowInserter``); returns how
    many. Payloads become JSON; each distinct time (a batch shares one) and each lazy
    description (a module constant) is prepared once."""
    inserter = RowInserter(MessageEvent, {}, (*_FIELDS, "params"))
    payload_field = MessageEvent._meta.get_field("payload")
    params_field = MessageEvent._meta.get_field("params")
    default_time = timezone.now()
    prepared: dict[Any, Any] = {}

    def once(key: Any, make: Any) -> Any:
        if key not in prepared:
            prepared[key] = make()
        return prepared[key]

    def values(row: EventRow) -> tuple:
        time = row.created_at or default_time
        description = row.description
        if not isinstance(description, str):  # gettext_lazy: translated once per batch
            description = once(id(description), lambda: str(row.description or ""))
        return (
            row.message.pk,
            row.source,
            row.old_status or "",
            row.new_status,
            row.error_code or "",
            description,
            payload_field.get_db_prep_save(row.payload, connection),
            once(time, lambda: inserter.prepare("created_at", time)),
            params_field.get_db_prep_save(event_params(row.description), connection),
        )

    return inserter.insert(values(row) for row in rows)


def jsonable(raw: Any) -> Any:
    """A provider's raw answer or report as a JSONField can store it: bytes are decoded, odd
    types stringified."""
    if raw is None or isinstance(raw, str | int | float | bool):
        return raw
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, dict):
        return {str(k): jsonable(v) for k, v in raw.items()}
    if isinstance(raw, list | tuple):
        return [jsonable(v) for v in raw]
    return str(raw)
