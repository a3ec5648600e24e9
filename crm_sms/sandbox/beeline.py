"""Beeline's A2P HTTPS API in the sandbox (``SandboxServer(provider="beeline")``,
``sms_sandbox --provider beeline``): ``/proto/http/`` with form or query fields, XML answers,
as ``crm_sms.backends.beeline`` describes the real service.

- ``action=post_sms`` (``message``, ``target`` comma-separated, ``sender``, ``post_id``), or
  several actions as ``data[i][action]``, ``data[i][...]``: ``<result sms_group_id>`` with an
  ``<sms id post_id phone sms_res_count>`` per accepted number and ``<errors>`` with
  ``<error code>`` for refused ones -- 20117 a malformed number, 20170 over 2000 characters,
  20203 no number, 20200 no text, ``codes`` for a forced one, 20211 when throttled
  (``throttle_rate``, ``rate``), 20167 the same text to the same number again within
  ``duplicate_window`` seconds (0, the default: never).
- ``action=status`` with ``sms_id`` (or ``data[i]`` entries): ``<MESSAGES><MESSAGE>`` with
  ``SMSSTC_CODE`` queued, then delivered or undeliverable; unknown ids are left out.
- Wrong ``user``/``pass``: error 20107 at HTTP 200. Without ``gzip=none`` the answer is
  gzip-compressed (``Content-Encoding: gzip``), as the manual says.
- Status callbacks: Beeline posts them to one URL set in its cabinet, not per message: set
  ``sandbox.provider.callback_url``. A callback is a form with ``ORDID``, ``CNRID``,
  ``RESCOUNT``, ``STATUS`` (2 delivered, 5 undeliverable) and ``FINALTIME`` (UTC).

Decisions where Beeline's behaviour is not documented: forced codes, throttling and
``post_id`` are answered per number (an error text names its number); ids are 18 digits;
``SMS_CLOSE_TIME`` is Moscow time; without a callback URL, or with ``callbacks`` off, a message
stays ``queued`` until a test sets ``message["status"]``; with ``callbacks`` on and no URL its
final status (by ``deliver_rate``) shows once ``callback_delay`` has passed. ``attempts`` counts
sends per ``post_id`` (else per number).
"""

from __future__ import annotations

import gzip
import itertools
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

from .base import ProviderEmulator, RecordedRequest, Reply

API = "/proto/http"
XML = "text/xml; charset=utf-8"
AGT_ID = "10001"
MAX_TEXT = 2000
MOSCOW = ZoneInfo("Europe/Moscow")
FINAL_STATES = frozenset({"delivered", "undeliverable", "rejected", "error", "expired", "aborted"})

#: Beeline's error texts ("%s": the number).
ERROR_TEXTS = {
    20107: 'Ошибка авторизации (или "В доступе отказано")',
    20117: "Неправильный номер телефона: %s",
    20148: 'Невозможно предоставить услуги для продукта "1:%s:1"',
    20158: 'Отправка невозможна, так как номер "%s" занесён в чёрный список',
    20167: "Запрещено посылать сообщение с тем же текстом тому же адресату (%s) в течение 5 минут",
    20170: "Слишком длинное сообщение",
    20200: "invalid request",
    20203: "target or phl_codename should be specified",
    20211: "Too high messages rate for user",
    20230: "Отправитель не одобрен на стороне оператора. Абонент: %s",
}
STATUS_TEXTS = {
    "queued": "Сообщение находится в очереди отправки",
    "accepted": "Сообщение уже передано оператору",
    "delivered": "Сообщение успешно доставлено абоненту",
    "undeliverable": "Сообщение невозможно доставить из-за недоступности абонента",
}
CALLBACK_CODES = {"delivered": "2", "undeliverable": "5", "expired": "3", "rejected": "8"}


def fields_of(request: RecordedRequest) -> dict[str, str]:
    """The query's and the form's fields (the form wins)."""
    fields = {key: values[-1] for key, values in request.query.items()}
    fields.update({key: values[-1] for key, values in request.form().items()})
    return fields


def entries_of(fields: dict[str, str]) -> list[dict[str, str]]:
    """The actions of a request: ``data[i][key]`` entries in order, else the fields themselves."""
    entries: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        match = re.fullmatch(r"data\[(\d+)\]\[(\w+)\]", key)
        if match:
            entries.setdefault(int(match[1]), {})[match[2]] = value
    return [entries[i] for i in sorted(entries)] or [fields]


def cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def error_element(code: int, number: str = "") -> str:
    text = ERROR_TEXTS.get(code, "Ошибка")
    text = text % number if "%s" in text else f"{text}: {number}" if number else text
    return f"<error code={quoteattr(str(code))}>{escape(text)}</error>"


class BeelineEmulator(ProviderEmulator):
    """Beeline A2P: ``post_sms`` (one or many numbers), ``status``, cabinet-wide callbacks."""

    name = "beeline"
    title = "Beeline"
    scheme = "beeline"
    routes = {("GET", API): "call", ("POST", API): "call"}
    delivered_status = "delivered"
    failed_status = "undeliverable"

    def __init__(self, sandbox):
        super().__init__(sandbox)
        #: Seconds in which the same text to the same number is refused (20167); 0: never.
        self.duplicate_window: float = 0.0
        self._ids = itertools.count(secrets.randbelow(10**6) * 10**11)

    @property
    def api(self) -> str:
        return "GET/POST /proto/http/"

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        fields = fields_of(request)
        user, password = fields.get("user", "").encode(), fields.get("pass", "").encode()
        if secrets.compare_digest(user, self.sandbox.login.encode()) and (
            secrets.compare_digest(password, self.sandbox.password.encode())
        ):
            return None
        return self.answer(fields, errors=[error_element(20107)])

    def answer(self, fields: dict[str, str], **parts: list[str]) -> Reply:
        """``<output>`` with the given ``result``, ``messages`` and ``errors`` elements,
        gzip-compressed unless the request said ``gzip=none``."""
        now = datetime.now(MOSCOW).strftime("%d.%m.%Y %H:%M:%S")
        body = f'<?xml version="1.0" encoding="utf-8"?>\n<output><RECEIVER AGT_ID="{AGT_ID}" '
        body += f'DATE_REPORT="{now}"/>'
        if parts.get("result"):
            group = next(self._ids)
            body += f'<result sms_group_id="{group}">{"".join(parts["result"])}</result>'
        if parts.get("messages"):
            body += f"<MESSAGES>{''.join(parts['messages'])}</MESSAGES>"
        if parts.get("errors"):
            body += f"<errors>{''.join(parts['errors'])}</errors>"
        data = (body + "</output>").encode("utf-8")
        if fields.get("gzip") == "none":
            return Reply(200, data, XML)
        return Reply(200, gzip.compress(data), XML, headers={"Content-Encoding": "gzip"})

    # --- endpoints -------------------------------------------------------------------------
    def call(self, request: RecordedRequest) -> Reply:
        """Every action of the request, answered in one ``<output>``."""
        fields = fields_of(request)
        entries = entries_of(fields)
        for entry in entries:
            if entry.get("action") == "post_sms":
                for target in _targets(entry):
                    self.sandbox.count_attempt(entry.get("post_id") or target)
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        parts: dict[str, list[str]] = {"result": [], "messages": [], "errors": []}
        reply = Reply()
        for entry in entries:
            action = entry.get("action")
            if action == "post_sms":
                self.post_sms(entry, parts, reply)
            elif action == "status":
                self.status(entry, parts)
            else:
                parts["errors"].append(error_element(20200))
        answer = self.answer(fields, **parts)
        answer.reports = reply.reports
        return answer

    def post_sms(self, entry: dict[str, str], parts: dict[str, list[str]], reply: Reply) -> None:
        text, targets = entry.get("message", ""), _targets(entry)
        if not targets:
            parts["errors"].append(error_element(20203))
            return
        if not text:
            parts["errors"].append(error_element(20200))
            return
        if len(text) > MAX_TEXT:
            parts["errors"].append(error_element(20170))
            return
        for target in targets:
            code = self.refusal(target, text)
            if code:
                parts["errors"].append(error_element(code, target))
                continue
            message = self.accept(target, entry)
            reply.reports.append(message)
            post_id = entry.get("post_id")
            attrs = f'id={quoteattr(message["id"])} smstype="SENDSMS" '
            attrs += f'phone={quoteattr(target)} sms_res_count="1"'
            if post_id:
                attrs = f"post_id={quoteattr(post_id)} {attrs}"
            parts["result"].append(f"<sms {attrs}>{cdata(text)}</sms>")

    def refusal(self, target: str, text: str) -> int | None:
        """The error code this number gets, or None when it is accepted."""
        sandbox = self.sandbox
        digits = target.removeprefix("+")
        if not (digits.isascii() and digits.isdigit() and 10 <= len(digits) <= 15):
            return 20117
        forced = sandbox.forced_code(digits)
        if forced is not None:
            return forced
        if sandbox.throttled():
            return 20211
        if self.duplicate_window:
            since = time.time() - self.duplicate_window
            with sandbox._lock:
                earlier = list(sandbox.accepted.values())
            if any(
                m["digits"] == digits and m["text"] == text and m["accepted_at"] >= since
                for m in earlier
            ):
                return 20167
        return None

    def accept(self, target: str, entry: dict[str, str]) -> dict[str, Any]:
        sms_id = str(next(self._ids)).zfill(18)
        message = {
            "id": sms_id,
            "phone": target,
            "digits": target.removeprefix("+"),
            "text": entry.get("message", ""),
            "sender": entry.get("sender", ""),
            "post_id": entry.get("post_id", ""),
            "status": "queued",
            "accepted_at": time.time(),
            "callback_url": self.callback_url,
        }
        self.sandbox.accept(sms_id, message)
        return message

    def status(self, entry: dict[str, str], parts: dict[str, list[str]]) -> None:
        with self.sandbox._lock:
            message = self.sandbox.accepted.get(entry.get("sms_id", ""))
        if message is not None:
            parts["messages"].append(self.message_element(message))

    def message_element(self, message: dict[str, Any]) -> str:
        """A ``<MESSAGE>`` of a status answer."""
        status = self.current_status(message)
        closed = status in FINAL_STATES
        created = datetime.fromtimestamp(message["accepted_at"], MOSCOW)
        children = {
            "CREATED": created.strftime("%d.%m.%y %H:%M:%S"),
            "SMS_SUBMITTER_SUBSYSTEM": "HTTP",
            "AUL_USERNAME": self.sandbox.login,
            "SMS_SENDER": message["sender"],
            "SMS_TARGET": message["digits"],
            "SMS_RES_COUNT": "1",
            "SMSSTC_CODE": status,
            "SMS_STATUS": STATUS_TEXTS.get(status, status),
            "SMS_CLOSED": "1" if closed else "0",
            "SMS_SENT": "1" if status == "delivered" else "0",
        }
        if closed:
            children["SMS_CLOSE_TIME"] = datetime.now(MOSCOW).strftime("%d.%m.%Y %H:%M:%S")
        inner = "".join(f"<{tag}>{escape(value)}</{tag}>" for tag, value in children.items())
        inner += f"<SMS_TEXT>{cdata(message['text'])}</SMS_TEXT>"
        return (
            f'<MESSAGE SMS_ID="{message["id"]}" SMS_GROUP_ID="{message["id"]}0" '
            f'SMSTYPE="SENDSMS">{inner}</MESSAGE>'
        )

    def current_status(self, message: dict[str, Any]) -> str:
        """The message's code; settled by ``deliver_rate`` once due when nobody posts reports."""
        self.settle(message, pending=message["status"] == "queued")
        return message["status"]

    # --- status callbacks ------------------------------------------------------------------
    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """The form Beeline posts to the cabinet's callback URL."""
        status = self.final_status(delivered)
        return {
            "ORDID": message["id"],
            "CNRID": AGT_ID,
            "RESCOUNT": "1",
            "STATUS": CALLBACK_CODES[status],
            "FINALTIME": datetime.now(UTC).strftime("%d.%m.%Y %H:%M:%S"),
        }

    def encode_report(
        self, message: dict[str, Any], report: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        body = urlencode(report).encode("ascii")
        return body, {"Content-Type": "application/x-www-form-urlencoded"}


def _targets(entry: dict[str, str]) -> list[str]:
    return [t.strip() for t in entry.get("target", "").split(",") if t.strip()]
