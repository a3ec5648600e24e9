"""SMS4B's ``StatusTXT`` polling: the status number decoded row by row, and ``query_status`` and
``crm_sms.polling.poll_statuses`` against the sandbox, applied to real Message rows."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from django.utils import timezone

from crm_sms import send_sms
from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, SendStatus
from crm_sms.backends.sms4b import decode_status
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ProviderError
from crm_sms.models import Message, MessageStatus
from crm_sms.polling import poll_statuses
from crm_sms.sandbox import SandboxServer

D, M = DeliveryStatus, MessageStatus
LOGIN, PASSWORD = "sms4b-login-5", "sms4b-pass-6"
FINAL = 256 * 256


@pytest.mark.parametrize(
    "number, status, error_code",
    [
        (0, D.SENT, ""),  # nothing known yet
        (1, D.SENT, ""),  # 1 part, none done, not final
        (2 * 256 + 3, D.SENT, ""),  # 2 of 3 parts, not final
        (256 + 1, D.SENT, ""),  # 1 of 1 part, not final: sent, not yet delivered
        (FINAL + 256 + 1, D.DELIVERED, ""),  # final, 1 of 1
        (FINAL + 3 * 256 + 3, D.DELIVERED, ""),  # final, 3 of 3
        (2 * FINAL + 256 + 1, D.DELIVERED, ""),  # a higher final byte: still delivered
        (FINAL + 1, D.UNDELIVERED, str(FINAL + 1)),  # final, 0 of 1
        (FINAL + 2 * 256 + 3, D.UNDELIVERED, str(FINAL + 2 * 256 + 3)),  # final, 2 of 3
        (FINAL, D.UNDELIVERED, str(FINAL)),  # final without parts
    ],
)
def test_status_numbers(number, status, error_code):
    decoded = decode_status(number)
    assert decoded[:2] == (status, error_code)
    if status == D.UNDELIVERED:
        done, total = (number // 256) % 256, number % 256
        assert decoded[2] == f"Not delivered: {done} of {total} parts reached the phone."


@pytest.fixture
def sandbox(settings):
    server = SandboxServer(provider="sms4b", login=LOGIN, password=PASSWORD, callbacks=False)
    server.start()
    settings.CRM_SMS = {
        "PROVIDERS": {"sms4b": parse_sms_url(server.sms_url("Shop"))},
        "DEFAULT_PROVIDER": "sms4b",
    }
    yield server
    server.stop()


def sent_messages(n: int, text: str = "Hi") -> list[Message]:
    rows = [
        Message.objects.create(phone=f"+7900555{i:04d}", text=text, provider="sms4b")
        for i in range(n)
    ]
    results = get_backend("sms4b").send_many(
        [OutgoingSMS(m.phone, m.text, "", m.msg_id) for m in rows]
    )
    for row, result in zip(rows, results, strict=True):
        assert result.status is SendStatus.ACCEPTED, result
        row.status, row.provider_message_id = M.SENT, result.provider_message_id
        row.sent_at = timezone.now()
        row.save()
    return rows


@pytest.mark.django_db
def test_poll_applies_final_statuses_to_messages(sandbox):
    rows = sent_messages(3, text="Длинное сообщение " * 5)  # 90 characters of Cyrillic: 2 parts
    first, second, _ = (sandbox.accepted[r.provider_message_id] for r in rows)
    assert first["parts"] == 2
    first["status"], second["status"] = str(FINAL + 2 * 256 + 2), str(FINAL + 256 + 2)
    counts = poll_statuses()
    assert (counts["checked"], counts["changed"], counts["errors"]) == (3, 2, 0)
    for row in rows:
        row.refresh_from_db()
    assert [row.status for row in rows] == [M.DELIVERED, M.UNDELIVERED, M.SENT]
    assert rows[0].delivered_at is not None
    assert rows[1].error_code == str(FINAL + 256 + 2)
    assert rows[1].error_message == "Not delivered: 1 of 2 parts reached the phone."
    assert {e.source for row in rows for e in row.events.all()} == {"poll"}
    forms = [parse_qsl(r.body.decode()) for r in sandbox.requests if "StatusTXT" in r.path]
    assert len(forms) == 3  # one request per message
    assert forms[0] == [
        ("Login", LOGIN),
        ("Password", PASSWORD),
        ("MessageId", rows[0].provider_message_id),
    ]


@pytest.mark.django_db
def test_ids_sms4b_does_not_know_yet_get_no_report(sandbox):
    [row] = sent_messages(1)
    row.provider_message_id = "X" * 20  # unknown: -21
    assert get_backend("sms4b").query_status([row]) == []
    row.provider_message_id = "short"  # malformed: -22
    assert get_backend("sms4b").query_status([row]) == []


@pytest.mark.django_db
def test_refused_or_failed_queries_raise_and_polling_tries_later(sandbox):
    [row] = sent_messages(1)
    backend = get_backend("sms4b")
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as refused:
        backend.query_status([row])
    assert (refused.value.result.status, refused.value.result.error_code) == (
        SendStatus.PROVIDER_ERROR,
        "-1",
    )
    assert PASSWORD not in str(refused.value)
    sandbox.configure(password=PASSWORD, fail_rate=1.0)
    with pytest.raises(ProviderError) as failed:
        backend.query_status([row])
    assert failed.value.result.error_code == "http_503"
    assert poll_statuses()["errors"] == 1
    row.refresh_from_db()
    assert row.status == M.SENT


@pytest.mark.django_db
def test_the_outbox_sends_and_polling_delivers(sandbox):
    sandbox.configure(callbacks=True, deliver_rate=1.0)
    message = send_sms("+79005551234", "Ваш заказ готов", now=True)
    assert message.status == M.SENT and len(message.provider_message_id) == 20
    assert poll_statuses()["changed"] == 1
    message.refresh_from_db()
    assert message.status == M.DELIVERED


@pytest.mark.django_db
def test_the_sandbox_settles_undelivered_after_the_delay(sandbox):
    sandbox.configure(callbacks=True, deliver_rate=0.0, callback_delay=3600)
    [row] = sent_messages(1)
    assert poll_statuses()["changed"] == 0  # not due yet
    sandbox.configure(callback_delay=0)
    assert poll_statuses()["changed"] == 1
    row.refresh_from_db()
    assert (row.status, row.error_code) == (M.UNDELIVERED, str(FINAL + 1))
