"""Writing the audit trail: every status change becomes a MessageEvent and a signal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .models import Message, MessageEvent
from .signals import message_status_changed


def record_events(events: Sequence[MessageEvent]) -> list[MessageEvent]:
    """Store ``events`` in one query, then send ``message_status_changed`` for each.

    Call it after the messages' new status is saved (inside the same transaction where there is
    one: receivers then see the committed state only if they use ``transaction.on_commit``).
    Each event must carry its ``message`` instance, whose ``status`` is already the new one.
    """
    created = MessageEvent.objects.bulk_create(events)
    if message_status_changed.has_listeners(Message):
        for event in created:
            message_status_changed.send(
                sender=Message,
                message=event.message,
                old_status=event.old_status,
                new_status=event.new_status,
                event=event,
            )
    return created


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
