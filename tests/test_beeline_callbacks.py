"""Beeline's status callbacks through the callback endpoint, row by row, and a live round trip
(outbox -> sandbox -> callback posted to the live server -> delivered)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from django.urls import reverse
from django.utils.functional import Promise

from crm_sms.backends.base import DeliveryStatus
from crm_sms.backends.beeline import CALLBACK_STATUSES
from crm_sms.conf import parse_sms_url
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.sandbox import SandboxServer

M, D = MessageStatus, DeliveryStatus
TOKEN = "beeline-token-3"
URL = reverse("crm_sms:callback", kwargs={"provider": "beeline", "token": TOKEN})

#: The manual's STATUS codes, apart from CALLBACK_STATUSES: the message status and error code.
SPEC = {
    "2": (M.DELIVERED, ""),
    "3": (M.UNDELIVERED, "expired"),
    "5": (M.UNDELIVERED, "undeliverable"),
    "7": (M.UNDELIVERED, "unknown"),
    "8": (M.UNDELIVERED, "rejected"),
    "20": (M.FAILED, "aborted"),
    "21": (M.UNDELIVERED, "error"),
    "22": (M.UNDELIVERED, "expired"),
}


@pytest.fixture
def provider(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"beeline": parse_sms_url("beeline://u:p@a2p-sms-https.beeline.ru/")},
        "DEFAULT_PROVIDER": "beeline",
        "CALLBACK_TOKEN": TOKEN,
    }


@pytest.fixture
def message(db, provider):
    return Message.objects.create(
        phone="+79001234212",
        text="Hi",
        provider="beeline",
        status=M.SENT,
        provider_message_id="436850308667174523",
    )


def post(client, fields: dict, url: str = URL):
    body = urlencode(fields)
    return client.post(url, body, content_type="application/x-www-form-urlencoded")


def report(status: str, sms_id: str = "436850308667174523", **extra) -> dict:
    fields = {"ORDID": sms_id, "CNRID": "10001", "RESCOUNT": "1", "STATUS": status}
    return {**fields, "FINALTIME": "29.11.2026 10:15:30", **extra}


def test_the_table_is_the_manuals():
    table = {code: (str(status), error) for code, (status, error, _) in CALLBACK_STATUSES.items()}
    assert table == {code: (str(status), error) for code, (status, error) in SPEC.items()}
    assert all(isinstance(meaning, Promise) for *_, meaning in CALLBACK_STATUSES.values())


@pytest.mark.parametrize("code", sorted(SPEC, key=int))
def test_every_status_code_through_the_endpoint(client, message, code):
    response = post(client, report(code))
    assert (response.status_code, response.content) == (200, b"OK")
    message.refresh_from_db()
    assert (message.status, message.error_code) == SPEC[code]
    if code == "2":
        assert message.delivered_at == datetime(2026, 11, 29, 10, 15, 30, tzinfo=UTC)
        assert message.error_message == ""
    else:
        assert message.error_message.startswith("Not delivered: ")
        assert str(CALLBACK_STATUSES[code][2]) in message.error_message
    event = message.events.get()
    assert (event.source, event.payload["STATUS"]) == ("callback", code)


def test_an_unknown_status_is_undelivered_naming_it(client, message):
    post(client, report("99"))
    message.refresh_from_db()
    assert (message.status, message.error_code) == (M.UNDELIVERED, "status_99")
    assert "unknown status 99" in message.error_message


def test_json_and_query_string_callbacks_are_read(client, message):
    body = json.dumps(report("5"))
    assert client.post(URL, body, content_type="application/json").status_code == 200
    message.refresh_from_db()
    assert message.status == M.UNDELIVERED
    other = Message.objects.create(
        phone="+79001234213", provider="beeline", status=M.SENT, provider_message_id="77"
    )
    assert client.post(f"{URL}?{urlencode(report('2', '77'))}").status_code == 200
    other.refresh_from_db()
    assert other.status == M.DELIVERED


@pytest.mark.parametrize(
    "fields", [{"STATUS": "2"}, {"ORDID": "1"}, {"ORDID": " ", "STATUS": "2"}, {}]
)
def test_callbacks_without_ordid_or_status_are_400(client, message, fields):
    assert post(client, fields).status_code == 400
    message.refresh_from_db()
    assert message.status == M.SENT


def test_a_body_that_is_neither_form_nor_json_is_400(client, message):
    assert client.post(URL, b"\xff\xfe", content_type="text/plain").status_code == 400


def test_repeated_unknown_and_wrong_token_reports(client, message):
    assert post(client, report("2")).status_code == 200
    assert post(client, report("5")).status_code == 200  # the first final status wins
    assert post(client, report("2", sms_id="999")).status_code == 200  # unknown: logged
    wrong = reverse("crm_sms:callback", kwargs={"provider": "beeline", "token": "guess"})
    assert post(client, report("5"), url=wrong).status_code == 404
    message.refresh_from_db()
    assert message.status == M.DELIVERED
    assert MessageEvent.objects.count() == 1


# --- a live round trip -------------------------------------------------------------------


@pytest.fixture
def live_sandbox(live_server, transactional_db, settings):
    sandbox = SandboxServer(provider="beeline", callback_delay=0.3, deliver_rate=1.0).start()
    sandbox.provider.callback_url = live_server.url + URL  # the cabinet's setting
    settings.CRM_SMS = {
        "PROVIDERS": {"beeline": parse_sms_url(sandbox.sms_url("Shop"))},
        "DEFAULT_PROVIDER": "beeline",
        "CALLBACK_TOKEN": TOKEN,
    }
    yield sandbox
    sandbox.stop()


def test_outbox_sends_and_beelines_callbacks_deliver(live_sandbox):
    from crm_sms.outbox import dispatch_due, send_sms

    messages = [send_sms(f"+7900765430{i}", "Ваш код 1234") for i in range(3)]
    assert dispatch_due()["sent"] == 3
    assert live_sandbox.wait_for_callbacks(3, timeout=10)
    assert {c["status"] for c in live_sandbox.callbacks_sent} == {200}
    for message in messages:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message.refresh_from_db()
            if message.status == M.DELIVERED:
                break
            time.sleep(0.05)
        assert message.status == M.DELIVERED
        assert message.events.filter(source="callback").count() == 1
