"""MegafonBackend.parse_callback: MegaFon's delivery reports as DeliveryReports (parsing only;
the endpoint itself is tested in test_webhooks.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from django.test import RequestFactory

from crm_sms.backends.megafon import MegafonBackend, parse_receipt, parse_receipt_date
from crm_sms.exceptions import CallbackError
from crm_sms.models import MessageStatus
from crm_sms.sandbox import SandboxServer

RECEIPT = (
    "id:917615ac sub:001 dlvrd:001 submit date:1701241159 done date:1701241159 stat:DELIVRD err:000"
)
DELIVERED = {
    "msg_id": "m1",
    "receipted_message_id": "917615ac",
    "status": "delivered",
    "short_message": RECEIPT,
}


def backend(**options) -> MegafonBackend:
    return MegafonBackend("default", {"login": "u", "password": "p", **options})


def request_with(body):
    if not isinstance(body, bytes):
        body = json.dumps(body, ensure_ascii=False).encode("utf-8")
    return RequestFactory().post(
        "/sms/callback/default/t/", data=body, content_type="application/json"
    )


def parse(body, **options):
    return backend(**options).parse_callback(request_with(body))


def test_delivered_report():
    [report] = parse(DELIVERED)
    assert report.status == MessageStatus.DELIVERED
    assert report.msg_id == "m1" and report.provider_message_id == "917615ac"
    assert report.delivered_at == datetime(2023, 11, 29, 6, 59, 19, tzinfo=UTC)
    assert report.error_code == "" and report.error_message == ""
    assert report.raw == DELIVERED


@pytest.mark.parametrize(
    "stat, err, words",
    [
        ("UNDELIV", "001", "undeliverable"),
        ("EXPIRED", "012", "validity period expired"),
        ("REJECTD", "005", "rejected by the network"),
        ("WEIRDST", "077", "WEIRDST"),
    ],
)
def test_delivery_failed_report(stat, err, words):
    body = {
        **DELIVERED,
        "status": "delivery_failed",
        "short_message": f"id:9 sub:001 dlvrd:000 submit date:1701241159 done date:1701241200 "
        f"stat:{stat} err:{err}",
    }
    [report] = parse(body)
    assert report.status == MessageStatus.UNDELIVERED
    assert report.error_code == stat
    assert words in report.error_message and err in report.error_message
    assert report.delivered_at is None


@pytest.mark.parametrize("status", ["expired", "", None, "DELIVERED"])
def test_unknown_status_is_undelivered_with_the_text_kept(status):
    body = {**DELIVERED, "status": status, "short_message": "stat:UNKNOWN err:999"}
    [report] = parse(body)
    assert report.status == MessageStatus.UNDELIVERED
    assert "stat:UNKNOWN err:999" in report.error_message
    if status:
        assert status in report.error_message
    assert report.raw == body


def test_a_list_of_reports():
    second = {**DELIVERED, "msg_id": "m2", "status": "delivery_failed"}
    reports = parse([DELIVERED, second])
    assert [(r.msg_id, r.status) for r in reports] == [
        ("m1", MessageStatus.DELIVERED),
        ("m2", MessageStatus.UNDELIVERED),
    ]


def test_a_report_without_a_receipt():
    [report] = parse({"msg_id": "m1", "status": "delivered"})
    assert report.status == MessageStatus.DELIVERED and report.delivered_at is None


def test_a_body_with_a_byte_order_mark_is_read():
    body = b"\xef\xbb\xbf" + json.dumps(DELIVERED).encode()
    assert parse(body)[0].msg_id == "m1"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"\xff\xfe",
        json.dumps({"status": "delivered"}).encode(),
        json.dumps({**DELIVERED, "msg_id": ""}).encode(),
        json.dumps({**DELIVERED, "msg_id": None}).encode(),
        json.dumps([DELIVERED, "junk"]).encode(),
        json.dumps([]).encode(),
        json.dumps("delivered").encode(),
    ],
    ids=[
        "text",
        "empty",
        "not-utf8",
        "no-msg-id",
        "blank-msg-id",
        "null-msg-id",
        "junk-item",
        "empty-list",
        "string",
    ],
)
def test_malformed_reports_raise_callback_error(body):
    with pytest.raises(CallbackError):
        parse(body)


def test_callback_response_is_200_ok():
    response = backend().callback_response([])
    assert response.status_code == 200 and response.content == b"OK"


# --- the SMPP receipt --------------------------------------------------------------------------


def test_parse_receipt_fields():
    assert parse_receipt(RECEIPT) == {
        "id": "917615ac",
        "sub": "001",
        "dlvrd": "001",
        "submit date": "1701241159",
        "done date": "1701241159",
        "stat": "DELIVRD",
        "err": "000",
    }
    assert parse_receipt("") == {}


NOW = datetime(2023, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("1701241159", datetime(2023, 11, 29, 6, 59, 19, tzinfo=UTC)),  # unix seconds
        ("2311291059", datetime(2023, 11, 29, 10, 59, tzinfo=UTC)),  # YYMMDDhhmm
        ("231129105930", datetime(2023, 11, 29, 10, 59, 30, tzinfo=UTC)),  # YYMMDDhhmmss
        ("", None),
        ("soon", None),
        ("2313991059", datetime.fromtimestamp(2313991059, UTC)),  # no month 13: unix
        ("12345", None),
    ],
)
def test_receipt_dates(value, expected):
    assert parse_receipt_date(value, now=NOW) == expected


def test_classic_dates_are_read_in_the_receipt_timezone():
    moscow = ZoneInfo("Europe/Moscow")
    assert parse_receipt_date("2311291059", moscow, now=NOW) == datetime(
        2023, 11, 29, 7, 59, tzinfo=UTC
    )
    body = {**DELIVERED, "short_message": "stat:DELIVRD err:000 done date:2311291059"}
    report = backend(receipt_timezone="Europe/Moscow").parse_callback(request_with(body))[0]
    # A real report is read against the real clock; 2023 is far back, so the classic reading
    # (closer to now than unix 2043) wins.
    assert report.delivered_at == datetime(2023, 11, 29, 7, 59, tzinfo=UTC)


def test_the_sandbox_reports_parse():
    """The emulator's reports (used by the demo and the benchmarks) are understood."""
    sandbox = SandboxServer()
    message = {"msg_id": "abc", "receipted_message_id": "beef", "accepted_at": 1701241100.0}
    ok = sandbox.delivery_report(message, delivered=True)
    failed = sandbox.delivery_report(message, delivered=False)
    [delivered_report, failed_report] = parse([ok, failed])
    assert delivered_report.status == MessageStatus.DELIVERED
    assert delivered_report.delivered_at is not None
    assert abs((datetime.now(UTC) - delivered_report.delivered_at).total_seconds()) < 5
    assert failed_report.status == MessageStatus.UNDELIVERED
    assert failed_report.error_code == "UNDELIV"
