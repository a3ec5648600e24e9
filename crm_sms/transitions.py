"""The one table of status moves, for messages and campaigns, and the functions that apply them.

``MESSAGE_MOVES`` and ``CAMPAIGN_MOVES`` list every move that exists and who makes it:

- the **worker** (the outbox: claiming, send results, stale claims, scheduled starts; its
  message events have source ``send`` or ``retry``),
- a **report** from the provider (a delivery callback or a poll; source ``callback``/``poll``),
- an **operator** (the admin's actions and the control functions it calls; source ``admin``).

Every status change goes through ``move_messages`` or ``move_campaigns``: they refuse a move the
table lacks (``InvalidTransition``), write the rows, and (for messages) record one
``MessageEvent`` per move and send ``message_status_changed``, and keep the messages per
(campaign, status) in the same transaction (``campaign_counts``). docs/statuses.md shows the table
as diagrams; a test keeps the two equal (``mermaid`` and ``moves_table`` render it).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from .bulk import update_rows
from .campaign_counts import add_counts
from .events import EventRow, record_events
from .exceptions import InvalidTransition
from .models import (
    Campaign,
    CampaignStatus,
    EventSource,
    Message,
    MessageStatus,
)


class Actor(enum.StrEnum):
    """Who makes a move."""

    WORKER = "worker"
    REPORT = "report"
    OPERATOR = "operator"


#: The actor behind each MessageEvent source.
SOURCE_ACTOR: dict[str, Actor] = {
    EventSource.SEND: Actor.WORKER,
    EventSource.RETRY: Actor.WORKER,
    EventSource.CALLBACK: Actor.REPORT,
    EventSource.POLL: Actor.REPORT,
    EventSource.ADMIN: Actor.OPERATOR,
}


@dataclass(frozen=True)
class Move:
    """One move of the table: ``old`` -> ``new``, made by ``actor``, for the reason ``why``."""

    old: str
    new: str
    actor: Actor
    why: str


M, C = MessageStatus, CampaignStatus
WORKER, REPORT, OPERATOR = Actor.WORKER, Actor.REPORT, Actor.OPERATOR

#: A new Message starts ``queued`` (send_sms, send_campaign); a resend reuses its row.
MESSAGE_INITIAL = (M.QUEUED,)

MESSAGE_MOVES: tuple[Move, ...] = (
    # The outbox worker.
    Move(M.QUEUED, M.SENDING, WORKER, "claimed for an attempt"),
    Move(M.SENDING, M.SENT, WORKER, "the provider accepted it"),
    Move(M.SENDING, M.FAILED, WORKER, "rejected, or its retries are exhausted"),
    Move(M.SENDING, M.QUEUED, WORKER, "retry later, given back unsent, or its claim expired"),
    Move(M.SENDING, M.CANCELLED, WORKER, "as for queued, but its campaign was cancelled"),
    Move(M.QUEUED, M.SENT, WORKER, "accepted after its expired claim was taken back"),
    Move(
        M.SENDING,
        M.UNCERTAIN,
        WORKER,
        "its answer was lost and the provider neither drops repeats nor can be asked",
    ),
    Move(M.QUEUED, M.QUEUED, WORKER, "moved to the next provider (failover), with a new msg_id"),
    # The provider's delivery reports (callbacks, polling and its report window).
    Move(M.QUEUED, M.SENT, REPORT, "a report overtook the send result"),
    Move(M.QUEUED, M.DELIVERED, REPORT, "a report overtook the send result"),
    Move(M.QUEUED, M.UNDELIVERED, REPORT, "a report overtook the send result"),
    Move(M.QUEUED, M.FAILED, REPORT, "a report overtook the send result"),
    Move(M.SENDING, M.SENT, REPORT, "a report overtook the send result"),
    Move(M.SENDING, M.DELIVERED, REPORT, "a report overtook the send result"),
    Move(M.SENDING, M.UNDELIVERED, REPORT, "a report overtook the send result"),
    Move(M.SENDING, M.FAILED, REPORT, "a report overtook the send result"),
    Move(M.SENT, M.DELIVERED, REPORT, "delivery report"),
    Move(M.SENT, M.UNDELIVERED, REPORT, "delivery report, or no report within the window"),
    Move(M.SENT, M.FAILED, REPORT, "delivery report"),
    Move(M.FAILED, M.DELIVERED, REPORT, "the provider corrects our verdict"),
    Move(M.FAILED, M.UNDELIVERED, REPORT, "the provider corrects our verdict"),
    Move(M.CANCELLED, M.DELIVERED, REPORT, "the provider corrects our verdict"),
    Move(M.CANCELLED, M.UNDELIVERED, REPORT, "the provider corrects our verdict"),
    Move(M.CANCELLED, M.FAILED, REPORT, "the provider corrects our verdict"),
    Move(M.UNDELIVERED, M.DELIVERED, REPORT, "a late report after our no_report verdict"),
    Move(M.UNDELIVERED, M.FAILED, REPORT, "a late report after our no_report verdict"),
    Move(M.UNCERTAIN, M.SENT, REPORT, "the provider's word settles it"),
    Move(M.UNCERTAIN, M.DELIVERED, REPORT, "the provider's word settles it"),
    Move(M.UNCERTAIN, M.UNDELIVERED, REPORT, "the provider's word settles it"),
    Move(M.UNCERTAIN, M.FAILED, REPORT, "the provider's word settles it"),
    # An operator (the admin's actions).
    Move(M.QUEUED, M.CANCELLED, OPERATOR, "the campaign is cancelled"),
    Move(M.UNCERTAIN, M.CANCELLED, OPERATOR, "the campaign is cancelled"),
    Move(M.FAILED, M.QUEUED, OPERATOR, "retry failed, or resend (same msg_id)"),
    Move(M.UNCERTAIN, M.QUEUED, OPERATOR, "resend, confirmed: it may arrive twice"),
    Move(M.CANCELLED, M.QUEUED, OPERATOR, "resend (same msg_id)"),
    Move(M.SENT, M.QUEUED, OPERATOR, "resend (same msg_id)"),
    Move(M.DELIVERED, M.QUEUED, OPERATOR, "resend (same msg_id)"),
    Move(M.UNDELIVERED, M.QUEUED, OPERATOR, "resend (same msg_id)"),
)

#: A new Campaign: a draft (a copy in the admin), or scheduled or running (send_campaign).
CAMPAIGN_INITIAL = (C.DRAFT, C.SCHEDULED, C.RUNNING)

CAMPAIGN_MOVES: tuple[Move, ...] = (
    # The outbox worker.
    Move(C.SCHEDULED, C.RUNNING, WORKER, "its scheduled time came"),
    Move(C.RUNNING, C.PAUSED, WORKER, "the provider refuses all messages"),
    Move(C.RUNNING, C.COMPLETED, WORKER, "no message is left queued or sending"),
    # An operator.
    Move(C.RUNNING, C.PAUSED, OPERATOR, "pause"),
    Move(C.SCHEDULED, C.PAUSED, OPERATOR, "pause"),
    Move(C.PAUSED, C.RUNNING, OPERATOR, "resume"),
    Move(C.RUNNING, C.COMPLETED, OPERATOR, "resumed with no message left to send"),
    Move(C.DRAFT, C.CANCELLED, OPERATOR, "cancel"),
    Move(C.SCHEDULED, C.CANCELLED, OPERATOR, "cancel"),
    Move(C.RUNNING, C.CANCELLED, OPERATOR, "cancel"),
    Move(C.PAUSED, C.CANCELLED, OPERATOR, "cancel"),
    Move(C.COMPLETED, C.RUNNING, OPERATOR, "retry failed messages, or resend one"),
)

_MESSAGE_INDEX = frozenset((m.old, m.new, m.actor) for m in MESSAGE_MOVES)
_CAMPAIGN_INDEX = frozenset((m.old, m.new, m.actor) for m in CAMPAIGN_MOVES)


def can_move_message(old: str, new: str, actor: Actor) -> bool:
    """Whether the table lets ``actor`` move a message from ``old`` to ``new``."""
    return (old, new, actor) in _MESSAGE_INDEX


def statuses_moving_to(moves: Iterable[Move], new: str, actor: Actor) -> tuple[str, ...]:
    """The statuses from which ``actor`` may move to ``new``, in table order."""
    return tuple(dict.fromkeys(m.old for m in moves if m.new == new and m.actor == actor))


def _refuse(kind: str, old: str, new: str, actor: Actor) -> InvalidTransition:
    return InvalidTransition(f"A {kind} cannot move from '{old}' to '{new}' by the {actor}.")


# --- messages ------------------------------------------------------------------------------


@dataclass(slots=True)
class MessageMove:
    """One message's move to ``new``, recorded as an event from ``source`` (an EventSource).

    ``old`` defaults to ``message.status`` now; ``values`` are other fields to write with it.
    """

    message: Message
    new: str
    source: str
    values: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    error_code: str = ""
    payload: Any = None
    old: str = ""

    def __post_init__(self) -> None:
        if not self.old:
            self.old = self.message.status

    def apply(self, now: datetime) -> None:
        """Move the instance (not the row): its new status, ``updated_at`` and values."""
        message = self.message
        for name, value in self.values.items():
            setattr(message, name, value)
        message.status = self.new
        message.updated_at = now


def move_messages(
    moves: Sequence[MessageMove],
    *,
    now: datetime | None = None,
    where: Sequence[str] | None = None,
) -> list[MessageMove]:
    """Apply ``moves``: check each against MESSAGE_MOVES (InvalidTransition before anything is
    written), write the rows with ``status``, ``updated_at = now`` and their ``values``, update
    the instances, and record one MessageEvent per move (``events.record_events`` also sends
    ``message_status_changed``). Returns the moves that took effect.

    ``where=None``: the caller holds the rows (``select_for_update`` in its transaction); rows
    are written with per-row values (``bulk.update_rows``). A message may move twice in one call
    (a report batch): its last values win and each move is an event.
    ``where=(field, ...)``: concurrent writers may have moved a row since it was read, so each
    row is written only where its status is still the move's ``old`` and each named field
    still has the instance's value (one conditional UPDATE per set of equal values); only the
    moves that took effect are recorded.
    """
    if not moves:
        return []
    now = now or timezone.now()
    for move in moves:
        actor = SOURCE_ACTOR[move.source]
        if (move.old, move.new, actor) not in _MESSAGE_INDEX:
            raise _refuse("message", move.old, move.new, actor)
    with transaction.atomic(savepoint=False):
        if where is None:
            rows: dict[Any, dict[str, Any]] = {}
            for move in moves:
                row = rows.setdefault(move.message.pk, {})
                row.update(move.values)
                row.update(status=move.new, updated_at=now)
            update_rows(Message, rows)
            moved = list(moves)
        else:
            moved = _write_where(moves, tuple(where), now)
        deltas = _count_deltas(moved)
        events = []
        for move in moved:
            move.apply(now)
            events.append(
                EventRow(
                    move.message,
                    move.source,
                    move.old,
                    move.new,
                    move.error_code,
                    move.description,
                    move.payload,
                    now,
                )
            )
        record_events(events)
        # Last: the counts' rows are shared by every writer of a campaign, so they are
        # locked as briefly as possible (until our commit), in one sorted statement.
        add_counts(deltas)
    return moved


def _count_deltas(moved: Sequence[MessageMove]) -> dict[tuple[int, str], int]:
    """The changes to ``CampaignStatusCount`` of ``moved`` (before ``apply``): per message,
    one fewer in its first old status and one more in its last new one."""
    first: dict[Any, MessageMove] = {}
    last: dict[Any, MessageMove] = {}
    for move in moved:
        first.setdefault(move.message.pk, move)
        last[move.message.pk] = move
    campaigns = _campaign_ids([move.message for move in first.values()])
    deltas: dict[tuple[int, str], int] = defaultdict(int)
    for pk, move in first.items():
        campaign_id, new = campaigns.get(pk), last[pk].new
        if campaign_id is not None and move.old != new:
            deltas[(campaign_id, move.old)] -= 1
            deltas[(campaign_id, new)] += 1
    return deltas


def _campaign_ids(messages: Sequence[Message]) -> dict[Any, int | None]:
    """Each message's campaign id; one query for those read without it (``only(...)``)."""
    found: dict[Any, int | None] = {}
    missing = []
    for message in messages:
        if "campaign_id" in message.__dict__:
            found[message.pk] = message.campaign_id
        else:
            missing.append(message.pk)
    if missing:
        found.update(Message.objects.filter(pk__in=missing).values_list("pk", "campaign_id"))
    return found


#: Primary keys per conditional UPDATE (well under every database's parameter limit).
_CHUNK = 500


def _write_where(
    moves: Sequence[MessageMove], where: tuple[str, ...], now: datetime
) -> list[MessageMove]:
    """Conditional writes (see ``move_messages``): rows with equal old status, values and
    guarded fields share one ``UPDATE ... WHERE pk IN (...) AND status = old AND ...``."""
    if len({move.message.pk for move in moves}) != len(moves):
        raise ValueError("move_messages(where=...) moves each message once")
    groups: dict[tuple, list[Any]] = defaultdict(list)
    for move in moves:
        guard = tuple(getattr(move.message, name) for name in where)
        key = (move.old, move.new, tuple(move.values.items()), guard)
        groups[key].append(move.message.pk)
    moved: set[Any] = set()
    for (old, new, values, guard), pks in groups.items():
        condition = {"status": old, **dict(zip(where, guard, strict=True))}
        for start in range(0, len(pks), _CHUNK):
            chunk = pks[start : start + _CHUNK]
            count = Message.objects.filter(pk__in=chunk, **condition).update(
                **dict(values), status=new, updated_at=now
            )
            if count == len(chunk):
                moved.update(chunk)
            elif count:
                # Some rows had moved on: ours are those carrying this very write's time.
                moved.update(
                    Message.objects.filter(pk__in=chunk, status=new, updated_at=now).values_list(
                        "pk", flat=True
                    )
                )
    return [move for move in moves if move.message.pk in moved]


# --- campaigns -----------------------------------------------------------------------------


def move_campaigns(
    campaigns: QuerySet[Campaign] | Iterable[Any],
    new: str,
    *,
    actor: Actor,
    old: Iterable[str] | None = None,
    **values: Any,
) -> list[Any]:
    """Move the ``campaigns`` (a queryset, or primary keys) that are in one of the ``old``
    statuses to ``new``, writing ``values`` too; returns the ids moved, in order.

    ``old`` defaults to every status the table lets ``actor`` move to ``new`` from; naming a
    move the table lacks raises InvalidTransition. The rows are locked and the UPDATE is
    conditional (``status IN old``), so a campaign another process moved meanwhile is left alone.
    """
    sources = tuple(old) if old is not None else statuses_moving_to(CAMPAIGN_MOVES, new, actor)
    for status in sources:
        if (status, new, actor) not in _CAMPAIGN_INDEX:
            raise _refuse("campaign", status, new, actor)
    if not isinstance(campaigns, QuerySet):
        campaigns = Campaign.objects.filter(pk__in=list(campaigns))
    with transaction.atomic(savepoint=False):
        ids = list(
            campaigns.filter(status__in=sources)
            .select_for_update()
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if ids:
            Campaign.objects.filter(pk__in=ids, status__in=sources).update(status=new, **values)
    return ids


# --- the diagrams in docs/statuses.md ------------------------------------------------------


def mermaid(moves: Sequence[Move], initial: Sequence[str]) -> str:
    """The table as a Mermaid ``stateDiagram-v2``: one arrow per pair of statuses, labelled
    with the actors that make that move."""
    actors: dict[tuple[str, str], list[str]] = {}
    for move in moves:
        names = actors.setdefault((move.old, move.new), [])
        if move.actor not in names:
            names.append(move.actor)
    lines = ["stateDiagram-v2"]
    lines += [f"    [*] --> {status}" for status in initial]
    lines += [f"    {old} --> {new}: {', '.join(who)}" for (old, new), who in actors.items()]
    return "\n".join(lines) + "\n"


def moves_table(moves: Sequence[Move]) -> str:
    """The table as a Markdown table: from, to, who, why."""
    lines = ["| From | To | Who | Why |", "| --- | --- | --- | --- |"]
    lines += [f"| {m.old} | {m.new} | {m.actor} | {m.why} |" for m in moves]
    return "\n".join(lines) + "\n"
