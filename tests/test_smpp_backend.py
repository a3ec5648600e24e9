"""SMPPBackend against the sandbox SMSC on loopback: options, the ESME_R* table row by row,
GSM-7/UCS-2/long texts, the window, throttling, ambiguous outcomes, binds refused, receipts
into DeliveryReports and messages, re-delivery after reconnects, keep-alive, TLS, and a
campaign through the outbox. No timing assertions: conditions are awaited with bounds."""

from __future__ import annotations

import shutil
import subprocess
import threading

import pytest
from django.utils import translation
from smpplib import consts as smpplib_consts

from crm_sms import text as sms_text
from crm_sms.backends.base import ConfigurationError, OutgoingSMS, SendStatus
from crm_sms.backends.smpp import (
    CODES,
    SMPPBackend,
    SMPPSBackend,
    apply_smpp_receipts,
    classify_status,
    status_name,
)
from crm_sms.backends.smpp.session import SMPPSession
from crm_sms.conf import parse_sms_url
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.sandbox.smpp import SMPPSandbox

S = SendStatus
SCHEMES = {"smpp": SMPPBackend, "smpps": SMPPSBackend}


@pytest.fixture
def smsc():
    with SMPPSandbox() as sandbox:
        yield sandbox


@pytest.fixture
def make_backend(smsc):
    """``make_backend(sandbox=smsc, **options)``: a backend for the sandbox with fast
    reconnects; all are closed afterwards."""
    made: list[SMPPBackend] = []

    def make(sandbox: SMPPSandbox | None = None, cls=SMPPBackend, **options) -> SMPPBackend:
        sandbox = sandbox or smsc
        options = {
            "host": "127.0.0.1",
            "port": sandbox.port,
            "system_id": sandbox.system_id,
            "password": sandbox.password,
            "sender": "Test",
            "connect_timeout": 2,
            "response_timeout": 5,
            "reconnect_backoff": 0.02,
            "reconnect_backoff_max": 0.1,
            **options,
        }
        backend = cls(alias="smpp", options=options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def backend(make_backend):
    return make_backend()


def sms(text: str = "Hello", to: str = "+79001234212", msg_id: str = "m1", sender: str = ""):
    return OutgoingSMS(to=to, text=text, sender=sender, msg_id=msg_id)


# --- configuration ---------------------------------------------------------------------------
def test_url_gives_host_port_and_credentials():
    config = parse_sms_url(
        "smpp://corp%40id:p%40ss@smsc.example.com:2776/?sender=Shop&window=20&system_type=VMA",
        schemes=SCHEMES,
    )
    backend = SMPPBackend(options=config["OPTIONS"])
    assert (backend.host, backend.port, backend.tls) == ("smsc.example.com", 2776, False)
    assert (backend.system_id, backend.password, backend.system_type) == ("corp@id", "p@ss", "VMA")
    assert backend.window == backend.max_batch_size == 20
    assert backend.default_sender == "Shop"
    assert "p@ss" not in repr(backend)


def test_smpps_means_tls_and_its_port():
    config = parse_sms_url("smpps://id:pw@smsc.example.com/", schemes=SCHEMES)
    backend = SMPPSBackend(options=config["OPTIONS"])
    assert (backend.tls, backend.port) == (True, 3550)
    assert SMPPBackend(options={"host": "h"}).port == 2775


def test_option_values_that_do_not_fit_are_refused():
    with pytest.raises(ConfigurationError) as caught:
        SMPPBackend(options={"password": "123456789", "long_text": "split", "window": "0"})
    message = str(caught.value)
    assert "password=*** must be at most 8 ASCII characters" in message
    assert "123456789" not in message
    assert "long_text='split' must be udh or payload" in message
    assert "window='0' must be at least 1" in message
    with pytest.raises(ConfigurationError, match="no option 'windw'"):
        SMPPBackend(options={"windw": "5"})


def test_check_reports_missing_credentials_and_sender():
    problems = SMPPBackend(options={"host": "smsc"}).check()
    assert [p.id for p in problems] == ["crm_sms.E010", "crm_sms.W010"]
    assert "system_id, password missing" in problems[0].msg
    refused = SMPPBackend(
        options={"host": "h", "system_id": "a", "password": "b", "sender": "A" * 12}
    )
    assert [p.id for p in refused.check()] == ["crm_sms.E004"]


# --- the ESME_R* table -----------------------------------------------------------------------
def test_the_table_has_every_code_smpplib_knows_by_the_same_name():
    known = {
        value: name.removeprefix("SMPP_")
        for name, value in vars(smpplib_consts).items()
        if name.startswith("SMPP_ESME_R")
    }
    assert {code: row.name for code, row in CODES.items()} == known


@pytest.mark.parametrize("code", sorted(c for c in CODES if c))
def test_submit_answer_row_by_row(smsc, backend, code):
    """Each ESME_R* answer to submit_sm, through the wire: its handling, name and texts."""
    row = CODES[code]
    smsc.configure(statuses={"79001112233": code})
    result = backend.send(sms(to="+79001112233"))
    assert result.status is row.handling
    assert result.error_code == row.name == status_name(code)
    assert result.error_message == row.en
    assert result.raw["command_status"] == code
    with translation.override("ru"):
        assert classify_status(code) == (row.handling, row.ru)
    assert row.en.endswith(".") and row.ru.endswith(".")


def test_throttling_and_full_queue_are_retried_others_are_not():
    assert classify_status(0x58)[0] is S.RETRY
    assert classify_status(0x14)[0] is S.RETRY
    assert classify_status(0x0B)[0] is S.REJECTED
    assert classify_status(0x0E)[0] is S.PROVIDER_ERROR


def test_unknown_code_is_permanent_with_its_number(smsc, backend):
    smsc.configure(statuses={"79001112233": 0x400})
    result = backend.send(sms(to="+79001112233"))
    assert (result.status, result.error_code) == (S.REJECTED, "SMPP_0x00000400")
    assert "0x00000400" in result.error_message


# --- texts -----------------------------------------------------------------------------------
def test_gsm7_text(smsc, backend):
    text = "Code 1234: {ok} €5 [a|b] ~^\\ @Δ"
    result = backend.send(sms(text))
    assert result.status is S.ACCEPTED
    [submit] = smsc.submits
    assert (submit["data_coding"], submit["esm_class"]) == (0, 0)
    assert submit["registered_delivery"] == 1
    assert smsc.messages[0]["text"] == text
    assert result.provider_message_id == smsc.messages[0]["message_ids"][0]


def test_ucs2_text(smsc, backend):
    text = "Здравствуйте, Анна! Ваш код 1234 👋"
    assert backend.send(sms(text)).status is S.ACCEPTED
    assert smsc.submits[0]["data_coding"] == 8
    assert smsc.messages[0]["text"] == text


@pytest.mark.parametrize(
    "text",
    [
        "Long GSM text, part after part. " * 12,  # 384 septets: 3 parts of 153
        "x" * 152 + "€" + "y" * 200,  # ESC + code must not be split across parts
        "Длинный текст по-русски, часть за частью. " * 5,  # UCS-2, 67 per part
        "a" * 66 + "😀" + "б" * 80,  # a surrogate pair must not be split
    ],
)
def test_long_text_is_sent_in_parts_and_reassembled(smsc, backend, text):
    result = backend.send(sms(text))
    assert result.status is S.ACCEPTED
    [message] = smsc.messages
    assert message["text"] == text
    assert message["parts"] == sms_text.sms_info(text).segments == result.raw["parts"]
    assert all(s["esm_class"] == 0x40 for s in smsc.submits)
    # One receipt per message, asked on its last part, whose id is the provider_message_id.
    assert message["registered_delivery"] == [0] * (message["parts"] - 1) + [1]
    assert result.provider_message_id == message["message_ids"][-1]


def test_long_text_in_message_payload(smsc, make_backend):
    backend = make_backend(long_text="payload")
    text = "Длинный текст одним куском. " * 10
    assert backend.send(sms(text)).status is S.ACCEPTED
    [submit] = smsc.submits
    assert submit["short_message"] == b"" and submit["esm_class"] == 0
    assert smsc.messages[0]["text"] == text


@pytest.mark.parametrize(
    "sender, options, expected",
    [
        ("MyShop", {}, ("MyShop", 5, 0)),
        ("+79001234567", {}, ("79001234567", 1, 1)),
        ("7522", {"source_ton": "3", "source_npi": "0"}, ("7522", 3, 0)),
    ],
)
def test_source_address_type(smsc, make_backend, sender, options, expected):
    backend = make_backend(**options)
    assert backend.send(sms(sender=sender)).status is S.ACCEPTED
    submit = smsc.submits[0]
    assert (submit["source_addr"], submit["source_addr_ton"], submit["source_addr_npi"]) == expected
    assert (submit["destination_addr"], submit["dest_addr_ton"]) == ("79001234212", 1)


def test_no_receipts_asked_when_disabled(smsc, make_backend):
    backend = make_backend(registered_delivery="0")
    assert backend.send(sms()).status is S.ACCEPTED
    assert smsc.submits[0]["registered_delivery"] == 0


@pytest.mark.parametrize(
    "message, code",
    [
        (sms(to="12345"), "invalid_phone"),
        (sms(sender="ThisIsTooLong"), "sender_too_long"),
        (sms(sender="Кириллица"), "sender_characters"),
        (sms(text="  "), "empty_text"),
    ],
)
def test_invalid_messages_are_refused_without_sending(smsc, backend, message, code):
    result = backend.send(message)
    assert (result.status, result.error_code) == (S.REJECTED, code)
    assert smsc.counters["submits"] == 0


# --- binding ---------------------------------------------------------------------------------
def test_bind_ok(smsc, backend):
    assert backend.open()
    assert smsc.wait_for(lambda: smsc.bound_connections == 1)
    assert backend.session.binds == 1


@pytest.mark.parametrize(
    "options, sandbox_options, code, words",
    [
        ({"password": "wrong"}, {}, "ESME_RINVPASWD", "refused the password"),
        ({"system_id": "nobody"}, {}, "ESME_RINVSYSID", "does not know this system_id"),
        ({}, {"bind_status": 0x0D}, "ESME_RBINDFAIL", "IP address is not allowed"),
    ],
)
def test_bind_refused_is_a_provider_error(
    smsc, make_backend, options, sandbox_options, code, words
):
    smsc.configure(**sandbox_options)
    backend = make_backend(**options)
    results = backend.send_many([sms(msg_id="a"), sms(msg_id="b")])
    assert [(r.status, r.error_code) for r in results] == [(S.PROVIDER_ERROR, code)] * 2
    assert words in results[0].error_message
    assert "SMS_URL" in results[0].error_message
    assert "wrong" not in results[0].error_message
    assert smsc.counters["submits"] == 0


def test_connection_refused_is_a_provider_error(make_backend):
    with socket_closed_port() as port:
        backend = make_backend(port=port)
        result = backend.send(sms())
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "connect_failed")
    assert f"127.0.0.1:{port}" in result.error_message
    assert not result.ambiguous  # nothing was sent


def test_hang_up_at_bind_is_a_provider_error(make_backend):
    """An SMSC that closes the connection instead of answering the bind (an IP filter)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        stop = threading.Event()

        def hang_up() -> None:
            server.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                conn.recv(1024)
                conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        try:
            backend = make_backend(port=server.getsockname()[1])
            result = backend.send(sms())
        finally:
            stop.set()
            thread.join(5)
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "bind_closed")


def socket_closed_port():
    """A context manager giving a loopback port nobody listens on."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        with socket.create_server(("127.0.0.1", 0)) as probe:
            port = probe.getsockname()[1]
        yield port

    return closed()


def test_backoff_doubles_up_to_the_maximum():
    session = SMPPSession(
        host="h", port=1, system_id="s", password="p", backoff=1.0, backoff_max=8.0
    )
    for failures, full in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        assert 0.75 * full <= session._delay(failures) <= full
    session.close()


# --- the window ------------------------------------------------------------------------------
def test_window_of_ten_sends_ten_messages_in_one_round_trip(smsc, make_backend):
    backend = make_backend(window="10")
    assert backend.open()
    smsc.configure(hold=True)  # answers wait until all ten were seen
    results = []
    sender = threading.Thread(
        target=lambda: results.extend(
            backend.send_many([sms(msg_id=f"m{i}", to=f"+7900123420{i}") for i in range(10)])
        )
    )
    sender.start()
    assert smsc.wait_for(lambda: smsc.outstanding == 10)
    smsc.release()
    sender.join(10)
    assert [r.status for r in results] == [S.ACCEPTED] * 10
    assert smsc.counters["max_outstanding"] == 10


def test_window_of_one_sends_one_at_a_time(smsc, make_backend):
    backend = make_backend(window="1")
    smsc.configure(latency_ms=5)
    results = backend.send_many([sms(msg_id=f"m{i}", to=f"+7900123420{i}") for i in range(10)])
    assert [r.status for r in results] == [S.ACCEPTED] * 10
    assert smsc.counters["max_outstanding"] == 1


def test_the_window_is_shared_by_the_worker_threads(smsc, make_backend):
    backend = make_backend(window="4")
    smsc.configure(latency_ms=20)
    results: list = []
    lock = threading.Lock()
    start = threading.Barrier(5)  # the first sends race to create the connection

    def send(offset: int) -> None:
        batch = [sms(msg_id=f"t{offset}{i}", to=f"+790012342{offset}{i}") for i in range(4)]
        start.wait(5)
        answer = backend.send_many(batch)
        with lock:
            results.extend(answer)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert [r.status for r in results] == [S.ACCEPTED] * 20
    assert smsc.counters["max_outstanding"] <= 4
    assert len(smsc.accepted) == 20
    assert smsc.counters["connections"] == 1


# --- throttling and ambiguity ----------------------------------------------------------------
def test_throttled_message_is_retried_later(smsc, backend):
    smsc.configure(throttle_rate=1.0)
    result = backend.send(sms())
    assert (result.status, result.error_code) == (S.RETRY, "ESME_RTHROTTLED")
    assert "messages-per-second" in result.error_message
    assert not smsc.accepted


def test_throttled_later_part_is_resent_alone(smsc, backend):
    smsc.configure(rate=2)  # two parts pass, the third is throttled until the bucket refills
    text = "Long GSM text, part after part. " * 12
    result = backend.send(sms(text))
    assert result.status is S.ACCEPTED
    assert smsc.counters["throttled"] >= 1
    assert len(smsc.accepted) == 3  # each part accepted once
    assert smsc.messages[0]["text"] == text


def test_parts_that_stay_refused_fail_the_message_without_a_resend(smsc, backend):
    smsc.configure(rate=0.001)  # one part passes; the others stay throttled
    result = backend.send(sms("Long GSM text, part after part. " * 12))
    assert (result.status, result.error_code) == (S.REJECTED, "partial")
    assert "Only 1 of 3 parts" in result.error_message
    assert len(smsc.accepted) == 1


def test_connection_lost_after_submit_is_ambiguous(smsc, backend):
    assert backend.open()
    smsc.configure(drop_next=1)
    result = backend.send(sms())
    assert (result.status, result.error_code) == (S.RETRY, "ambiguous")
    assert result.ambiguous is True and result.raw["ambiguous"] is True
    assert result.raw["reason"] == "connection_lost"
    assert SMPPBackend.retry_safety == "none"
    assert len(smsc.accepted) == 1  # the SMSC did take it: a resend would be a duplicate
    # The backend reconnects by itself and goes on.
    assert backend.send(sms(msg_id="m2")).status is S.ACCEPTED
    assert smsc.counters["binds"] == 2


def test_no_answer_in_time_is_ambiguous(smsc, make_backend):
    backend = make_backend(response_timeout="0.3")
    assert backend.open()
    smsc.configure(hold=True)
    result = backend.send(sms())
    assert (result.error_code, result.raw["reason"], result.ambiguous) == (
        "ambiguous",
        "timeout",
        True,
    )
    smsc.release()


# --- receipts --------------------------------------------------------------------------------
@pytest.mark.django_db
def test_receipt_marks_the_message_delivered(smsc, backend, django_capture_on_commit_callbacks):
    message = Message.objects.create(phone="+79001234212", text="Hello", provider="smpp")
    result = backend.send(sms(msg_id=message.msg_id))
    assert result.status is S.ACCEPTED
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.SENT, provider_message_id=result.provider_message_id
    )
    assert smsc.wait_for(lambda: smsc.counters["receipts_sent"] == 1)
    assert wait_until(lambda: backend.session.receipts_waiting)
    with django_capture_on_commit_callbacks(execute=True):
        counts = apply_smpp_receipts(backend)
    assert counts["applied"] == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.delivered_at is not None
    event = MessageEvent.objects.get(message=message, new_status=MessageStatus.DELIVERED)
    assert event.source == "callback"
    assert event.payload["receipted_message_id"] == result.provider_message_id
    # Acknowledged only now, after the write.
    assert smsc.wait_for(lambda: smsc.counters["receipts_delivered"] == 1)


@pytest.mark.django_db
def test_undelivered_receipt_keeps_the_error(smsc, backend, django_capture_on_commit_callbacks):
    smsc.configure(deliver_rate=0.0)
    result = backend.send(sms())
    message = Message.objects.create(
        phone="+79001234212",
        text="Hello",
        provider="smpp",
        status=MessageStatus.SENT,
        provider_message_id=result.provider_message_id,
    )
    assert wait_until(lambda: backend.session.receipts_waiting)
    with django_capture_on_commit_callbacks(execute=True):
        apply_smpp_receipts(backend)
    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNDELIVERED, "UNDELIV:001")
    assert "undeliverable" in message.error_message


def test_collect_reports_returns_and_acknowledges(smsc, backend):
    result = backend.send(sms())
    assert wait_until(lambda: backend.session.receipts_waiting)
    [report] = backend.collect_reports()
    assert (report.status, report.provider_message_id) == ("delivered", result.provider_message_id)
    assert smsc.wait_for(lambda: smsc.counters["receipts_delivered"] == 1)
    assert backend.collect_reports() == []


def test_receipts_sent_while_disconnected_arrive_on_the_next_bind(smsc, make_backend):
    smsc.configure(receipt_delay=0.3)
    first = make_backend()
    result = first.send(sms())
    first.close()  # unbinds before the receipt is due
    assert smsc.wait_for(lambda: smsc.queued_receipts() == 1)
    second = make_backend()
    assert second.open()
    assert wait_until(lambda: second.session.receipts_waiting)
    [report] = second.collect_reports()
    assert report.provider_message_id == result.provider_message_id


def test_a_worker_that_only_collects_still_binds_and_gets_receipts(smsc, make_backend):
    smsc.configure(receipt_delay=0.2)
    sender = make_backend()
    result = sender.send(sms())
    sender.close()
    collector = make_backend()
    assert collector.collect_reports() == []  # binds in the background
    assert wait_until(lambda: collector.session.receipts_waiting == 1)
    [report] = collector.collect_reports()
    assert report.provider_message_id == result.provider_message_id


def test_unacknowledged_receipts_come_again_after_a_reconnect(smsc, backend):
    result = backend.send(sms())
    assert wait_until(lambda: backend.session.receipts_waiting)
    smsc.kill_connections()  # the receipt was received, not acknowledged
    assert wait_until(lambda: backend.session.receipts_waiting == 2, timeout=10)
    assert smsc.counters["binds"] == 2
    reports = backend.collect_reports()
    # The first copy could not be acknowledged (its connection is gone); the second is.
    assert [r.provider_message_id for r in reports] == [result.provider_message_id] * 2
    assert smsc.wait_for(lambda: smsc.counters["receipts_delivered"] == 1)


# --- keep-alive and reconnects ---------------------------------------------------------------
def test_enquire_link_keeps_the_connection(smsc, make_backend):
    backend = make_backend(enquire_link="0.1")
    assert backend.open()
    assert smsc.wait_for(lambda: smsc.counters["enquire_links"] >= 3)
    assert smsc.counters["connections"] == 1 and backend.session.bound


def test_silent_smsc_is_detected_and_reconnected(smsc, make_backend):
    smsc.configure(answer_enquire_link=False)
    backend = make_backend(enquire_link="0.1", response_timeout="0.3")
    assert backend.open()
    assert smsc.wait_for(lambda: smsc.counters["binds"] >= 2, timeout=10)


def test_reconnect_after_the_smsc_drops_the_connection(smsc, backend):
    assert backend.send(sms()).status is S.ACCEPTED
    smsc.kill_connections()
    assert smsc.wait_for(lambda: smsc.counters["binds"] == 2, timeout=10)
    assert backend.send(sms(msg_id="m2")).status is S.ACCEPTED


def test_reconnect_after_the_smsc_unbinds(smsc, backend):
    assert backend.open()
    smsc.unbind_connections()
    assert smsc.wait_for(lambda: smsc.counters["binds"] == 2, timeout=10)
    assert backend.send(sms()).status is S.ACCEPTED


def test_close_unbinds(smsc, backend):
    assert backend.open()
    backend.close()
    assert smsc.wait_for(lambda: smsc.counters["unbinds"] == 1)


# --- TLS -------------------------------------------------------------------------------------
@pytest.fixture
def certificate(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_smpps_with_a_trusted_certificate(make_backend, certificate):
    cert, key = certificate
    with SMPPSandbox(tls_certfile=str(cert), tls_keyfile=str(key)) as tls_smsc:
        assert tls_smsc.url().startswith("smpps://")
        backend = make_backend(sandbox=tls_smsc, cls=SMPPSBackend, ca_bundle=str(cert))
        assert backend.send(sms("Привет по TLS")).status is S.ACCEPTED
        assert tls_smsc.messages[0]["text"] == "Привет по TLS"
        assert wait_until(lambda: backend.session.receipts_waiting)
        backend.close()


def test_smpps_with_an_unknown_certificate_is_a_provider_error(make_backend, certificate):
    cert, key = certificate
    with SMPPSandbox(tls_certfile=str(cert), tls_keyfile=str(key)) as tls_smsc:
        backend = make_backend(sandbox=tls_smsc, cls=SMPPSBackend)
        result = backend.send(sms())
        backend.close()
    assert (result.status, result.error_code) == (S.PROVIDER_ERROR, "tls_error")
    assert "ca_bundle" in result.error_message


# --- through the outbox ----------------------------------------------------------------------
@pytest.mark.django_db
def test_a_campaign_goes_out_over_smpp_and_is_delivered(
    smsc, outbox_settings, django_capture_on_commit_callbacks
):
    """Throttling and a dropped connection on the way; every message is accepted once."""
    from crm_sms.backends import get_backend
    from crm_sms.models import Contact
    from crm_sms.outbox import dispatch_due, send_campaign

    config = parse_sms_url(
        smsc.url(window=5, reconnect_backoff=0.02, reconnect_backoff_max=0.1), schemes=SCHEMES
    )
    outbox_settings.CRM_SMS = {**outbox_settings.CRM_SMS, "PROVIDERS": {"default": config}}
    for i in range(30):
        Contact.objects.create(phone=f"+790012340{i:02d}", first_name=f"N{i}")
    smsc.configure(throttle_rate=0.2, latency_ms=2)
    campaign = send_campaign(Contact.objects.all(), "Hello, {{ first_name }}!")

    def dispatch_due_and_commit() -> None:  # receipts are acknowledged when their write commits
        with django_capture_on_commit_callbacks(execute=True):
            dispatch_due(concurrency=3)

    dispatch_due_and_commit()
    smsc.kill_connections()  # a network failure between two rounds
    smsc.configure(throttle_rate=0.0)
    sent_or_better = ("sent", "delivered")  # the worker applies receipts as they come
    for _round in range(20):
        if not Message.objects.filter(campaign=campaign).exclude(status__in=sent_or_better):
            break
        dispatch_due_and_commit()
    statuses = set(Message.objects.filter(campaign=campaign).values_list("status", flat=True))
    assert statuses <= set(sent_or_better)
    accepted = sorted(record["destination_addr"] for record in smsc.accepted.values())
    assert accepted == sorted(f"790012340{i:02d}" for i in range(30))  # each exactly once
    backend = get_backend("default")

    def all_receipts_applied() -> bool:  # what the worker does between batches and when idle
        with django_capture_on_commit_callbacks(execute=True):
            apply_smpp_receipts(backend)
        return smsc.counters["receipts_delivered"] == 30

    # Receipts taken before the connection was killed could not be acknowledged: the SMSC
    # sends them again after the reconnect, and applying them again changes nothing.
    assert wait_until(all_receipts_applied, timeout=10)
    assert Message.objects.filter(campaign=campaign, status="delivered").count() == 30


@pytest.mark.django_db
def test_a_connection_lost_after_submit_leaves_the_message_uncertain(smsc, outbox_settings):
    """SMPP has no de-duplication key: the worker never resends such a message by itself."""
    from crm_sms.outbox import dispatch_due, send_sms

    config = parse_sms_url(smsc.url(reconnect_backoff=0.02), schemes=SCHEMES)
    outbox_settings.CRM_SMS = {**outbox_settings.CRM_SMS, "PROVIDERS": {"default": config}}
    message = send_sms("+79001234212", "Hello")
    smsc.configure(drop_next=1)
    for _round in range(3):  # later rounds must not send it again
        dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.maybe_sent) == ("uncertain", True)
    assert len(smsc.accepted) == 1


def wait_until(condition, timeout: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return bool(condition())
