"""SMSC's signed callbacks through the endpoint, and live round trips with the SMSC emulator
(callbacks over real HTTP; polling through ``poll_statuses``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from crm_sms.conf import parse_sms_url
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.sandbox import SandboxServer
from crm_sms.sandbox.smsc import sign

S = MessageStatus
LOGIN, PASSWORD, TOKEN = "smsc-login", "smsc-password-1", "smsc-token"
URL = reverse("crm_sms:callback", kwargs={"provider": "smsc", "token": TOKEN})


@pytest.fixture
def sandbox():
    server = SandboxServer(provider="smsc", login=LOGIN, password=PASSWORD, callback_delay=0.3)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def provider(sandbox, settings):
    """CRM_SMS with provider "smsc" (also the default) pointing at the emulator."""
    settings.CRM_SMS = {
        "PROVIDERS": {"smsc": parse_sms_url(sandbox.sms_url("Shop"))},
        "DEFAULT_PROVIDER": "smsc",
        "CALLBACK_TOKEN": TOKEN,
    }
    return sandbox


@pytest.fixture
def message(db, provider):
    return Message.objects.create(
        phone="+79001234212",
        text="Hi",
        provider="smsc",
        status=S.SENT,
        provider_message_id="Ab12-79001234212",
    )


def callback(sent_id="Ab12", phone="79001234212", status="1", secret=PASSWORD, **extra):
    fields = {"id": sent_id, "phone": phone, "status": status, "err": "0", "ts": "1764320000"}
    fields.update(extra)
    fields.setdefault("md5", sign(sent_id, phone, status, secret))
    return fields


def post(client, fields, url=URL):
    return client.post(url, urlencode(fields), content_type="application/x-www-form-urlencoded")


def test_signed_delivered_report_is_applied(client, message):
    response = post(client, callback())
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.delivered_at == datetime.fromtimestamp(1764320000, UTC)
    event = message.events.get()
    assert event.source == "callback" and event.payload["id"] == "Ab12"
    assert "md5" not in event.payload


def test_undelivered_report_keeps_the_status_and_the_network_error(client, message):
    post(client, callback(status="22", err="249"))
    message.refresh_from_db()
    assert (message.status, message.error_code) == (S.UNDELIVERED, "22")
    assert "wrong number" in message.error_message and "249" in message.error_message
    assert message.delivered_at is None


def test_phone_with_a_plus_is_the_same_message(client, message):
    assert post(client, callback(phone="+79001234212")).status_code == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED


@pytest.mark.parametrize(
    "fields",
    [
        callback(md5="0" * 32),
        callback(secret="someone-else"),
        {k: v for k, v in callback().items() if k != "md5"},
        {**callback(), "status": "20"},  # the md5 covers the status
    ],
    ids=["zeros", "other-secret", "no-md5", "changed-status"],
)
def test_forged_reports_are_403_and_change_nothing(client, message, fields):
    assert post(client, fields).status_code == 403
    message.refresh_from_db()
    assert message.status == S.SENT
    assert not MessageEvent.objects.exists()


def test_callback_secret_option_signs_instead_of_the_password(client, message, settings):
    config = settings.CRM_SMS["PROVIDERS"]["smsc"]
    options = {**config["OPTIONS"], "callback_secret": "a-separate-secret"}
    settings.CRM_SMS = {**settings.CRM_SMS, "PROVIDERS": {"smsc": {**config, "OPTIONS": options}}}
    assert post(client, callback()).status_code == 403
    assert post(client, callback(secret="a-separate-secret")).status_code == 200


@pytest.mark.parametrize(
    "fields",
    [{"id": "Ab12", "phone": "79001234212"}, callback(status="x")],
    ids=["no-status", "status-not-a-number"],
)
def test_malformed_reports_are_400(client, message, fields):
    assert post(client, fields).status_code == 400


def test_not_found_sent_and_unknown_reports_are_200_without_change(client, message):
    assert post(client, callback(status="-3")).status_code == 200
    assert post(client, callback(status="0")).status_code == 200  # still on its way
    assert post(client, callback(sent_id="Zz99")).status_code == 200  # a message we do not know
    message.refresh_from_db()
    assert message.status == S.SENT
    assert not MessageEvent.objects.exists()


def test_wrong_url_token_is_404(client, message):
    url = reverse("crm_sms:callback", kwargs={"provider": "smsc", "token": "guess"})
    assert post(client, callback(), url=url).status_code == 404


def wait_for(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.05)
    return condition()


def test_outbox_sends_and_callbacks_deliver(live_server, transactional_db, provider):
    from crm_sms.outbox import dispatch_due, send_sms

    provider.provider.callback_url = live_server.url + URL
    messages = [send_sms(f"+7900765430{i}", "Hi") for i in range(3)]
    assert dispatch_due()["sent"] == 3
    assert provider.wait_for_callbacks(3)
    assert [c["status"] for c in provider.callbacks_sent] == [200] * 3
    assert wait_for(lambda: Message.objects.filter(status=S.DELIVERED).count() == 3)
    for message in messages:
        message.refresh_from_db()
        assert message.provider_message_id == f"{message.msg_id}-{message.phone[1:]}"
    assert provider.provider.duplicates == []


def test_polling_finds_final_statuses(transactional_db, provider):
    from crm_sms.outbox import dispatch_due, send_sms
    from crm_sms.polling import poll_statuses

    provider.configure(callback_delay=0.0, deliver_rate=1.0)  # no callback URL: polled
    messages = [send_sms(f"+7900765440{i}", "Hi") for i in range(2)]
    assert dispatch_due()["sent"] == 2
    counts = poll_statuses("smsc")
    assert (counts["checked"], counts["changed"], counts["errors"]) == (2, 2, 0)
    for message in messages:
        message.refresh_from_db()
        assert message.status == S.DELIVERED
        assert message.events.filter(source="poll").count() == 1
