"""The provider toolkit: a site's own backend on ``HTTPBackend``, configured by its own scheme.

``AcmeBackend`` below is what a new provider module looks like: declared options, the
request format, the answer parsing and a code table; the transport failures, credentials
scrubbing and the scheme registry are the toolkit's. Tested over real HTTP on loopback.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest
from django.core.exceptions import ValidationError

from crm_sms.backends import get_backend, provider_choices
from crm_sms.backends.base import OutgoingSMS, SendResult, SendStatus
from crm_sms.backends.http import Answer, HTTPBackend, HTTPRequest
from crm_sms.backends.options import Option
from crm_sms.conf import parse_sms_url, settings_from_env
from crm_sms.exceptions import ConfigurationError, ProviderError
from tests.fixtures_http import ScriptedServer

KEY, SECRET = "acme-key-0001", "acme-secret-0002"

#: Acme's error codes -> what the outbox does.
ACME_ERRORS = {
    "bad_number": SendStatus.REJECTED,
    "busy": SendStatus.RETRY,
    "no_money": SendStatus.PROVIDER_ERROR,
}


class AcmeBackend(HTTPBackend):
    """A made-up provider: JSON in, ``{"ok": true, "id": ...}`` or ``{"error": code}`` out."""

    display_name = "Acme"
    default_base_url = "https://api.acme.example"
    declared_options = (
        Option("key", str, "", "the API key (the URL's user)", secret=True),
        Option("secret", str, "", "the API secret (the URL's password)", secret=True),
        Option("priority", int, 1, "1-3", minimum=1),
        Option("flash", bool, False, "show on the screen, do not store"),
    )
    url_user_option = "key"
    url_password_option = "secret"

    def configure_session(self, session):
        session.headers["X-Key"] = f"{self.options['key']}:{self.options['secret']}"

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        [sms] = messages
        if not sms.to.startswith("+"):
            raise ValidationError("not international", code="invalid_phone")
        payload = {"to": sms.to, "text": sms.text, "id": sms.msg_id}
        payload["priority"] = self.options["priority"]
        return HTTPRequest(self.base_url + "/send", json=payload)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        data = answer.data
        if not isinstance(data, dict):
            return None
        if data.get("ok"):
            return [SendResult(SendStatus.ACCEPTED, provider_message_id=data["id"], raw=data)]
        code = str(data.get("error"))
        status = ACME_ERRORS.get(code, SendStatus.REJECTED)
        return [SendResult(status, error_code=code, error_message=data.get("text", ""), raw=data)]


class Server(ScriptedServer):
    """Answers each POST with ``answer(body)``: (status, bytes or dict), "drop", or a sleep."""

    def __init__(self):
        super().__init__(lambda body: (200, {"ok": True, "id": "A-1"}), content_type=None)

    def url(self, query: str = "") -> str:
        return f"acme+http://{KEY}:{SECRET}@{self.address}/{query}"


@pytest.fixture
def acme(settings):
    """An Acme server, configured as the default provider through SMS_URL and SCHEMES."""
    server = Server()
    providers = settings_from_env({"SMS_URL": server.url("?sender=Shop&read_timeout=0.3")})
    settings.CRM_SMS = {"SCHEMES": {"acme": "tests.test_http_backend.AcmeBackend"}, **providers}
    yield server
    server.close()


def sms(to="+79001234212", msg_id="m1") -> OutgoingSMS:
    return OutgoingSMS(to=to, text="Hello", sender="", msg_id=msg_id)


def assert_no_secrets(*things):
    for thing in things:
        text = repr(thing) + str(thing)
        assert KEY not in text and SECRET not in text, text


# --- the scheme registry and options --------------------------------------------------------


def test_a_site_scheme_configures_like_a_builtin(acme):
    backend = get_backend()
    assert isinstance(backend, AcmeBackend)
    assert (backend.options["key"], backend.options["secret"]) == (KEY, SECRET)
    assert backend.default_sender == "Shop" and backend.read_timeout == 0.3
    assert backend.base_url == f"http://{acme.address}"
    assert provider_choices() == [("default", "default (Acme)")]


def test_the_site_scheme_is_kept_as_a_url_until_the_settings_exist():
    # settings_from_env runs before CRM_SMS (and its SCHEMES) exist: the URL waits.
    providers = settings_from_env({"SMS_URL": "acme://k:s@api.acme.example/"})["PROVIDERS"]
    assert providers == {"default": {"URL": "acme://k:s@api.acme.example/"}}


def test_schemes_given_to_settings_from_env_are_resolved_at_once():
    result = settings_from_env(
        {"SMS_URL": "acme://k:s@api.acme.example/?priority=2"},
        schemes={"acme": AcmeBackend},
    )
    assert result["PROVIDERS"]["default"] == {
        "BACKEND": "tests.test_http_backend.AcmeBackend",
        "OPTIONS": {
            "key": "k",
            "secret": "s",
            "base_url": "https://api.acme.example",
            "priority": "2",
        },
    }


def test_options_are_converted_and_defaults_filled():
    backend = AcmeBackend("x", {"key": "k", "priority": "3", "flash": "yes"})
    assert (backend.options["priority"], backend.options["flash"]) == (3, True)
    assert backend.pool_size == 32 and backend.base_url == "https://api.acme.example"
    assert set(AcmeBackend.option_table()) >= {"sender", "base_url", "read_timeout", "key"}


@pytest.mark.parametrize(
    "options, words",
    [
        ({"priorty": "2"}, "has no option 'priorty' (did you mean 'priority'?)"),
        ({"priority": "high"}, "priority='high' is not a number"),
        ({"priority": "0"}, "must be at least 1"),
        ({"flash": "maybe"}, "is not a yes/no value"),
    ],
)
def test_bad_options_name_the_variable(options, words):
    with pytest.raises(ConfigurationError) as info:
        AcmeBackend("bulk", options)
    assert "SMS_URL_BULK" in str(info.value) and words in str(info.value)


def test_an_ill_typed_secret_is_not_shown():
    class Strict(AcmeBackend):
        declared_options = (Option("pin", int, 0, "a numeric secret", secret=True),)

    with pytest.raises(ConfigurationError) as info:
        Strict("x", {"pin": "hunter2"})
    assert "hunter2" not in str(info.value) and "pin=***" in str(info.value)


def test_credentials_in_base_url_move_to_their_options():
    backend = AcmeBackend("x", {"base_url": f"https://{KEY}:{SECRET}@api.acme.example"})
    assert (backend.options["key"], backend.options["secret"]) == (KEY, SECRET)
    assert_no_secrets(backend)


def test_a_scheme_without_user_option_refuses_credentials_in_the_url(settings):
    settings.CRM_SMS = {"SCHEMES": {"plain": "crm_sms.backends.console.ConsoleBackend"}}
    with pytest.raises(ConfigurationError, match="takes no user"):
        parse_sms_url("plain://someone@host/")


# --- the shared steps -----------------------------------------------------------------------


def test_accepted_over_the_wire(acme):
    result = get_backend().send(sms())
    assert (result.status, result.provider_message_id) == (SendStatus.ACCEPTED, "A-1")
    [request] = acme.requests
    assert request["body"] == b'{"to":"+79001234212","text":"Hello","id":"m1","priority":1}'
    assert request["headers"]["Content-Type"] == "application/json; charset=utf-8"
    assert request["headers"]["X-Key"] == f"{KEY}:{SECRET}"


@pytest.mark.parametrize(
    "answer, status, code",
    [
        ((200, {"error": "bad_number"}), SendStatus.REJECTED, "bad_number"),
        ((200, {"error": "busy"}), SendStatus.RETRY, "busy"),
        ((200, {"error": "no_money"}), SendStatus.PROVIDER_ERROR, "no_money"),
        ((200, b"<html>maintenance</html>"), SendStatus.RETRY, "bad_response"),
        ((503, b"busy"), SendStatus.RETRY, "http_503"),
        ((401, b""), SendStatus.PROVIDER_ERROR, "http_401"),
        ((404, b"nope"), SendStatus.PROVIDER_ERROR, "http_404"),
        ((302, b""), SendStatus.PROVIDER_ERROR, "http_302"),
        ((429, b"slow"), SendStatus.RETRY, "http_429"),
        ((400, b"bad"), SendStatus.REJECTED, "http_400"),
        ("drop", SendStatus.RETRY, "connection_error"),
    ],
)
def test_every_answer_becomes_a_send_result(acme, answer, status, code):
    acme.answer = lambda body: answer
    result = get_backend().send(sms())
    assert (result.status, result.error_code) == (status, code)
    if code.startswith("http_") or code == "bad_response":
        assert result.error_message.startswith(("Acme", "The address of Acme"))


def test_a_timeout_is_retry_and_names_the_seconds(acme):
    acme.answer = lambda body: time.sleep(1) or (200, {"ok": True, "id": "late"})
    result = get_backend().send(sms())
    assert (result.status, result.error_code) == (SendStatus.RETRY, "timeout")
    assert "0.3 s" in result.error_message


def test_a_refused_connection_is_retry(settings):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = AcmeBackend("x", {"base_url": f"http://127.0.0.1:{port}"})
    result = backend.send(sms())
    assert (result.status, result.error_code) == (SendStatus.RETRY, "connection_error")


def test_a_validation_error_sends_nothing(acme):
    result = get_backend().send(sms(to="89001234212"))
    assert (result.status, result.error_code) == (SendStatus.REJECTED, "invalid_phone")
    assert acme.requests == []


def test_send_many_makes_one_request_per_message_in_order(acme):
    acme.answer = lambda body: (200, {"ok": True, "id": json.loads(body)["id"].upper()})
    results = get_backend().send_many([sms(msg_id=f"m{i}") for i in range(5)])
    assert [r.provider_message_id for r in results] == [f"M{i}" for i in range(5)]


@pytest.mark.parametrize(
    "answer",
    [
        lambda body: (200, {"error": "no_money", "text": f"key {KEY} has no money"}),
        lambda body: (500, f"echo {KEY} {SECRET}".encode()),
        lambda body: (200, f"<html>{SECRET}</html>".encode()),
        lambda body: "drop",
    ],
    ids=["code-text", "5xx-echo", "html", "drop"],
)
def test_credentials_never_leave_the_backend(acme, caplog, answer):
    acme.answer = answer
    with caplog.at_level(logging.DEBUG):
        result = get_backend().send(sms())
    assert_no_secrets(result, result.raw, result.error_message, get_backend(), caplog.text)


def test_post_raises_provider_error_for_queries(acme):
    """What a status query sees: the failure as an exception, with its SendResult."""
    acme.answer = lambda body: (502, b"bad gateway")
    backend = get_backend()
    with pytest.raises(ProviderError) as info:
        backend.post(HTTPRequest(backend.base_url + "/status", data={"id": "1"}))
    assert info.value.result.error_code == "http_502"
    assert "502" in str(info.value)


def test_a_bad_base_url_is_shown_without_its_credentials():
    with pytest.raises(ConfigurationError) as info:
        AcmeBackend("x", {"base_url": f"ftp://{KEY}:{SECRET}@api.acme.example"})
    assert "is not an http(s) URL" in str(info.value)
    assert_no_secrets(str(info.value))
