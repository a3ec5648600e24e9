"""Twilio's signed webhooks: the signature, status callbacks (directly and through the callback
endpoint), incoming messages (``parse_inbound``), and a live round trip with the sandbox."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from django.test import RequestFactory
from django.urls import reverse

from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus
from crm_sms.backends.twilio import (
    EMPTY_TWIML,
    InboundMessage,
    TwilioBackend,
    signature,
    signature_urls,
)
from crm_sms.backends.twilio_codes import ERRORS
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import CallbackError, CallbackForbidden
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.sandbox import SandboxServer
from crm_sms.sandbox.twilio import twilio_signature

D, M = DeliveryStatus, MessageStatus
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "auth-token-for-tests"
PATH = reverse("crm_sms:callback", kwargs={"provider": "twilio", "token": "tw-token"})

# twilio-python's published test vectors (tests/unit/test_request_validator.py).
VECTOR_TOKEN = "12345"
VECTOR_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
VECTOR_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}


@pytest.fixture(autouse=True)
def _hosts(settings):
    settings.ALLOWED_HOSTS = ["crm.example.com", "10.0.0.5", "testserver", "127.0.0.1", "localhost"]


def backend(**options) -> TwilioBackend:
    return TwilioBackend("twilio", {"account_sid": SID, "auth_token": TOKEN, **options})


def signed(url: str, params: dict | list, token: str = TOKEN, seen_as: str = "", **headers):
    """A form POST signed as Twilio signs it for ``url``, built by Django's RequestFactory as
    the site receives it at ``seen_as`` (default: ``url`` itself)."""
    items = list(params.items()) if isinstance(params, dict) else list(params)
    scheme, _, rest = (seen_as or url).partition("://")
    host, _, path = rest.partition("/")
    secure = scheme == "https"
    headers = {"X-Twilio-Signature": signature(token, url, items), **headers}
    return RequestFactory().post(
        "/" + path,
        urlencode(items),
        content_type="application/x-www-form-urlencoded",
        headers=headers,
        secure=secure,
        SERVER_NAME=host.split(":")[0],
        SERVER_PORT=host.split(":")[1] if ":" in host else ("443" if secure else "80"),
    )


def status_form(status="delivered", sid="SM" + "a" * 32, **extra) -> dict:
    return {
        "AccountSid": SID,
        "ApiVersion": "2010-04-01",
        "From": "+15005550006",
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": "+15005550001",
        **extra,
    }


# --- the signature ----------------------------------------------------------------------------


def test_signature_matches_twilio_pythons_vector():
    items = list(VECTOR_PARAMS.items())
    assert signature(VECTOR_TOKEN, VECTOR_URL, items) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    # the sandbox's own implementation agrees
    assert twilio_signature(VECTOR_TOKEN, VECTOR_URL, VECTOR_PARAMS) == (
        "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    )


def test_repeated_parameters_are_sorted_by_value_too():
    form = QueryDict("Sid=CA123&SidAccount=AC123&Digits=5678&Digits=1234")
    items = [(k, v) for k, values in form.lists() for v in values]
    assert signature(VECTOR_TOKEN, VECTOR_URL, items) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_signature_urls_add_and_remove_the_default_port():
    assert signature_urls("https://mycompany.com/a?b=1") == [
        "https://mycompany.com/a?b=1",
        "https://mycompany.com:443/a?b=1",
    ]
    assert signature_urls("http://h.example:8000/a") == [
        "http://h.example:8000/a",
        "http://h.example/a",
    ]
    # twilio-python's vector for the URL with :443
    with_port = signature_urls(VECTOR_URL)[1]
    items = list(VECTOR_PARAMS.items())
    assert signature(VECTOR_TOKEN, with_port, items) == "kvajT1Ptam85bY51eRf/AJRuM3w="


# --- status callbacks -------------------------------------------------------------------------

URL = "https://crm.example.com" + PATH + "?msg_id=Ab12Cd34Ef56Gh78"


@pytest.mark.parametrize(
    "status, expected",
    [
        ("queued", D.SENT),
        ("sending", D.SENT),
        ("sent", D.SENT),
        ("delivered", D.DELIVERED),
        ("read", D.DELIVERED),
        ("undelivered", D.UNDELIVERED),
        ("failed", D.FAILED),
        ("canceled", D.FAILED),
    ],
)
def test_each_callback_status(status, expected):
    [report] = backend().parse_callback(signed(URL, status_form(status)))
    assert report.status is expected
    assert report.msg_id == "Ab12Cd34Ef56Gh78"  # from the URL we gave Twilio
    assert report.provider_message_id == "SM" + "a" * 32
    assert report.raw["AccountSid"] == "***"


def test_delivered_time_comes_from_the_receipt():
    form = status_form("delivered", RawDlrDoneDate="2611291435")
    [report] = backend().parse_callback(signed(URL, form))
    assert report.delivered_at == datetime(2026, 11, 29, 14, 35, tzinfo=UTC)
    [report] = backend().parse_callback(signed(URL, status_form("delivered", RawDlrDoneDate="x")))
    assert report.delivered_at is None  # the endpoint then takes the time of arrival


def test_an_undelivered_report_names_the_error():
    [report] = backend().parse_callback(signed(URL, status_form("undelivered", ErrorCode="30007")))
    assert (report.status, report.error_code) == (D.UNDELIVERED, "30007")
    assert report.error_message == str(ERRORS[30007][1])
    [report] = backend().parse_callback(signed(URL, status_form("failed")))
    assert (report.error_code, report.error_message) == (
        "failed",
        "failed: Twilio could not send it",
    )


def test_an_incoming_messages_status_makes_no_report():
    assert backend().parse_callback(signed(URL, status_form("received"))) == []


@pytest.mark.parametrize(
    "request_factory",
    [
        lambda: signed(URL, status_form(), token="someone-elses-token"),
        lambda: signed(URL, status_form(), **{"X-Twilio-Signature": "AAAA"}),
        # a signature for one message's URL replayed with another msg_id
        lambda: signed(URL, status_form(), seen_as=URL.replace("Ab12", "Zz99")),
    ],
    ids=["wrong-token", "garbage", "other-msg-id"],
)
def test_forged_callbacks_are_refused(request_factory):
    with pytest.raises(CallbackForbidden):
        backend().parse_callback(request_factory())


def test_a_changed_field_breaks_the_signature():
    request = signed(URL, status_form("undelivered"))
    body = request.body.replace(b"undelivered", b"delivered")
    forged = RequestFactory().post(
        request.get_full_path(),
        body,
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": request.headers["X-Twilio-Signature"]},
        secure=True,
        SERVER_NAME="crm.example.com",
        SERVER_PORT="443",
    )
    with pytest.raises(CallbackForbidden):
        backend().parse_callback(forged)


def test_no_signature_or_no_token_is_refused():
    request = signed(URL, status_form())
    del request.META["HTTP_X_TWILIO_SIGNATURE"]
    with pytest.raises(CallbackForbidden):
        backend().parse_callback(request)
    with pytest.raises(CallbackForbidden):
        backend(auth_token="").parse_callback(signed(URL, status_form(), token=""))


def test_a_port_twilio_left_out_or_added_still_verifies():
    request = signed("https://crm.example.com:443" + PATH + "?msg_id=x", status_form())
    request.META["SERVER_PORT"] = "443"  # Django omits the default port: the signed URL had it
    assert backend().parse_callback(request)


def test_behind_a_proxy_the_public_url_verifies(settings):
    """The site sees http://10.0.0.5:8000/…, Twilio signed https://crm.example.com/…"""
    settings.CRM_SMS = {"PUBLIC_URL": "https://crm.example.com/"}
    seen_as = URL.replace("https://crm.example.com", "http://10.0.0.5:8000")
    request = signed(URL, status_form(), seen_as=seen_as)
    assert request.build_absolute_uri() == seen_as
    assert backend().parse_callback(request)
    settings.CRM_SMS = {}
    with pytest.raises(CallbackForbidden):
        backend().parse_callback(request)


@pytest.mark.parametrize("missing", ["MessageSid", "MessageStatus"])
def test_a_signed_callback_without_the_essentials_is_malformed(missing):
    form = status_form()
    form.pop(missing)
    form.pop("SmsSid" if missing == "MessageSid" else "SmsStatus")
    with pytest.raises(CallbackError):
        backend().parse_callback(signed(URL, form))


# --- through the callback endpoint ------------------------------------------------------------


@pytest.fixture
def provider(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {
            "twilio": parse_sms_url(f"twilio://{SID}:{TOKEN}@api.twilio.com/?sender=Shop")
        },
        "DEFAULT_PROVIDER": "twilio",
        "CALLBACK_TOKEN": "tw-token",
        "PUBLIC_URL": "http://testserver",
    }


def post(client, url: str, form: dict, token: str = TOKEN):
    path = url.removeprefix("http://testserver")
    sig = signature(token, url, list(form.items()))
    return client.post(
        path,
        urlencode(form),
        content_type="application/x-www-form-urlencoded",
        headers={"X-Twilio-Signature": sig},
    )


@pytest.mark.django_db
def test_a_report_that_overtakes_the_send_result_finds_its_message(client, provider):
    """Matched by our msg_id in the URL: the provider's sid is not stored yet."""
    message = Message.objects.create(
        phone="+15005550001", text="Hi", provider="twilio", status=M.SENDING
    )
    url = f"http://testserver{PATH}?msg_id={message.msg_id}"
    response = post(client, url, status_form("undelivered", ErrorCode="30003"))
    assert (response.status_code, response.content) == (200, b"OK")
    message.refresh_from_db()
    assert (message.status, message.error_code) == (M.UNDELIVERED, "30003")
    assert message.provider_message_id == "SM" + "a" * 32
    assert post(client, url, status_form("undelivered"), token="forged").status_code == 403
    assert MessageEvent.objects.filter(source="callback").count() == 1


@pytest.mark.django_db
def test_a_report_without_our_msg_id_is_matched_by_the_sid(client, provider):
    message = Message.objects.create(
        phone="+15005550001",
        text="Hi",
        provider="twilio",
        status=M.SENT,
        provider_message_id="SM" + "a" * 32,
    )
    response = post(client, f"http://testserver{PATH}", status_form("delivered"))
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.status == M.DELIVERED


# --- incoming messages ------------------------------------------------------------------------

INBOUND_URL = "https://crm.example.com/sms/callback/twilio/tw-token/inbound/"


def inbound_form(**extra) -> dict:
    return {
        "AccountSid": SID,
        "ApiVersion": "2010-04-01",
        "Body": "STOP",
        "From": "+15005550001",
        "MessageSid": "SM" + "b" * 32,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsSid": "SM" + "b" * 32,
        "SmsStatus": "received",
        "To": "+15005550006",
        **extra,
    }


def test_parse_inbound():
    [message] = backend().parse_inbound(signed(INBOUND_URL, inbound_form(Body="Стоп, пожалуйста")))
    assert message == InboundMessage(
        from_phone="+15005550001",
        to="+15005550006",
        text="Стоп, пожалуйста",
        provider_message_id="SM" + "b" * 32,
        raw=message.raw,
    )
    assert message.raw["NumSegments"] == "1" and message.raw["AccountSid"] == "***"


def test_parse_inbound_refuses_a_forged_message():
    with pytest.raises(CallbackForbidden):
        backend().parse_inbound(signed(INBOUND_URL, inbound_form(), token="guess"))


@pytest.mark.parametrize("missing", ["From", "MessageSid"])
def test_parse_inbound_needs_sender_and_sid(missing):
    form = inbound_form()
    form.pop(missing)
    if missing == "MessageSid":
        form.pop("SmsSid")
    with pytest.raises(CallbackError):
        backend().parse_inbound(signed(INBOUND_URL, form))


def test_the_answer_to_an_incoming_message_is_empty_twiml():
    response = backend().inbound_response([])
    assert response.status_code == 200
    assert response["Content-Type"] == "text/xml; charset=utf-8"
    assert response.content.decode() == EMPTY_TWIML


def test_the_sandbox_posts_incoming_messages_twilio_style():
    with SandboxServer(provider="twilio", login=SID, password=TOKEN) as sandbox:
        body, headers = sandbox.provider.inbound_request(
            INBOUND_URL, "+15005550001", "+15005550006", "START"
        )
    request = RequestFactory().post(
        "/sms/callback/twilio/tw-token/inbound/",
        body,
        content_type=headers["Content-Type"],
        headers={"X-Twilio-Signature": headers["X-Twilio-Signature"]},
        secure=True,
        SERVER_NAME="crm.example.com",
        SERVER_PORT="443",
    )
    [message] = backend().parse_inbound(request)
    assert (message.from_phone, message.to, message.text) == (
        "+15005550001",
        "+15005550006",
        "START",
    )


# --- a live round trip ------------------------------------------------------------------------


def test_live_round_trip_through_the_outbox(live_server, transactional_db, settings):
    """send_sms -> the Twilio sandbox -> a signed callback to this site -> delivered/undelivered."""
    from crm_sms.outbox import dispatch_due, send_sms

    with SandboxServer(provider="twilio", login=SID, password=TOKEN, deliver_rate=1.0) as sandbox:
        settings.CRM_SMS = {
            "PROVIDERS": {"twilio": parse_sms_url(sandbox.sms_url("Shop"))},
            "DEFAULT_PROVIDER": "twilio",
            "CALLBACK_TOKEN": "tw-token",
            "PUBLIC_URL": live_server.url,
        }
        sandbox.configure(codes={"+15005550003": 30006})  # accepted, then undelivered
        messages = [send_sms(f"+1500555000{i}", "Hi") for i in (1, 2, 3)]
        assert dispatch_due()["sent"] == 3
        assert sandbox.wait_for_callbacks(3, timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if Message.objects.filter(status__in=(M.DELIVERED, M.UNDELIVERED)).count() == 3:
                break
            time.sleep(0.05)
        assert [c["status"] for c in sandbox.callbacks_sent] == [200, 200, 200]
        for message in messages:
            message.refresh_from_db()
        assert [m.status for m in messages] == [M.DELIVERED, M.DELIVERED, M.UNDELIVERED]
        assert messages[2].error_code == "30006"
        assert get_backend("twilio").retry_safety == "none"
