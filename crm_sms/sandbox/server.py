"""The generic part of the sandbox: a threaded HTTP server that records what arrives, injects
failures and limits the rate, with a provider's API plugged in (delivery reports are posted by
:mod:`.reports`).

A provider is a :class:`ProviderEmulator` subclass in its own module (``megafon.py``): how it
authenticates, which paths it serves, how it answers a send and what its delivery report looks
like. :class:`SandboxServer` runs one of them; ``EMULATORS`` names them for ``sms_sandbox
--provider``. The server uses only the standard library (plus ``requests`` for the reports).
"""

from __future__ import annotations

import base64
import hmac
import json
import random
import socket
import threading
import time
from collections import Counter
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .base import NO_ANSWER, ProviderEmulator, RecordedRequest, Reply, emulator_class
from .reports import ReportPoster

# Behaviour knobs accepted by __init__ and configure().
OPTIONS = (
    "login",
    "password",
    "latency_ms",
    "fail_rate",
    "timeout_rate",
    "timeout_s",
    "throttle_rate",
    "drop_rate",
    "rate",
    "deliver_rate",
    "callback_delay",
    "callbacks",
    "codes",
)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A benchmark opens dozens of keep-alive connections at once: a deep backlog, no refusals.
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler, sandbox: SandboxServer):
        self.sandbox = sandbox
        self.server_header = sandbox.provider.server_header
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        self.connections_opened = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self.connections_lock:
            self.connections.add(request)
            self.connections_opened += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake the threads waiting on idle keep-alive connections so they end."""
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a pooled client expects
    disable_nagle_algorithm = True
    timeout = 120  # an idle keep-alive connection is closed after this many seconds

    server: _Server

    def version_string(self) -> str:
        return self.server.server_header

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a log line per request would cost more than answering it

    def do_POST(self) -> None:  # noqa: N802
        self.server.sandbox.handle(self)

    do_GET = do_POST

    def respond(self, reply: Reply) -> None:
        """Write the whole answer in one send: headers and body in separate segments would
        meet the client's delayed ACK (Nagle) and stall keep-alive connections."""
        if reply is NO_ANSWER:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        body = reply.body
        if isinstance(body, dict | list):
            body = json.dumps(body, ensure_ascii=False).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        lines = [
            f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
            f"Server: {self.server.server_header}",
            f"Content-Type: {reply.content_type}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in reply.headers.items()),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class SandboxServer:
    """The emulator of one provider (MegaFon unless ``provider`` names another).
    ``start()`` serves in a background thread; ``stop()`` ends it.

    Behaviour (all changeable at run time with ``configure(**kwargs)``):
    - ``login``/``password``: the credentials it accepts (401 otherwise);
    - ``latency_ms``: added to every answer (slept in the request's own thread);
    - ``fail_rate``: share of requests answered HTTP 503;
    - ``timeout_rate``/``timeout_s``: share of requests answered only after ``timeout_s``
      seconds (then processed normally: the message is accepted although the client may
      have given up, which is what makes ``msg_id`` de-duplication matter);
    - ``throttle_rate``: share of requests answered "throttled" (MegaFon: code 88);
    - ``drop_rate``: share of connections closed without any answer;
    - ``rate``: messages per second it accepts (a token bucket with one second of burst);
      over it, "throttled";
    - ``deliver_rate``: share of accepted messages reported delivered (the rest failed) to the
      message's ``callback_url`` after ``callback_delay`` s;
    - ``callbacks``: post delivery reports at all;
    - ``codes``: ``{recipient: code}`` answered for these recipients (digits or E.164),
      e.g. ``{"79001112233": 1282}`` to emulate a blacklisted subscriber.

    What it saw: ``accepted`` (msg_id -> message dict), ``requests`` (RecordedRequest),
    ``attempts`` (sends per client msg_id), ``callbacks_sent`` (what it posted, with the answer).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        login: str = "test",
        password: str = "test",
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        timeout_rate: float = 0.0,
        timeout_s: float = 5.0,
        throttle_rate: float = 0.0,
        rate: float | None = None,
        deliver_rate: float = 1.0,
        callback_delay: float = 0.0,
        callbacks: bool = True,
        drop_rate: float = 0.0,
        codes: dict[Any, int] | None = None,
        callback_workers: int = 8,
        callback_attempts: int = 3,
        provider: str | type[ProviderEmulator] = "megafon",
    ):
        self.host = host
        self._requested_port = port
        self.login = login
        self.password = password
        self.latency_ms = latency_ms
        self.fail_rate = fail_rate
        self.timeout_rate = timeout_rate
        self.timeout_s = timeout_s
        self.throttle_rate = throttle_rate
        self.drop_rate = drop_rate
        self.rate = rate
        self.deliver_rate = deliver_rate
        self.callback_delay = callback_delay
        self.callbacks = callbacks
        self.codes = codes or {}
        self.callback_workers = callback_workers
        self.callback_attempts = callback_attempts
        self.provider = emulator_class(provider)(self)

        self.accepted: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.attempts: Counter[str] = Counter()
        self.callbacks_sent: list[dict[str, Any]] = []

        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._random = random.Random()
        self._tokens = float("inf")  # a full bucket: a burst of `rate` is fine
        self._tokens_at = time.monotonic()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reports = ReportPoster(self, callback_workers)
        self._set_auth()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> SandboxServer:
        """Bind (port 0: a free one) and serve in a background thread; returns self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.provider.name}-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._reports.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and drop pending callbacks."""
        server = self._server
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        self._reports.stop()
        self._server = self._thread = None

    def serve_forever(self) -> None:
        """Start and block until ``stop()`` is called (from a signal handler, for example)."""
        self.start()
        self._stopping.wait()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The sandbox is not started: call start() first")
        return self._server.server_address[1]

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive clients open few)."""
        return self._server.connections_opened if self._server else 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def sms_url(self, sender: str = "Test") -> str:
        """An ``SMS_URL`` pointing at this sandbox with its credentials (URL-encoded)."""
        return self.provider.sms_url(sender)

    def configure(self, **kwargs: Any) -> None:
        """Change behaviour at run time (the same keyword arguments as the constructor)."""
        unknown = set(kwargs) - set(OPTIONS) - {"callback_attempts"}
        if unknown:
            raise TypeError(f"Unknown sandbox option(s): {', '.join(sorted(unknown))}")
        with self._lock:
            for key, value in kwargs.items():
                setattr(self, key, value)
            if "rate" in kwargs:
                self._tokens, self._tokens_at = float("inf"), time.monotonic()
            self._set_auth()

    def reset(self) -> None:
        """Forget everything seen (accepted messages, requests, attempts, callbacks)."""
        with self._lock:
            self.accepted.clear()
            self.requests.clear()
            self.attempts.clear()
            self.callbacks_sent.clear()
            self._tokens, self._tokens_at = float("inf"), time.monotonic()

    def wait_for_callbacks(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` callbacks were posted (whatever the answer); True on success."""
        return self._reports.wait_for(count, timeout)

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """The report the provider posts to ``callback_url`` for ``message``."""
        return self.provider.delivery_report(message, delivered)

    def post_inbound(self, from_phone: str, text: str, **kwargs: Any) -> Any:
        """Post an SMS ``from_phone`` sent to our number to the site, as the provider does
        (where its emulator's ``inbound_url`` says, or ``url=``); returns the response.
        Providers that deliver incoming messages only (Twilio, SMSC)."""
        post = getattr(self.provider, "post_inbound", None)
        if post is None:
            raise NotImplementedError(f"{self.provider.title} delivers no incoming messages")
        return post(from_phone, text, **kwargs)

    # --- what endpoints use ---------------------------------------------------------------
    def basic_auth_ok(self, request: RecordedRequest) -> bool:
        """Whether ``request`` carries ``Authorization: Basic`` with the sandbox's credentials."""
        auth = (request.header("Authorization") or "").encode("latin-1", "replace")
        return hmac.compare_digest(auth, self._expected_auth)

    def count_attempt(self, msg_id: str) -> None:
        """Count one send of the client's ``msg_id`` (in ``attempts``)."""
        with self._lock:
            self.attempts[msg_id] += 1

    def inject_failure(self) -> Reply | None:
        """Draw the injected failure for this request: NO_ANSWER (dropped), HTTP 503, or None
        (answer normally; after ``timeout_s`` when a timeout was drawn)."""
        if self._chance(self.drop_rate):  # lost after the server got it
            return NO_ANSWER
        if self._chance(self.fail_rate):
            return Reply(503, "Service Temporarily Unavailable", "text/html")
        if self._chance(self.timeout_rate):
            if self._stopping.wait(self.timeout_s):
                return NO_ANSWER
        return None

    def forced_code(self, recipient: Any) -> int | None:
        """The code ``codes`` sets for ``recipient`` (a number, its digits or E.164), or None."""
        codes = self.codes
        forced = codes.get(recipient, codes.get(str(recipient)))
        if forced is None:
            forced = codes.get(f"+{recipient}")
        return None if forced is None else int(forced)

    def is_accepted(self, msg_id: str) -> bool:
        with self._lock:
            return msg_id in self.accepted

    def throttled(self) -> bool:
        """Whether to refuse this message as over the limit (``throttle_rate`` or ``rate``)."""
        return self._chance(self.throttle_rate) or not self._take_token()

    def accept(self, msg_id: str, message: dict[str, Any]) -> bool:
        """Keep ``message`` as accepted under ``msg_id``; False when that id already was (of
        two concurrent attempts of one msg_id, the second is the duplicate)."""
        with self._lock:
            if msg_id in self.accepted:
                return False
            self.accepted[msg_id] = message
            return True

    # --- request handling ----------------------------------------------------------------
    def _set_auth(self) -> None:
        token = base64.b64encode(f"{self.login}:{self.password}".encode()).decode("ascii")
        self._expected_auth = f"Basic {token}".encode()

    def _chance(self, rate: float) -> bool:
        return bool(rate) and self._random.random() < rate

    def _take_token(self) -> bool:
        """The throughput limit: a token bucket refilled at ``rate``/s, one second deep."""
        rate = self.rate
        if not rate:
            return True
        with self._lock:
            now = time.monotonic()
            capacity = max(1.0, float(rate))
            self._tokens = min(capacity, self._tokens + (now - self._tokens_at) * rate)
            self._tokens_at = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def summary(self) -> dict[str, Any]:
        """What ``GET /`` shows: the provider and the counts so far."""
        with self._lock:
            return {
                "sandbox": f"{self.provider.title} emulator",
                "provider": self.provider.name,
                "send": self.provider.api,
                "accepted": len(self.accepted),
                "requests": len(self.requests),
                "callbacks_sent": len(self.callbacks_sent),
            }

    def handle(self, handler: _Handler) -> None:
        """Answer one request: the summary page, or record it, wait ``latency_ms``, route it,
        authenticate it and let the provider's endpoint answer."""
        if handler.command == "GET" and handler.path.rstrip("/") in ("", "/sandbox"):
            handler.respond(Reply(200, self.summary()))
            return
        request = self._read(handler)
        if request is None:
            return
        with self._lock:
            self.requests.append(request)
        if self.latency_ms:
            self._stopping.wait(self.latency_ms / 1000)
        provider = self.provider
        endpoint = provider.endpoint(request)
        if endpoint is None:
            reply = provider.not_found(request)
        else:
            reply = provider.authenticate(request) or endpoint(request)
        handler.respond(reply)
        if self.callbacks:
            for message in reply.reports:
                if message.get("callback_url"):
                    self._reports.schedule(message)

    def _read(self, handler: _Handler) -> RecordedRequest | None:
        """The request with its body, or None when its length is unusable (answered)."""
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            handler.close_connection = True
            handler.respond(Reply(411, {"error": "Content-Length required"}))
            return None
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            handler.close_connection = True
            handler.respond(Reply(400, {"error": "bad Content-Length"}))
            return None
        body = handler.rfile.read(length) if length else b""
        return RecordedRequest(handler.command, handler.path, dict(handler.headers.items()), body)
