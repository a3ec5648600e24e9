"""The SMPP sandbox SMSC (``crm_sms.sandbox.smpp``), driven by a raw ESME on loopback: binds,
submit_sm answers and failure injection, long texts put back together, receipts and their
re-delivery, enquire_link, unbind, and the ``sms_sandbox --smpp`` options."""

from __future__ import annotations

import argparse
import io
import socket

import pytest
from django.core.management.base import CommandError

from crm_sms.backends.smpp.pdus import header, make_pdu, parse_pdu, split_pdus
from crm_sms.sandbox.smpp import (
    SMPPSandbox,
    add_smpp_arguments,
    decode_text,
    run_smpp_from_options,
    split_udh,
)
from crm_sms.sandbox.smpp.texts import Reassembler

ROK, RINVBNDSTS, RALYBND, RINVPASWD, RINVSYSID = 0x00, 0x04, 0x05, 0x0E, 0x0F
RTHROTTLED, RSUBMITFAIL, RBINDFAIL, RINVDSTADR = 0x58, 0x45, 0x0D, 0x0B


class ESME:
    """A bare SMPP client: writes PDUs, reads them one at a time (with a timeout)."""

    def __init__(self, sandbox: SMPPSandbox):
        self.sock = socket.create_connection(("127.0.0.1", sandbox.port), timeout=5)
        self.buffer = bytearray()
        self.sequence = 0

    def send(self, command: str, **fields) -> int:
        self.sequence += 1
        self.sock.sendall(make_pdu(command, self.sequence, **fields))
        return self.sequence

    def read(self):
        """(command name, status, sequence, parsed PDU) of the next PDU."""
        while True:
            for raw in split_pdus(self.buffer):
                name, _id, status, sequence = header(raw)
                return name, status, sequence, parse_pdu(raw)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by the sandbox")
            self.buffer += chunk

    def bind(self, system_id: str = "test", password: str = "test") -> int:
        self.send("bind_transceiver", system_id=system_id, password=password, system_type="")
        name, status, _seq, _pdu = self.read()
        assert name == "bind_transceiver_resp"
        return status

    def submit(self, to: str = "79001234212", text: bytes = b"Hello", **fields):
        fields = {
            "source_addr": "Test",
            "destination_addr": to,
            "short_message": text,
            **fields,
        }
        sequence = self.send("submit_sm", **fields)
        name, status, answered, pdu = self.read()
        assert (name, answered) == ("submit_sm_resp", sequence)
        return status, pdu.message_id.decode() if pdu.message_id else ""

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sandbox():
    server = SMPPSandbox().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def esme(sandbox):
    client = ESME(sandbox)
    yield client
    client.close()


# --- text ------------------------------------------------------------------------------------
def test_decode_gsm7_with_extension_characters_and_ucs2():
    # "{" is ESC 0x28, "€" ESC 0x65; "@" is 0x00 and "Δ" 0x10 in the default alphabet.
    assert decode_text(b"\x00\x10\x1b\x28\x1b\x65", 0x00) == "@Δ{€"
    assert decode_text("Привет 👋".encode("utf-16-be"), 0x08) == "Привет 👋"
    assert decode_text(b"caf\xe9", 0x03) == "café"


def test_split_udh_reads_8_and_16_bit_references():
    assert split_udh(b"\x05\x00\x03\x2a\x03\x02abc") == ((0x2A, 3, 2), b"abc")
    assert split_udh(b"\x06\x08\x04\x01\x02\x02\x01xy") == ((0x0102, 2, 1), b"xy")
    assert split_udh(b"\x03\x24\x01\x00rest") == (None, b"rest")  # no concatenation element


def test_reassembler_puts_parts_together_in_any_order():
    reassembler = Reassembler()

    def part(number: int, data: bytes) -> dict:
        return {
            "system_id": "test",
            "source_addr": "Test",
            "source_addr_ton": 5,
            "source_addr_npi": 0,
            "destination_addr": "79001234212",
            "esm_class": 0x40,
            "data_coding": 0,
            "registered_delivery": int(number == 3),
            "short_message": bytes([5, 0, 3, 7, 3, number]) + data,
            "message_payload": b"",
            "message_id": f"id{number}",
        }

    assert reassembler.add(part(2, b"lo, ")) is None
    assert reassembler.add(part(3, b"world")) is None
    message = reassembler.add(part(1, b"Hel"))
    assert message["text"] == "Hello, world"
    assert message["parts"] == 3
    assert message["message_ids"] == ["id1", "id2", "id3"]
    assert message["registered_delivery"] == [0, 0, 1]


# --- binding ---------------------------------------------------------------------------------
def test_bind_with_the_right_credentials(sandbox, esme):
    assert esme.bind() == ROK
    assert sandbox.wait_for(lambda: sandbox.bound_connections == 1)
    assert sandbox.counters["binds"] == 1


@pytest.mark.parametrize(
    "system_id, password, expected",
    [("test", "wrong", RINVPASWD), ("nobody", "test", RINVSYSID)],
)
def test_bind_refused(sandbox, esme, system_id, password, expected):
    assert esme.bind(system_id, password) == expected
    assert sandbox.counters["bind_failures"] == 1
    assert sandbox.bound_connections == 0


def test_forced_bind_refusal_and_double_bind(sandbox, esme):
    sandbox.configure(bind_status=RBINDFAIL)
    assert esme.bind() == RBINDFAIL
    sandbox.configure(bind_status=ROK)
    assert esme.bind() == ROK
    assert esme.bind() == RALYBND


def test_submit_before_bind_is_refused(esme):
    assert esme.submit()[0] == RINVBNDSTS


def test_configure_refuses_unknown_options(sandbox):
    with pytest.raises(TypeError, match="latency"):
        sandbox.configure(latency=5)


# --- submit_sm -------------------------------------------------------------------------------
def test_accepted_submit_is_recorded_with_its_message_id(sandbox, esme):
    esme.bind()
    status, message_id = esme.submit(text=b"Hi there", source_addr_ton=5)
    assert status == ROK and message_id
    assert sandbox.accepted[message_id]["destination_addr"] == "79001234212"
    [message] = sandbox.messages
    assert (message["to"], message["sender"], message["text"]) == (
        "79001234212",
        "Test",
        "Hi there",
    )
    assert message["source_addr_ton"] == 5


def test_injected_failures(sandbox, esme):
    esme.bind()
    sandbox.configure(throttle_rate=1.0)
    assert esme.submit()[0] == RTHROTTLED
    sandbox.configure(throttle_rate=0.0, error_rate=1.0)
    assert esme.submit()[0] == RSUBMITFAIL
    sandbox.configure(error_rate=0.0, statuses={"79001112233": RINVDSTADR})
    assert esme.submit(to="79001112233")[0] == RINVDSTADR
    assert esme.submit()[0] == ROK
    assert sandbox.counters["throttled"] == 1 and sandbox.counters["errors"] == 1
    assert sandbox.counters["submits"] == 4 and len(sandbox.accepted) == 1


def test_rate_limit_answers_throttled_over_the_rate(sandbox, esme):
    esme.bind()
    sandbox.configure(rate=2)  # a burst of two, then about one every half second
    statuses = [esme.submit()[0] for _ in range(3)]
    assert statuses == [ROK, ROK, RTHROTTLED]


def test_dropped_connection_after_submit_keeps_the_message(sandbox, esme):
    esme.bind()
    sandbox.configure(drop_next=1)
    esme.send("submit_sm", source_addr="Test", destination_addr="79001234212", short_message=b"x")
    with pytest.raises(ConnectionError):
        esme.read()
    assert len(sandbox.accepted) == 1  # accepted, and the answer was lost with the connection
    assert sandbox.counters["dropped"] == 1


def test_hold_keeps_answers_until_release(sandbox, esme):
    esme.bind()
    sandbox.configure(hold=True)
    for _ in range(3):
        esme.send(
            "submit_sm", source_addr="Test", destination_addr="79001234212", short_message=b"x"
        )
    assert sandbox.wait_for(lambda: sandbox.outstanding == 3)
    sandbox.release()
    answers = [esme.read() for _ in range(3)]
    assert [(name, status) for name, status, _s, _p in answers] == [("submit_sm_resp", ROK)] * 3
    assert sandbox.wait_for(lambda: sandbox.outstanding == 0)
    assert sandbox.counters["max_outstanding"] == 3


def test_latency_delays_answers_without_serialising_them(sandbox, esme):
    esme.bind()
    sandbox.configure(latency_ms=100)
    for _ in range(5):
        esme.send(
            "submit_sm", source_addr="Test", destination_addr="79001234212", short_message=b"x"
        )
    assert [esme.read()[1] for _ in range(5)] == [ROK] * 5
    # All five were outstanding together: each waited its own latency, not the others'.
    assert sandbox.counters["max_outstanding"] == 5


# --- receipts --------------------------------------------------------------------------------
def test_receipt_is_delivered_by_deliver_sm(sandbox, esme):
    esme.bind()
    _status, message_id = esme.submit(registered_delivery=1)
    name, _status, sequence, pdu = esme.read()
    assert name == "deliver_sm"
    assert pdu.esm_class == 0x04
    assert pdu.receipted_message_id.decode() == message_id
    assert pdu.message_state == 2
    text = pdu.short_message.decode()
    assert text.startswith(f"id:{message_id} sub:001 dlvrd:001 ")
    assert "stat:DELIVRD err:000" in text
    assert pdu.source_addr.decode() == "79001234212"  # the subscriber
    esme.sock.sendall(make_pdu("deliver_sm_resp", sequence, message_id=""))
    assert sandbox.wait_for(lambda: sandbox.counters["receipts_delivered"] == 1)
    assert sandbox.delivered_receipts[0]["message_id"] == message_id


def test_undelivered_receipt(sandbox, esme):
    sandbox.configure(deliver_rate=0.0)
    esme.bind()
    esme.submit(registered_delivery=1)
    _name, _status, _sequence, pdu = esme.read()
    assert "stat:UNDELIV err:001" in pdu.short_message.decode()
    assert pdu.message_state == 5


def test_no_receipt_without_registered_delivery(sandbox, esme):
    esme.bind()
    assert esme.submit(registered_delivery=0)[0] == ROK
    assert esme.submit(registered_delivery=1)[0] == ROK
    assert esme.read()[0] == "deliver_sm"  # the second one's receipt only
    assert sandbox.counters["receipts_sent"] == 1


def test_receipts_wait_for_the_next_bind(sandbox):
    first = ESME(sandbox)
    first.bind()
    sandbox.configure(receipt_delay=0.2)
    _status, message_id = first.submit(registered_delivery=1)
    first.send("unbind")
    assert first.read()[0] == "unbind_resp"
    first.close()
    assert sandbox.wait_for(lambda: sandbox.queued_receipts() == 1)
    second = ESME(sandbox)
    try:
        second.bind()
        name, _status, _sequence, pdu = second.read()
        assert name == "deliver_sm"
        assert pdu.receipted_message_id.decode() == message_id
    finally:
        second.close()


def test_unanswered_receipts_are_delivered_again_after_a_reconnect(sandbox):
    first = ESME(sandbox)
    first.bind()
    _status, message_id = first.submit(registered_delivery=1)
    assert first.read()[0] == "deliver_sm"  # ... and never answered
    first.close()
    assert sandbox.wait_for(lambda: sandbox.queued_receipts() == 1)
    second = ESME(sandbox)
    try:
        second.bind()
        name, _status, sequence, pdu = second.read()
        assert (name, pdu.receipted_message_id.decode()) == ("deliver_sm", message_id)
        second.sock.sendall(make_pdu("deliver_sm_resp", sequence, message_id=""))
        assert sandbox.wait_for(lambda: sandbox.counters["receipts_delivered"] == 1)
        assert sandbox.counters["receipts_sent"] == 2
    finally:
        second.close()


# --- the rest of the protocol ----------------------------------------------------------------
def test_enquire_link_is_answered_unless_silenced(sandbox, esme):
    esme.bind()
    sequence = esme.send("enquire_link")
    assert esme.read()[:3] == ("enquire_link_resp", ROK, sequence)
    sandbox.configure(answer_enquire_link=False)
    esme.send("enquire_link")
    assert sandbox.wait_for(lambda: sandbox.counters["enquire_links"] == 2)
    esme.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        esme.read()


def test_unknown_commands_get_generic_nack(esme):
    esme.bind()
    sequence = esme.send("query_sm", message_id="abc", source_addr="Test")
    assert esme.read()[:3] == ("generic_nack", 0x03, sequence)


def test_unbind_both_ways(sandbox, esme):
    esme.bind()
    sandbox.unbind_connections()
    assert esme.read()[0] == "unbind"
    other = ESME(sandbox)
    try:
        other.bind()
        other.send("unbind")
        assert other.read()[0] == "unbind_resp"
        assert sandbox.wait_for(lambda: sandbox.counters["unbinds"] == 1)
    finally:
        other.close()


def test_reset_forgets_what_it_saw(sandbox, esme):
    esme.bind()
    esme.submit()
    sandbox.reset()
    assert (sandbox.submits, sandbox.messages, sandbox.accepted) == ([], [], {})
    assert not sandbox.counters


def test_url_carries_the_encoded_credentials(sandbox):
    sandbox.configure(password="p@ss:w")
    url = sandbox.url("Shop", window=5)
    assert url == f"smpp://test:p%40ss%3Aw@127.0.0.1:{sandbox.port}/?sender=Shop&window=5"


# --- sms_sandbox --smpp ----------------------------------------------------------------------
def _parse(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    add_smpp_arguments(parser)
    return vars(parser.parse_args(argv))


def test_no_smpp_sandbox_without_the_option():
    assert run_smpp_from_options(_parse()) is None


def test_run_smpp_from_options_starts_it_and_prints_the_url():
    options = _parse("--smpp", "0", "--smpp-password", "secret", "--smpp-latency-ms", "5")
    out = io.StringIO()
    sandbox = run_smpp_from_options(options, stdout=out)
    try:
        assert sandbox.password == "secret" and sandbox.latency_ms == 5
        assert f"SMS_URL=smpp://test:secret@127.0.0.1:{sandbox.port}/?sender=Test" in out.getvalue()
        client = ESME(sandbox)
        assert client.bind(password="secret") == ROK
        client.close()
    finally:
        sandbox.stop()


def test_run_smpp_from_options_on_a_busy_port():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        options = _parse("--smpp", str(taken.getsockname()[1]))
        with pytest.raises(CommandError, match="Pick another --smpp port"):
            run_smpp_from_options(options)


def test_share_options_are_checked():
    with pytest.raises(SystemExit):
        _parse("--smpp", "0", "--smpp-throttle-rate", "2")
