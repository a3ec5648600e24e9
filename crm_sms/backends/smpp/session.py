"""The long-lived SMPP connection of one backend instance (one per worker process).

One session thread owns the socket: it connects and binds (bind_transceiver), writes what the
sending threads queued, reads and dispatches every PDU, answers enquire_link, sends its own
enquire_link when the line is idle, expires requests the SMSC never answered, and reconnects
with exponential backoff when the connection is lost. Sending threads never touch the socket
(a TLS socket must not be read and written from two threads at once): ``submit`` takes a
window slot, registers the request under its sequence number, queues the PDU and wakes the
session thread; the response (matched by sequence number) finishes the request and frees the
slot. At most ``window`` submit_sm are outstanding, across all threads.

PDUs are encoded and decoded by smpplib's command classes; the connection handling is here
because smpplib's ``Client`` is synchronous (one blocking read per request) and not safe to
share between threads.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from . import codes
from .pdus import (
    INTERFACE_VERSION,
    MAX_SEQUENCE,
    RESPONSE_BIT,
    InvalidPDU,
    header,
    make_pdu,
    parse_pdu,
    parse_response,
    split_pdus,
)
from .pending import Failure, Pending

logger = logging.getLogger("crm_sms.backends.smpp")


class _Failed(Exception):
    def __init__(self, failure: Failure):
        super().__init__(failure.kind)
        self.failure = failure


class _Lost(Exception):
    """The bound connection ended (the text says why)."""


class SMPPSession:
    """A bound transceiver connection that keeps itself up until ``close()``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        system_id: str,
        password: str,
        system_type: str = "",
        ssl_context: ssl.SSLContext | None = None,
        window: int = 10,
        enquire_link: float = 30.0,
        connect_timeout: float = 10.0,
        response_timeout: float = 30.0,
        backoff: float = 1.0,
        backoff_max: float = 60.0,
        on_deliver: Callable[[Any], object | None] = lambda pdu: None,
        name: str = "smpp",
    ):
        self.host, self.port = host, port
        self.system_id, self.password, self.system_type = system_id, password, system_type
        self.ssl_context = ssl_context
        self.window = window
        self.enquire_link = enquire_link
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.backoff, self.backoff_max = backoff, backoff_max
        self.on_deliver = on_deliver
        self.name = name
        self.binds = 0  # successful binds so far
        self._tick = max(0.01, min(0.2, enquire_link / 2))
        self._lock = threading.Lock()
        self._state = threading.Condition(self._lock)
        self._slots = threading.BoundedSemaphore(window)
        self._pending: dict[int, Pending] = {}
        self._outgoing: deque[tuple[int, bytes, Pending | None]] = deque()
        self._receipts: deque[tuple[object, tuple[int, int]]] = deque()
        self._generation = 0
        self._bound = False
        self._failure: Failure | None = None
        self._sequence = 0
        self._probe_deadline: float | None = None
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # --- the sending threads' side -------------------------------------------------------
    def start(self) -> None:
        """Start the session thread (it connects and binds in the background)."""
        with self._lock:
            if self._thread is None and not self._closing.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"{self.name}-session", daemon=True
                )
                self._thread.start()

    @property
    def bound(self) -> bool:
        return self._bound

    def ready(self, timeout: float) -> Failure | None:
        """None once bound (waiting up to ``timeout``); else why not. A failed last attempt
        is returned at once, so a provider that refuses the bind does not hold senders up."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._state:
            while not self._bound:
                if self._closing.is_set():
                    return Failure("closed")
                if self._failure is not None:
                    return self._failure
                left = deadline - time.monotonic()
                if left <= 0:
                    return Failure("not_connected")
                self._state.wait(left)
        return None

    def submit(self, command: str, fields: dict[str, Any], slot_timeout: float) -> Pending:
        """Queue one request; the returned Pending finishes with its response or an error.
        Raises (taking no window slot) when smpplib cannot encode ``fields``."""
        data = bytearray(make_pdu(command, 0, **fields))  # its sequence number is set below
        pending = Pending()
        if not self._slots.acquire(timeout=slot_timeout):
            pending.finish(error="not_sent")
            return pending
        pending._release = self._slots.release
        with self._lock:
            queued = self._bound and not self._closing.is_set()
            if queued:
                sequence = self._next_sequence()
                data[12:16] = sequence.to_bytes(4, "big")
                pending.generation = self._generation
                pending.deadline = time.monotonic() + self.response_timeout
                self._pending[sequence] = pending
                self._outgoing.append((pending.generation, bytes(data), pending))
        if queued:
            self._wake()
        else:
            pending.finish(error="not_sent")
        return pending

    @property
    def receipts_waiting(self) -> int:
        """Receipts received and not taken yet."""
        return len(self._receipts)

    def take_receipts(self) -> list[tuple[object, tuple[int, int]]]:
        """The delivered items not taken yet, each with the token that acknowledges it."""
        with self._lock:
            items = list(self._receipts)
            self._receipts.clear()
        return items

    def requeue_receipts(self, items: list[tuple[object, tuple[int, int]]]) -> None:
        """Put taken items back (they could not be applied); they come first next time."""
        with self._lock:
            self._receipts.extendleft(reversed(items))

    def acknowledge(self, tokens: list[tuple[int, int]]) -> int:
        """Answer the deliver_sm of ``tokens`` (deliver_sm_resp); returns how many were
        answered. Those of an earlier connection cannot be: the SMSC sends them again."""
        count = 0
        with self._lock:
            for generation, sequence in tokens:
                if self._bound and generation == self._generation:
                    data = make_pdu("deliver_sm_resp", sequence, message_id="")
                    self._outgoing.append((generation, data, None))
                    count += 1
        if count:
            self._wake()
        return count

    def close(self) -> None:
        """Unbind (briefly waiting for unbind_resp), close the socket, stop the thread.
        Requests still waiting finish as "connection_lost"; unacknowledged receipts stay
        unanswered, so the SMSC delivers them again on the next bind."""
        self._closing.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.response_timeout + 2)
        if thread is None or not thread.is_alive():
            for sock in (self._wake_r, self._wake_w):
                sock.close()

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        return self._sequence

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the buffer is full (it is already awake) or the session is closed
            pass

    # --- the session thread --------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._closing.is_set():
            try:
                sock, buffer = self._open()
            except _Failed as exc:
                failures += 1
                self._set_failure(exc.failure)
                self._closing.wait(self._delay(failures))
                continue
            bound_at = time.monotonic()
            self._set_bound(sock)
            reason = "closed"
            try:
                reason = self._serve(sock, buffer)
            except _Lost as exc:
                reason = str(exc)
            except Exception:  # a bug must not kill the thread: log it and reconnect
                logger.exception("SMPP %s: the session failed", self.name)
                reason = "error"
            finally:
                self._drop(sock, reason)
            lived = time.monotonic() - bound_at
            failures = failures + 1 if lived < self.backoff_max else 1
            if not self._closing.is_set():
                self._closing.wait(self._delay(failures))

    def _delay(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff * 2 ** max(0, failures - 1))
        return delay * random.uniform(0.75, 1.0)  # jitter: workers do not reconnect in step

    def _set_failure(self, failure: Failure) -> None:
        level = logging.ERROR if failure.kind in ("bind_refused", "tls_error") else logging.WARNING
        reason = " ".join(
            part
            for part in (
                failure.kind,
                codes.status_name(failure.code) if failure.code is not None else "",
                failure.detail,
            )
            if part
        )
        logger.log(
            level, "SMPP %s: cannot bind to %s:%s: %s", self.name, self.host, self.port, reason
        )
        with self._state:
            self._failure = failure
            self._state.notify_all()

    def _set_bound(self, sock: socket.socket) -> None:
        with self._state:
            self._generation += 1
            self._bound = True
            self._failure = None
            self._probe_deadline = None
            self.binds += 1
            self._state.notify_all()
        logger.info("SMPP %s: bound to %s:%s", self.name, self.host, self.port)

    def _open(self) -> tuple[socket.socket, bytearray]:
        """Connect, start TLS, bind_transceiver; raises _Failed with the reason."""
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise _Failed(Failure("connect_failed", detail=_reason(exc))) from exc
        sock: socket.socket = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small PDUs, no Nagle
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(raw, server_hostname=self.host)
            sock.settimeout(self.response_timeout)
            sequence = self._locked_sequence()
            sock.sendall(
                make_pdu(
                    "bind_transceiver",
                    sequence,
                    system_id=self.system_id,
                    password=self.password,
                    system_type=self.system_type,
                    interface_version=INTERFACE_VERSION,
                    addr_ton=0,
                    addr_npi=0,
                    address_range="",
                )
            )
            return sock, self._read_bind_resp(sock, sequence)
        except _Failed:
            sock.close()
            raise
        except InvalidPDU as exc:
            sock.close()
            raise _Failed(Failure("bind_closed", detail=str(exc))) from exc
        except (ssl.SSLError, ssl.CertificateError) as exc:
            sock.close()
            raise _Failed(Failure("tls_error", detail=_reason(exc))) from exc
        except OSError as exc:
            sock.close()
            raise _Failed(Failure("connect_failed", detail=_reason(exc))) from exc

    def _read_bind_resp(self, sock: socket.socket, sequence: int) -> bytearray:
        buffer = bytearray()
        deadline = time.monotonic() + self.response_timeout
        while True:
            for raw in split_pdus(buffer):
                name, _command_id, status, _sequence = header(raw)
                if name in ("bind_transceiver_resp", "generic_nack"):
                    if status != codes.ESME_ROK:
                        raise _Failed(Failure("bind_refused", code=status))
                    return buffer  # what follows the answer is read by _serve
                logger.info("SMPP %s: %s before the bind answer: ignored", self.name, name)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError as exc:
                raise _Failed(Failure("bind_timeout")) from exc
            if not chunk:
                raise _Failed(Failure("bind_closed"))
            buffer += chunk

    def _serve(self, sock: socket.socket, buffer: bytearray) -> str:
        """Read, dispatch and write until the connection ends; returns why it ended."""
        sock.settimeout(self._tick)
        is_tls = isinstance(sock, ssl.SSLSocket)
        last_in = time.monotonic()
        unbind_deadline: float | None = None
        while True:
            if self._closing.is_set() and unbind_deadline is None:
                self._write(sock, make_pdu("unbind", self._locked_sequence()))
                unbind_deadline = time.monotonic() + min(1.0, self.response_timeout)
            if is_tls and sock.pending():
                ready = [sock]
            else:
                ready = select.select([sock, self._wake_r], [], [], self._tick)[0]
            if self._wake_r in ready:
                _drain(self._wake_r)
            self._flush(sock)
            if sock in ready or buffer:
                chunk = _receive(sock) if sock in ready else None
                if chunk is not None:
                    last_in = time.monotonic()
                    buffer += chunk
                try:
                    for raw in split_pdus(buffer):
                        if self._dispatch(sock, raw):
                            return "unbound"
                except InvalidPDU as exc:
                    raise _Lost(str(exc)) from exc
            now = time.monotonic()
            self._expire(now)
            if unbind_deadline is not None and now > unbind_deadline:
                return "closed (no unbind_resp)"
            if self._probe_deadline is not None and now > self._probe_deadline:
                raise _Lost("no answer to enquire_link")
            if self._probe_deadline is None and now - last_in >= self.enquire_link:
                self._probe_deadline = now + self.response_timeout
                self._write(sock, make_pdu("enquire_link", self._locked_sequence()))

    def _locked_sequence(self) -> int:
        with self._lock:
            return self._next_sequence()

    def _write(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.settimeout(self.response_timeout)  # a whole PDU or a lost connection
            sock.sendall(data)
            sock.settimeout(self._tick)
        except OSError as exc:
            raise _Lost(f"write failed: {_reason(exc)}") from exc

    def _flush(self, sock: socket.socket) -> None:
        """Write everything the other threads queued, in one go."""
        with self._lock:
            if not self._outgoing:
                return
            items = list(self._outgoing)
            self._outgoing.clear()
            generation = self._generation
        chunks = []
        for item_generation, data, pending in items:
            if item_generation != generation:
                if pending is not None:
                    pending.finish(error="not_sent")
                continue
            if pending is not None:
                pending.written = True
            chunks.append(data)
        if chunks:
            self._write(sock, b"".join(chunks))

    def _dispatch(self, sock: socket.socket, raw: bytes) -> bool:
        """Act on one received PDU; True when the connection is to end (unbind)."""
        name, command_id, status, sequence = header(raw)
        if name in ("submit_sm_resp", "generic_nack"):
            with self._lock:
                pending = self._pending.pop(sequence, None)
            if pending is None:
                logger.info("SMPP %s: %s for unknown sequence %d", self.name, name, sequence)
            else:
                pending.finish(response=parse_response(raw, status))
        elif name == "deliver_sm":
            self._deliver(sock, raw, sequence)
        elif name == "enquire_link":
            self._write(sock, make_pdu("enquire_link_resp", sequence))
        elif name == "enquire_link_resp":
            self._probe_deadline = None
        elif name == "unbind":
            self._write(sock, make_pdu("unbind_resp", sequence))
            return True
        elif name == "unbind_resp":
            return True
        elif not command_id & RESPONSE_BIT:  # a request we do not serve
            self._write(sock, make_pdu("generic_nack", sequence, status=0x03))
        return False

    def _deliver(self, sock: socket.socket, raw: bytes, sequence: int) -> None:
        try:
            pdu = parse_pdu(raw)
            item = self.on_deliver(pdu)
        except Exception:
            logger.exception("SMPP %s: a deliver_sm that cannot be read: %s", self.name, raw.hex())
            status = codes.ESME_RX_P_APPN
            self._write(sock, make_pdu("deliver_sm_resp", sequence, status=status, message_id=""))
            return
        if item is None:  # nothing to keep (not a receipt, or an intermediate state)
            self._write(sock, make_pdu("deliver_sm_resp", sequence, message_id=""))
            return
        with self._lock:
            self._receipts.append((item, (self._generation, sequence)))

    def _expire(self, now: float) -> None:
        with self._lock:
            late = [seq for seq, pending in self._pending.items() if pending.deadline < now]
            expired = [self._pending.pop(seq) for seq in late]
        for pending in expired:
            pending.finish(error="timeout" if pending.written else "not_sent")

    def _drop(self, sock: socket.socket, reason: str) -> None:
        with self._state:
            self._bound = False
            pending = list(self._pending.values())
            self._pending.clear()
            queued = [item[2] for item in self._outgoing if item[2] is not None]
            self._outgoing.clear()
            self._state.notify_all()
        try:
            sock.close()
        except OSError:
            pass
        for request in pending:
            request.finish(error="connection_lost" if request.written else "not_sent")
        for request in queued:
            request.finish(error="not_sent")
        if self._closing.is_set():
            logger.info("SMPP %s: connection closed (%s)", self.name, reason)
        else:
            logger.warning(
                "SMPP %s: connection to %s:%s lost (%s); %d request(s) without an answer; "
                "reconnecting",
                self.name,
                self.host,
                self.port,
                reason,
                sum(1 for request in pending if request.written),
            )


def _receive(sock: socket.socket) -> bytes | None:
    """Bytes that arrived (None if none yet); raises _Lost when the SMSC closed."""
    try:
        chunk = sock.recv(65536)
    except (TimeoutError, ssl.SSLWantReadError):
        return None
    except OSError as exc:
        raise _Lost(f"read failed: {_reason(exc)}") from exc
    if not chunk:
        raise _Lost("closed by the SMSC")
    return chunk


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
