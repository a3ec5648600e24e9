"""SMS4B's send side over loopback HTTP: against the sandbox's emulator, and a scripted server
for answers the emulator does not give."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
import requests
from django.core.exceptions import ValidationError
from django.utils.functional import Promise

from crm_sms.backends.base import OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.sms4b import ERRORS, Sms4bBackend
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ConfigurationError
from crm_sms.sandbox import SandboxServer
from tests.conformance import ConformanceSuite
from tests.fixtures_http import ScriptedServer

S = SendStatus
LOGIN, PASSWORD = "sms4b@login", "pa:ss w@rd&1"

#: The BSP's error codes, written out apart from ERRORS: code -> what the outbox must do.
SPEC = {
    0: S.RETRY,  # open sessions limit exceeded
    -1: S.PROVIDER_ERROR,  # wrong login or password
    -10: S.RETRY,  # service failure
    -20: S.RETRY,  # session failure
    -21: S.REJECTED,  # message not identified
    -22: S.REJECTED,  # invalid message id
    -29: S.REJECTED,  # spam filter
    -30: S.REJECTED,  # wrong encoding
    -31: S.REJECTED,  # tariff zone not allowed
    -50: S.PROVIDER_ERROR,  # wrong sender
    -51: S.REJECTED,  # recipient not allowed
    -52: S.PROVIDER_ERROR,  # no money
    -53: S.PROVIDER_ERROR,  # sender not registered
    -65: S.PROVIDER_ERROR,  # sender guarantees needed
    -66: S.PROVIDER_ERROR,  # no sender
    -68: S.PROVIDER_ERROR,  # account blocked
}


@pytest.fixture
def sandbox():
    server = SandboxServer(provider="sms4b", login=LOGIN, password=PASSWORD, callbacks=False)
    server.start()
    yield server
    server.stop()


def backend_for(url: str) -> Sms4bBackend:
    config = parse_sms_url(url)
    assert config["BACKEND"] == "crm_sms.backends.sms4b.Sms4bBackend"
    return Sms4bBackend("default", config["OPTIONS"])


@pytest.fixture
def backend(sandbox):
    backend = backend_for(sandbox.sms_url("Shop"))
    yield backend
    backend.close()


def sms(n: int = 1, text: str = "Привет, мир", **fields) -> OutgoingSMS:
    values = {"to": f"+7900123{n:04d}", "text": text, "sender": "", "msg_id": f"msgid{n:011d}"}
    return OutgoingSMS(**{**values, **fields})


def form(record) -> list[tuple[str, str]]:
    return parse_qsl(record.body.decode("ascii"), keep_blank_values=True)


# --- configuration ------------------------------------------------------------------------


def test_the_url_fills_the_options(backend, sandbox):
    assert (backend.login, backend.password, backend.default_sender) == (LOGIN, PASSWORD, "Shop")
    assert backend.method_url("SendTXT") == f"{sandbox.base_url}/ws/s1c.asmx/SendTXT"
    assert type(backend).retry_safety is RetrySafety.NONE
    assert backend.max_batch_size == 1 and not backend.supports_callbacks
    assert LOGIN not in repr(backend) and PASSWORD not in repr(backend)


def test_the_default_address_and_a_url_with_its_own_path():
    default = backend_for("sms4b://u:p@sms4b.ru/?sender=Shop")
    assert default.method_url("StatusTXT") == "https://sms4b.ru/ws/s1c.asmx/StatusTXT"
    other = Sms4bBackend("x", {"base_url": "https://sms4b.ru/ws/other.asmx/"})
    assert other.method_url("SendTXT") == "https://sms4b.ru/ws/other.asmx/SendTXT"


@pytest.mark.parametrize("query", ["max_text_length=0", "max_text_length=x", "source=Shop"])
def test_bad_options_are_refused_naming_the_variable(query):
    with pytest.raises(ConfigurationError, match="SMS_URL"):
        backend_for(f"sms4b://u:p@sms4b.ru/?{query}")


def test_check(backend):
    assert backend.check() == []
    remote = Sms4bBackend("x", {"base_url": "http://sms4b.example.com", "login": "u"})
    assert [p.id for p in remote.check()] == ["crm_sms.E010", "crm_sms.W010", "crm_sms.W011"]
    assert "SMS_URL_X" in remote.check()[0].hint and "-66" in remote.check()[1].msg


# --- the request and its answer ------------------------------------------------------------


def test_the_request_on_the_wire(backend, sandbox):
    result = backend.send(sms())
    assert result.status is S.ACCEPTED, result
    [record] = sandbox.requests
    assert (record.method, record.path) == ("POST", "/ws/s1c.asmx/SendTXT")
    assert record.header("Content-Type") == "application/x-www-form-urlencoded"
    assert form(record) == [
        ("Login", LOGIN),
        ("Password", PASSWORD),
        ("Source", "Shop"),
        ("Phone", "79001230001"),
        ("Text", "Привет, мир"),
    ]


def test_accepted_is_the_20_character_id(backend, sandbox):
    result = backend.send(sms(text="Hello", sender="Other"))
    assert len(result.provider_message_id) == 20
    stored = sandbox.accepted[result.provider_message_id]
    assert (stored["phone"], stored["text"], stored["source"]) == ("79001230001", "Hello", "Other")
    assert result.raw == {"answer": result.provider_message_id}
    assert not result.ambiguous


@pytest.mark.parametrize(
    "message, code",
    [
        (sms(to="+7900"), "invalid_phone"),
        (sms(text=" "), "empty_text"),
        (sms(text="x" * 481), "text_too_long"),
        (sms(sender="TwelveLetter"), "sender_too_long"),
    ],
)
def test_what_sms4b_would_refuse_is_refused_without_a_request(backend, sandbox, message, code):
    result = backend.send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert sandbox.requests == []


def test_the_sender_is_required_and_the_text_limit_is_an_option(sandbox):
    backend = backend_for(sandbox.sms_url("") + "&max_text_length=600")
    assert backend.send(sms()).error_code == "sender_empty"
    assert backend.send(sms(text="x" * 600, sender="Shop")).status is S.ACCEPTED
    with pytest.raises(ValidationError):
        backend.validate_sender("A" * 12)
    backend.validate_sender("+79001234212")


# --- the error table, row by row ---------------------------------------------------------


def test_the_table_is_the_bsps():
    assert {code: status for code, (status, _) in ERRORS.items()} == SPEC
    assert all(isinstance(meaning, Promise) for _, meaning in ERRORS.values())


@pytest.mark.parametrize("code", sorted(SPEC))
def test_every_error_code(backend, sandbox, code):
    message = sms()
    sandbox.configure(codes={message.to: code})
    result = backend.send(message)
    assert (result.status, result.error_code) == (SPEC[code], str(code))
    assert result.error_message == str(ERRORS[code][1])
    assert (result.raw, result.ambiguous) == ({"answer": str(code)}, False)
    assert sandbox.accepted == {}


def test_an_unknown_code_is_a_refusal_naming_it(backend, sandbox):
    sandbox.configure(codes={"+79001230001": -77})
    result = backend.send(sms())
    assert (result.status, result.error_code) == (S.REJECTED, "-77")
    assert result.error_message == "SMS4B error code -77."


def test_the_emulator_answers_like_an_asmx_service(sandbox):
    url = sandbox.base_url + "/ws/s1c.asmx/SendTXT"
    fields = {"Login": LOGIN, "Password": PASSWORD, "Source": "", "Phone": "7900", "Text": "x"}
    assert "<string" in requests.post(url, data=fields, timeout=5).text
    assert ">-66</string>" in requests.post(url, data=fields, timeout=5).text
    missing = requests.post(url, data={"Login": LOGIN}, timeout=5)
    assert (missing.status_code, missing.text) == (500, "Missing parameter: Password.")
    wrong = requests.post(url, data={**fields, "Password": "x", "Source": "S"}, timeout=5)
    assert ">-1</string>" in wrong.text


# --- a scripted server ---------------------------------------------------------------------


@pytest.fixture
def scripted():
    """A ScriptedServer answering every request with its ``answer``: (status, body bytes);
    ``url`` is its SMS_URL."""
    server = ScriptedServer((200, b""), content_type=None)
    server.url = f"sms4b+http://u:p@{server.address}/?sender=Shop"
    yield server
    server.close()


@pytest.mark.parametrize(
    "body, status, provider_id",
    [
        (
            '<string xmlns="SMS4B">\n  ABCDEFGHIJ0123456789 </string>',
            S.ACCEPTED,
            "ABCDEFGHIJ0123456789",
        ),
        ("<string>-52</string>", S.PROVIDER_ERROR, ""),
        ('<?xml version="1.0"?><string xmlns="http://tempuri.org/">0</string>', S.RETRY, ""),
    ],
)
def test_string_answers_with_any_namespace(scripted, body, status, provider_id):
    scripted.answer = (200, body.encode())
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.provider_message_id) == (status, provider_id)


@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b"<string>short-id</string>",
        b"<string/>",
        b"<html><body>maintenance</body></html>",
        b'<!DOCTYPE string [<!ENTITY a "aaaaaaaaaaaaaaaaaaaa">]><string>&a;</string>',
    ],
    ids=["text", "not-an-id", "empty", "html", "entity"],
)
def test_what_is_not_an_answer_is_an_ambiguous_retry(scripted, body):
    scripted.answer = (200, body)
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.error_code, result.ambiguous) == (S.RETRY, "bad_response", True)


@pytest.mark.parametrize("status, kind", [(500, S.RETRY), (404, S.PROVIDER_ERROR)])
def test_http_errors_are_judged_by_their_status(scripted, status, kind):
    scripted.answer = (status, b"<string>-1</string>")
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.error_code) == (kind, f"http_{status}")
    assert result.ambiguous is (status == 500)


# --- the conformance suite -----------------------------------------------------------------


class TestSms4bConformance(ConformanceSuite):
    emulator = "sms4b"
    refused_code = -51  # the recipient is not allowed
    throttled_code = "0"  # the open sessions limit
    provider_error_code = "-1"  # wrong login or password
    report_modes = ("poll",)
