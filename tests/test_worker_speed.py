"""The worker's fast paths (issue 15.4): events stored as rows when nobody listens (instances,
with ids, for receivers when someone does), results written with one prepared statement per
batch, and the send threads kept busy while results are written.

These tests run on SQLite and, in the PostgreSQL pass of .ci/run, on PostgreSQL (COPY)."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from django.utils import timezone
from django.utils.translation import gettext_lazy

from crm_sms.backends.base import SendResult, SendStatus
from crm_sms.backends.locmem import LocmemBackend
from crm_sms.events import EventRow, record_events
from crm_sms.models import EventSource, Message, MessageEvent, MessageStatus
from crm_sms.outbox import results, worker
from crm_sms.outbox.worker import DispatchSummary, Outbox
from crm_sms.signals import message_status_changed
from crm_sms.transitions import MessageMove, move_messages

M = MessageStatus
pytestmark = pytest.mark.django_db


def make_message(status=M.SENDING, **fields) -> Message:
    fields = {"phone": "+79001234212", "text": "Hi", "provider": "default", **fields}
    return Message.objects.create(status=status, **fields)


@pytest.fixture
def listener():
    """A ``message_status_changed`` receiver; what it got, in order."""
    received = []

    def receiver(sender, message, old_status, new_status, event, **kwargs):
        received.append((message, old_status, new_status, event))

    message_status_changed.connect(receiver, sender=Message, dispatch_uid="test_worker_speed")
    yield received
    message_status_changed.disconnect(sender=Message, dispatch_uid="test_worker_speed")


def event_rows(messages, now, description="Accepted"):
    return [
        EventRow(
            message,
            EventSource.SEND,
            M.SENDING,
            M.SENT,
            "E1" if i % 2 else "",
            description,
            [{"id": i, "текст": "ок"}, "raw", None, 7][i % 4],
            now,
        )
        for i, message in enumerate(messages)
    ]


def stored_events():
    return list(
        MessageEvent.objects.order_by("message_id").values_list(
            "message_id",
            "source",
            "old_status",
            "new_status",
            "error_code",
            "description",
            "payload",
            "created_at",
        )
    )


def expected_events(messages, now, description="Accepted"):
    payloads = [[{"id": i, "текст": "ок"}, "raw", None, 7][i % 4] for i in range(len(messages))]
    return [
        (m.pk, "send", "sending", "sent", "E1" if i % 2 else "", description, payloads[i], now)
        for i, m in enumerate(messages)
    ]


# --- record_events -----------------------------------------------------------------------------


def test_without_listeners_events_are_rows_without_instances(monkeypatch):
    """Nobody listens: the rows go in with one prepared statement (COPY on PostgreSQL); no
    MessageEvent instance is made (bulk_create would need them)."""
    messages = [make_message() for _ in range(6)]
    now = timezone.now()
    assert not message_status_changed.has_listeners(Message)

    def no_instances(*args, **kwargs):
        raise AssertionError("MessageEvent instances were made")

    monkeypatch.setattr(MessageEvent, "__init__", no_instances)
    assert record_events(event_rows(messages, now)) == []
    monkeypatch.undo()
    assert stored_events() == expected_events(messages, now)


def test_without_listeners_a_lazy_description_is_stored_translated():
    message = make_message()
    now = timezone.now()
    record_events(event_rows([message], now, description=gettext_lazy("Will retry")))
    assert MessageEvent.objects.get().description == "Will retry"


def test_with_a_listener_receivers_get_each_event_and_message(listener):
    messages = [make_message() for _ in range(4)]
    now = timezone.now()
    created = record_events(event_rows(messages, now))
    assert stored_events() == expected_events(messages, now)
    assert [event.pk for event in created] == sorted(
        MessageEvent.objects.values_list("pk", flat=True)
    )
    assert [(m, old, new) for m, old, new, _ in listener] == [
        (message, "sending", "sent") for message in messages
    ]
    for (message, _, _, event), stored in zip(listener, created, strict=True):
        assert event is stored and event.pk is not None and event.message is message
        assert (event.error_code, event.payload) == (stored.error_code, stored.payload)


def test_message_event_instances_are_stored_with_ids_as_before():
    """Instances given (an older caller): stored in one query with their ids, listeners or not."""
    message = make_message()
    events = [MessageEvent(message=message, source="send", old_status="sending", new_status="sent")]
    created = record_events(events)
    assert created == events and created[0].pk is not None
    assert MessageEvent.objects.get().pk == created[0].pk


# --- move_messages: the writing path -----------------------------------------------------------


@pytest.mark.parametrize("listening", [False, True], ids=["nobody listens", "a listener"])
def test_moves_write_per_row_values_and_events(request, listening):
    """One prepared UPDATE per set of fields for all rows: shared values (status, times) and
    per-row ones (ids, JSON answers) land on the right rows."""
    received = request.getfixturevalue("listener") if listening else None
    messages = [make_message(attempts=1) for _ in range(5)]
    now = timezone.now()
    moves = [
        MessageMove(
            message,
            M.SENT if i < 3 else M.FAILED,
            EventSource.SEND,
            {
                "provider_message_id": f"P-{i}" if i < 3 else "",
                "sent_at": now if i < 3 else None,
                "last_response": {"n": i, "ok": i < 3},
                "attempts": 2,
                "claimed_at": None,
            },
            description="Accepted" if i < 3 else "Rejected",
            payload={"n": i},
        )
        for i, message in enumerate(messages)
    ]
    move_messages(moves, now=now)
    rows = Message.objects.order_by("pk").values_list(
        "status", "provider_message_id", "sent_at", "last_response", "attempts", "updated_at"
    )
    assert list(rows) == [
        ("sent", f"P-{i}", now, {"n": i, "ok": True}, 2, now) for i in range(3)
    ] + [("failed", "", None, {"n": i, "ok": False}, 2, now) for i in (3, 4)]
    events = MessageEvent.objects.order_by("message_id")
    assert [(e.new_status, e.description, e.payload) for e in events] == [
        ("sent", "Accepted", {"n": 0}),
        ("sent", "Accepted", {"n": 1}),
        ("sent", "Accepted", {"n": 2}),
        ("failed", "Rejected", {"n": 3}),
        ("failed", "Rejected", {"n": 4}),
    ]
    if listening:
        assert [(m.pk, new, e.pk) for m, _, new, e in received] == [
            (e.message_id, e.new_status, e.pk) for e in events
        ]


# --- write_results ------------------------------------------------------------------------------


def test_write_results_writes_a_mixed_batch(locmem_provider):
    """Accepted, rejected, retried and given-back jobs of one batch: each row and event."""
    from crm_sms import outbox

    messages = [outbox.send_sms(f"+7900123{i:04d}", f"m{i}") for i in range(8)]
    box = Outbox(concurrency=2, batch_size=8)
    try:
        jobs = box._claim(8)
        answers = {
            0: SendResult(SendStatus.ACCEPTED, provider_message_id="A0", raw={"id": "A0"}),
            1: SendResult(SendStatus.ACCEPTED, provider_message_id="A1", raw="ok"),
            2: SendResult(SendStatus.REJECTED, error_code="1282", error_message="blocked"),
            3: SendResult(SendStatus.RETRY, error_code="503", error_message="later"),
        }
        for i, job in enumerate(sorted(jobs, key=lambda job: job.message.pk)):
            if i in answers:
                job.result = answers[i]
            else:
                job.given_back = "stopping"
        summary = DispatchSummary()
        box._write(jobs, summary)
    finally:
        box.close()
    assert (summary.sent, summary.failed, summary.retried, summary.given_back) == (2, 1, 1, 4)
    rows = {
        pk: (status, pid, code, attempts)
        for pk, status, pid, code, attempts in Message.objects.values_list(
            "pk", "status", "provider_message_id", "error_code", "attempts"
        )
    }
    pks = [m.pk for m in messages]
    assert [rows[pk] for pk in pks[:4]] == [
        ("sent", "A0", "", 1),
        ("sent", "A1", "", 1),
        ("failed", "", "1282", 1),
        ("queued", "", "503", 1),
    ]
    assert {rows[pk] for pk in pks[4:]} == {("queued", "", "", 0)}
    assert Message.objects.get(pk=pks[0]).last_response == {"id": "A0"}
    last = Counter(
        (e.old_status, e.new_status, e.description)
        for e in MessageEvent.objects.filter(old_status="sending")
    )
    assert last == {
        ("sending", "sent", "Accepted"): 2,
        ("sending", "failed", "Rejected"): 1,
        ("sending", "queued", "Will retry"): 1,
        ("sending", "queued", "Not sent: the worker stopped"): 4,
    }
    assert MessageEvent.objects.filter(new_status="sending").count() == 8  # the claims


def test_write_results_on_this_database_with_a_listener(locmem_provider, listener):
    from crm_sms import outbox

    outbox.send_sms("+79001230001", "a")
    box = Outbox(concurrency=1, batch_size=5)
    try:
        box.run(once=True)
    finally:
        box.close()
    assert [(old, new) for _, old, new, _ in listener] == [
        ("queued", "sending"),
        ("sending", "sent"),
    ]
    assert all(event.pk for *_, event in listener)


# --- the pool is fed while results are written --------------------------------------------------

SENDS = Counter()
_sends_lock = threading.Lock()


class SlowBackend(LocmemBackend):
    """Locmem that takes 5 ms per message and counts its sends."""

    def send(self, sms):
        time.sleep(0.005)
        with _sends_lock:
            SENDS["sent"] += 1
        return super().send(sms)


def test_sends_continue_while_results_are_written(locmem_provider, settings, monkeypatch):
    """Each write of results is slow: it waits until the pool has sent WANTED more messages
    (or all of them), up to 10 s. After the first (which teaches the worker how long a write
    takes), the pool never runs dry during a write: every wait ends by counting sends.

    The worker claims the next batch before writing results when the pool runs low, and
    claims ahead as many jobs as the pool answers during two writes. Claiming only every 20
    jobs with 10 left (the old low water), at most 29 were left to send during a write."""
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PROVIDERS": {"default": {"BACKEND": f"{__name__}.SlowBackend"}},
    }
    from crm_sms import outbox
    from crm_sms.models import Contact
    from tests.fixtures_outbox import make_contacts

    total, wanted = 400, 30
    make_contacts(total)
    outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    SENDS.clear()
    claimed = Counter()
    waits = []  # per write: True when it ended by counting, False when the pool ran dry
    real_claim, real_write = worker.claim_due_messages, results.write_results

    def counting_claim(*args, **kwargs):
        messages = real_claim(*args, **kwargs)
        claimed["n"] += len(messages)
        return messages

    def slow_write(jobs, summary, gates):
        start, deadline = SENDS["sent"], time.monotonic() + 10.0
        while SENDS["sent"] < min(start + wanted, total) and time.monotonic() < deadline:
            time.sleep(0.001)
        waits.append(SENDS["sent"] >= min(start + wanted, total))
        real_write(jobs, summary, gates)

    monkeypatch.setattr(worker, "claim_due_messages", counting_claim)
    monkeypatch.setattr(results, "write_results", slow_write)
    box = Outbox(concurrency=4, batch_size=20)
    try:
        summary = box.run(once=True)
    finally:
        box.close()
    assert summary.sent == total == SENDS["sent"] == claimed["n"]
    # How many writes there are depends on the machine's speed (a slow write gathers more
    # results for the next one); the property needs a write after the first.
    assert len(waits) >= 2, waits
    assert all(waits[1:]), waits
