"""MtsBackend over real HTTP on loopback (the sandbox and a scripted server): the bytes on the
wire, the single and batch endpoints, every code, polling to final states, lookups, credentials."""

from __future__ import annotations

import base64
import logging
import time
import types
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.mts import (
    BATCH_PATH,
    CODES,
    DEFAULT_BASE_URL,
    INFO_PATH,
    SEND_PATH,
    STATUS_CODES,
    MtsBackend,
    classify_code,
    latest_event,
    status_report,
)
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ProviderError
from crm_sms.models import Message, MessageStatus
from crm_sms.polling import poll_statuses
from crm_sms.sandbox import SandboxServer
from tests.conformance import ConformanceSuite

LOGIN = "corp@mts"
PASSWORD = "p:a@ss/w%rd"
TOKEN = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
S, D = SendStatus, DeliveryStatus


@pytest.fixture
def mts():
    """A started MTS emulator with odd credentials; reports only when a test sets them."""
    sandbox = SandboxServer(provider="mts", login=LOGIN, password=PASSWORD, callbacks=False)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def mts_provider(mts, settings):
    """``mts`` configured as provider "mts" (and the default) by its SMS_URL."""
    settings.CRM_SMS = {
        "PROVIDERS": {"mts": parse_sms_url(mts.sms_url("Shop"))},
        "DEFAULT_PROVIDER": "mts",
    }
    return mts


def backend_for(base_url: str, **options) -> MtsBackend:
    options = {
        "login": LOGIN,
        "password": PASSWORD,
        "sender": "Shop",
        "base_url": base_url,
        **options,
    }
    return MtsBackend("default", options)


def sms(i: int = 1, text: str = "Код: 1234", sender: str = "") -> OutgoingSMS:
    return OutgoingSMS(f"+7900{i:07d}", text, sender, f"m{i:015d}")


def assert_no_credentials(*things):
    for thing in things:
        text = repr(thing) + str(thing)
        for secret in (PASSWORD, TOKEN, LOGIN):
            assert secret not in text, f"a credential leaked into {text!r}"


# --- configuration -----------------------------------------------------------------------------


def test_url_configures_credentials_sender_and_https():
    config = parse_sms_url("mts://corp%40mts:p%3Aa%40ss%2Fw%25rd@omnichannel.mts.ru/?sender=Shop")
    assert config["BACKEND"] == "crm_sms.backends.mts.MtsBackend"
    backend = MtsBackend("default", config["OPTIONS"])
    assert (backend.login, backend.password, backend.default_sender) == (LOGIN, PASSWORD, "Shop")
    assert backend.base_url == DEFAULT_BASE_URL
    local = parse_sms_url("mts+http://a:b@127.0.0.1:8999/")["OPTIONS"]
    assert MtsBackend("x", local).base_url == "http://127.0.0.1:8999"


def test_default_rate_is_mts_10_per_second_and_the_url_can_raise_it():
    assert MtsBackend("x", {}).rate_limit == 10.0
    config = parse_sms_url("mts://a:b@omnichannel.mts.ru/?rate_limit=40")
    backend = MtsBackend("x", config["OPTIONS"], rate_limit=config["RATE_LIMIT"])
    assert backend.rate_limit == 40.0


def test_the_configured_backend_keeps_the_default_rate(mts_provider):
    assert get_backend("mts").rate_limit == 10.0


def test_declares_lookup_safety_and_polling():
    assert MtsBackend.retry_safety is RetrySafety.LOOKUP
    assert callable(MtsBackend("x", {}).query_status) and not MtsBackend.supports_callbacks


def test_check_ids_and_hints():
    ids = [p.id for p in MtsBackend("x", {"base_url": "http://mts.example"}).check()]
    assert ids == ["crm_sms.E010", "crm_sms.W010", "crm_sms.W011"]
    problems = MtsBackend("promo", {"login": "l", "password": "p", "sender": "Имя"}).check()
    assert [p.id for p in problems] == ["crm_sms.E004"]
    assert "SMS_URL_PROMO" in problems[0].hint
    assert backend_for("http://127.0.0.1:1").check() == []


@pytest.mark.parametrize("sender", ["Shop", "MTSM_Test", "A", "12345678901", "My Co."])
def test_senders_mts_accepts(sender):
    backend_for(DEFAULT_BASE_URL).validate_sender(sender)


@pytest.mark.parametrize("sender", ["", "TwelveChars!", "Магазин", "Tab\there"])
def test_senders_mts_refuses(sender):
    with pytest.raises(ValidationError):
        backend_for(DEFAULT_BASE_URL).validate_sender(sender)


# --- the request on the wire -------------------------------------------------------------------


def test_exact_bytes_on_the_wire(mts):
    result = backend_for(mts.base_url).send(sms(1))
    assert result.status is S.ACCEPTED and result.provider_message_id
    [request] = mts.requests
    assert request.path == SEND_PATH
    assert request.header("Authorization") == f"Basic {TOKEN}"
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert (
        request.body
        == (
            '{"messages":[{"content":{"short_text":"Код: 1234"},'
            '"to":[{"msisdn":"79000000001","message_id":"m000000000000001"}]}],'
            '"options":{"from":{"sms_address":"Shop"}}}'
        ).encode()
    )


def test_fewer_than_10_go_to_the_single_endpoint_in_one_request(mts):
    results = backend_for(mts.base_url).send_many([sms(i) for i in range(9)])
    assert [r.path for r in mts.requests] == [SEND_PATH]
    assert len(mts.requests[0].json()["messages"]) == 9
    assert all(r.status is S.ACCEPTED for r in results)


def test_from_10_recipients_the_batch_endpoint_is_used(mts):
    backend = backend_for(mts.base_url)
    results = backend.send_many([sms(i) for i in range(150)])
    assert [r.path for r in mts.requests] == [BATCH_PATH, BATCH_PATH]
    assert [len(r.json()["messages"]) for r in mts.requests] == [100, 50]
    ids = [r.provider_message_id for r in results]
    assert len(set(ids)) == 150
    # Each result is its own message's: the emulator's record names the same number.
    assert [mts.accepted[i]["msisdn"] for i in ids] == [f"7900{i:07d}" for i in range(150)]
    assert (
        backend_for(mts.base_url, batch_from="20")
        .build_request([sms(i) for i in range(10)])
        .url.endswith(SEND_PATH)
    )


def test_a_batch_is_split_by_sender(mts):
    batch = [sms(1), sms(2, sender="Other"), sms(3)]
    results = backend_for(mts.base_url).send_many(batch)
    senders = [r.json()["options"]["from"]["sms_address"] for r in mts.requests]
    assert senders == ["Shop", "Other"]
    assert [mts.accepted[r.provider_message_id]["naming"] for r in results] == [
        "Shop",
        "Other",
        "Shop",
    ]


@pytest.mark.parametrize(
    "message, code",
    [
        (OutgoingSMS("+7900123", "Hi", "", "m1"), "invalid_phone"),
        (OutgoingSMS("+79001234212", " ", "", "m1"), "empty_text"),
        (OutgoingSMS("+79001234212", "Hi", "Магазин", "m1"), "invalid_sender"),
    ],
)
def test_an_invalid_message_makes_no_request(mts, message, code):
    result = backend_for(mts.base_url).send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert mts.requests == []


# --- answers -----------------------------------------------------------------------------------

# The codes as MTS's material names them, written out independently of the module's table.
EXPECTED_CODES = {803: S.RETRY}
EXPECTED_STATUSES = {
    200: D.SENT,
    201: D.FAILED,
    202: D.SENT,
    300: D.DELIVERED,
    301: D.UNDELIVERED,
    302: D.SENT,
}


def test_the_tables_cover_the_spec():
    assert {code: row[0] for code, row in CODES.items()} == EXPECTED_CODES
    assert {code: row[0] for code, row in STATUS_CODES.items()} == EXPECTED_STATUSES


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_row_of_the_code_table_per_recipient(scripted, code):
    server = scripted((200, {"messages": [{"message_id": "m000000000000001", "error_code": code}]}))
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code) == (CODES[code][0], str(code))
    assert result.error_message == str(CODES[code][1])


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_row_of_the_code_table_request_wide(scripted, code):
    server = scripted((429, {"code": code, "message": "Превышен лимит"}))
    results = backend_for(server.base_url).send_many([sms(1), sms(2)])
    assert [(r.status, r.error_code) for r in results] == [(CODES[code][0], str(code))] * 2


def test_unknown_codes_are_refused_with_mts_text(scripted):
    server = scripted((400, {"code": 1017, "message": "Имя отправителя не найдено"}))
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code) == (S.REJECTED, "1017")
    assert "Имя отправителя не найдено" in result.error_message
    assert classify_code(5)[0] is S.REJECTED


def test_refused_recipient_in_a_batch_from_the_sandbox(mts):
    mts.configure(codes={"+79000000002": 1017})
    results = backend_for(mts.base_url).send_many([sms(1), sms(2), sms(3)])
    assert [r.status for r in results] == [S.ACCEPTED, S.REJECTED, S.ACCEPTED]
    assert results[1].error_code == "1017" and results[1].error_message


def test_throttling_from_the_sandbox_is_803_retry(mts):
    mts.configure(throttle_rate=1.0)
    result = backend_for(mts.base_url).send(sms(1))
    assert (result.status, result.error_code) == (S.RETRY, "803")
    assert not mts.accepted


def test_an_answer_that_skips_a_message_is_ambiguous(scripted):
    server = scripted(
        (200, {"messages": [{"message_id": "m000000000000001", "internal_id": "i1"}]})
    )
    results = backend_for(server.base_url).send_many([sms(1), sms(2)])
    assert results[0].status is S.ACCEPTED and results[0].provider_message_id == "i1"
    assert (results[1].status, results[1].error_code, results[1].ambiguous) == (
        S.RETRY,
        "no_answer",
        True,
    )


def test_entries_without_message_ids_are_read_in_order(scripted):
    server = scripted((200, {"messages": [{"internal_id": "a"}, {"internal_id": "b"}]}))
    results = backend_for(server.base_url).send_many([sms(1), sms(2)])
    assert [r.provider_message_id for r in results] == ["a", "b"]


@pytest.mark.parametrize(
    "answer, status, code, ambiguous",
    [
        ((401, b"", "text/plain"), S.PROVIDER_ERROR, "http_401", False),
        ((503, b"busy", "text/html"), S.RETRY, "http_503", True),
        ((200, b"<html>", "text/html"), S.RETRY, "bad_response", True),
        ((404, b"no", "text/html"), S.PROVIDER_ERROR, "http_404", False),
        ("drop", S.RETRY, "connection_error", True),
    ],
)
def test_transport_answers(scripted, answer, status, code, ambiguous):
    server = scripted(answer)
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code, result.ambiguous) == (status, code, ambiguous)


def test_credentials_never_appear(scripted, caplog):
    def echo(body):
        return (500, f"{TOKEN} {LOGIN} {PASSWORD} {body.decode()}".encode(), "text/plain")

    server = scripted(echo)
    backend = backend_for(server.base_url)
    with caplog.at_level(logging.DEBUG):
        result = backend.send(sms(1))
    assert_no_credentials(result, result.raw, result.error_message, backend, caplog.text)
    assert_no_credentials(backend.session.auth)


# --- statuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", sorted(STATUS_CODES))
def test_every_row_of_the_status_table(code):
    status, error_code, message = status_report(code, [10700])
    assert status == STATUS_CODES[code][0]
    if status in (D.SENT, D.DELIVERED):
        assert (error_code, message) == ("", "")
    else:
        assert error_code == str(code) and str(STATUS_CODES[code][1]) in message
        assert "10700" in message


def test_an_unknown_status_keeps_the_message_on_its_way():
    assert status_report(999)[0] == D.SENT


def test_the_final_event_wins_over_a_later_intermediate_one():
    entry = {
        "events_info": [
            {"status": 200, "event_at": "2024-01-01T10:00:00"},
            {"status": 300, "event_at": "2024-01-01T10:00:05"},
            {"status": 302, "event_at": "2024-01-01T10:00:09"},
        ]
    }
    assert latest_event(entry)["status"] == 300
    assert latest_event({"events_info": []}) is None


def test_query_status_maps_events_by_internal_id(mts):
    backend = backend_for(mts.base_url)
    results = backend.send_many([sms(1), sms(2), sms(3)])
    ids = [r.provider_message_id for r in results]
    mts.accepted[ids[0]]["status"] = "delivered"
    mts.accepted[ids[1]]["status"] = "undelivered"
    rows = [
        types.SimpleNamespace(msg_id=f"row{i}", provider_message_id=p) for i, p in enumerate(ids)
    ]
    rows.append(types.SimpleNamespace(msg_id="gone", provider_message_id="no-such-id"))
    mts.requests.clear()
    reports = {r.msg_id: r for r in backend.query_status(rows)}
    assert set(reports) == {"row0", "row1", "row2"}  # "key not exists": no report
    assert reports["row0"].status == D.DELIVERED and reports["row0"].delivered_at
    assert (reports["row1"].status, reports["row1"].error_code) == (D.UNDELIVERED, "301")
    assert "10700" in reports["row1"].error_message
    assert reports["row2"].status == D.SENT
    [request] = mts.requests
    assert request.path == INFO_PATH and request.json() == {"int_ids": [*ids, "no-such-id"]}


def test_event_times_without_an_offset_use_event_timezone(scripted):
    entry = {"key": "i1", "events_info": [{"status": 300, "event_at": "2024-03-01T12:00:00"}]}
    server = scripted((200, {"events_info": [entry]}))
    backend = backend_for(server.base_url, event_timezone="Europe/Moscow")
    [report] = backend.query_status([types.SimpleNamespace(msg_id="m", provider_message_id="i1")])
    assert report.delivered_at == datetime(2024, 3, 1, 9, 0, tzinfo=UTC)


def test_query_status_asks_100_ids_per_request(mts):
    rows = [types.SimpleNamespace(msg_id=f"m{i}", provider_message_id=f"x{i}") for i in range(250)]
    assert backend_for(mts.base_url).query_status(rows) == []
    assert [len(r.json()["int_ids"]) for r in mts.requests] == [100, 100, 50]


@pytest.mark.parametrize("answer", [(200, {"oops": 1}), (503, b"down", "text/plain")])
def test_a_failed_status_query_raises(scripted, answer):
    server = scripted(answer)
    with pytest.raises(ProviderError):
        backend_for(server.base_url).query_status(
            [types.SimpleNamespace(msg_id="m", provider_message_id="i")]
        )


# --- never twice -------------------------------------------------------------------------------


def test_lookup_after_a_timeout_finds_the_message_that_arrived(mts):
    backend = backend_for(mts.base_url, read_timeout="0.2")
    mts.configure(timeout_rate=1.0, timeout_s=0.5)
    result = backend.send(sms(1))
    assert (result.status, result.ambiguous) == (S.RETRY, True)
    mts.configure(timeout_rate=0.0)
    deadline = time.monotonic() + 5
    while not mts.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    found = backend.lookup_sent(sms(1))
    assert found.status is S.ACCEPTED and found.provider_message_id in mts.accepted
    assert mts.requests[-1].json() == {"msg_ids": ["m000000000000001"]}


def test_lookup_of_a_message_mts_does_not_know_is_none(mts):
    mts.configure(drop_rate=1.0)
    assert backend_for(mts.base_url).send(sms(2)).ambiguous
    mts.configure(drop_rate=0.0)
    assert backend_for(mts.base_url).lookup_sent(sms(2)) is None


@pytest.mark.parametrize(
    "answer",
    [
        (200, {"events_info": [{"key": "m000000000000001", "events_info": []}]}),
        (200, {"events_info": [{"key": "other", "events_info": []}]}),
        (200, {"events_info": [{"key": "m000000000000001", "error": True}]}),
        (500, b"down", "text/plain"),
    ],
    ids=["no-events", "other-key", "other-error", "5xx"],
)
def test_a_lookup_that_cannot_decide_raises(scripted, answer):
    server = scripted(answer)
    with pytest.raises(ProviderError):
        backend_for(server.base_url).lookup_sent(sms(1))


# --- polling applied to Message rows -----------------------------------------------------------


@pytest.mark.django_db
def test_poll_statuses_moves_rows_to_final_states(mts_provider):
    backend = get_backend("mts")
    rows = [
        Message.objects.create(phone=f"+7900555{i:04d}", text="Hi", provider="mts")
        for i in range(4)
    ]
    results = backend.send_many([OutgoingSMS(m.phone, m.text, "", m.msg_id) for m in rows])
    for row, result in zip(rows, results, strict=True):
        Message.objects.filter(pk=row.pk).update(
            status=MessageStatus.SENT,
            provider_message_id=result.provider_message_id,
            sent_at=timezone.now(),
        )
    finals = {0: "delivered", 1: "undelivered"}
    for i, status in finals.items():
        mts_provider.accepted[results[i].provider_message_id]["status"] = status
    counts = poll_statuses(provider="mts")
    assert (counts["checked"], counts["changed"], counts["errors"]) == (4, 2, 0)
    statuses = [Message.objects.get(pk=m.pk).status for m in rows]
    assert statuses == ["delivered", "undelivered", "sent", "sent"]
    failed = Message.objects.get(pk=rows[1].pk)
    assert failed.error_code == "301" and failed.error_message


@pytest.mark.django_db
def test_the_sandbox_settles_statuses_itself_when_reports_are_on(mts_provider):
    mts_provider.configure(callbacks=True, callback_delay=0, deliver_rate=1.0)
    row = Message.objects.create(phone="+79005550001", text="Hi", provider="mts")
    result = get_backend("mts").send(OutgoingSMS(row.phone, row.text, "", row.msg_id))
    Message.objects.filter(pk=row.pk).update(
        status="sent", provider_message_id=result.provider_message_id, sent_at=timezone.now()
    )
    poll_statuses(provider="mts")
    assert Message.objects.get(pk=row.pk).status == "delivered"


# --- the conformance suite ---------------------------------------------------------------------


class TestMtsConformance(ConformanceSuite):
    emulator = "mts"
    refused_code = 1017
    throttled_code = "803"
    provider_error_code = "http_401"
    report_modes = ("poll",)


@pytest.mark.django_db
def test_round_trip_send_sms_then_poll_to_delivered(mts_provider):
    import crm_sms

    message = crm_sms.send_sms("+7 900 555-00-07", "Заказ готов", provider="mts", now=True)
    assert message.status == "sent" and message.provider_message_id in mts_provider.accepted
    mts_provider.accepted[message.provider_message_id]["status"] = "delivered"
    poll_statuses(provider="mts")
    message.refresh_from_db()
    assert message.status == "delivered" and message.delivered_at
