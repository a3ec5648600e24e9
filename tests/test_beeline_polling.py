"""Beeline's ``action=status`` polling: the status table row by row, and ``query_status`` and
``crm_sms.polling.poll_statuses`` against the sandbox, applied to real Message rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

import pytest
from django.utils import timezone
from django.utils.functional import Promise

from crm_sms import send_sms
from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, SendStatus
from crm_sms.backends.beeline import STATUSES, status_report
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ProviderError
from crm_sms.models import Message, MessageStatus
from crm_sms.polling import poll_statuses
from crm_sms.sandbox import SandboxServer

D, M = DeliveryStatus, MessageStatus
LOGIN, PASSWORD = "beeline-login-7", "beeline-pass-9"

#: The manual's SMSSTC_CODE values (and older platforms'), apart from STATUSES: the state a
#: closed message with that code is in.
SPEC = {
    "queued": D.SENT,
    "wait": D.SENT,
    "accepted": D.SENT,
    "delivered": D.DELIVERED,
    "rejected": D.UNDELIVERED,
    "undeliverable": D.UNDELIVERED,
    "error": D.UNDELIVERED,
    "expired": D.UNDELIVERED,
    "unknown": D.UNDELIVERED,
    "aborted": D.FAILED,
    "not_delivered": D.UNDELIVERED,
    "failed": D.UNDELIVERED,
}


def test_the_table_is_the_manuals():
    assert {code: status for code, (status, _) in STATUSES.items()} == SPEC
    assert all(isinstance(meaning, Promise) for _, meaning in STATUSES.values())


@pytest.mark.parametrize("code", sorted(SPEC))
def test_every_status_code(code):
    status, error_code, message = status_report(code.upper(), True, "Текст Билайна")
    assert status == SPEC[code]
    if status in (D.SENT, D.DELIVERED):
        assert (error_code, message) == ("", "")
    else:
        assert error_code == code
        assert str(STATUSES[code][1]) in message and "Текст Билайна" in message


def test_unknown_is_final_only_when_closed_and_so_is_a_new_code():
    assert status_report("unknown", False)[0] == D.SENT
    assert status_report("teleported", False)[0] == D.SENT
    assert status_report("teleported", True) == (
        D.UNDELIVERED,
        "teleported",
        "Not delivered: teleported.",
    )
    assert status_report("", False)[0] == D.SENT


# --- against the sandbox -------------------------------------------------------------------


@pytest.fixture
def sandbox(settings):
    server = SandboxServer(provider="beeline", login=LOGIN, password=PASSWORD, callbacks=False)
    server.start()
    settings.CRM_SMS = {
        "PROVIDERS": {"beeline": parse_sms_url(server.sms_url("Shop") + "&batch_size=50")},
        "DEFAULT_PROVIDER": "beeline",
    }
    yield server
    server.stop()


def sent_messages(n: int) -> list[Message]:
    """``n`` messages really sent to the sandbox, marked sent as the outbox would."""
    rows = [
        Message.objects.create(phone=f"+7900555{i:04d}", text="Hi", provider="beeline")
        for i in range(n)
    ]
    results = get_backend("beeline").send_many(
        [OutgoingSMS(m.phone, m.text, "", m.msg_id) for m in rows]
    )
    for row, result in zip(rows, results, strict=True):
        assert result.status is SendStatus.ACCEPTED, result
        row.status, row.provider_message_id = M.SENT, result.provider_message_id
        row.sent_at = timezone.now()
        row.save()
    return rows


def status_requests(sandbox) -> list[list[tuple[str, str]]]:
    forms = [parse_qsl(r.body.decode()) for r in sandbox.requests]
    return [f for f in forms if ("action", "status") in f or ("data[0][action]", "status") in f]


@pytest.mark.django_db
def test_poll_applies_final_statuses_to_messages(sandbox):
    rows = sent_messages(3)
    sandbox.accepted[rows[0].provider_message_id]["status"] = "delivered"
    sandbox.accepted[rows[1].provider_message_id]["status"] = "undeliverable"
    counts = poll_statuses()
    assert (counts["checked"], counts["changed"], counts["errors"]) == (3, 2, 0)
    for row in rows:
        row.refresh_from_db()
    assert [row.status for row in rows] == [M.DELIVERED, M.UNDELIVERED, M.SENT]
    assert abs(rows[0].delivered_at - timezone.now()) < timedelta(minutes=1)  # Moscow time read
    assert rows[1].error_code == "undeliverable"
    assert "the subscriber is unavailable" in rows[1].error_message
    assert {e.source for row in rows for e in row.events.all()} == {"poll"}
    [request] = status_requests(sandbox)  # three ids in one request, as data[i] entries
    assert [v for k, v in request if k.endswith("[sms_id]")] == [
        r.provider_message_id for r in rows
    ]
    assert poll_statuses()["checked"] == 1  # only the one still on its way


@pytest.mark.django_db
def test_one_id_is_asked_by_sms_id_and_many_in_chunks_of_50(sandbox):
    rows = sent_messages(51)
    reports = get_backend("beeline").query_status(rows)
    assert [r.status for r in reports] == [D.SENT] * 51
    sizes = [sum(k.rstrip("]").endswith("sms_id") for k, _ in f) for f in status_requests(sandbox)]
    assert sizes == [50, 1]
    last = dict(status_requests(sandbox)[-1])
    assert (last["action"], last["sms_id"]) == ("status", rows[-1].provider_message_id)
    assert last["user"] == LOGIN and last["gzip"] == "none"


@pytest.mark.django_db
def test_status_reports_keep_no_credentials(sandbox):
    [row] = sent_messages(1)
    [report] = get_backend("beeline").query_status([row])
    assert report.raw["SMSSTC_CODE"] == "queued"
    assert LOGIN not in repr(report.raw)  # the answer's AUL_USERNAME is not kept


@pytest.mark.django_db
def test_an_id_beeline_does_not_know_gets_no_report(sandbox):
    [row] = sent_messages(1)
    row.provider_message_id = "123"
    assert get_backend("beeline").query_status([row]) == []


@pytest.mark.django_db
def test_refused_or_failed_queries_raise_and_polling_tries_later(sandbox, caplog):
    [row] = sent_messages(1)
    backend = get_backend("beeline")
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as refused:
        backend.query_status([row])
    assert refused.value.result.status is SendStatus.PROVIDER_ERROR
    assert refused.value.result.error_code == "20107"
    assert PASSWORD not in str(refused.value) and LOGIN not in repr(refused.value.result)
    sandbox.configure(password=PASSWORD, fail_rate=1.0)
    with pytest.raises(ProviderError) as failed:
        backend.query_status([row])
    assert failed.value.result.error_code == "http_503"
    assert poll_statuses()["errors"] == 1
    row.refresh_from_db()
    assert row.status == M.SENT


@pytest.mark.django_db
def test_the_sandbox_settles_statuses_itself_when_reports_are_on(sandbox):
    rows = sent_messages(2)
    sandbox.configure(callbacks=True, deliver_rate=0.0)
    poll_statuses()
    assert set(Message.objects.values_list("status", flat=True)) == {M.UNDELIVERED}
    assert {r.error_code for r in Message.objects.all()} == {"undeliverable"}
    assert len(rows) == 2


@pytest.mark.django_db
def test_the_outbox_sends_and_polling_delivers(sandbox):
    sandbox.configure(callbacks=True, deliver_rate=1.0)
    message = send_sms("+79005551234", "Ваш заказ готов", now=True)
    assert message.status == M.SENT and message.provider_message_id
    assert poll_statuses()["changed"] == 1
    message.refresh_from_db()
    assert message.status == M.DELIVERED
    assert message.delivered_at is not None
    assert message.delivered_at <= datetime.now(UTC) + timedelta(seconds=5)
