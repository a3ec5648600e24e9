"""The sandbox SMSC: a threaded TCP server speaking SMPP 3.4 (see the package docstring)."""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import secrets
import socket
import ssl
import threading
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from ...backends.smpp.pdus import RESPONSE_BIT, header, make_pdu, parse_pdu
from .connection import ESMEConnection
from .texts import Reassembler, as_text, receipt_text

logger = logging.getLogger("crm_sms.sandbox.smpp")

ROK, RINVCMDID, RINVBNDSTS, RALYBND = 0x00, 0x03, 0x04, 0x05
RSYSERR, RINVPASWD, RINVSYSID, RTHROTTLED, RSUBMITFAIL = 0x08, 0x0E, 0x0F, 0x58, 0x45
STATE_DELIVERED, STATE_UNDELIVERABLE = 2, 5

#: Behaviour knobs accepted by __init__ and configure().
OPTIONS = (
    "system_id",
    "password",
    "latency_ms",
    "throttle_rate",
    "rate",
    "error_rate",
    "error_status",
    "statuses",
    "drop_rate",
    "drop_next",
    "bind_status",
    "receipts",
    "receipt_delay",
    "deliver_rate",
    "answer_enquire_link",
    "hold",
)


class SMPPSandbox:
    """The SMSC. ``start()`` serves in background threads; ``stop()`` ends them.

    What it saw: ``submits`` (every submit_sm, a dict each), ``messages`` (accepted texts,
    reassembled), ``accepted`` (message_id -> submit dict), ``delivered_receipts``, and
    ``counters``: connections, binds, bind_failures, submits, throttled, errors, dropped,
    enquire_links, unbinds, receipts_sent, receipts_delivered, max_outstanding.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        system_id: str = "test",
        password: str = "test",
        latency_ms: float = 0,
        throttle_rate: float = 0.0,
        rate: float | None = None,
        error_rate: float = 0.0,
        error_status: int = RSUBMITFAIL,
        statuses: dict[str, int] | None = None,
        drop_rate: float = 0.0,
        drop_next: int = 0,
        bind_status: int = ROK,
        receipts: bool = True,
        receipt_delay: float = 0.0,
        deliver_rate: float = 1.0,
        answer_enquire_link: bool = True,
        hold: bool = False,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
    ):
        self.host = host
        self._requested_port = port
        self.system_id, self.password = system_id, password
        self.latency_ms, self.throttle_rate, self.rate = latency_ms, throttle_rate, rate
        self.error_rate, self.error_status = error_rate, error_status
        self.statuses = dict(statuses or {})
        self.drop_rate, self.drop_next, self.bind_status = drop_rate, drop_next, bind_status
        self.receipts, self.receipt_delay = receipts, receipt_delay
        self.deliver_rate = deliver_rate
        self.answer_enquire_link, self.hold = answer_enquire_link, hold
        self._tls: ssl.SSLContext | None = None
        if tls_certfile:
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(tls_certfile, tls_keyfile)

        self.submits: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.accepted: dict[str, dict[str, Any]] = {}
        self.delivered_receipts: list[dict[str, Any]] = []
        self.counters: Counter[str] = Counter()
        self._reassembler = Reassembler()
        self._queued: defaultdict[str, deque[dict[str, Any]]] = defaultdict(deque)
        self._held: list[tuple[ESMEConnection, bytes]] = []
        self._connections: set[ESMEConnection] = set()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._random = random.Random()
        self._tokens, self._tokens_at = float("inf"), time.monotonic()
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._due_cond = threading.Condition()
        self._order = itertools.count()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> SMPPSandbox:
        """Listen (port 0: a free one) and serve in background threads; returns self."""
        if self._listener is not None:
            return self
        self._stopping.clear()
        listener = socket.create_server((self.host, self._requested_port))
        listener.settimeout(0.1)
        self._listener = listener
        for target, name in ((self._accept_loop, "accept"), (self._run_scheduler, "scheduler")):
            thread = threading.Thread(target=target, name=f"smpp-sandbox-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Close every connection and stop listening; pending answers and receipts are
        dropped."""
        if self._listener is None:
            return
        self._stopping.set()
        with self._due_cond:
            self._due.clear()
            self._due_cond.notify_all()
        self.kill_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._listener.close()
        self._listener, self._threads = None, []

    def __enter__(self) -> SMPPSandbox:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("The SMPP sandbox is not started: call start() first")
        return self._listener.getsockname()[1]

    def url(self, sender: str = "Test", **options: Any) -> str:
        """An ``SMS_URL`` for this sandbox with its credentials (plus ``options`` as query)."""
        query = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in options.items())
        scheme = "smpps" if self._tls else "smpp"
        return (
            f"{scheme}://{quote(self.system_id, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/?sender={quote(sender, safe='')}"
            + (f"&{query}" if query else "")
        )

    def configure(self, **kwargs: Any) -> None:
        """Change behaviour at run time (the keyword arguments of the constructor)."""
        unknown = set(kwargs) - set(OPTIONS)
        if unknown:
            raise TypeError(f"Unknown SMPP sandbox option(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in kwargs.items():
                setattr(self, key, value)
            if "rate" in kwargs:
                self._tokens, self._tokens_at = float("inf"), time.monotonic()

    def reset(self) -> None:
        """Forget everything seen (submits, messages, receipts, counters); queued receipts
        and held answers are dropped too."""
        with self._lock:
            self.submits.clear()
            self.messages.clear()
            self.accepted.clear()
            self.delivered_receipts.clear()
            self.counters.clear()
            self._reassembler.clear()
            self._queued.clear()
            self._held.clear()
            self._tokens, self._tokens_at = float("inf"), time.monotonic()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Block until ``condition()`` is true (checked at every change); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.05))
        return True

    @property
    def outstanding(self) -> int:
        """submit_sm read and not answered yet, on all connections."""
        with self._lock:
            return sum(conn.outstanding for conn in self._connections)

    @property
    def bound_connections(self) -> int:
        with self._lock:
            return sum(1 for conn in self._connections if conn.bound)

    def queued_receipts(self, system_id: str | None = None) -> int:
        with self._lock:
            return len(self._queued[system_id or self.system_id])

    def kill_connections(self) -> None:
        """Close every ESME connection now, without unbind (a network failure)."""
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.close()

    def unbind_connections(self) -> None:
        """Ask every bound ESME to unbind (an SMSC going down for maintenance)."""
        with self._lock:
            connections = [conn for conn in self._connections if conn.bound]
        for conn in connections:
            conn.send(make_pdu("unbind", conn.next_sequence()))

    def release(self) -> None:
        """Stop holding answers and send those held, all at once."""
        with self._lock:
            self.hold = False
            held, self._held = self._held, []
        for conn, data in held:
            self._answer(conn, data)

    # --- connections ---------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_side=True)
            except (OSError, ssl.SSLError):
                sock.close()
                return
        conn = ESMEConnection(sock, self._handle, self._closed)
        with self._changed:
            self._connections.add(conn)
            self.counters["connections"] += 1
            self._changed.notify_all()
        conn.serve()

    def _closed(self, conn: ESMEConnection) -> None:
        with self._changed:
            self._connections.discard(conn)
            conn.outstanding = 0
            if conn.unacked:  # not answered: delivered again, first, on the next bind
                self._queued[conn.system_id].extendleft(reversed(list(conn.unacked.values())))
                conn.unacked.clear()
            self._changed.notify_all()
        if conn.bound:
            self._flush_receipts(conn.system_id)

    def _handle(self, conn: ESMEConnection, raw: bytes) -> None:
        name, command_id, status, sequence = header(raw)
        if name in ("bind_transceiver", "bind_transmitter", "bind_receiver"):
            self._bind(conn, name, raw, sequence)
        elif name == "submit_sm":
            self._submit(conn, raw, sequence)
        elif name == "deliver_sm_resp":
            self._receipt_answered(conn, sequence, status)
        elif name == "enquire_link":
            with self._changed:
                self.counters["enquire_links"] += 1
                self._changed.notify_all()
            if self.answer_enquire_link:
                conn.send(make_pdu("enquire_link_resp", sequence))
        elif name == "unbind":
            with self._changed:
                self.counters["unbinds"] += 1
            conn.send(make_pdu("unbind_resp", sequence))
            conn.close()
        elif name is None or not command_id & RESPONSE_BIT:
            if name not in ("generic_nack",):
                conn.send(make_pdu("generic_nack", sequence, status=RINVCMDID))

    def _bind(self, conn: ESMEConnection, name: str, raw: bytes, sequence: int) -> None:
        pdu = parse_pdu(raw)
        system_id, password = as_text(pdu.system_id), as_text(pdu.password)
        if conn.bound:
            status = RALYBND
        elif self.bind_status:
            status = self.bind_status
        elif system_id != self.system_id:
            status = RINVSYSID
        elif password != self.password:
            status = RINVPASWD
        else:
            status = ROK
        fields = {"system_id": "crm-sms-sandbox"} if status == ROK else {}
        with self._changed:
            if status == ROK:
                conn.bound, conn.system_id = True, system_id
                self.counters["binds"] += 1
            else:
                self.counters["bind_failures"] += 1
            self._changed.notify_all()
        conn.send(make_pdu(f"{name}_resp", sequence, status=status, **fields))
        if status == ROK:
            self._flush_receipts(system_id)

    # --- submit_sm -----------------------------------------------------------------------
    def _submit(self, conn: ESMEConnection, raw: bytes, sequence: int) -> None:
        if not conn.bound:
            conn.send(make_pdu("submit_sm_resp", sequence, status=RINVBNDSTS))
            return
        pdu = parse_pdu(raw)
        record = {
            "system_id": conn.system_id,
            "source_addr": as_text(pdu.source_addr),
            "source_addr_ton": pdu.source_addr_ton,
            "source_addr_npi": pdu.source_addr_npi,
            "destination_addr": as_text(pdu.destination_addr),
            "dest_addr_ton": pdu.dest_addr_ton,
            "dest_addr_npi": pdu.dest_addr_npi,
            "esm_class": pdu.esm_class or 0,
            "data_coding": pdu.data_coding or 0,
            "registered_delivery": pdu.registered_delivery or 0,
            "short_message": pdu.short_message or b"",
            "message_payload": pdu.message_payload or b"",
            "received_at": time.time(),
        }
        with self._changed:
            self.submits.append(record)
            self.counters["submits"] += 1
            conn.outstanding += 1
            self.counters["max_outstanding"] = max(
                self.counters["max_outstanding"], sum(c.outstanding for c in self._connections)
            )
            drop = self.drop_next > 0 or self._chance(self.drop_rate)
            if self.drop_next > 0:
                self.drop_next -= 1
            status = ROK if drop else self._decide(record["destination_addr"])
            record["status"] = status
            if status == ROK:
                record["message_id"] = secrets.token_hex(8)
                self.accepted[record["message_id"]] = record
                message = self._reassembler.add(record)
                if message is not None:
                    self.messages.append(message)
            self._changed.notify_all()
        if status == ROK and record["registered_delivery"] & 1 and self.receipts:
            delay = self.latency_ms / 1000 + self.receipt_delay
            self._schedule(delay, lambda: self._deliver_receipt(record))
        if drop:  # accepted, but the answer is lost with the connection
            with self._changed:
                self.counters["dropped"] += 1
            conn.close()
            return
        fields = {"message_id": record["message_id"]} if status == ROK else {}
        data = make_pdu("submit_sm_resp", sequence, status=status, **fields)
        with self._lock:
            if self.hold:
                self._held.append((conn, data))
                return
        if self.latency_ms > 0:
            self._schedule(self.latency_ms / 1000, lambda: self._answer(conn, data))
        else:
            self._answer(conn, data)

    def _decide(self, destination: str) -> int:
        """The command_status for one submit_sm (called under the lock)."""
        if destination in self.statuses:
            return self.statuses[destination]
        if not self._take_token() or self._chance(self.throttle_rate):
            self.counters["throttled"] += 1
            return RTHROTTLED
        if self._chance(self.error_rate):
            self.counters["errors"] += 1
            return self.error_status
        return ROK

    def _answer(self, conn: ESMEConnection, data: bytes) -> None:
        with self._changed:
            conn.outstanding = max(0, conn.outstanding - 1)
            self._changed.notify_all()
        conn.send(data)

    def _chance(self, rate: float) -> bool:
        return bool(rate) and self._random.random() < rate

    def _take_token(self) -> bool:
        """The throughput limit: a token bucket refilled at ``rate``/s, one second deep."""
        if not self.rate:
            return True
        now = time.monotonic()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    # --- receipts ------------------------------------------------------------------------
    def _deliver_receipt(self, record: dict[str, Any]) -> None:
        delivered = self._random.random() < self.deliver_rate
        receipt = {
            "message_id": record["message_id"],
            "system_id": record["system_id"],
            "subscriber": record["destination_addr"],
            "sender": record["source_addr"],
            "delivered": delivered,
            "text": receipt_text(
                record["message_id"], delivered, record["received_at"], time.time()
            ),
        }
        with self._lock:
            self._queued[record["system_id"]].append(receipt)
        self._flush_receipts(record["system_id"])

    def _flush_receipts(self, system_id: str) -> None:
        """Send the receipts queued for ``system_id`` to one of its bound connections."""
        while True:
            with self._lock:
                conn = next(
                    (c for c in self._connections if c.bound and c.system_id == system_id), None
                )
                if conn is None or not self._queued[system_id]:
                    return
                receipt = self._queued[system_id].popleft()
                sequence = conn.next_sequence()
                conn.unacked[sequence] = receipt
                self.counters["receipts_sent"] += 1
            data = make_pdu(
                "deliver_sm",
                sequence,
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=receipt["subscriber"],
                destination_addr=receipt["sender"],
                esm_class=0x04,
                short_message=receipt["text"].encode("ascii"),
                receipted_message_id=receipt["message_id"],
                message_state=STATE_DELIVERED if receipt["delivered"] else STATE_UNDELIVERABLE,
            )
            if not conn.send(data):
                return  # the connection is closing: _closed queues its unanswered receipts

    def _receipt_answered(self, conn: ESMEConnection, sequence: int, status: int) -> None:
        with self._changed:
            receipt = conn.unacked.pop(sequence, None)
            if receipt is not None and status == ROK:
                self.delivered_receipts.append(receipt)
                self.counters["receipts_delivered"] += 1
            elif receipt is not None:
                self.counters["receipts_refused"] += 1
            self._changed.notify_all()

    # --- the scheduler (latency, receipt delay) ------------------------------------------
    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self._due_cond:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._order), action))
            self._due_cond.notify()

    def _run_scheduler(self) -> None:
        while not self._stopping.is_set():
            with self._due_cond:
                while not self._due and not self._stopping.is_set():
                    self._due_cond.wait(0.5)
                if self._stopping.is_set():
                    return
                due_at, _order, action = self._due[0]
                wait = due_at - time.monotonic()
                if wait > 0:
                    self._due_cond.wait(wait)
                    continue
                heapq.heappop(self._due)
            try:
                action()
            except Exception:  # a failed answer must not stop the scheduler
                logger.exception("SMPP sandbox: a scheduled action failed")
