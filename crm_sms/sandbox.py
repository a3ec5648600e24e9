"""A local emulator of MegaFon's A2P HTTPS API, for the demo, tests and benchmarks.

It answers ``POST /sms/v1/sms`` the way /work/shared/PROVIDERS.md (and ``docs/providers.md``)
describe the real service: Basic auth (401 otherwise), UTF-8 JSON without a byte-order mark,
``20101`` with ``payload`` naming the bad field, ``msg_id`` de-duplication answered ``20102``,
a throughput limit answered ``88``, and delivery reports posted to each message's
``callback_url``. Failures can be injected (HTTP 503, slow answers, throttling, dropped
connections) to exercise a client's retry logic.

Decisions where the real service is not documented:
- A body that starts with a UTF-8 BOM is answered HTTP 200 with code 20101 and the payload
  ``{"code": "bom_not_allowed", "description": "body"}`` (a client saw it "refused"; the API
  reports validation errors as 20101 at HTTP 200).
- ``result.msg_id`` of an answer is the client's ``msg_id`` (or one the sandbox made up).
- Unauthenticated requests get HTTP 401 with a ``WWW-Authenticate: Basic`` header.

The server uses only the standard library (plus ``requests`` for the callbacks), so
``manage.py sms_sandbox`` and tests start it in a thread: ``SandboxServer().start()``.
"""

from __future__ import annotations

import base64
import heapq
import hmac
import itertools
import json
import logging
import random
import re
import secrets
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

logger = logging.getLogger("crm_sms.sandbox")

SEND_PATH = "/sms/v1/sms"
BOM = b"\xef\xbb\xbf"

# The sender rule of MegaFon (independent of the backend's copy on purpose: the sandbox checks
# the client, so a bug in one is not hidden by sharing it).
SENDER_RE = re.compile(r"[A-Za-z0-9 !\"#$%()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,11}")
MSG_ID_RE = re.compile(r"[A-Za-z0-9_:\-]{1,16}")
MAX_MESSAGE_LENGTH = 1000

DESCRIPTIONS = {
    0: "ok",
    20101: "Обязательное поле отсутствует или поле содержит данные в неверном формате.",
    20102: "Сообщение с таким msg_id уже было принято.",
    8: "System error",
    20: "Message queue full",
    69: "submit_sm failed",
    88: "Throttling error (ESME has exceeded allowed message limits)",
    257: "SMSC transmitter for the region is not connected",
    1281: "Pdu запрещена по правилам роутинга",
    1282: "Абонент в чёрном списке",
    1284: "Запрещённые слова в тексте сообщения",
    1288: "Отправка в регион недоступна для компании",
}

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


@dataclass
class RecordedRequest:
    """One request as it arrived: method, path, headers and the raw body bytes.

    Also readable as a mapping (``record["body"]``), for tests that prefer that."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by case-insensitive name."""
        name = name.lower()
        for key, value in self.headers.items():
            if key.lower() == name:
                return value
        return default

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.body.decode("utf-8"))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A benchmark opens dozens of keep-alive connections at once: a deep backlog, no refusals.
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address, handler, sandbox: SandboxServer):
        self.sandbox = sandbox
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
    server_version = "MegafonSandbox/1.0"
    sys_version = ""

    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a log line per request would cost more than answering it

    def do_POST(self) -> None:  # noqa: N802
        self.server.sandbox._handle_post(self)

    def do_GET(self) -> None:  # noqa: N802
        self.server.sandbox._handle_get(self)

    def respond(
        self,
        status: int,
        body: bytes | dict | str = b"",
        content_type: str = "application/json; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Write the whole answer in one send: headers and body in separate segments would
        meet the client's delayed ACK (Nagle) and stall keep-alive connections."""
        if isinstance(body, dict):
            body = json.dumps(body, ensure_ascii=False).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        reason = HTTPStatus(status).phrase
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
        ]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            self.wfile.write(head + body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _result(msg_id: str, code: int, payload: list[dict] | None = None) -> dict:
    status: dict[str, Any] = {"code": code, "description": DESCRIPTIONS.get(code, "error")}
    if payload:
        status["payload"] = payload
    return {"result": {"msg_id": msg_id, "status": status}}


def _bad(field_name: str, code: str = "param_is_not_valid") -> dict:
    return {"code": code, "description": field_name}


def validate_request(data: Any) -> list[dict]:
    """The 20101 payload entries for a parsed request body (empty when it is valid)."""
    if not isinstance(data, dict):
        return [_bad("body")]
    problems = []
    sender = data.get("from")
    if not (
        isinstance(sender, str) and SENDER_RE.fullmatch(sender) and sender == sender.strip(" ")
    ):
        problems.append(_bad("from"))
    to = data.get("to")
    # A JSON number, international format: 11-15 digits (a 10-digit number is refused).
    if not (
        isinstance(to, int) and not isinstance(to, bool) and to > 0 and 11 <= len(str(to)) <= 15
    ):
        problems.append(_bad("to"))
    message = data.get("message")
    if not (isinstance(message, str) and 1 <= len(message) <= MAX_MESSAGE_LENGTH):
        problems.append(_bad("message"))
    msg_id = data.get("msg_id")
    if msg_id is not None and not (isinstance(msg_id, str) and MSG_ID_RE.fullmatch(msg_id)):
        problems.append(_bad("msg_id"))
    callback_url = data.get("callback_url")
    if callback_url is not None and not (
        isinstance(callback_url, str) and callback_url.startswith(("http://", "https://"))
    ):
        problems.append(_bad("callback_url"))
    return problems


def smpp_receipt(
    receipted_id: str, delivered: bool, submitted: float, done: float, err: str | None = None
) -> str:
    """The SMPP delivery receipt text MegaFon puts in ``short_message`` (unix-second dates)."""
    stat = "DELIVRD" if delivered else "UNDELIV"
    err = err or ("000" if delivered else "001")
    return (
        f"id:{receipted_id} sub:001 dlvrd:{'001' if delivered else '000'} "
        f"submit date:{int(submitted)} done date:{int(done)} stat:{stat} err:{err}"
    )


class SandboxServer:
    """The emulator. ``start()`` serves in a background thread; ``stop()`` ends it.

    Behaviour (all changeable at run time with ``configure(**kwargs)``):
    - ``login``/``password``: the Basic credentials it accepts (401 otherwise);
    - ``latency_ms``: added to every answer (slept in the request's own thread);
    - ``fail_rate``: share of requests answered HTTP 503;
    - ``timeout_rate``/``timeout_s``: share of requests answered only after ``timeout_s``
      seconds (then processed normally: the message is accepted although the client may
      have given up, which is what makes ``msg_id`` de-duplication matter);
    - ``throttle_rate``: share of requests answered code 88;
    - ``drop_rate``: share of connections closed without any answer;
    - ``rate``: messages per second it accepts (a token bucket with one second of burst);
      over it, code 88;
    - ``deliver_rate``: share of accepted messages reported ``delivered`` (the rest
      ``delivery_failed``) to the message's ``callback_url`` after ``callback_delay`` s;
    - ``callbacks``: post delivery reports at all;
    - ``codes``: ``{recipient: code}`` answered for these recipients (digits or E.164),
      e.g. ``{"79001112233": 1282}`` to emulate a blacklisted subscriber.

    What it saw: ``accepted`` (msg_id -> message dict), ``requests`` (RecordedRequest),
    ``attempts`` (POSTs per msg_id), ``callbacks_sent`` (what it posted, with the answer).
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
        self._executor: ThreadPoolExecutor | None = None
        self._scheduler: threading.Thread | None = None
        self._due: list[tuple[float, int, dict]] = []
        self._due_cond = threading.Condition()
        self._counter = itertools.count()
        self._http = threading.local()
        self._callbacks_pending = 0
        self._callbacks_idle = threading.Condition()
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
            name=f"megafon-sandbox:{self.port}",
            daemon=True,
        )
        self._thread.start()
        self._executor = ThreadPoolExecutor(
            max_workers=self.callback_workers, thread_name_prefix="sandbox-callback"
        )
        self._scheduler = threading.Thread(
            target=self._run_scheduler, name="sandbox-callback-scheduler", daemon=True
        )
        self._scheduler.start()
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
        with self._due_cond:
            self._due.clear()
            self._due_cond.notify_all()
        if self._scheduler:
            self._scheduler.join(timeout=5)
        if self._executor:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._server = self._thread = self._scheduler = self._executor = None

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
        return (
            f"megafon+http://{quote(self.login, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/?sender={quote(sender, safe='')}"
        )

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
        deadline = time.monotonic() + timeout
        with self._callbacks_idle:
            while len(self.callbacks_sent) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._callbacks_idle.wait(left)
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

    def _handle_get(self, handler: _Handler) -> None:
        if handler.path.rstrip("/") in ("", "/sandbox"):
            with self._lock:
                summary = {
                    "sandbox": "MegaFon A2P emulator",
                    "send": f"POST {SEND_PATH}",
                    "accepted": len(self.accepted),
                    "requests": len(self.requests),
                    "callbacks_sent": len(self.callbacks_sent),
                }
            handler.respond(200, summary)
        else:
            handler.respond(404, {"error": "not found"})

    def _handle_post(self, handler: _Handler) -> None:
        headers = dict(handler.headers.items())
        if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
            handler.close_connection = True
            handler.respond(411, {"error": "Content-Length required"})
            return
        try:
            length = int(handler.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            handler.close_connection = True
            handler.respond(400, {"error": "bad Content-Length"})
            return
        body = handler.rfile.read(length) if length else b""
        record = RecordedRequest(handler.command, handler.path, headers, body)
        with self._lock:
            self.requests.append(record)

        if self.latency_ms:
            self._stopping.wait(self.latency_ms / 1000)
        if handler.path.split("?", 1)[0].rstrip("/") != SEND_PATH:
            handler.respond(404, {"error": f"not found; the API is POST {SEND_PATH}"})
            return
        auth = handler.headers.get("Authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(auth, self._expected_auth):
            handler.respond(
                401,
                {"error": "unauthorized"},
                headers={"WWW-Authenticate": 'Basic realm="a2p-api"'},
            )
            return

        data: Any = None
        problems: list[dict] = []
        if body.startswith(BOM):
            problems = [_bad("body", "bom_not_allowed")]
        else:
            try:
                data = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                problems = [_bad("body", "json_is_not_valid")]
        client_msg_id = data.get("msg_id") if isinstance(data, dict) else None
        if isinstance(client_msg_id, str):
            with self._lock:
                self.attempts[client_msg_id] += 1

        if self._chance(self.drop_rate):  # lost after the server got it
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if self._chance(self.fail_rate):
            handler.respond(503, "Service Temporarily Unavailable", "text/html")
            return
        if self._chance(self.timeout_rate):
            self._stopping.wait(self.timeout_s)
            if self._stopping.is_set():
                return

        if not problems:
            problems = validate_request(data)
        msg_id = client_msg_id if isinstance(client_msg_id, str) and client_msg_id else None
        if problems:
            handler.respond(200, _result(msg_id or _new_id(), 20101, problems))
            return
        msg_id = msg_id or _new_id()
        forced = self.codes.get(data["to"], self.codes.get(str(data["to"])))
        if forced is None:
            forced = self.codes.get(f"+{data['to']}")
        if forced is not None and forced != 0:
            handler.respond(200, _result(msg_id, int(forced)))
            return
        with self._lock:
            duplicate = msg_id in self.accepted
        if duplicate:
            handler.respond(200, _result(msg_id, 20102))
            return
        if self._chance(self.throttle_rate) or not self._take_token():
            handler.respond(200, _result(msg_id, 88))
            return
        message = {
            "msg_id": msg_id,
            "to": data["to"],
            "from": data["from"],
            "message": data["message"],
            "callback_url": data.get("callback_url"),
            "accepted_at": time.time(),
            "receipted_message_id": secrets.token_hex(4),
            "status": "accepted",
        }
        with self._lock:
            # Two concurrent attempts of one msg_id: the second one is the duplicate.
            if msg_id in self.accepted:
                duplicate = True
            else:
                self.accepted[msg_id] = message
        if duplicate:
            handler.respond(200, _result(msg_id, 20102))
            return
        handler.respond(200, _result(msg_id, 0))
        if self.callbacks and message["callback_url"]:
            self._schedule_callback(message)

    # --- delivery callbacks --------------------------------------------------------------
    def _schedule_callback(self, message: dict) -> None:
        due = time.monotonic() + float(self.callback_delay or 0)
        with self._callbacks_idle:
            self._callbacks_pending += 1
        with self._due_cond:
            heapq.heappush(self._due, (due, next(self._counter), message))
            self._due_cond.notify()

    def _run_scheduler(self) -> None:
        while not self._stopping.is_set():
            with self._due_cond:
                while not self._due and not self._stopping.is_set():
                    self._due_cond.wait(0.5)
                if self._stopping.is_set():
                    return
                due, _, message = self._due[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._due_cond.wait(min(wait, 0.5))
                    continue
                heapq.heappop(self._due)
            executor = self._executor
            if executor is None:
                return
            try:
                executor.submit(self._post_callback, message)
            except RuntimeError:  # shut down meanwhile
                return

    def _session(self):
        import requests

        session = getattr(self._http, "session", None)
        if session is None:
            session = self._http.session = requests.Session()
            session.trust_env = False  # callbacks go to the given URL, never via a proxy
        return session

    def delivery_report(self, message: dict, delivered: bool) -> dict[str, Any]:
        """The JSON MegaFon posts to ``callback_url`` for ``message``."""
        now = time.time()
        return {
            "msg_id": message["msg_id"],
            "receipted_message_id": message["receipted_message_id"],
            "status": "delivered" if delivered else "delivery_failed",
            "short_message": smpp_receipt(
                message["receipted_message_id"], delivered, message["accepted_at"], now
            ),
        }

    def _post_callback(self, message: dict) -> None:
        delivered = self._random.random() < self.deliver_rate
        report = self.delivery_report(message, delivered)
        body = json.dumps(report, ensure_ascii=False).encode("utf-8")
        outcome: dict[str, Any] = {"url": message["callback_url"], "report": report}
        status: int | str = ""
        attempts = max(1, int(self.callback_attempts))
        for attempt in range(1, attempts + 1):
            try:
                response = self._session().post(
                    message["callback_url"],
                    data=body,
                    headers={"Content-Type": "application/json; charset=utf-8"},
                    timeout=(5, 10),
                )
                status = response.status_code
                if response.ok:
                    break
            except Exception as exc:  # the receiver is down: retry, then give up
                status = f"{type(exc).__name__}"
            if attempt < attempts and self._stopping.wait(0.2 * 2 ** (attempt - 1)):
                break
        outcome.update(status=status, attempts=attempt)
        message["status"] = report["status"]
        with self._callbacks_idle:
            self.callbacks_sent.append(outcome)
            self._callbacks_pending -= 1
            self._callbacks_idle.notify_all()


def _new_id() -> str:
    return secrets.token_hex(8)
