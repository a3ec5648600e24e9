"""reports.apply_delivery_reports: idempotent, order-proof, bulk; and the signal it sends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from crm_sms.backends.base import DeliveryReport
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.reports import NO_REPORT, apply_delivery_reports
from crm_sms.signals import message_status_changed

pytestmark = pytest.mark.django_db

S = MessageStatus


def make_message(status=S.SENT, provider="default", **kwargs) -> Message:
    fields = {
        "phone": "+79001234212",
        "text": "Hello",
        "provider": provider,
        "status": status,
        "provider_message_id": "",
    }
    if status in (S.SENT, S.DELIVERED, S.UNDELIVERED):
        fields["sent_at"] = timezone.now() - timedelta(minutes=5)
    fields.update(kwargs)
    return Message.objects.create(**fields)


@pytest.fixture
def signals_received():
    received = []

    def receiver(sender, message, old_status, new_status, event, **kwargs):
        received.append((sender, message.msg_id, old_status, new_status, event.pk))

    message_status_changed.connect(receiver, dispatch_uid="test_reports_receiver")
    yield received
    message_status_changed.disconnect(dispatch_uid="test_reports_receiver")


def events_of(message) -> list[tuple[str, str, str]]:
    return list(
        MessageEvent.objects.filter(message=message)
        .order_by("id")
        .values_list("source", "old_status", "new_status")
    )


def test_delivered_report_moves_sent_to_delivered_with_event_payload_and_time():
    msg = make_message()
    done = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    raw = {"msg_id": msg.msg_id, "status": "delivered"}
    counts = apply_delivery_reports(
        [DeliveryReport(S.DELIVERED, msg_id=msg.msg_id, delivered_at=done, raw=raw)],
        provider="default",
    )
    assert counts["applied"] == 1 and counts["received"] == 1
    msg.refresh_from_db()
    assert msg.status == S.DELIVERED
    assert msg.delivered_at == done
    event = msg.events.get()
    assert (event.source, event.old_status, event.new_status) == ("callback", "sent", "delivered")
    assert event.payload == raw


def test_undelivered_report_sets_error_code_and_message():
    msg = make_message()
    apply_delivery_reports(
        [
            DeliveryReport(
                S.UNDELIVERED, msg_id=msg.msg_id, error_code="EXPIRED", error_message="expired"
            )
        ],
        provider="default",
        source="poll",
    )
    msg.refresh_from_db()
    assert (msg.status, msg.error_code, msg.error_message) == (S.UNDELIVERED, "EXPIRED", "expired")
    assert msg.delivered_at is None
    assert events_of(msg) == [("poll", "sent", "undelivered")]


def test_repeated_report_adds_no_event_and_no_signal(signals_received):
    msg = make_message()
    report = DeliveryReport(S.DELIVERED, msg_id=msg.msg_id)
    first = apply_delivery_reports([report], provider="default")
    second = apply_delivery_reports([report, report], provider="default")
    assert first["applied"] == 1
    assert second["applied"] == 0 and second["duplicate"] == 2
    assert len(events_of(msg)) == 1
    assert [(s[2], s[3]) for s in signals_received] == [("sent", "delivered")]
    assert signals_received[0][0] is Message
    assert signals_received[0][4] == msg.events.get().pk


def test_late_sent_does_not_downgrade_delivered():
    msg = make_message()
    apply_delivery_reports([DeliveryReport(S.DELIVERED, msg_id=msg.msg_id)], provider="default")
    counts = apply_delivery_reports([DeliveryReport(S.SENT, msg_id=msg.msg_id)], provider="default")
    assert counts["stale"] == 1
    msg.refresh_from_db()
    assert msg.status == S.DELIVERED
    assert len(events_of(msg)) == 1


@pytest.mark.parametrize(
    "first,second", [(S.DELIVERED, S.UNDELIVERED), (S.UNDELIVERED, S.DELIVERED)]
)
def test_first_final_status_wins(first, second):
    msg = make_message()
    apply_delivery_reports([DeliveryReport(first, msg_id=msg.msg_id)], provider="default")
    counts = apply_delivery_reports([DeliveryReport(second, msg_id=msg.msg_id)], provider="default")
    assert counts["stale"] == 1
    msg.refresh_from_db()
    assert msg.status == first


def test_out_of_order_in_one_batch_ends_final():
    msg = make_message()
    counts = apply_delivery_reports(
        [DeliveryReport(S.DELIVERED, msg_id=msg.msg_id), DeliveryReport(S.SENT, msg_id=msg.msg_id)],
        provider="default",
    )
    assert (counts["applied"], counts["stale"]) == (1, 1)
    msg.refresh_from_db()
    assert msg.status == S.DELIVERED


@pytest.mark.parametrize("status", [S.SENDING, S.QUEUED])
def test_report_before_send_result_is_applied_not_lost(status):
    msg = make_message(status=status)
    counts = apply_delivery_reports(
        [DeliveryReport(S.DELIVERED, msg_id=msg.msg_id, provider_message_id="P-1")],
        provider="default",
    )
    assert counts["applied"] == 1
    msg.refresh_from_db()
    assert msg.status == S.DELIVERED
    assert msg.provider_message_id == "P-1"
    assert msg.sent_at is not None
    assert events_of(msg) == [("callback", status, "delivered")]


def test_sent_report_for_sending_message_moves_it_to_sent():
    msg = make_message(status=S.SENDING)
    apply_delivery_reports([DeliveryReport(S.SENT, msg_id=msg.msg_id)], provider="default")
    msg.refresh_from_db()
    assert msg.status == S.SENT


@pytest.mark.parametrize("verdict", [S.FAILED, S.CANCELLED])
def test_provider_report_corrects_our_own_final_verdict(verdict):
    msg = make_message(status=verdict, error_code="timeout")
    apply_delivery_reports([DeliveryReport(S.DELIVERED, msg_id=msg.msg_id)], provider="default")
    msg.refresh_from_db()
    assert msg.status == S.DELIVERED
    assert msg.error_code == ""


def test_provider_report_corrects_no_report_undelivered_but_not_a_real_one():
    guessed = make_message(status=S.UNDELIVERED, error_code=NO_REPORT)
    real = make_message(status=S.UNDELIVERED, error_code="EXPIRED", phone="+79001234213")
    counts = apply_delivery_reports(
        [
            DeliveryReport(S.DELIVERED, msg_id=guessed.msg_id),
            DeliveryReport(S.DELIVERED, msg_id=real.msg_id),
        ],
        provider="default",
    )
    assert (counts["applied"], counts["stale"]) == (1, 1)
    guessed.refresh_from_db()
    real.refresh_from_db()
    assert guessed.status == S.DELIVERED
    assert real.status == S.UNDELIVERED


def test_lookup_by_provider_message_id_and_provider_scoping():
    msg = make_message(provider_message_id="000000-1")
    other = make_message(provider="other", provider_message_id="000000-1", phone="+79001234213")
    counts = apply_delivery_reports(
        [DeliveryReport(S.DELIVERED, provider_message_id="000000-1")], provider="default"
    )
    assert counts["applied"] == 1
    msg.refresh_from_db()
    other.refresh_from_db()
    assert msg.status == S.DELIVERED
    assert other.status == S.SENT  # another provider's message with the same id is untouched


def test_msg_id_of_another_provider_is_unknown():
    msg = make_message(provider="other")
    counts = apply_delivery_reports(
        [DeliveryReport(S.DELIVERED, msg_id=msg.msg_id)], provider="default"
    )
    assert counts["unknown"] == 1
    msg.refresh_from_db()
    assert msg.status == S.SENT


def test_unknown_and_invalid_reports_are_counted_and_logged(caplog):
    msg = make_message()
    counts = apply_delivery_reports(
        [
            DeliveryReport(S.DELIVERED, msg_id="nosuchmessage123"),
            DeliveryReport("exploded", msg_id=msg.msg_id),
        ],
        provider="default",
    )
    assert (counts["unknown"], counts["invalid"], counts["applied"]) == (1, 1, 0)
    assert "nosuchmessage123" in caplog.text
    msg.refresh_from_db()
    assert msg.status == S.SENT
    assert not MessageEvent.objects.exists()


def test_signal_fires_once_per_change(signals_received):
    a, b = make_message(), make_message(phone="+79001234213", status=S.SENDING)
    apply_delivery_reports(
        [
            DeliveryReport(S.SENT, msg_id=b.msg_id),
            DeliveryReport(S.DELIVERED, msg_id=a.msg_id),
            DeliveryReport(S.DELIVERED, msg_id=a.msg_id),  # repeat: no signal
            DeliveryReport(S.UNDELIVERED, msg_id=b.msg_id),
        ],
        provider="default",
    )
    assert sorted((m, o, n) for _, m, o, n, _ in signals_received) == sorted(
        [(b.msg_id, "sending", "sent"), (a.msg_id, "sent", "delivered"),
         (b.msg_id, "sent", "undelivered")]
    )  # fmt: skip


def test_batch_uses_constant_number_of_queries(django_assert_max_num_queries):
    messages = [make_message(phone=f"+7900123{i:04d}") for i in range(50)]
    reports = [DeliveryReport(S.DELIVERED, msg_id=m.msg_id) for m in messages]
    # savepoint/transaction + select + bulk update + bulk insert of events
    with django_assert_max_num_queries(6):
        counts = apply_delivery_reports(reports, provider="default")
    assert counts["applied"] == 50
    assert Message.objects.filter(status=S.DELIVERED).count() == 50
    assert MessageEvent.objects.count() == 50


def test_empty_batch_does_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        counts = apply_delivery_reports([], provider="default")
    assert counts["received"] == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_identical_reports_make_one_event_postgres():
    """Two gunicorn workers receiving the same report at once: the row lock lets one apply it,
    the other then sees a repeat."""
    import threading

    from django.db import connection, connections

    if connection.vendor != "postgresql":
        pytest.skip("runs with DATABASE_URL=postgres://… (the PostgreSQL pass of .ci/run)")
    messages = [make_message(phone=f"+7900123{i:04d}") for i in range(20)]
    reports = [DeliveryReport(S.DELIVERED, msg_id=m.msg_id) for m in messages]
    barrier = threading.Barrier(6)
    results, errors = [], []

    def worker(batch):
        try:
            barrier.wait()
            results.append(apply_delivery_reports(batch, provider="default"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=worker, args=(reports if i % 2 else list(reversed(reports)),))
        for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sum(r["applied"] for r in results) == 20
    assert sum(r["duplicate"] for r in results) == 100
    assert MessageEvent.objects.count() == 20
    assert Message.objects.filter(status=S.DELIVERED).count() == 20
