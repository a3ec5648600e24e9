"""SMSC.ru's HTTP API in the sandbox (``SandboxServer(provider="smsc")``, ``sms_sandbox
--provider smsc``).

- ``/sys/send.php`` (GET or POST, query or form): ``login`` and ``psw`` (the sandbox's
  credentials; ``psw`` may be the password's lower-case MD5), ``phones`` (comma- or
  semicolon-separated), ``mes``, ``sender``, ``id`` (1..2147483647 or up to 40 of
  ``[A-Za-z0-9._-]``), ``fmt=3``. Answers ``{"id", "cnt", "phones": [{"phone", "mccmnc",
  "cost", "status", "error"}]}``, or ``{"error", "error_code"}``: 1 (parameters), 2 (login or
  password), 9 (the same request again within a minute, or throttled).
- ``/sys/status.php``: ``phone`` and ``id``, comma-separated pairs; one pair is answered by an
  object ``{"status", "last_date", "last_timestamp", "err"}``, several by a list of them with
  ``id`` and ``phone``. Unknown pairs have status -3.
- ``/sys/balance.php``: ``{"balance": "…", "currency": "RUB"}``.
- Callbacks: SMSC posts status changes to one URL from the account's settings: set
  ``sandbox.provider.callback_url``. A form ``id``, ``phone``, ``status``, ``err``, ``ts``,
  ``md5`` = md5("id:phone:status:secret"), the secret being ``callback_secret`` (default: the
  sandbox's password).
- Incoming messages: ``post_inbound(from_phone, text)`` (or ``sandbox.post_inbound``) posts an
  SMS sent to our number ``to`` as SMSC does, to ``inbound_url`` or else ``callback_url`` (an
  account has one URL for both): a form ``id``, ``phone``, ``mes``, ``to``, ``sent``, ``md5`` =
  md5("phone:mes:to:secret"), in UTF-8 or (``charset="windows-1251"``) SMSC's default charset.

What tests read: ``sandbox.accepted`` ("id-phone" -> message; a second send of the same id to
the same phone replaces it, as SMSC keeps the last one) and ``duplicates`` (those second
sends: SMSC has no de-duplication by id, so a client that resends blindly shows up here).

Decisions where SMSC's behaviour is not documented:
- ``codes`` forces, per phone, a send error (1-9: the whole request is refused with it, as
  SMSC does for a request with one bad phone) or a status (20, 22, 23, 25…: that phone's entry
  carries it and nothing is sent to it).
- Throttling (``throttle_rate``, ``rate``) is error 9 for the whole request.
- Without a callback URL, or with ``callbacks`` off, a message keeps status -1 until a test
  sets ``message["status"]``; with ``callbacks`` on and no URL, its final status (by
  ``deliver_rate``) shows in status.php once ``callback_delay`` has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from typing import Any
from urllib.parse import urlencode

from .base import ProviderEmulator, RecordedRequest, Reply

ID_RE = re.compile(r"[A-Za-z0-9._\-]{1,40}")
MAX_ID = 2147483647
WAITING, DELIVERED, UNDELIVERABLE, NOT_FOUND = "-1", "1", "20", -3
INBOUND_NUMBER = "79010000000"  # our number rented from SMSC, which subscribers write to
DUPLICATE_WINDOW = 60.0  # seconds in which SMSC refuses the same send request (error 9)
ERRORS = {
    1: "parameters error",
    2: "authorise error",
    3: "no money",
    4: "IP is blocked",
    5: "invalid date format",
    6: "message is denied",
    7: "invalid phone format",
    8: "can't deliver message",
    9: "duplicate request, wait a minute",
}


def sign(sent_id: str, phone: str, status: str, secret: str) -> str:
    """SMSC's callback signature: md5("id:phone:status:secret")."""
    return hashlib.md5(f"{sent_id}:{phone}:{status}:{secret}".encode()).hexdigest()  # noqa: S324


def sign_inbound(phone: str, text: str, to: str, secret: str, charset: str = "utf-8") -> str:
    """An incoming message's signature: md5("phone:mes:to:secret") in the posted charset."""
    signed = f"{phone}:{text}:{to}:{secret}".encode(charset)
    return hashlib.md5(signed).hexdigest()  # noqa: S324


def _error(code: int) -> Reply:
    return Reply(200, {"error": ERRORS.get(code, "error"), "error_code": code})


def _fields(request: RecordedRequest) -> dict[str, str]:
    fields = {k: v[-1] for k, v in request.query.items()}
    fields.update({k: v[-1] for k, v in request.form().items()})
    return fields


def _json_id(sent_id: str) -> int | str:
    return int(sent_id) if sent_id.isdigit() else sent_id


def _parts(text: str) -> int:
    per_part = 160 if text.isascii() else 70
    return max(1, -(-len(text) // per_part))


class SmscEmulator(ProviderEmulator):
    """SMSC.ru: many phones per send.php, status.php by phone and id, signed callbacks."""

    name = "smsc"
    title = "SMSC.ru"
    scheme = "smsc"
    routes = {
        (method, path): endpoint
        for method in ("POST", "GET")
        for path, endpoint in (
            ("/sys/send.php", "send"),
            ("/sys/status.php", "status"),
            ("/sys/balance.php", "balance"),
        )
    }
    delivered_status = DELIVERED
    failed_status = UNDELIVERABLE

    def __init__(self, sandbox):
        super().__init__(sandbox)
        #: What callbacks are signed with (None: the sandbox's password).
        self.callback_secret: str | None = None
        #: Where incoming messages go (None: to ``callback_url``).
        self.inbound_url: str | None = None
        self._inbound_ids = itertools.count(int(time.time()) % 1_000_000 * 1000)
        self.duplicates: list[str] = []
        #: Seconds in which the same request is refused with error 9 (0: never).
        self.duplicate_window = DUPLICATE_WINDOW
        self._recent: dict[str, float] = {}  # request digest -> when it was sent

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        fields = _fields(request)
        sandbox = self.sandbox
        password = fields.get("psw", "")
        hashed = hashlib.md5(sandbox.password.encode()).hexdigest()  # noqa: S324
        login_ok = hmac.compare_digest(fields.get("login", "").encode(), sandbox.login.encode())
        password_ok = hmac.compare_digest(password.encode(), sandbox.password.encode())
        if login_ok and (password_ok or hmac.compare_digest(password.lower(), hashed)):
            return None
        return _error(2)

    # --- send.php --------------------------------------------------------------------------
    def send(self, request: RecordedRequest) -> Reply:
        sandbox = self.sandbox
        fields = _fields(request)
        sent_id = fields.get("id", "")
        if sent_id:
            sandbox.count_attempt(sent_id)
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        phones = [_digits(p) for p in re.split(r"[,;]", fields.get("phones", "")) if p.strip()]
        text = fields.get("mes", "")
        if not phones or not text or (sent_id and not _valid_id(sent_id)):
            return _error(1)
        if any(not 7 <= len(p) <= 15 for p in phones):
            return _error(7)
        for phone in phones:
            forced = sandbox.forced_code(phone)
            if forced is not None and 1 <= forced <= 9:
                return _error(forced)
        if self._repeated(request.body + request.path.encode()) or sandbox.throttled():
            return _error(9)
        sent_id = sent_id or str(int(time.time() * 1000) % MAX_ID)
        reply = Reply(200)
        entries = [self._send_to(phone, sent_id, text, fields, reply) for phone in phones]
        reply.body = {
            "id": _json_id(sent_id),
            "cnt": _parts(text) * sum(e["status"] == WAITING for e in entries),
            "phones": entries,
        }
        return reply

    def _repeated(self, request_body: bytes) -> bool:
        """Whether the same request came within the last minute (SMSC's error 9)."""
        digest = hashlib.sha256(request_body).hexdigest()
        now = time.monotonic()
        with self.sandbox._lock:
            window = self.duplicate_window
            self._recent = {k: t for k, t in self._recent.items() if now - t < window}
            if window and digest in self._recent:
                return True
            self._recent[digest] = now
        return False

    def _send_to(
        self, phone: str, sent_id: str, text: str, fields: dict[str, str], reply: Reply
    ) -> dict[str, Any]:
        entry = {"phone": phone, "mccmnc": "25002", "cost": "0", "status": WAITING, "error": "0"}
        forced = self.sandbox.forced_code(phone)
        if forced is not None:
            return {**entry, "status": str(forced), "cost": "0"}
        key = f"{sent_id}-{phone}"
        message = {
            "id": sent_id,
            "phone": phone,
            "text": text,
            "sender": fields.get("sender", ""),
            "status": WAITING,
            "err": 0,
            "accepted_at": time.time(),
            "callback_url": self.callback_url,
        }
        with self.sandbox._lock:
            if key in self.sandbox.accepted:
                self.duplicates.append(key)  # SMSC sends it again: the subscriber gets two
            self.sandbox.accepted[key] = message
        reply.reports.append(message)
        return {**entry, "cost": "1.95"}

    # --- status.php and balance.php --------------------------------------------------------
    def status(self, request: RecordedRequest) -> Reply:
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        fields = _fields(request)
        phones = [_digits(p) for p in fields.get("phone", "").split(",") if p.strip()]
        ids = [i.strip() for i in fields.get("id", "").split(",") if i.strip()]
        if not phones or len(phones) != len(ids):
            return _error(1)
        entries = [
            self._status_of(phone, sent_id) for phone, sent_id in zip(phones, ids, strict=True)
        ]
        if len(entries) == 1:
            entry = entries[0]
            return Reply(200, {k: v for k, v in entry.items() if k not in ("id", "phone")})
        return Reply(200, entries)

    def _status_of(self, phone: str, sent_id: str) -> dict[str, Any]:
        with self.sandbox._lock:
            message = self.sandbox.accepted.get(f"{sent_id}-{phone}")
        if message is None:
            code, err, when = NOT_FOUND, 0, 0
        else:
            code = int(self.current_status(message))
            err = message["err"] if code != 1 else 0
            when = int(message.get("changed_at") or message["accepted_at"])
        return {
            "status": code,
            "last_date": time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(when)) if when else "",
            "last_timestamp": when,
            "flag": 0,
            "err": err,
            "id": _json_id(sent_id),
            "phone": phone,
        }

    def current_status(self, message: dict[str, Any]) -> str:
        """The message's status; settled by ``deliver_rate`` once due when nobody posts reports."""
        self.settle(message, pending=message["status"] == WAITING)
        return message["status"]

    def finish(self, message: dict[str, Any], delivered: bool) -> None:
        """The final status, its error number and when it changed (status.php shows them)."""
        super().finish(message, delivered)
        message["err"] = 0 if delivered else 1
        message["changed_at"] = time.time()

    def balance(self, request: RecordedRequest) -> Reply:
        return Reply(200, {"balance": "100.50", "currency": "RUB"})

    # --- callbacks -------------------------------------------------------------------------
    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        return {
            "id": message["id"],
            "phone": message["phone"],
            "status": self.final_status(delivered),
            "err": "0" if delivered else "1",
            "ts": str(int(time.time())),
        }

    def encode_report(
        self, message: dict[str, Any], report: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        secret = self.callback_secret or self.sandbox.password
        signed = {**report, "md5": sign(report["id"], report["phone"], report["status"], secret)}
        return urlencode(signed).encode("ascii"), {
            "Content-Type": "application/x-www-form-urlencoded"
        }

    # --- incoming messages -----------------------------------------------------------------
    def inbound_request(
        self, from_phone: str, text: str, to: str, *, message_id: str = "", charset: str = "utf-8"
    ) -> tuple[bytes, dict[str, str]]:
        """The form SMSC posts for an SMS ``from_phone`` sent to our number ``to`` (the same
        ``message_id`` twice: a repeated post)."""
        phone, to = _digits(from_phone), _digits(to)
        secret = self.callback_secret or self.sandbox.password
        fields = {
            "id": message_id or str(next(self._inbound_ids)),
            "phone": phone,
            "mes": text,
            "to": to,
            "sent": str(int(time.time())),
            "md5": sign_inbound(phone, text, to, secret, charset),
        }
        body = urlencode(fields, encoding=charset).encode("ascii")
        return body, {"Content-Type": "application/x-www-form-urlencoded"}

    def post_inbound(
        self,
        from_phone: str,
        text: str,
        *,
        to: str = INBOUND_NUMBER,
        url: str = "",
        message_id: str = "",
        charset: str = "utf-8",
    ):
        """Post an incoming message as SMSC does, to ``url`` (default: ``inbound_url``, else
        ``callback_url``); returns the response."""
        import requests

        url = url or self.inbound_url or self.callback_url or ""
        if not url:
            raise ValueError("Where to? Set the emulator's inbound_url or callback_url, or url=")
        body, headers = self.inbound_request(
            from_phone, text, to, message_id=message_id, charset=charset
        )
        with requests.Session() as session:
            session.trust_env = False
            return session.post(url, data=body, headers=headers, timeout=(5, 10))


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


def _valid_id(sent_id: str) -> bool:
    if sent_id.isdigit():
        return 1 <= int(sent_id) <= MAX_ID
    return bool(ID_RE.fullmatch(sent_id))
