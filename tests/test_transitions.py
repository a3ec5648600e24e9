"""The one table of status moves: its docs, its checks, its writes, and that nothing bypasses it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.utils import timezone

from crm_sms import transitions
from crm_sms.exceptions import InvalidTransition
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    EventSource,
    Message,
    MessageEvent,
    MessageStatus,
)
from crm_sms.reports import NO_REPORT, REPORTED_STATUSES, classify
from crm_sms.signals import message_status_changed
from crm_sms.transitions import Actor, MessageMove, move_campaigns, move_messages

ROOT = Path(__file__).resolve().parent.parent
M, C = MessageStatus, CampaignStatus


def make_message(status=M.QUEUED, **fields) -> Message:
    fields = {"phone": "+79001234212", "text": "Hi", "provider": "default", **fields}
    return Message.objects.create(status=status, **fields)


# --- the table and its docs ------------------------------------------------------------------


@pytest.mark.parametrize(
    "moves, initial",
    [
        (transitions.MESSAGE_MOVES, transitions.MESSAGE_INITIAL),
        (transitions.CAMPAIGN_MOVES, transitions.CAMPAIGN_INITIAL),
    ],
    ids=["message", "campaign"],
)
def test_docs_show_the_table(moves, initial):
    """docs/statuses.md holds the diagram and the table as generated from transitions.py;
    after a change to the table, paste the expected text printed below into the doc."""
    doc = (ROOT / "docs" / "statuses.md").read_text(encoding="utf-8")
    diagram = "```mermaid\n" + transitions.mermaid(moves, initial) + "```"
    table = transitions.moves_table(moves)
    assert diagram in doc, f"docs/statuses.md should contain:\n{diagram}"
    assert table in doc, f"docs/statuses.md should contain:\n{table}"


def test_mermaid_draws_one_arrow_per_pair_with_its_actors():
    moves = (
        transitions.Move("a", "b", Actor.WORKER, "x"),
        transitions.Move("a", "b", Actor.REPORT, "y"),
        transitions.Move("b", "a", Actor.OPERATOR, "z"),
    )
    assert transitions.mermaid(moves, ["a"]) == (
        "stateDiagram-v2\n    [*] --> a\n    a --> b: worker, report\n    b --> a: operator\n"
    )


def test_every_status_is_in_the_table():
    for moves, statuses, initial in (
        (transitions.MESSAGE_MOVES, M, transitions.MESSAGE_INITIAL),
        (transitions.CAMPAIGN_MOVES, C, transitions.CAMPAIGN_INITIAL),
    ):
        reached = {m.new for m in moves} | set(initial)
        assert reached == {s.value for s in statuses}
        assert {m.old for m in moves} | {m.new for m in moves} <= {s.value for s in statuses}
        assert len(set(moves)) == len(moves), "a move is listed twice"


def test_every_event_source_has_an_actor():
    assert set(transitions.SOURCE_ACTOR) == {s.value for s in EventSource}


def test_report_rules_use_exactly_the_report_moves_of_the_table():
    """Each report move of the table is one that ``reports.classify`` applies (for a final
    status only when it was our own verdict), and it applies no other."""
    table = {(m.old, m.new) for m in transitions.MESSAGE_MOVES if m.actor is Actor.REPORT}
    applied = set()
    for old in M:
        for error_code in ("", NO_REPORT):
            message = Message(status=old, error_code=error_code)
            for new in REPORTED_STATUSES:
                if classify(message, new) == "applied":
                    applied.add((old.value, new))
    assert applied == table


# --- uncertain -------------------------------------------------------------------------------


def test_uncertain_is_neither_active_nor_final():
    from crm_sms.models import ACTIVE_STATUSES, FINAL_STATUSES

    assert M.UNCERTAIN not in ACTIVE_STATUSES and M.UNCERTAIN not in FINAL_STATUSES


def test_only_the_worker_makes_a_message_uncertain_and_only_an_operator_queues_it():
    can = transitions.can_move_message
    assert can(M.SENDING, M.UNCERTAIN, Actor.WORKER)
    assert [m.old for m in transitions.MESSAGE_MOVES if m.new == M.UNCERTAIN] == [M.SENDING]
    assert not can(M.UNCERTAIN, M.QUEUED, Actor.WORKER)
    assert not can(M.UNCERTAIN, M.SENDING, Actor.WORKER)
    assert can(M.UNCERTAIN, M.QUEUED, Actor.OPERATOR)
    assert can(M.UNCERTAIN, M.CANCELLED, Actor.OPERATOR)
    assert not can(M.UNCERTAIN, M.CANCELLED, Actor.REPORT)


@pytest.mark.parametrize("reported", [M.SENT, M.DELIVERED, M.UNDELIVERED, M.FAILED])
def test_the_providers_word_settles_an_uncertain_message(reported):
    assert classify(Message(status=M.UNCERTAIN), reported) == "applied"


@pytest.mark.django_db
def test_a_retry_cannot_queue_an_uncertain_message_again():
    message = make_message(M.UNCERTAIN)
    with pytest.raises(InvalidTransition, match="'uncertain' to 'queued' by the worker"):
        move_messages([MessageMove(message, M.QUEUED, EventSource.RETRY)])
    moved = move_messages([MessageMove(message, M.QUEUED, EventSource.ADMIN)])
    assert len(moved) == 1


# --- move_messages ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_move_the_table_lacks_is_refused_before_anything_is_written():
    queued, delivered = make_message(), make_message(M.DELIVERED, phone="+79001234213")
    moves = [
        MessageMove(queued, M.SENDING, EventSource.SEND, {"claimed_at": timezone.now()}),
        MessageMove(delivered, M.SENDING, EventSource.SEND),
    ]
    with pytest.raises(InvalidTransition, match="'delivered' to 'sending' by the worker"):
        move_messages(moves)
    queued.refresh_from_db()
    assert queued.status == M.QUEUED
    assert not MessageEvent.objects.exists()


@pytest.mark.django_db
def test_who_moves_matters():
    """A report cannot cancel a message; an operator can."""
    message = make_message()
    with pytest.raises(InvalidTransition):
        move_messages([MessageMove(message, M.CANCELLED, EventSource.CALLBACK)])
    moved = move_messages([MessageMove(message, M.CANCELLED, EventSource.ADMIN)])
    assert [m.message for m in moved] == [message]
    message.refresh_from_db()
    assert message.status == M.CANCELLED


@pytest.mark.django_db
def test_moves_write_rows_events_and_signals():
    received = []

    def receiver(sender, message, old_status, new_status, event, **kwargs):
        received.append((message.pk, old_status, new_status, event.pk))

    message_status_changed.connect(receiver, dispatch_uid="test_transitions")
    try:
        message = make_message(M.SENDING)
        now = timezone.now()
        move_messages(
            [
                MessageMove(
                    message,
                    M.SENT,
                    EventSource.SEND,
                    {"sent_at": now, "provider_message_id": "P-1"},
                    description="Accepted",
                    payload={"code": 0},
                )
            ],
            now=now,
        )
    finally:
        message_status_changed.disconnect(dispatch_uid="test_transitions")
    assert (message.status, message.updated_at, message.provider_message_id) == (M.SENT, now, "P-1")
    message.refresh_from_db()
    assert (message.status, message.sent_at, message.provider_message_id) == (M.SENT, now, "P-1")
    event = message.events.get()
    assert (event.source, event.old_status, event.new_status) == ("send", "sending", "sent")
    assert (event.description, event.payload, event.created_at) == ("Accepted", {"code": 0}, now)
    assert received == [(message.pk, "sending", "sent", event.pk)]


@pytest.mark.django_db
def test_two_moves_of_one_message_write_its_last_state_and_two_events():
    message = make_message(M.SENDING)
    first = MessageMove(message, M.SENT, EventSource.CALLBACK, {"error_code": ""})
    first.apply(timezone.now())
    second = MessageMove(message, M.UNDELIVERED, EventSource.CALLBACK, {"error_code": "X"})
    move_messages([first, second])
    message.refresh_from_db()
    assert (message.status, message.error_code) == (M.UNDELIVERED, "X")
    assert list(message.events.values_list("old_status", "new_status")) == [
        ("sending", "sent"),
        ("sent", "undelivered"),
    ]


@pytest.mark.django_db
def test_conditional_moves_leave_rows_that_moved_on_alone():
    claimed_at = timezone.now()
    kept = [
        make_message(M.SENDING, phone=f"+7900123421{i}", claimed_at=claimed_at) for i in range(3)
    ]
    gone = make_message(M.SENDING, phone="+79001234219", claimed_at=claimed_at)
    reclaimed = make_message(M.SENDING, phone="+79001234218", claimed_at=claimed_at)
    # Meanwhile: a report finished one, another worker claimed another again.
    Message.objects.filter(pk=gone.pk).update(status=M.DELIVERED)
    Message.objects.filter(pk=reclaimed.pk).update(claimed_at=timezone.now())
    moves = [
        MessageMove(m, M.QUEUED, EventSource.RETRY, {"claimed_at": None})
        for m in [*kept, gone, reclaimed]
    ]
    moved = move_messages(moves, where=("claimed_at",))
    assert [m.message.pk for m in moved] == [m.pk for m in kept]
    assert set(Message.objects.values_list("status", flat=True)) == {
        M.QUEUED,
        M.DELIVERED,
        M.SENDING,
    }
    assert MessageEvent.objects.count() == 3
    assert gone.status == M.SENDING  # an instance that did not move keeps what it had


@pytest.mark.django_db
def test_an_empty_list_of_moves_does_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert move_messages([]) == []


# --- move_campaigns --------------------------------------------------------------------------


@pytest.mark.django_db
def test_move_campaigns_moves_only_those_in_a_status_the_table_allows():
    running = Campaign.objects.create(name="a", text="x", status=C.RUNNING)
    scheduled = Campaign.objects.create(name="b", text="x", status=C.SCHEDULED)
    done = Campaign.objects.create(name="c", text="x", status=C.COMPLETED)
    ids = [running.pk, scheduled.pk, done.pk]
    moved = move_campaigns(ids, C.PAUSED, actor=Actor.OPERATOR, pause_reason="later")
    assert moved == [running.pk, scheduled.pk]
    assert dict(Campaign.objects.values_list("pk", "status")) == {
        running.pk: C.PAUSED,
        scheduled.pk: C.PAUSED,
        done.pk: C.COMPLETED,
    }
    # The worker pauses running campaigns only.
    assert move_campaigns([done.pk], C.PAUSED, actor=Actor.WORKER) == []
    with pytest.raises(InvalidTransition):
        move_campaigns([done.pk], C.PAUSED, actor=Actor.WORKER, old=[C.COMPLETED])


# --- nothing bypasses the table ----------------------------------------------------------------


def _status_writes(path: Path) -> list[str]:
    """Places in ``path`` that write a status without the table: ``.update(status=...)``,
    ``bulk_update``/``update_rows`` naming "status", ``obj.status = ...``."""
    found = []
    for node in ast.walk(_parse(path)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if name == "update" and any(k.arg == "status" for k in node.keywords):
                found.append(f"{path}:{node.lineno} .update(status=...)")
            if name in ("bulk_update", "update_rows") and "'status'" in ast.unparse(node):
                found.append(f"{path}:{node.lineno} {name} of status")
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(f"{path}:{node.lineno} .status = ...")
    return found


def test_every_status_change_goes_through_transitions():
    app = ROOT / "crm_sms"
    files = [
        p
        for p in app.rglob("*.py")
        if "migrations" not in p.parts and p.name != "transitions.py" and "sandbox" not in p.parts
    ]
    assert not [place for path in files for place in _status_writes(path)]


def _parse(path: Path) -> ast.AST:
    """``ast.parse`` of ``path``; Python 3.11 can raise SystemError ("AST constructor recursion
    depth mismatch") when another thread is running, so a parse is tried again."""
    source = path.read_text(encoding="utf-8")
    for _attempt in range(3):
        try:
            return ast.parse(source)
        except SystemError:
            continue
    return ast.parse(source)
