"""SmscBackend against the SMSC emulator on loopback: requests, answers, code tables row by row,
polling, lookup_sent (never twice) and the balance."""

from __future__ import annotations

import types
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError

from crm_sms.backends import get_backend
from crm_sms.backends.base import DeliveryStatus, OutgoingSMS, RetrySafety, SendStatus
from crm_sms.backends.smsc import (
    SEND_ERRORS,
    STATUS_CODES,
    STATUS_ERRORS,
    Balance,
    SmscBackend,
    classify_send_error,
    numeric_id,
    status_report,
)
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ProviderError
from crm_sms.sandbox import SandboxServer

S, D = SendStatus, DeliveryStatus
LOGIN, PASSWORD = "smsc-login", "p@ss:w0rd/1"


def sms(i: int, text: str = "Hello", sender: str = "", msg_id: str = "") -> OutgoingSMS:
    return OutgoingSMS(f"+7900{i:07d}", text, sender, msg_id or f"m{i:015d}")


def row(message: OutgoingSMS, result) -> types.SimpleNamespace:
    """What polling passes: a Message-like object."""
    return types.SimpleNamespace(
        msg_id=message.msg_id, provider_message_id=result.provider_message_id
    )


@pytest.fixture
def sandbox():
    server = SandboxServer(provider="smsc", login=LOGIN, password=PASSWORD, callbacks=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def configure(sandbox, settings):
    """Configure the default provider as ``SMS_URL`` + ``query``; returns the backend."""

    def configure(query: str = "") -> SmscBackend:
        url = sandbox.sms_url("Shop") + query
        settings.CRM_SMS = {"PROVIDERS": {"default": parse_sms_url(url)}}
        return get_backend()

    return configure


@pytest.fixture
def backend(configure) -> SmscBackend:
    return configure()


def sends(sandbox) -> list:
    return [r for r in sandbox.requests if r.route == "/sys/send.php"]


# --- configuration ----------------------------------------------------------------------------
def test_url_configures_credentials_sender_and_address():
    config = parse_sms_url("smsc://LOGIN:PA%40SS%3Aw@smsc.ru/?sender=Shop")
    assert config["BACKEND"] == "crm_sms.backends.smsc.SmscBackend"
    backend = SmscBackend("x", config["OPTIONS"])
    assert (backend.login, backend.password, backend.default_sender) == ("LOGIN", "PA@SS:w", "Shop")
    assert backend.base_url == "https://smsc.ru"
    assert backend.callback_secret == "PA@SS:w"  # the password unless callback_secret is set
    assert SmscBackend.retry_safety is RetrySafety.LOOKUP and backend.max_batch_size == 1
    local = SmscBackend("x", parse_sms_url("smsc+http://a:b@127.0.0.1:9/")["OPTIONS"])
    assert local.base_url == "http://127.0.0.1:9"


def test_missing_credentials_are_a_check_error():
    assert [p.id for p in SmscBackend("x", {}).check()] == ["crm_sms.E010"]
    assert SmscBackend("x", {"login": "a", "password": "b"}).check() == []


def test_batch_size_turns_lookup_off_for_the_instance():
    backend = SmscBackend("x", {"login": "a", "password": "b", "batch_size": "500"})
    assert backend.max_batch_size == 100
    assert backend.retry_safety is RetrySafety.NONE
    assert SmscBackend.retry_safety is RetrySafety.LOOKUP


def test_sender_validation():
    backend = SmscBackend("x", {"login": "a", "password": "b"})
    backend.validate_sender("MyShop")
    backend.validate_sender("79001234567")
    for bad in ("Магазин", "TwelveChars!", "a" * 12):
        with pytest.raises(ValidationError):
            backend.validate_sender(bad)


# --- sending ----------------------------------------------------------------------------------
def test_send_posts_the_form_with_our_id(backend, sandbox):
    message = sms(1, text="Привет")
    result = backend.send(message)
    assert result.status is S.ACCEPTED, result
    assert result.provider_message_id == f"{message.msg_id}-79000000001"
    [request] = sends(sandbox)
    assert request.method == "POST" and "?" not in request.path  # credentials not in the URL
    form = {k: v[0] for k, v in request.form().items()}
    assert form == {
        "login": LOGIN,
        "psw": PASSWORD,
        "fmt": "3",
        "charset": "utf-8",
        "op": "1",
        "phones": "79000000001",
        "mes": "Привет",
        "id": message.msg_id,
        "sender": "Shop",
    }
    assert sandbox.accepted[result.provider_message_id]["text"] == "Привет"


def test_numeric_ids_are_deterministic_and_in_range(configure, sandbox):
    backend = configure("&numeric_ids=1")
    message = sms(2)
    result = backend.send(message)
    sent_id = sends(sandbox)[0].form()["id"][0]
    assert sent_id == str(numeric_id(message.msg_id)) and 1 <= int(sent_id) <= 2147483647
    assert result.provider_message_id == f"{sent_id}-79000000002"
    assert numeric_id("abc") == numeric_id("abc") != numeric_id("abd")
    # An id SMSC would not take as a string is sent as a number as well.
    assert SmscBackend("x", {"login": "a", "password": "b"}).smsc_id("bad id!").isdigit()


def test_invalid_number_is_refused_before_sending(backend, sandbox):
    result = backend.send(OutgoingSMS("+12", "Hi", "", "m1"))
    assert (result.status, result.error_code) == (S.REJECTED, "invalid_phone")
    assert not sends(sandbox)


def test_batch_mode_groups_same_text_and_sender(configure, sandbox):
    backend = configure("&batch_size=3")
    batch = [sms(1), sms(2), sms(3), sms(4), sms(5, text="Other"), sms(1), sms(6, sender="Co")]
    results = backend.send_many(batch)
    assert all(r.status is S.ACCEPTED for r in results), results
    phones = [r.form()["phones"][0] for r in sends(sandbox)]
    assert phones == [
        "79000000001,79000000002,79000000003",
        "79000000004,79000000001",
        "79000000005",
        "79000000006",
    ]
    # A request goes under the id of its first message; each result names its own phone.
    first_id = batch[0].msg_id
    assert [r.provider_message_id for r in results[:3]] == [
        f"{first_id}-7900000000{i}" for i in (1, 2, 3)
    ]
    assert len(set(r.provider_message_id for r in results)) == len(batch)


def test_per_phone_status_refuses_only_that_phone(configure, sandbox):
    backend = configure("&batch_size=10")
    sandbox.configure(codes={"79000000002": 22, "79000000003": 25})
    results = backend.send_many([sms(1), sms(2), sms(3)])
    assert [(r.status, r.error_code) for r in results] == [
        (S.ACCEPTED, ""),
        (S.REJECTED, "22"),
        (S.REJECTED, "25"),
    ]
    assert results[1].error_message == str(STATUS_CODES[22][1])
    assert results[1].raw["phone"]["status"] == "22"


@pytest.mark.parametrize("code", sorted(SEND_ERRORS))
def test_send_error_row_through_the_emulator(backend, sandbox, code):
    sandbox.configure(codes={"79000000001": code})
    result = backend.send(sms(1))
    status, meaning = SEND_ERRORS[code]
    assert (result.status, result.error_code) == (status, str(code))
    assert result.error_message == str(meaning)
    assert result.raw["error_code"] == code


def test_the_same_request_within_a_minute_is_error_9(backend, sandbox):
    message = sms(1)
    assert backend.send(message).status is S.ACCEPTED
    again = backend.send(message)  # a blind resend: SMSC refuses it for a minute
    assert (again.status, again.error_code) == (S.RETRY, "9")
    assert sandbox.provider.duplicates == []


def test_wrong_credentials_pause_and_are_never_shown(configure, sandbox, caplog):
    backend = configure()
    sandbox.configure(password="another")
    result = backend.send(sms(1))
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "2")
    shown = f"{result!r} {caplog.text} {backend!r}"
    assert PASSWORD not in shown and LOGIN not in shown


# --- code tables, row by row ------------------------------------------------------------------
@pytest.mark.parametrize("code", sorted(SEND_ERRORS))
def test_send_error_table_row(code):
    assert classify_send_error(code) == (SEND_ERRORS[code][0], str(SEND_ERRORS[code][1]))


def test_unknown_send_error_is_permanent_and_keeps_the_text():
    status, message = classify_send_error(99, "odd")
    assert status is S.REJECTED and "99" in message and "odd" in message


@pytest.mark.parametrize("code", sorted(STATUS_CODES))
def test_status_table_row(code):
    expected, meaning = STATUS_CODES[code]
    mapped = status_report(code)
    if expected is None:
        assert mapped is None  # -3: SMSC does not know it: no report
        return
    status, error_code, message = mapped
    assert status == expected
    if expected == D.UNDELIVERED:
        assert (error_code, message) == (str(code), str(meaning))
    else:
        assert (error_code, message) == ("", "")


@pytest.mark.parametrize("err", sorted(e for e in STATUS_ERRORS if e))
def test_status_error_table_row(err):
    _status, _code, message = status_report(20, err)
    assert str(err) in message and str(STATUS_ERRORS[err]) in message


def test_unknown_status_is_undelivered_with_its_code():
    assert status_report(77) == (D.UNDELIVERED, "77", "SMSC status 77")


# --- polling ----------------------------------------------------------------------------------
def test_query_status_follows_the_message(backend, sandbox):
    messages = [sms(1), sms(2), sms(3)]
    results = backend.send_many(messages)
    rows = [row(m, r) for m, r in zip(messages, results, strict=True)]
    assert {r.status for r in backend.query_status(rows)} == {D.SENT}
    sandbox.provider.finish(sandbox.accepted[results[0].provider_message_id], True)
    sandbox.provider.finish(sandbox.accepted[results[1].provider_message_id], False)
    gone = types.SimpleNamespace(msg_id="gone", provider_message_id="nope-79000000009")
    reports = {r.msg_id: r for r in backend.query_status([*rows, gone])}
    assert set(reports) == {m.msg_id for m in messages}  # -3 (not found): no report
    delivered, undelivered, sent = (reports[m.msg_id] for m in messages)
    assert delivered.status == D.DELIVERED and delivered.delivered_at is not None
    assert (undelivered.status, undelivered.error_code) == (D.UNDELIVERED, "20")
    assert "1" in undelivered.error_message and undelivered.delivered_at is None
    assert sent.status == D.SENT
    assert delivered.provider_message_id == results[0].provider_message_id


def test_query_status_asks_100_pairs_per_request(backend, sandbox):
    rows = [
        types.SimpleNamespace(msg_id=f"m{i}", provider_message_id=f"id{i}-7900{i:07d}")
        for i in range(250)
    ]
    assert backend.query_status(rows) == []
    queries = [r.form() for r in sandbox.requests if r.route == "/sys/status.php"]
    assert [len(q["phone"][0].split(",")) for q in queries] == [100, 100, 50]
    assert [len(q["id"][0].split(",")) for q in queries] == [100, 100, 50]


def test_query_status_refused_raises(configure, sandbox):
    backend = configure()
    sandbox.configure(password="changed")
    with pytest.raises(ProviderError, match="SMSC error 2") as caught:
        backend.query_status([types.SimpleNamespace(msg_id="a", provider_message_id="a-7900")])
    assert PASSWORD not in repr(caught.value.result)


# --- lookup_sent: never twice -----------------------------------------------------------------
def test_lookup_finds_an_accepted_message_and_not_a_missing_one(backend, sandbox):
    sent, missing = sms(1), sms(2)
    result = backend.send(sent)
    found = backend.lookup_sent(sent)
    assert found.status is S.ACCEPTED
    assert found.provider_message_id == result.provider_message_id
    assert backend.lookup_sent(missing) is None
    rebuilt = OutgoingSMS(sent.to, sent.text, "", sent.msg_id)
    assert backend.lookup_sent(rebuilt).provider_message_id == result.provider_message_id


def test_lookup_that_cannot_say_raises(backend, sandbox):
    sandbox.configure(fail_rate=1.0)
    with pytest.raises(ProviderError):
        backend.lookup_sent(sms(1))
    sandbox.stop()
    with pytest.raises(ProviderError):
        backend.lookup_sent(sms(1))


def test_a_timed_out_send_is_found_not_resent(backend, sandbox):
    """The SMS.RU double send, closed: the answer is lost, the lookup says it arrived."""
    sandbox.configure(timeout_rate=1.0, timeout_s=0.6)
    backend.read_timeout = 0.2
    message = sms(1)
    result = backend.send(message)
    assert result.status is S.RETRY and result.ambiguous
    sandbox.configure(timeout_rate=0.0)
    deadline = 50
    while not sandbox.accepted and deadline:
        sandbox._stopping.wait(0.05)
        deadline -= 1
    found = backend.lookup_sent(message)
    assert found is not None and found.status is S.ACCEPTED
    assert sandbox.provider.duplicates == []


def test_the_emulator_shows_a_blind_resend(backend, sandbox):
    sandbox.provider.duplicate_window = 0  # SMSC's one-minute refusal aside
    message = sms(1)
    backend.send(message)
    backend.send(message)
    assert sandbox.provider.duplicates == [f"{message.msg_id}-79000000001"]


# --- balance ----------------------------------------------------------------------------------
def test_balance(backend, sandbox):
    assert backend.balance() == Balance(Decimal("100.50"), "RUB")
    sandbox.configure(login="other")
    with pytest.raises(ProviderError, match="SMSC error 2"):
        backend.balance()
