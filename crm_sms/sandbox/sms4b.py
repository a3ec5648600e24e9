"""SMS4B's 1C web service in the sandbox (``SandboxServer(provider="sms4b")``, ``sms_sandbox
--provider sms4b``): ``POST /ws/s1c.asmx/SendTXT`` and ``/StatusTXT``, form fields in,
``<string>`` out, as ``crm_sms.backends.sms4b`` describes the real service.

- ``SendTXT`` (``Login``, ``Password``, ``Source``, ``Phone``, ``Text``): a 20-character id, or
  an error code: -1 wrong credentials, -66 no sender, -51 a malformed number, ``codes`` for a
  forced one, ``0`` (open sessions limit) when throttled (``throttle_rate``, ``rate``).
- ``StatusTXT`` (``Login``, ``Password``, ``MessageId``): the status number -- ``parts`` while
  on its way, ``65536 + 256 * parts + parts`` delivered, ``65536 + parts`` not delivered;
  -21 for an unknown id, -22 for one that is not 20 characters.
- A missing parameter is answered HTTP 500 (as an ASMX service does).

Decisions where SMS4B's behaviour is not documented:
- the namespace of ``<string>`` (``http://sms4b.ru/``), the id (20 upper-case hex digits) and
  using ``0`` as the throttling answer;
- SMS4B has no callbacks: with ``callbacks`` on, a message's final status (by ``deliver_rate``)
  shows in ``StatusTXT`` once ``callback_delay`` has passed; with ``callbacks`` off it stays on
  its way until a test sets ``message["status"]``;
- ``SendTXT`` carries no id of ours, so ``attempts`` counts sends per number.
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from xml.sax.saxutils import escape

from .base import ProviderEmulator, RecordedRequest, Reply

SERVICE = "/ws/s1c.asmx"
NAMESPACE = "http://sms4b.ru/"
XML = "text/xml; charset=utf-8"
FINAL = 65536
REQUIRED = {
    "send": ("Login", "Password", "Source", "Phone", "Text"),
    "status": ("Login", "Password", "MessageId"),
}


def string_answer(value: Any) -> Reply:
    """An ASMX ``<string>`` answer."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<string xmlns="{NAMESPACE}">{escape(str(value))}</string>'
    )
    return Reply(200, body, XML)


def parts_of(text: str) -> int:
    """SMS parts of ``text`` (GSM-7 for plain ASCII, UCS-2 otherwise; a sandbox estimate)."""
    single, part = (160, 153) if text.isascii() else (70, 67)
    return 1 if len(text) <= single else -(-len(text) // part)


def status_number(parts: int, delivered: bool | None) -> str:
    """The StatusTXT number: on its way (None), delivered or not."""
    if delivered is None:
        return str(parts)
    return str(FINAL + (parts * 256 if delivered else 0) + parts)


class Sms4bEmulator(ProviderEmulator):
    """SMS4B: ``SendTXT`` one number per request, ``StatusTXT`` polling, no callbacks."""

    name = "sms4b"
    title = "SMS4B"
    scheme = "sms4b"
    routes = {
        ("POST", f"{SERVICE}/SendTXT"): "send",
        ("POST", f"{SERVICE}/StatusTXT"): "status",
    }
    delivered_status = status_number(1, True)
    failed_status = status_number(1, False)

    def not_found(self, request: RecordedRequest) -> Reply:
        return Reply(404, f"Not found; the service is {self.api}", "text/plain; charset=utf-8")

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        form = _fields(request)
        endpoint = self.routes.get((request.method, request.route), "")
        missing = [name for name in REQUIRED.get(endpoint, ()) if name not in form]
        if missing:
            return Reply(500, f"Missing parameter: {missing[0]}.", "text/plain; charset=utf-8")
        login, password = form["Login"].encode(), form["Password"].encode()
        if secrets.compare_digest(login, self.sandbox.login.encode()) and (
            secrets.compare_digest(password, self.sandbox.password.encode())
        ):
            return None
        return string_answer(-1)

    # --- endpoints -------------------------------------------------------------------------
    def send(self, request: RecordedRequest) -> Reply:
        """One message: an id, or -66, -51, a forced code, 0 (throttled)."""
        sandbox, form = self.sandbox, _fields(request)
        phone = form["Phone"].strip()
        sandbox.count_attempt(phone)
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        if not form["Source"].strip():
            return string_answer(-66)
        if not (phone.isascii() and phone.isdigit() and 11 <= len(phone) <= 15):
            return string_answer(-51)
        forced = sandbox.forced_code(phone)
        if forced is not None:
            return string_answer(forced)
        if sandbox.throttled():
            return string_answer(0)
        message_id = secrets.token_hex(10).upper()
        parts = parts_of(form["Text"])
        message = {
            "id": message_id,
            "phone": phone,
            "text": form["Text"],
            "source": form["Source"],
            "parts": parts,
            "status": status_number(parts, None),
            "accepted_at": time.time(),
        }
        sandbox.accept(message_id, message)
        return string_answer(message_id)

    def status(self, request: RecordedRequest) -> Reply:
        """The status number of ``MessageId``; -21 unknown, -22 malformed."""
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        message_id = _fields(request)["MessageId"].strip()
        if len(message_id) != 20:
            return string_answer(-22)
        with self.sandbox._lock:
            message = self.sandbox.accepted.get(message_id)
        if message is None:
            return string_answer(-21)
        return string_answer(self.current_status(message))

    def current_status(self, message: dict[str, Any]) -> str:
        """The message's number; settled by ``deliver_rate`` once due when reports are on."""
        self.settle(message, pending=message["status"] == status_number(message["parts"], None))
        return message["status"]

    def finish(self, message: dict[str, Any], delivered: bool) -> None:
        """The final number: it counts the parts."""
        message["status"] = status_number(message["parts"], delivered)

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """What ``StatusTXT`` shows once the message is final (SMS4B posts no reports)."""
        return {"MessageId": message["id"], "status": status_number(message["parts"], delivered)}


def _fields(request: RecordedRequest) -> dict[str, str]:
    return {key: values[-1] for key, values in request.form().items()}
