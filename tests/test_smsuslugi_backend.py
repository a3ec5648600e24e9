"""SmsUslugiBackend over real HTTP on loopback (the sandbox and a scripted server): the XML on the
wire, every code and state, safe XML parsing, polling to final states, lookups, credentials."""

from __future__ import annotations

import logging
import time
import types
from xml.etree import ElementTree

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.safexml import parse_xml
from crm_sms.backends.smsuslugi import (
    CODES,
    DEFAULT_BASE_URL,
    REPORT_PATH,
    SEND_PATH,
    STATES,
    SmsUslugiBackend,
    classify_code,
    state_report,
)
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ProviderError
from crm_sms.models import Message, MessageStatus
from crm_sms.polling import poll_statuses
from crm_sms.sandbox import SandboxServer
from tests.conformance import ConformanceSuite

LOGIN = "corp@uslugi"
PASSWORD = "p<a&ss'w\"rd"  # XML's special characters must be escaped, never break the body
S, D = SendStatus, DeliveryStatus
XML = "text/xml; charset=utf-8"


@pytest.fixture
def uslugi():
    sandbox = SandboxServer(provider="smsuslugi", login=LOGIN, password=PASSWORD, callbacks=False)
    sandbox.start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def uslugi_provider(uslugi, settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"uslugi": parse_sms_url(uslugi.sms_url("Shop"))},
        "DEFAULT_PROVIDER": "uslugi",
    }
    return uslugi


def backend_for(base_url: str, **options) -> SmsUslugiBackend:
    options = {
        "login": LOGIN,
        "password": PASSWORD,
        "sender": "Shop",
        "base_url": base_url,
        **options,
    }
    return SmsUslugiBackend("default", options)


def sms(i: int = 1, text: str = "Код: 1234", sender: str = "") -> OutgoingSMS:
    return OutgoingSMS(f"+7900{i:07d}", text, sender, f"m{i:015d}")


def xml(code: int, **fields) -> tuple[int, bytes, str]:
    inner = "".join(f"<{k}>{v}</{k}>" for k, v in fields.items())
    body = f"<?xml version='1.0' encoding='UTF-8'?><data><code>{code}</code>{inner}</data>"
    return (200, body.encode(), XML)


def assert_no_credentials(*things):
    for thing in things:
        text = repr(thing) + str(thing)
        for secret in (PASSWORD, LOGIN, "p&lt;a&amp;ss"):
            assert secret not in text, f"a credential leaked into {text!r}"


# --- configuration -----------------------------------------------------------------------------


def test_url_configures_credentials_sender_and_https():
    url = "smsuslugi://corp%40uslugi:p%3Ca%26ss@lcab.sms-uslugi.ru/?sender=Shop"
    config = parse_sms_url(url)
    assert config["BACKEND"] == "crm_sms.backends.smsuslugi.SmsUslugiBackend"
    backend = SmsUslugiBackend("default", config["OPTIONS"])
    assert (backend.login, backend.password, backend.default_sender) == (LOGIN, "p<a&ss", "Shop")
    assert backend.base_url == DEFAULT_BASE_URL
    assert backend.rate_limit is None
    local = parse_sms_url("smsuslugi+http://a:b@127.0.0.1:8999/")["OPTIONS"]
    assert SmsUslugiBackend("x", local).base_url == "http://127.0.0.1:8999"


def test_declares_lookup_safety_polling_and_one_recipient_per_request():
    backend = SmsUslugiBackend("x", {})
    assert SmsUslugiBackend.retry_safety is RetrySafety.LOOKUP
    assert callable(backend.query_status) and not backend.supports_callbacks
    assert backend.max_batch_size == 1


def test_check_ids_and_hints():
    problems = SmsUslugiBackend("promo", {"base_url": "http://sms.example"}).check()
    assert [p.id for p in problems] == ["crm_sms.E010", "crm_sms.W011"]
    assert "SMS_URL_PROMO" in problems[0].hint
    bad_sender = SmsUslugiBackend("x", {"login": "l", "password": "p", "sender": "Магазин"})
    assert [p.id for p in bad_sender.check()] == ["crm_sms.E004"]
    assert backend_for("http://127.0.0.1:1").check() == []


@pytest.mark.parametrize("sender", ["", "Shop", "A", "12345678901", "+79001234212", "My Co."])
def test_senders_smsuslugi_accepts(sender):
    backend_for(DEFAULT_BASE_URL).validate_sender(sender)


@pytest.mark.parametrize("sender", ["TwelveChars!", "Магазин", "Tab\there"])
def test_senders_smsuslugi_refuses(sender):
    with pytest.raises(ValidationError):
        backend_for(DEFAULT_BASE_URL).validate_sender(sender)


# --- the request on the wire -------------------------------------------------------------------


def test_exact_xml_on_the_wire(uslugi):
    result = backend_for(uslugi.base_url).send(sms(1, text="a < b & c"))
    assert result.status is S.ACCEPTED
    assert result.provider_message_id == "m000000000000001"
    [request] = uslugi.requests
    assert request.path == SEND_PATH
    assert request.header("Content-Type") == XML
    assert request.header("Authorization") is None
    assert request.body == (
        b"<?xml version='1.0' encoding='utf-8'?>\n"
        b"<data><login>corp@uslugi</login><password>p&lt;a&amp;ss'w\"rd</password>"
        b"<action>send</action><text>a &lt; b &amp; c</text><smsid>m000000000000001</smsid>"
        b'<source>Shop</source><to number="79000000001" /></data>'
    )


def test_cyrillic_text_travels_as_utf8(uslugi):
    backend_for(uslugi.base_url).send(sms(1, text="Привет"))
    assert "<text>Привет</text>".encode() in uslugi.requests[0].body


def test_one_request_per_message(uslugi):
    results = backend_for(uslugi.base_url).send_many([sms(i) for i in range(3)])
    assert len(uslugi.requests) == 3
    assert [r.provider_message_id for r in results] == [sms(i).msg_id for i in range(3)]


def test_no_source_when_neither_message_nor_url_has_a_sender(uslugi):
    backend_for(uslugi.base_url, sender="").send(sms(1))
    assert b"<source>" not in uslugi.requests[0].body


@pytest.mark.parametrize(
    "message, code",
    [
        (OutgoingSMS("+7900123", "Hi", "", "m1"), "invalid_phone"),
        (OutgoingSMS("+79001234212", " ", "", "m1"), "empty_text"),
        (OutgoingSMS("+79001234212", "Bell\x07", "", "m1"), "invalid_text"),
        (OutgoingSMS("+79001234212", "Hi", "Магазин", "m1"), "invalid_sender"),
        (OutgoingSMS("+79001234212", "Hi", "", "x" * 22), "invalid_msg_id"),
    ],
)
def test_an_invalid_message_makes_no_request(uslugi, message, code):
    result = backend_for(uslugi.base_url).send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert uslugi.requests == []


# --- answers -----------------------------------------------------------------------------------

# The codes as the platform's client code names them, written out independently of the table.
EXPECTED_CODES = {
    1: S.ACCEPTED,
    500: S.REJECTED,
    501: S.PROVIDER_ERROR,
    502: S.PROVIDER_ERROR,
    503: S.REJECTED,
    504: S.PROVIDER_ERROR,
    510: S.REJECTED,
    511: S.PROVIDER_ERROR,
    512: S.PROVIDER_ERROR,
    516: S.PROVIDER_ERROR,
    517: S.REJECTED,
    518: S.REJECTED,
    519: S.PROVIDER_ERROR,
    520: S.REJECTED,
}
EXPECTED_STATES = {
    "enqueued": D.SENT,
    "onModer": D.SENT,
    "process": D.SENT,
    "waiting": D.SENT,
    "delivered": D.DELIVERED,
    "notDelivered": D.UNDELIVERED,
    "cancel": D.FAILED,
}


def test_the_tables_cover_the_spec():
    assert {code: row[0] for code, row in CODES.items()} == EXPECTED_CODES
    assert {group: row[0] for group, row in STATES.items()} == EXPECTED_STATES


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_row_of_the_code_table(scripted, code):
    server = scripted(xml(code, descr="описание", smsid="srv-1"))
    result = backend_for(server.base_url).send(sms(1))
    status, meaning = CODES[code]
    assert result.status is status
    assert result.raw["code"] == str(code)
    if status is S.ACCEPTED:
        assert (result.provider_message_id, result.error_code) == ("srv-1", "")
    else:
        assert result.error_code == str(code)
        assert result.error_message == f"{meaning} (описание)"


@pytest.mark.parametrize("code", [700, 712, 799])
def test_7xx_is_an_xml_error(code):
    status, message = classify_code(code)
    assert status is S.REJECTED and "XML" in message


def test_unknown_codes_are_refused_with_the_number():
    assert classify_code(599) == (S.REJECTED, "SMS-Uslugi error code 599.")


def test_accepted_but_nobody_to_send_to_is_refused(scripted):
    server = scripted(xml(1, smsid="s", colSendAbonent=0, colNonSendAbonent=1))
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code) == (S.REJECTED, "not_sendable")


def test_refused_number_from_the_sandbox(uslugi):
    uslugi.configure(codes={"+79000000002": 517})
    result = backend_for(uslugi.base_url).send(sms(2))
    assert (result.status, result.error_code) == (S.REJECTED, "517")
    assert not uslugi.accepted


def test_wrong_credentials_from_the_sandbox_pause(uslugi):
    result = backend_for(uslugi.base_url, password="wrong").send(sms(1))
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "501")


def test_throttling_from_the_sandbox_is_retry(uslugi):
    uslugi.configure(throttle_rate=1.0)
    result = backend_for(uslugi.base_url).send(sms(1))
    assert (result.status, result.error_code, result.ambiguous) == (S.RETRY, "http_429", False)


@pytest.mark.parametrize(
    "answer, status, code, ambiguous",
    [
        ((503, b"busy", "text/html"), S.RETRY, "http_503", True),
        (
            (200, b"<html><body>maintenance</body></html>", "text/html"),
            S.RETRY,
            "bad_response",
            True,
        ),
        ((200, b"not xml at all", "text/plain"), S.RETRY, "bad_response", True),
        ((403, b"", "text/plain"), S.PROVIDER_ERROR, "http_403", False),
        ("drop", S.RETRY, "connection_error", True),
    ],
)
def test_transport_answers(scripted, answer, status, code, ambiguous):
    server = scripted(answer)
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code, result.ambiguous) == (status, code, ambiguous)


# --- safe XML ----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE data [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<data><code>1</code><descr>&d;</descr></data>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE data [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<data><code>1</code><descr>&x;</descr></data>"""
PARAMETER = b"""<?xml version="1.0"?><!DOCTYPE data [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x">%p;]>
<data><code>1</code></data>"""


@pytest.mark.parametrize(
    "body",
    [
        BILLION_LAUGHS,
        EXTERNAL,
        PARAMETER,
        b"<data><code>1</code>",
        b"",
        b"<data>&undefined;</data>",
    ],
    ids=["billion-laughs", "external-entity", "parameter-entity", "unclosed", "empty", "undefined"],
)
def test_parse_xml_refuses_dtds_entities_and_broken_xml(body):
    assert parse_xml(body) is None


def test_parse_xml_reads_plain_answers():
    root = parse_xml("<data><code>1</code><descr>ок &amp; да</descr></data>".encode())
    assert (root.findtext("code"), root.findtext("descr")) == ("1", "ок & да")


def test_an_answer_with_a_dtd_is_not_the_apis(scripted):
    server = scripted((200, BILLION_LAUGHS, XML))
    result = backend_for(server.base_url).send(sms(1))
    assert (result.status, result.error_code) == (S.RETRY, "bad_response")
    assert "&d;" in result.raw["body"] and "haha" not in str(result.raw)


def test_credentials_never_appear(scripted, caplog):
    def echo(body):
        return (500, body + f" {LOGIN} {PASSWORD}".encode(), "text/plain")

    server = scripted(echo)
    backend = backend_for(server.base_url)
    with caplog.at_level(logging.DEBUG):
        result = backend.send(sms(1))
    assert_no_credentials(result, result.raw, result.error_message, backend, caplog.text)


# --- statuses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("group", sorted(STATES))
def test_every_row_of_the_state_table(group):
    status, error_code, message = state_report(group)
    assert status == STATES[group][0]
    if status in (D.SENT, D.DELIVERED):
        assert (error_code, message) == ("", "")
    else:
        assert (error_code, message) == (group, str(STATES[group][1]))


@pytest.mark.parametrize("group", sorted(STATES))
def test_query_status_reads_each_state(scripted, group):
    detail = ElementTree.tostring(
        ElementTree.fromstring(f"<{group}><number>79000000001</number></{group}>")
    )
    server = scripted(xml(1, detail=detail.decode()))
    row = types.SimpleNamespace(msg_id="m1", provider_message_id="m000000000000001")
    [report] = backend_for(server.base_url).query_status([row])
    assert report.status == STATES[group][0]
    assert report.provider_message_id == "m000000000000001" and report.msg_id == "m1"
    assert b"<smsid>m000000000000001</smsid>" in server.requests[0]["body"]


def test_a_number_listed_twice_takes_the_most_advanced_state(scripted):
    number = "<number>79000000001</number>"
    detail = f"<enqueued>{number}</enqueued><delivered>{number}</delivered>"
    server = scripted(xml(1, detail=detail))
    row = types.SimpleNamespace(msg_id="m1", provider_message_id="s")
    assert backend_for(server.base_url).query_status([row])[0].status == D.DELIVERED


def test_query_status_through_the_sandbox(uslugi):
    backend = backend_for(uslugi.base_url)
    results = backend.send_many([sms(1), sms(2), sms(3)])
    uslugi.accepted[results[0].provider_message_id]["status"] = "delivered"
    uslugi.accepted[results[1].provider_message_id]["status"] = "notDelivered"
    rows = [
        types.SimpleNamespace(msg_id=f"r{i}", provider_message_id=r.provider_message_id)
        for i, r in enumerate(results)
    ]
    rows.append(types.SimpleNamespace(msg_id="gone", provider_message_id="unknownsmsid"))
    uslugi.requests.clear()
    reports = {r.msg_id: r for r in backend.query_status(rows)}
    assert set(reports) == {"r0", "r1", "r2"}
    assert [reports[k].status for k in ("r0", "r1", "r2")] == [D.DELIVERED, D.UNDELIVERED, D.SENT]
    assert reports["r1"].error_code == "notDelivered" and reports["r1"].error_message
    assert [r.path for r in uslugi.requests] == [REPORT_PATH] * 4
    assert_no_credentials(*(r.raw for r in reports.values()))


@pytest.mark.parametrize(
    "answer", [xml(501), (200, b"<html/>", "text/html"), (502, b"", "text/plain")]
)
def test_a_failed_report_raises(scripted, answer):
    server = scripted(answer)
    with pytest.raises(ProviderError):
        backend_for(server.base_url).query_status(
            [types.SimpleNamespace(msg_id="m", provider_message_id="s")]
        )


# --- never twice -------------------------------------------------------------------------------


def test_lookup_after_a_timeout_finds_the_message_that_arrived(uslugi):
    backend = backend_for(uslugi.base_url, read_timeout="0.2")
    uslugi.configure(timeout_rate=1.0, timeout_s=0.5)
    result = backend.send(sms(1))
    assert (result.status, result.ambiguous) == (S.RETRY, True)
    uslugi.configure(timeout_rate=0.0)
    deadline = time.monotonic() + 5
    while not uslugi.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    found = backend.lookup_sent(sms(1))
    assert (found.status, found.provider_message_id) == (S.ACCEPTED, "m000000000000001")
    assert b"<smsid>m000000000000001</smsid>" in uslugi.requests[-1].body


def test_lookup_of_a_message_that_never_arrived_is_none(uslugi):
    uslugi.configure(fail_rate=1.0)
    assert backend_for(uslugi.base_url).send(sms(2)).ambiguous
    uslugi.configure(fail_rate=0.0)
    assert backend_for(uslugi.base_url).lookup_sent(sms(2)) is None


def test_lookup_of_another_number_under_our_smsid_is_none(scripted):
    server = scripted(xml(1, detail="<delivered><number>79999999999</number></delivered>"))
    assert backend_for(server.base_url).lookup_sent(sms(1)) is None


@pytest.mark.parametrize("answer", [xml(501), xml(599), (200, b"??", "text/plain"), "drop"])
def test_a_lookup_that_cannot_decide_raises(scripted, answer):
    server = scripted(answer)
    with pytest.raises(ProviderError):
        backend_for(server.base_url).lookup_sent(sms(1))


# --- polling applied to Message rows -----------------------------------------------------------


@pytest.mark.django_db
def test_poll_statuses_moves_rows_to_final_states(uslugi_provider):
    backend = get_backend("uslugi")
    rows = [
        Message.objects.create(phone=f"+7900555{i:04d}", text="Hi", provider="uslugi")
        for i in range(4)
    ]
    results = backend.send_many([OutgoingSMS(m.phone, m.text, "", m.msg_id) for m in rows])
    for row, result in zip(rows, results, strict=True):
        Message.objects.filter(pk=row.pk).update(
            status=MessageStatus.SENT,
            provider_message_id=result.provider_message_id,
            sent_at=timezone.now(),
        )
    for i, state in {0: "delivered", 1: "notDelivered", 2: "cancel"}.items():
        uslugi_provider.accepted[results[i].provider_message_id]["status"] = state
    counts = poll_statuses(provider="uslugi")
    assert (counts["checked"], counts["changed"], counts["errors"]) == (4, 3, 0)
    statuses = [Message.objects.get(pk=m.pk).status for m in rows]
    assert statuses == ["delivered", "undelivered", "failed", "sent"]
    assert Message.objects.get(pk=rows[1].pk).error_code == "notDelivered"


@pytest.mark.django_db
def test_the_sandbox_settles_statuses_itself_when_reports_are_on(uslugi_provider):
    uslugi_provider.configure(callbacks=True, callback_delay=0, deliver_rate=0.0)
    row = Message.objects.create(phone="+79005550001", text="Hi", provider="uslugi")
    result = get_backend("uslugi").send(OutgoingSMS(row.phone, row.text, "", row.msg_id))
    Message.objects.filter(pk=row.pk).update(
        status="sent", provider_message_id=result.provider_message_id, sent_at=timezone.now()
    )
    poll_statuses(provider="uslugi")
    assert Message.objects.get(pk=row.pk).status == "undelivered"


# --- the conformance suite ---------------------------------------------------------------------


class TestSmsUslugiConformance(ConformanceSuite):
    emulator = "smsuslugi"
    refused_code = 517
    throttled_code = "http_429"
    provider_error_code = "501"
    report_modes = ("poll",)


@pytest.mark.django_db
def test_round_trip_send_sms_then_poll_to_delivered(uslugi_provider):
    import crm_sms

    message = crm_sms.send_sms("+7 900 555-00-07", "Заказ готов", provider="uslugi", now=True)
    assert message.status == "sent" and message.provider_message_id == message.msg_id
    uslugi_provider.accepted[message.msg_id]["status"] = "delivered"
    poll_statuses(provider="uslugi")
    message.refresh_from_db()
    assert message.status == "delivered" and message.delivered_at
