"""SMS.RU's API in the sandbox (``SandboxServer(provider="smsru")``, ``sms_sandbox --provider
smsru``), ported from the tests' ``FakeSmsRu``.

- ``/sms/send`` (GET or POST, query or form): ``api_id`` (the sandbox's ``login``; a wrong one is
  answered ``status_code`` 200 at HTTP 200, as SMS.RU does), ``to`` comma-separated with one
  ``msg``, or ``multi[<phone>]=<text>``; up to 100 numbers (213 beyond), no text 203. Answered
  per number: ``{"status": "OK", "status_code": 100, "sms": {"7900…": {"status": "OK",
  "status_code": 100, "sms_id": "000001-1000001"}}, "balance": …}``.
- ``/sms/status``: ``sms_id`` comma-separated; each one's code (100 queued, 103 delivered,
  106 not delivered; -1 not found).
- ``/my/balance``: ``{"status": "OK", "status_code": 100, "balance": …}``.
- Delivery reports: SMS.RU posts them to one URL set in its control panel, not per message:
  set ``sandbox.provider.callback_url``. A report is a form with ``data[]`` entries
  ``sms_status\\n<sms_id>\\n<code>\\n<unix time>`` and ``hash = sha256(api_id + entries)``.

Decisions where SMS.RU's behaviour is not documented:
- Throttling (``throttle_rate``, ``rate``) is answered per number with code 220 ("service
  temporarily unavailable"): SMS.RU publishes no rate-limit code.
- ``codes`` forces a per-number error code (207 no route, 209 stop list…).
- Without a callback URL, or with ``callbacks`` off, a message keeps code 100 until a test sets
  ``message["status"]``; with ``callbacks`` on and no URL, its final code (by
  ``deliver_rate``) shows in ``/sms/status`` once ``callback_delay`` has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import time
from typing import Any
from urllib.parse import quote, urlencode

from .base import ProviderEmulator, RecordedRequest, Reply

MAX_NUMBERS = 100
BALANCE = 100.5
QUEUED, DELIVERED, UNDELIVERED = "100", "103", "106"
NOT_FOUND = -1
THROTTLED = 220


def sign(api_id: str, entries: list[str]) -> str:
    """SMS.RU's callback signature: sha256(api_id + all ``data[]`` entries joined)."""
    return hashlib.sha256((api_id + "".join(entries)).encode("utf-8")).hexdigest()


def status_entry(sms_id: str, code: int | str, when: float | None = None) -> str:
    """One ``data[]`` entry of a status callback."""
    return f"sms_status\n{sms_id}\n{code}\n{int(time.time() if when is None else when)}"


def _error(code: int, text: str) -> dict[str, Any]:
    return {"status": "ERROR", "status_code": code, "status_text": text}


def fields_of(request: RecordedRequest) -> list[tuple[str, str]]:
    """The query's and the form's fields, in order (SMS.RU takes both)."""
    query = [(k, v) for k, values in request.query.items() for v in values]
    form = [(k, v) for k, values in request.form().items() for v in values]
    return query + form


class SmsRuEmulator(ProviderEmulator):
    """SMS.RU: many numbers per ``/sms/send``, ``/sms/status`` polling, signed callbacks."""

    name = "smsru"
    title = "SMS.RU"
    scheme = "smsru"
    routes = {
        (method, path): endpoint
        for method in ("POST", "GET")
        for path, endpoint in (
            ("/sms/send", "send"),
            ("/sms/status", "status"),
            ("/my/balance", "balance"),
        )
    }
    delivered_status = DELIVERED
    failed_status = UNDELIVERED

    def __init__(self, sandbox):
        super().__init__(sandbox)
        self._ids = itertools.count(1)

    def sms_url(self, sender: str) -> str:
        sandbox = self.sandbox
        return (
            f"{self.scheme}+http://{quote(sandbox.login, safe='')}@{sandbox.host}:"
            f"{sandbox.port}/?sender={quote(sender, safe='')}"
        )

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        api_id = dict(fields_of(request)).get("api_id", "")
        if hmac.compare_digest(api_id.encode(), self.sandbox.login.encode()):
            return None
        return Reply(200, _error(200, "Неправильный api_id"))

    # --- endpoints -------------------------------------------------------------------------
    def send(self, request: RecordedRequest) -> Reply:
        fields = fields_of(request)
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        form = dict(fields)
        if any(key.startswith("multi[") for key, _ in fields):
            targets = [(k[6:-1], v) for k, v in fields if k.startswith("multi[")]
        else:
            if not form.get("msg"):
                return Reply(200, _error(203, "Нет текста сообщения"))
            targets = [(p.strip(), form["msg"]) for p in form.get("to", "").split(",") if p]
        if len(targets) > MAX_NUMBERS:
            return Reply(200, _error(213, "Более 100 номеров в запросе"))
        answers: dict[str, dict] = {}
        reply = Reply(200)
        for phone, text in targets:
            answers[phone] = self._send_one(phone, text, form, reply)
        reply.body = {"status": "OK", "status_code": 100, "sms": answers, "balance": BALANCE}
        return reply

    def _send_one(self, phone: str, text: str, form: dict[str, str], reply: Reply) -> dict:
        sandbox = self.sandbox
        forced = sandbox.forced_code(phone)
        if forced:
            return _error(forced, "Ошибка")
        if sandbox.throttled():
            return _error(THROTTLED, "Сервис временно недоступен")
        sms_id = f"{next(self._ids):06d}-{int(time.time()) % 10**7:07d}"
        message = {
            "sms_id": sms_id,
            "phone": phone,
            "text": text,
            "from": form.get("from", ""),
            "status": QUEUED,
            "accepted_at": time.time(),
            "callback_url": self.callback_url,
        }
        sandbox.accept(sms_id, message)
        reply.reports.append(message)
        return {"status": "OK", "status_code": 100, "sms_id": sms_id}

    def status(self, request: RecordedRequest) -> Reply:
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        answers = {}
        for sms_id in filter(None, dict(fields_of(request)).get("sms_id", "").split(",")):
            with self.sandbox._lock:
                message = self.sandbox.accepted.get(sms_id)
            if message is None:
                answers[sms_id] = _error(NOT_FOUND, "Сообщение не найдено")
                continue
            code = int(self.current_status(message))
            answers[sms_id] = {"status": "OK", "status_code": code, "status_text": f"код {code}"}
        return Reply(200, {"status": "OK", "status_code": 100, "sms": answers, "balance": BALANCE})

    def balance(self, request: RecordedRequest) -> Reply:
        return Reply(200, {"status": "OK", "status_code": 100, "balance": BALANCE})

    def current_status(self, message: dict[str, Any]) -> str:
        """The message's code; settled by ``deliver_rate`` once due when nobody posts reports."""
        self.settle(message, pending=message["status"] == QUEUED)
        return message["status"]

    # --- delivery reports ------------------------------------------------------------------
    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        code = self.final_status(delivered)
        return {"data[]": [status_entry(message["sms_id"], code)]}

    def encode_report(
        self, message: dict[str, Any], report: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        entries = report["data[]"]
        fields = [("data[]", e) for e in entries] + [("hash", sign(self.sandbox.login, entries))]
        return urlencode(fields).encode("ascii"), {
            "Content-Type": "application/x-www-form-urlencoded"
        }
