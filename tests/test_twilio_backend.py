"""TwilioBackend over real HTTP on loopback: the request on the wire, every row of the code
tables, transport failures, polling, the balance, the lookup, and the conformance suite."""

from __future__ import annotations

import base64
import re
import socket
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import pytest
import requests
from django.core.exceptions import ValidationError
from django.utils import translation
from django.utils.functional import Promise

from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.http import HTTPRequest
from crm_sms.backends.twilio import AccountBalance, TwilioBackend
from crm_sms.backends.twilio_codes import ERRORS, STATUSES, classify_error, report_fields
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ConfigurationError, ProviderError
from crm_sms.sandbox import SandboxServer
from tests.conformance import ConformanceSuite
from tests.fixtures_http import scripted_servers

S, D = SendStatus, DeliveryStatus
SID = "AC" + "0123456789abcdef" * 2
TOKEN = "t0k:e@n/w%rd"  # ':' '@' '/' '%' must survive the URL and the Basic header
BASIC = base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
SERVICE = "MG" + "fedcba9876543210" * 2

#: HTTPBackend can GET once it has HTTPRequest.method (/work/notes/P4-http-method.patch);
#: until then polling, the balance and the lookup cannot run.
HAS_GET = "method" in HTTPRequest.__dataclass_fields__
needs_get = pytest.mark.skipif(not HAS_GET, reason="HTTPRequest has no method (GET) yet")


def sms(msg_id="abc123", text="Code: 1234", to="+15005550001", sender="", **kw) -> OutgoingSMS:
    return OutgoingSMS(to=to, text=text, sender=sender, msg_id=msg_id, **kw)


def backend_for(base_url: str, **options) -> TwilioBackend:
    return TwilioBackend(
        "default",
        {"account_sid": SID, "auth_token": TOKEN, "base_url": base_url, **options},
    )


def assert_no_credentials(*things):
    for thing in things:
        text = repr(thing) + str(thing)
        for secret in (TOKEN, BASIC, SID, quote(TOKEN, safe="")):
            assert secret not in text, f"a credential leaked into {text!r}"


# --- a scripted server: each request answered by a function ---------------------------------


@pytest.fixture
def scripted():
    """``scripted(answer)``: a ScriptedServer answering ``answer(method, path, body)``."""
    with scripted_servers(routed=True) as make:
        yield make


def created(sid="SM" + "1" * 32, status="queued", error_code=None):
    return (201, {"sid": sid, "status": status, "error_code": error_code, "account_sid": SID})


def twilio_error(code, http=400, message="x"):
    return (http, {"code": code, "message": message, "more_info": "…", "status": http})


@pytest.fixture
def sandbox():
    server = SandboxServer(provider="twilio", login=SID, password=TOKEN).start()
    yield server
    server.stop()


@pytest.fixture
def twilio(sandbox, settings):
    """The default provider pointed at the sandbox by its SMS_URL; returns the sandbox."""
    settings.CRM_SMS = {"PROVIDERS": {"default": parse_sms_url(sandbox.sms_url("+15005550006"))}}
    return sandbox


# --- the request on the wire ----------------------------------------------------------------


def test_exact_request_on_the_wire(twilio):
    url = twilio.sms_url("+15005550006")
    assert "%2B1500" in url and "%3A" in url and "%40" in url  # URL-encoded as SMS_URL must be
    result = get_backend().send(sms(text="Привет, мир! {} & +"))
    assert result.status is S.ACCEPTED, result
    [request] = twilio.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.header("Authorization") == f"Basic {BASIC}"
    assert request.header("Content-Type") == "application/x-www-form-urlencoded"
    expected = [("To", "+15005550001"), ("From", "+15005550006"), ("Body", "Привет, мир! {} & +")]
    assert request.body == urlencode(expected).encode("ascii")
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34
    assert result.raw["status"] == "queued" and result.raw["account_sid"] == "***"
    assert not result.ambiguous


def test_status_callback_carries_our_msg_id(twilio, settings):
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PUBLIC_URL": "https://crm.example.com/",
        "CALLBACK_TOKEN": "s3cret,old",
    }
    get_backend().send(sms(msg_id="Ab12Cd34Ef56Gh78"))
    form = dict(parse_qsl(twilio.requests[0].body.decode()))
    assert form["StatusCallback"] == (
        "https://crm.example.com/sms/callback/default/s3cret/?msg_id=Ab12Cd34Ef56Gh78"
    )


def test_an_explicit_callback_url_keeps_its_query(twilio):
    get_backend().send(sms(callback_url="https://other.example/cb/?a=1"))
    form = dict(parse_qsl(twilio.requests[0].body.decode()))
    assert form["StatusCallback"] == "https://other.example/cb/?a=1&msg_id=abc123"


def test_no_status_callback_without_public_url(twilio):
    get_backend().send(sms())
    assert "StatusCallback" not in dict(parse_qsl(twilio.requests[0].body.decode()))


def test_the_message_sender_wins_over_the_default(twilio):
    get_backend().send(sms(sender="Shop"))
    assert dict(parse_qsl(twilio.requests[0].body.decode()))["From"] == "Shop"


@pytest.mark.parametrize(
    "sender, expected",
    [
        ("", [("To", "+15005550001"), ("MessagingServiceSid", SERVICE)]),
        ("Shop", [("To", "+15005550001"), ("From", "Shop"), ("MessagingServiceSid", SERVICE)]),
    ],
)
def test_a_messaging_service_stands_in_for_from(sandbox, sender, expected):
    backend = backend_for(sandbox.base_url, messaging_service_sid=SERVICE)
    result = backend.send(sms(sender=sender))
    assert result.status is S.ACCEPTED, result
    assert result.raw["status"] == "accepted"  # Twilio's first status with a service
    fields = parse_qsl(sandbox.requests[0].body.decode())
    assert fields == [*expected, ("Body", "Code: 1234")]


# --- options and configuration ----------------------------------------------------------------


def test_options_from_the_url():
    config = parse_sms_url(
        f"twilio://{SID}:{quote(TOKEN, safe='')}@api.twilio.com/?sender=%2B15005550006"
        f"&messaging_service_sid={SERVICE}&poll=1&read_timeout=20&rate_limit=5"
    )
    assert config["BACKEND"] == "crm_sms.backends.twilio.TwilioBackend"
    assert config["RATE_LIMIT"] == 5
    backend = TwilioBackend("default", config["OPTIONS"])
    assert (backend.account_sid, backend.auth_token) == (SID, TOKEN)
    assert backend.default_sender == "+15005550006"
    assert backend.messaging_service_sid == SERVICE
    assert backend.base_url == "https://api.twilio.com"
    assert backend.read_timeout == 20
    assert backend.query_status == backend.fetch_statuses  # polling on
    assert TwilioBackend("default", {"account_sid": SID}).query_status is None  # off by default


def test_a_misspelled_option_is_refused_naming_the_variable():
    with pytest.raises(ConfigurationError, match="did you mean 'messaging_service_sid'"):
        parse_sms_url(f"twilio://{SID}:x@api.twilio.com/?messaging_sid={SERVICE}")
    with pytest.raises(ConfigurationError, match="poll"):
        parse_sms_url(f"twilio://{SID}:x@api.twilio.com/?poll=maybe")


def test_retry_safety_is_none():
    # No idempotency key; a lookup cannot prove a message did not arrive (module docstring).
    assert TwilioBackend.retry_safety is RetrySafety.NONE


def test_repr_and_logs_show_no_credentials(scripted, caplog):
    server = scripted(twilio_error(21211))
    backend = backend_for(server.base_url)
    result = backend.send(sms())
    assert_no_credentials(repr(backend), result, caplog.text, backend.session.auth)


CHECK_CASES = [
    ({}, {"crm_sms.W010", "crm_sms.W012"}),
    ({"sender": "+15005550006", "poll": "1"}, set()),
    ({"messaging_service_sid": SERVICE, "poll": "1"}, set()),
    ({"sender": "not a sender!", "poll": "1"}, {"crm_sms.E004"}),
    ({"sender": "Shop", "poll": "1", "base_url": "http://twilio.example"}, {"crm_sms.W011"}),
    ({"sender": "Shop", "auth_token": "", "poll": "1"}, {"crm_sms.E010"}),
]


@pytest.mark.parametrize("options, ids", CHECK_CASES)
def test_check(options, ids):
    backend = TwilioBackend("default", {"account_sid": SID, "auth_token": TOKEN, **options})
    problems = backend.check()
    assert {p.id for p in problems} == ids
    for problem in problems:
        assert TOKEN not in problem.msg + (problem.hint or "")
        assert "SMS_URL" in (problem.hint or "")


def test_check_is_content_with_callbacks(settings):
    settings.CRM_SMS = {"PUBLIC_URL": "https://crm.example.com", "CALLBACK_TOKEN": "t"}
    backend = TwilioBackend("default", {"account_sid": SID, "auth_token": TOKEN, "sender": "Shop"})
    assert backend.check() == []


# --- validation -------------------------------------------------------------------------------

SENDERS = [
    ("+15005550006", True),
    ("+79001234212", True),
    ("12345", True),  # a short code
    ("Shop", True),
    ("My Shop-1", True),
    ("A&B_C+D", True),
    ("ABCDEFGHIJK", True),  # 11 characters
    ("ABCDEFGHIJKL", False),  # 12
    ("12345678901", False),  # digits only and too long for a short code
    ("15005550006", False),  # a number without "+"
    ("Магазин", False),  # not Latin
    ("Shop!", False),
    ("+0123456", False),
]


@pytest.mark.parametrize("sender, ok", SENDERS)
def test_sender_rules(sender, ok):
    backend = TwilioBackend("default", {"account_sid": SID, "auth_token": TOKEN})
    if ok:
        backend.validate_sender(sender)
    else:
        with pytest.raises(ValidationError):
            backend.validate_sender(sender)


def test_an_empty_sender_needs_a_messaging_service():
    with pytest.raises(ValidationError, match="messaging_service_sid"):
        TwilioBackend("default", {}).validate_sender("")
    TwilioBackend("default", {"messaging_service_sid": SERVICE}).validate_sender("")


@pytest.mark.parametrize(
    "message, code",
    [
        (sms(to="15005550001"), "invalid_phone"),
        (sms(to="+1 500 555 0001"), "invalid_phone"),
        (sms(text="x" * 1601), "text_too_long"),
        (sms(text="   "), "empty_text"),
        (sms(sender="Shop!"), "invalid_sender"),
    ],
)
def test_invalid_messages_make_no_request(scripted, message, code):
    server = scripted(created())
    result = backend_for(server.base_url, sender="Shop").send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert server.requests == []


def test_1600_characters_are_sent(twilio):
    assert get_backend().send(sms(text="x" * 1600)).status is S.ACCEPTED


# --- the code tables, row by row ------------------------------------------------------------

#: The handling each documented code must get, written out independently of ERRORS.
EXPECTED = {
    **dict.fromkeys((20003, 20005, 20404, 21212, 21601, 21603, 21606, 21705, 30002), "pe"),
    **dict.fromkeys((20429, 20500, 20503, 21611, 30001), "retry"),
    **dict.fromkeys(
        (21211, 21265, 21401, 21408, 21602, 21604, 21608, 21610, 21612, 21614, 21617, 21635),
        "rejected",
    ),
    **dict.fromkeys(range(30003, 30009), "rejected"),
    30010: "rejected",
}
WORDS = {"pe": S.PROVIDER_ERROR, "retry": S.RETRY, "rejected": S.REJECTED}


def test_the_table_has_exactly_the_documented_codes():
    assert set(ERRORS) == set(EXPECTED)


@pytest.mark.parametrize("code", sorted(ERRORS))
def test_each_error_code_on_the_wire(scripted, code):
    server = scripted(twilio_error(code, message=f"Twilio's words for {code}"))
    result = backend_for(server.base_url, sender="Shop").send(sms())
    assert result.status is WORDS[EXPECTED[code]]
    assert result.error_code == str(code)
    assert result.error_message == str(ERRORS[code][1])  # our words, translatable
    assert result.raw["body"]["code"] == code  # Twilio's answer is kept
    assert not result.ambiguous


@pytest.mark.parametrize(
    "http, expected",
    [(400, S.REJECTED), (404, S.PROVIDER_ERROR), (429, S.RETRY), (422, S.REJECTED)],
)
def test_an_unknown_code_goes_by_the_http_status(scripted, http, expected):
    server = scripted(twilio_error(21999, http=http, message="Something new"))
    result = backend_for(server.base_url, sender="Shop").send(sms())
    assert (result.status, result.error_code) == (expected, "21999")
    assert result.error_message == "Twilio error 21999: Something new"


def test_texts_are_lazy_and_translated_to_russian():
    texts = {f"E{code}": text for code, (_, text) in ERRORS.items()}
    texts |= {f"S{name}": text for name, (_, text) in STATUSES.items()}
    assert all(isinstance(text, Promise) for text in texts.values())
    with translation.override("ru"):
        russian = {key: str(text) for key, text in texts.items()}
    with translation.override("en"):
        english = {key: str(text) for key, text in texts.items()}
    if russian["E21211"] == english["E21211"]:
        pytest.skip("the ru catalog (crm_sms/locale) has no Twilio texts yet")
    untranslated = [key for key, text in russian.items() if not re.search("[а-яА-Я]", text)]
    assert untranslated == []


def test_classify_error_without_a_code():
    assert classify_error(None) == (S.REJECTED, "Twilio error ?")


#: Each status Twilio documents and the report it makes, written out independently.
REPORTS = {
    "accepted": D.SENT,
    "scheduled": D.SENT,
    "queued": D.SENT,
    "sending": D.SENT,
    "sent": D.SENT,
    "delivered": D.DELIVERED,
    "read": D.DELIVERED,
    "undelivered": D.UNDELIVERED,
    "partially_delivered": D.UNDELIVERED,
    "failed": D.FAILED,
    "canceled": D.FAILED,
    "receiving": None,
    "received": None,
}


def test_the_status_table_has_exactly_the_documented_statuses():
    assert set(STATUSES) == set(REPORTS)


@pytest.mark.parametrize("name", sorted(STATUSES))
def test_each_status(name):
    fields = report_fields(name)
    if REPORTS[name] is None:
        assert fields is None
        return
    status, error_code, error_message = fields
    assert status is REPORTS[name]
    if status in (D.SENT, D.DELIVERED):
        assert (error_code, error_message) == ("", "")
    else:
        assert error_code == name and error_message == str(STATUSES[name][1])


def test_a_report_error_code_names_the_reason():
    assert report_fields("undelivered", "30005") == (
        D.UNDELIVERED,
        "30005",
        str(ERRORS[30005][1]),
    )
    assert report_fields("failed", 30999, "Twilio's text") == (D.FAILED, "30999", "Twilio's text")
    assert report_fields("failed", "30999") == (D.FAILED, "30999", "Twilio error 30999")
    assert report_fields("something_new") == (D.SENT, "", "")  # on its way, not a verdict


@pytest.mark.parametrize("status", ["failed", "undelivered", "canceled"])
def test_a_message_created_failed_is_rejected_with_its_sid(scripted, status):
    server = scripted(created(status=status, error_code=21610))
    result = backend_for(server.base_url, sender="Shop").send(sms())
    assert (result.status, result.error_code) == (S.REJECTED, "21610")
    assert result.provider_message_id == "SM" + "1" * 32


# --- transport failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer, status, code, ambiguous",
    [
        (twilio_error(20003, http=401, message="Authenticate"), S.PROVIDER_ERROR, "http_401", 0),
        ((403, b"forbidden"), S.PROVIDER_ERROR, "http_403", False),
        (twilio_error(20429, http=429), S.RETRY, "20429", False),  # "never processed"
        ((429, b"slow down"), S.RETRY, "http_429", False),
        (twilio_error(20500, http=500), S.RETRY, "http_500", True),
        ((503, b"<html>"), S.RETRY, "http_503", True),
        ((200, b"<html>not the API</html>"), S.RETRY, "bad_response", True),
        ((201, {"status": "queued"}), S.RETRY, "bad_response", True),  # no sid
        ((201, b"<html>"), S.RETRY, "bad_response", True),
        ((404, b"<html>"), S.PROVIDER_ERROR, "http_404", False),
        ("drop", S.RETRY, "connection_error", True),
    ],
)
def test_transport_failures(scripted, answer, status, code, ambiguous):
    server = scripted(answer)
    result = backend_for(server.base_url, sender="Shop").send(sms())
    assert (result.status, result.error_code, result.ambiguous) == (status, code, bool(ambiguous))
    assert result.error_message
    assert_no_credentials(result)


def test_credentials_text_names_the_variable(scripted):
    server = scripted(twilio_error(20003, http=401))
    result = backend_for(server.base_url, sender="Shop").send(sms())
    assert result.error_message == (
        "Twilio refused the Account SID and auth token (HTTP 401): check them in SMS_URL."
    )


def test_a_read_timeout_is_ambiguous(sandbox):
    sandbox.configure(timeout_rate=1.0, timeout_s=1.0)
    backend = backend_for(sandbox.base_url, sender="Shop", read_timeout=0.2)
    result = backend.send(sms())
    assert (result.status, result.error_code, result.ambiguous) == (S.RETRY, "timeout", True)


def test_a_refused_connection_is_not_ambiguous():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = backend_for(f"http://127.0.0.1:{port}", sender="Shop").send(sms())
    assert (result.status, result.ambiguous) == (S.RETRY, False)


def test_the_sandbox_refuses_bad_fields(sandbox):
    backend = backend_for(sandbox.base_url, sender="Shop")
    sandbox.configure(codes={"+15005550002": 21610, "+15005550003": 30007})
    assert backend.send(sms(to="+15005550002")).error_code == "21610"
    accepted = backend.send(sms(to="+15005550003"))  # a delivery error comes later
    assert accepted.status is S.ACCEPTED
    other = TwilioBackend(
        "x", {"account_sid": "AC" + "9" * 32, "auth_token": TOKEN, "base_url": sandbox.base_url}
    )
    assert other.send(sms(sender="Shop")).error_code == "http_401"


@pytest.mark.parametrize(
    "form, code",
    [
        ({"From": "Shop", "Body": "x"}, 21604),
        ({"To": "15005550001", "From": "Shop", "Body": "x"}, 21211),
        ({"To": "+15005550001", "Body": "x"}, 21603),
        ({"To": "+15005550001", "From": "Shop!", "Body": "x"}, 21212),
        ({"To": "+15005550001", "MessagingServiceSid": "MG1", "Body": "x"}, 21705),
        ({"To": "+15005550001", "From": "Shop"}, 21602),
        ({"To": "+15005550001", "From": "Shop", "Body": "x" * 1601}, 21617),
    ],
)
def test_the_sandbox_refuses_what_twilio_refuses(sandbox, form, code):
    url = f"{sandbox.base_url}/2010-04-01/Accounts/{SID}/Messages.json"
    response = requests.post(url, data=form, auth=(SID, TOKEN), timeout=5)
    assert response.status_code == 400
    assert response.json() == {
        "code": code,
        "message": response.json()["message"],
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": 400,
    }
    assert sandbox.accepted == {}


def test_the_sandbox_checks_credentials_and_account(sandbox):
    api = f"{sandbox.base_url}/2010-04-01/Accounts"
    form = {"To": "+15005550001", "From": "Shop", "Body": "x"}
    wrong = requests.post(f"{api}/{SID}/Messages.json", data=form, auth=(SID, "no"), timeout=5)
    assert (wrong.status_code, wrong.json()["code"]) == (401, 20003)
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    other = requests.post(f"{api}/AC123/Messages.json", data=form, auth=(SID, TOKEN), timeout=5)
    assert (other.status_code, other.json()["code"]) == (404, 20404)
    unknown = requests.get(f"{api}/{SID}/Calls.json", auth=(SID, TOKEN), timeout=5)
    assert (unknown.status_code, unknown.json()["code"]) == (404, 20404)


# --- polling, balance, lookup -----------------------------------------------------------------


def _row(result, msg_id="m1"):
    return SimpleNamespace(msg_id=msg_id, provider_message_id=result.provider_message_id)


@needs_get
def test_polling_follows_the_message_to_its_final_state(sandbox):
    sandbox.configure(callbacks=False)
    backend = backend_for(sandbox.base_url, sender="Shop", poll="1")
    first, second = backend.send(sms()), backend.send(sms(to="+15005550002"))
    rows = [
        _row(first, "m1"),
        _row(second, "m2"),
        SimpleNamespace(msg_id="m3", provider_message_id=""),
    ]
    [pending, _] = backend.query_status(rows)
    assert (pending.status, pending.msg_id) == (D.SENT, "m1")
    sandbox.accepted[first.provider_message_id]["status"] = "delivered"
    sandbox.accepted[second.provider_message_id]["status"] = "undelivered"
    delivered, undelivered = backend.query_status(rows)
    assert (delivered.status, delivered.provider_message_id) == (
        D.DELIVERED,
        first.provider_message_id,
    )
    assert delivered.delivered_at is not None and delivered.delivered_at.tzinfo is not None
    assert (undelivered.status, undelivered.error_code) == (D.UNDELIVERED, "30003")
    assert undelivered.error_message == str(ERRORS[30003][1])
    assert delivered.raw["account_sid"] == "***"
    paths = [r.path for r in sandbox.requests if r.method == "GET"]
    assert paths[-1] == f"/2010-04-01/Accounts/{SID}/Messages/{second.provider_message_id}.json"


@needs_get
def test_polling_skips_a_message_twilio_does_not_know(sandbox):
    backend = backend_for(sandbox.base_url, poll="1")
    assert backend.query_status([SimpleNamespace(msg_id="m", provider_message_id="SMnope")]) == []


@needs_get
def test_polling_raises_when_twilio_cannot_be_asked(sandbox, scripted):
    backend = backend_for(sandbox.base_url, poll="1")
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as caught:
        backend.query_status([SimpleNamespace(msg_id="m", provider_message_id="SM1")])
    assert caught.value.result.error_code == "http_401"
    assert_no_credentials(caught.value, caught.value.result)
    server = scripted(twilio_error(20429, http=429))
    with pytest.raises(ProviderError, match="too many"):
        backend_for(server.base_url).fetch_statuses(
            [SimpleNamespace(msg_id="m", provider_message_id="SM1")]
        )


@needs_get
def test_the_balance(sandbox, scripted):
    backend = backend_for(sandbox.base_url)
    assert backend.balance() == AccountBalance(Decimal("25.50"), "USD")
    assert sandbox.requests[-1].path == f"/2010-04-01/Accounts/{SID}/Balance.json"
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError) as caught:
        backend.balance()
    assert_no_credentials(caught.value, caught.value.result)
    server = scripted((200, {"balance": "lots"}))
    with pytest.raises(ProviderError):
        backend_for(server.base_url).balance()


@needs_get
def test_lookup_sent_finds_a_message_by_number_and_text(sandbox):
    backend = backend_for(sandbox.base_url, sender="Shop")
    sent = backend.send(sms(text="Your order is ready"))
    found = backend.lookup_sent(sms(text="Your order is ready", msg_id="other"))
    assert found.status is S.ACCEPTED and found.provider_message_id == sent.provider_message_id
    assert backend.lookup_sent(sms(text="Another text")) is None
    assert backend.lookup_sent(sms(text="Your order is ready", to="+15005550009")) is None
    later = datetime.now(UTC) + timedelta(minutes=5)
    assert backend.lookup_sent(sms(text="Your order is ready"), since=later) is None
    query = dict(parse_qsl(urlsplit(sandbox.requests[-1].path).query))
    assert query == {"To": "+15005550001", "From": "Shop", "PageSize": "50"}


# --- the conformance suite --------------------------------------------------------------------


class TestTwilioConformance(ConformanceSuite):
    emulator = "twilio"
    login = "AC" + "5c1d" * 8  # the Account SID
    refused_code = 21211  # an invalid To number
    throttled_code = "20429"
    provider_error_code = "http_401"
    report_modes = ("callback", "poll") if HAS_GET else ("callback",)

    def sms_url(self, sandbox):
        return sandbox.sms_url(self.sender) + ("&poll=1" if HAS_GET else "")

    def secrets(self, sandbox):
        # The auth token. The Account SID is an identifier in every API path (urllib3's debug
        # log shows it); stored answers and our own logs have it scrubbed all the same.
        return [self.password]

    def callback_request(self, sandbox, message, delivered):
        # Twilio posts to, and signs, the StatusCallback URL it was given, ?msg_id= included.
        self.callback_url = message["callback_url"]
        return super().callback_request(sandbox, message, delivered)

    def post_callback(self, client, body, headers):
        headers = dict(headers)
        content_type = headers.pop("Content-Type")
        parts = urlsplit(self.callback_url)
        return client.post(
            f"{parts.path}?{parts.query}", data=body, content_type=content_type, headers=headers
        )

    def forge(self, body, headers):
        fields = dict(parse_qsl(body.decode()))
        fields["MessageStatus"] = "undelivered"  # a changed report under the old signature
        return urlencode(fields).encode(), headers
