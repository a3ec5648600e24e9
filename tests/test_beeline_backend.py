"""Beeline's send side over loopback HTTP: against the sandbox's emulator, and a scripted server
for answers the emulator does not give (old code-less errors, gzip, hostile XML)."""

from __future__ import annotations

import gzip
import socket
from urllib.parse import parse_qsl, quote

import pytest
import requests
from django.utils.functional import Promise

from crm_sms.backends.base import OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.beeline import ERROR_TEXTS, ERRORS, BeelineBackend
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ConfigurationError
from crm_sms.sandbox import SandboxServer
from tests.conformance import ConformanceSuite
from tests.fixtures_http import ScriptedServer

S = SendStatus
LOGIN, PASSWORD = "bee:l@ne", "p@ss:w/rd%41"

#: The manual's error codes, written out apart from ERRORS: code -> what the outbox must do.
SPEC = {
    20107: S.PROVIDER_ERROR,  # wrong login or password
    20117: S.REJECTED,  # a malformed number
    20148: S.REJECTED,  # no product for the number
    20154: S.RETRY,  # transport (database) error
    20158: S.REJECTED,  # blacklisted
    20167: S.REJECTED,  # same text to the same number within N minutes
    20170: S.REJECTED,  # too long
    20171: S.REJECTED,  # censorship
    20200: S.REJECTED,  # invalid request
    20202: S.REJECTED,  # no inbox
    20203: S.REJECTED,  # no target
    20204: S.REJECTED,  # no phones for the group
    20207: S.REJECTED,  # date format
    20208: S.REJECTED,  # date range reversed
    20209: S.REJECTED,  # empty request
    20211: S.RETRY,  # too high a rate
    20212: S.REJECTED,  # date range too long
    20213: S.REJECTED,  # invalid numbers
    20218: S.PROVIDER_ERROR,  # several targets not allowed for the account
    20230: S.REJECTED,  # sender not approved by the subscriber's operator
    20280: S.PROVIDER_ERROR,  # daily limit
    20281: S.PROVIDER_ERROR,  # monthly limit
}


@pytest.fixture
def sandbox():
    server = SandboxServer(provider="beeline", login=LOGIN, password=PASSWORD, callbacks=False)
    server.start()
    yield server
    server.stop()


def backend_for(url: str, alias: str = "default") -> BeelineBackend:
    """The backend an SMS_URL configures (as a site's settings would)."""
    config = parse_sms_url(url)
    assert config["BACKEND"] == "crm_sms.backends.beeline.BeelineBackend"
    return BeelineBackend(alias, config["OPTIONS"])


@pytest.fixture
def backend(sandbox):
    backend = backend_for(sandbox.sms_url("Shop"))
    yield backend
    backend.close()


@pytest.fixture
def batching(sandbox):
    backend = backend_for(sandbox.sms_url("Shop") + "&batch_size=10")
    yield backend
    backend.close()


def sms(n: int = 1, text: str = "Привет, мир", **fields) -> OutgoingSMS:
    values = {"to": f"+7900123{n:04d}", "text": text, "sender": "", "msg_id": f"msgid{n:011d}"}
    return OutgoingSMS(**{**values, **fields})


def form(record) -> list[tuple[str, str]]:
    return parse_qsl(record.body.decode("ascii"), keep_blank_values=True)


def refuse(sandbox, message: OutgoingSMS, code: int) -> None:
    sandbox.configure(codes={**sandbox.codes, message.to: code})


# --- configuration ------------------------------------------------------------------------


def test_the_url_fills_the_options(backend, sandbox):
    assert (backend.user, backend.password) == (LOGIN, PASSWORD)
    assert backend.default_sender == "Shop"
    assert backend.api_url == f"{sandbox.base_url}/proto/http/"
    assert backend.max_batch_size == 1
    assert type(backend).retry_safety is RetrySafety.NONE
    assert LOGIN not in repr(backend) and PASSWORD not in repr(backend)


def test_the_default_address_and_a_url_with_its_own_path():
    default = backend_for("beeline://u:p@a2p-sms-https.beeline.ru/?sender=Shop")
    assert default.api_url == "https://a2p-sms-https.beeline.ru/proto/http/"
    old = BeelineBackend("x", {"base_url": "https://beeline.amega-inform.ru/sendsms"})
    assert old.api_url == "https://beeline.amega-inform.ru/sendsms/"


@pytest.mark.parametrize("query", ["batch_size=101", "batch_size=0", "batch=5", "user_name=x"])
def test_bad_options_are_refused_naming_the_variable(query):
    with pytest.raises(ConfigurationError, match="SMS_URL"):
        backend_for(f"beeline://u:p@a2p-sms-https.beeline.ru/?{query}")


def test_check_names_missing_credentials_and_plain_http(backend):
    assert backend.check() == []  # the sandbox is on loopback
    remote = BeelineBackend("x", {"base_url": "http://sms.example.com", "user": "u"})
    ids = [problem.id for problem in remote.check()]
    assert ids == ["crm_sms.E010", "crm_sms.W011"]
    assert "password" in remote.check()[0].msg and "SMS_URL_X" in remote.check()[0].hint
    long_sender = BeelineBackend("x", {"user": "u", "password": "p", "sender": "A" * 12})
    assert [problem.id for problem in long_sender.check()] == ["crm_sms.E004"]


# --- the request and its answer ------------------------------------------------------------


def test_the_request_on_the_wire(backend, sandbox):
    message = sms()
    result = backend.send(message)
    assert result.status is S.ACCEPTED, result
    [record] = sandbox.requests
    assert (record.method, record.path) == ("POST", "/proto/http/")
    assert record.header("Content-Type") == "application/x-www-form-urlencoded"
    assert form(record) == [
        ("user", LOGIN),
        ("pass", PASSWORD),
        ("gzip", "none"),
        ("action", "post_sms"),
        ("message", "Привет, мир"),
        ("target", "+79001230001"),
        ("sender", "Shop"),
        ("post_id", message.msg_id),
    ]
    assert b"message=%D0%9F%D1%80" in record.body  # UTF-8, percent-encoded


def test_accepted_keeps_beelines_id_and_the_sms_element(backend, sandbox):
    message = sms(text="Hello")
    result = backend.send(message)
    stored = sandbox.accepted[result.provider_message_id]
    assert (stored["phone"], stored["text"], stored["post_id"]) == (
        message.to,
        "Hello",
        "msgid00000000001",
    )
    assert result.raw["sms"]["post_id"] == message.msg_id
    assert result.raw["sms_group_id"]
    assert not result.ambiguous and result.error_code == ""


def test_a_sender_per_message_and_a_long_msg_id(backend, sandbox):
    backend.send(sms(sender="Other", msg_id="x" * 37))
    fields = dict(form(sandbox.requests[-1]))
    assert fields["sender"] == "Other"
    assert "post_id" not in fields  # Beeline takes at most 36 characters


@pytest.mark.parametrize(
    "message, code",
    [
        (sms(to="+7900123421234567"), "invalid_phone"),
        (sms(to="+7900"), "invalid_phone"),
        (sms(text=""), "empty_text"),
        (sms(text="x" * 2001), "text_too_long"),
        (sms(sender="TwelveLetter"), "sender_too_long"),
    ],
)
def test_what_beeline_would_refuse_is_refused_without_a_request(backend, sandbox, message, code):
    result = backend.send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert sandbox.requests == []


@pytest.mark.parametrize(
    "sender, ok",
    [("", True), ("Shop", True), ("ElevenChars", True), ("TwelveLetter", False)]
    + [("+79001234212", True), ("1234567890123456", False)],
)
def test_sender_rule(backend, sender, ok):
    if ok:
        backend.validate_sender(sender)
    else:
        with pytest.raises(Exception, match="too long"):
            backend.validate_sender(sender)


# --- the error table, row by row ---------------------------------------------------------


def test_the_table_is_the_manuals():
    assert {code: status for code, (status, _) in ERRORS.items()} == SPEC
    assert all(isinstance(meaning, Promise) for _, meaning in ERRORS.values())


@pytest.mark.parametrize("code", sorted(SPEC))
def test_every_error_code(backend, sandbox, code):
    message = sms()
    refuse(sandbox, message, code)
    result = backend.send(message)
    assert (result.status, result.error_code) == (SPEC[code], str(code))
    assert result.error_message.startswith(str(ERRORS[code][1]))
    assert message.to in result.error_message  # Beeline's own text follows ours
    assert result.raw == {"error": {"code": str(code), "text": result.raw["error"]["text"]}}
    assert not result.ambiguous
    assert sandbox.accepted == {}


def test_an_unknown_code_is_a_refusal_naming_it(backend, sandbox):
    message = sms()
    refuse(sandbox, message, 29999)
    result = backend.send(message)
    assert (result.status, result.error_code) == (S.REJECTED, "29999")
    assert "29999" in result.error_message


def test_wrong_credentials_pause_sending(sandbox):
    backend = backend_for(sandbox.sms_url("Shop").replace("p%40ss", "wrong"))
    result = backend.send(sms())
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "20107")
    assert "access denied" in result.error_message


# --- a scripted server: answers the emulator does not give ---------------------------------


class Scripted(ScriptedServer):
    """Answers every request with ``answer``: (status, body bytes, headers)."""

    def __init__(self):
        super().__init__((200, b"<output/>", {}), content_type=None)
        self.url = f"beeline+http://{quote(LOGIN, safe='')}:pw@{self.address}/?sender=Shop"

    def reply(self, xml: str, status: int = 200, **headers: str) -> None:
        self.answer = (status, xml.encode("utf-8"), headers)


@pytest.fixture
def scripted():
    server = Scripted()
    yield server
    server.close()


@pytest.mark.parametrize("fragment, code", ERROR_TEXTS)
def test_errors_without_a_code_are_recognised_by_their_text(scripted, fragment, code):
    scripted.reply(
        f"<output><errors><error>{fragment.upper()}: +79001230001</error></errors></output>"
    )
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.error_code) == (SPEC[code], str(code))


def test_a_gzip_answer_is_read(scripted):
    body = b'<output><result sms_group_id="9"><sms id="77" phone="+79001230001"/></result></output>'
    scripted.answer = (200, gzip.compress(body), {"Content-Encoding": "gzip"})
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.provider_message_id) == (S.ACCEPTED, "77")


def test_the_emulator_compresses_unless_asked_not_to(sandbox):
    fields = {"user": LOGIN, "pass": PASSWORD, "action": "post_sms", "message": "Hi"}
    fields["target"] = "+79001230001"
    response = requests.post(sandbox.base_url + "/proto/http/", data=fields, timeout=5)
    assert response.headers["Content-Encoding"] == "gzip"
    assert b"<sms " in response.content  # requests decompressed it


LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
    "<output><errors><error>&lol2;</error></errors></output>"
)
EXTERNAL = '<!DOCTYPE output [<!ENTITY x SYSTEM "file:///etc/passwd">]><output>&x;</output>'


@pytest.mark.parametrize(
    "body",
    ["not xml at all", "<html><body>Bad gateway</body></html>", LAUGHS, EXTERNAL, "<output>"],
    ids=["text", "html", "entities", "external-entity", "truncated"],
)
def test_what_is_not_beelines_xml_is_an_ambiguous_retry(scripted, body):
    scripted.reply(body)
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.error_code) == (S.RETRY, "bad_response")
    assert result.ambiguous  # the request was sent: it may have been taken
    assert "root:" not in repr(result.raw)  # no external entity was fetched


def test_an_answer_that_does_not_mention_the_message_is_ambiguous(scripted):
    scripted.reply(
        '<output><result sms_group_id="1"><sms id="5" phone="+79990000000"/></result></output>'
    )
    result = backend_for(scripted.url).send(sms())
    assert (result.status, result.error_code, result.ambiguous) == (S.RETRY, "no_answer", True)


def test_answers_are_matched_by_number_when_post_id_is_not_echoed(scripted):
    scripted.reply(
        '<output><result sms_group_id="1">'
        '<sms id="B" phone="79001230002"/><sms id="A" phone="+79001230001"/></result>'
        '<errors><error code="20158">номер "+79001230003" занесён в чёрный список</error></errors>'
        "</output>"
    )
    backend = backend_for(scripted.url + "&batch_size=5")
    results = backend.send_many([sms(1), sms(2), sms(3)])
    assert [(r.status, r.provider_message_id, r.error_code) for r in results] == [
        (S.ACCEPTED, "A", ""),
        (S.ACCEPTED, "B", ""),
        (S.REJECTED, "", "20158"),
    ]


def test_an_error_naming_no_number_is_every_unanswered_messages(scripted):
    scripted.reply(
        '<output><result sms_group_id="1"><sms id="A" phone="+79001230001"/></result>'
        '<errors><error code="20211">Too high messages rate for user</error></errors></output>'
    )
    results = backend_for(scripted.url + "&batch_size=5").send_many([sms(1), sms(2), sms(3)])
    assert [(r.status, r.error_code) for r in results] == [
        (S.ACCEPTED, ""),
        (S.RETRY, "20211"),
        (S.RETRY, "20211"),
    ]


# --- batches -------------------------------------------------------------------------------


def test_a_batch_goes_as_data_entries_with_mixed_results(batching, sandbox):
    batch = [sms(n, text=f"Text {n}") for n in range(1, 5)]
    refuse(sandbox, batch[2], 20158)
    results = batching.send_many(batch)
    assert [r.status for r in results] == [S.ACCEPTED, S.ACCEPTED, S.REJECTED, S.ACCEPTED]
    [record] = sandbox.requests
    fields = dict(form(record))
    assert fields["user"] == LOGIN and "action" not in fields
    assert [fields[f"data[{i}][post_id]"] for i in range(4)] == [m.msg_id for m in batch]
    assert [fields[f"data[{i}][message]"] for i in range(4)] == [m.text for m in batch]
    for message, result in zip(batch, results, strict=True):
        if result.status is S.ACCEPTED:
            assert sandbox.accepted[result.provider_message_id]["text"] == message.text


def test_a_number_twice_or_an_invalid_message_splits_the_batch(batching, sandbox):
    batch = [sms(1), sms(2), sms(1, msg_id="again00000001"), sms(3, to="+7"), sms(4)]
    results = batching.send_many(batch)
    statuses = [(r.status, r.error_code) for r in results]
    assert statuses == [(S.ACCEPTED, "")] * 3 + [(S.REJECTED, "invalid_phone"), (S.ACCEPTED, "")]
    sizes = [sum(k.endswith("[action]") for k, _ in form(r)) for r in sandbox.requests]
    assert sizes == [2, 2]  # 1, 2 | 1 again, 4 ; the invalid one made no request


def test_batches_are_at_most_batch_size(sandbox):
    backend = backend_for(sandbox.sms_url("Shop") + "&batch_size=3")
    results = backend.send_many([sms(n) for n in range(1, 8)])
    assert all(r.status is S.ACCEPTED for r in results)
    assert len({r.provider_message_id for r in results}) == 7
    assert len(sandbox.requests) == 3


def test_a_refused_connection_is_safe_to_retry():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = backend_for(f"beeline+http://u:p@127.0.0.1:{port}/").send(sms())
    assert (result.status, result.ambiguous) == (S.RETRY, False)


# --- the conformance suite -----------------------------------------------------------------


class TestBeelineConformance(ConformanceSuite):
    emulator = "beeline"
    refused_code = 20158  # the number is on the account's blacklist
    throttled_code = "20211"
    provider_error_code = "20107"
    report_modes = ("callback", "poll")

    def sms_url(self, sandbox):
        return sandbox.sms_url(self.sender) + "&batch_size=10"
