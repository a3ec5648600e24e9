"""SMSC.ru (SMS-Центр, https://smsc.ru): send.php with JSON answers, status.php polling, signed
callbacks, incoming messages, balance.php. Its code tables are in ``smsc_codes``.

``SMS_URL=smsc://LOGIN:PASSWORD@smsc.ru/?sender=MyCompany`` (``smsc+http://`` for the sandbox).
Options: ``login``, ``password`` (the account's, or the API password set in its settings),
``sender``, ``callback_secret`` (what callbacks are signed with; default: the password),
``batch_size`` (1: one message per request, see below), ``numeric_ids`` and the HTTP ones of
``http.HTTPBackend`` (``base_url``, default https://smsc.ru, ``read_timeout`` 60 s, …).

The API, as this module speaks it:

- ``POST /sys/send.php`` (form): ``login``, ``psw``, ``phones`` (comma-separated), ``mes``,
  ``sender``, ``id`` (ours), ``fmt=3`` (JSON), ``charset=utf-8``, ``op=1`` (an entry per phone
  in the answer) -> ``{"id": …, "cnt": …, "phones": [{"phone", "status", "error", …}]}`` or
  ``{"error": "…", "error_code": N, "id": …}`` (``SEND_ERRORS``).
- ``POST /sys/status.php``: ``phone`` and ``id`` (comma-separated pairs for several messages)
  -> ``{"status": N, "last_timestamp": …, "err": E}`` or a list of those with ``id`` and
  ``phone`` (``STATUS_CODES``; ``err`` is ``STATUS_ERRORS``).
- Callbacks: SMSC posts the status changes to the URL set in the account's settings (paste
  ``backend.callback_url()`` there) as a form: ``id``, ``phone``, ``status``, ``err``, ``ts``,
  ``md5`` = md5("id:phone:status:secret"); any HTTP 200 ends the report.
- Incoming messages (to a number rented from SMSC) are posted to that same URL as a form:
  ``phone`` (the subscriber), ``mes`` (the text), ``to`` (our number), ``id``, ``sent``…, with
  ``md5`` = md5("phone:mes:to:secret") (``parse_inbound``; ``callback_is_inbound`` tells them
  from status reports by ``mes``). The inbound URL ``/callback/<alias>/<token>/inbound/``
  takes them too.
- ``POST /sys/balance.php`` -> ``{"balance": "…", "currency": "RUB"}`` (``balance()``).

Never twice (``RetrySafety.LOOKUP``): each message goes under its own ``id`` — our msg_id
(``numeric_ids=1``: a 31-bit number made from it, for accounts that take numbers only), and
SMSC's status is looked up by phone and id, so after an ambiguous failure ``lookup_sent`` asks
whether the message arrived before anything is resent. SMSC takes many phones per request but
one ``id`` per request: with ``batch_size`` > 1 messages of the same text and sender share a
request and the id of its first message, which a lookup of the others cannot know, so the
backend then declares ``RetrySafety.NONE`` (an ambiguous failure is left to an operator).

Confirmed from SMSC's public client libraries (smsc_api.py/php/cs 2017-2021, two recent C#
clients quoting its docs) and recorded exchanges: the parameters above, send errors 1-9, ``id``
as 1..2147483647 "or a string of up to 40 Latin letters, digits and .-_", one id per send,
status by comma-separated ``phone``/``id`` answered by a list of ``{status, last_timestamp,
err, id, phone}``, status codes -3..25, err 248/254 with statuses 25/23. Not confirmed (tolerant
code): the ``phones`` entries of ``op=1`` (a non-zero ``error`` or a failure ``status`` is a
refusal, a phone missing from the list is accepted); the rest of the ``err`` table; the
callback's fields and md5 (PROVIDERS.md); the incoming message's md5 (one public client,
codewiser/laravel-smscenter-mailer, checks it so) and fields other than ``phone``, ``mes``,
``to`` (an ``id`` is used as its id when present, else a digest of the fields); the charset of
an incoming message (UTF-8 is read, else windows-1251, SMSC's default); 100 pairs per status
query. Status -3 is taken as
"did not arrive": a lookup must not run while the lost request may still be in flight (the
outbox asks after its backoff, RETRY_BACKOFF 30 s); SMSC's error 9 refuses an identical send
within a minute, a second guard.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import unquote_to_bytes

from django.core.exceptions import ValidationError
from django.http import HttpRequest, QueryDict
from django.utils.translation import gettext

from ..exceptions import CallbackError, CallbackForbidden, ProviderError
from .base import (
    Balance,
    DeliveryReport,
    DeliveryStatus,
    InboundMessage,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from .http import Answer, HTTPBackend, HTTPRequest, requests_by_key
from .options import AccountChecks, Option
from .smsc_codes import (  # the tables are re-exported: SMSC's facts, by its module name
    NOT_FOUND,
    SEND_ERRORS,  # noqa: F401
    STATUS_CODES,
    STATUS_ERRORS,  # noqa: F401
    UNKNOWN_SEND_ERROR,  # noqa: F401
    classify_send_error,
    status_report,
)

DEFAULT_BASE_URL = "https://smsc.ru"
SEND_PATH, STATUS_PATH, BALANCE_PATH = "/sys/send.php", "/sys/status.php", "/sys/balance.php"
MAX_BATCH = 100  # phones per send request in batch mode, and pairs per status query
MAX_ID = 2147483647  # SMSC's numeric ids: 1..2**31-1
ID_RE = re.compile(r"[A-Za-z0-9._\-]{1,40}")

S, D = SendStatus, DeliveryStatus


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _digits(phone: Any) -> str:
    return "".join(ch for ch in str(phone or "") if ch.isdigit())


def numeric_id(msg_id: str) -> int:
    """A number in SMSC's id range made from ``msg_id`` (the same every time)."""
    digest = hashlib.sha256(msg_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % MAX_ID + 1


class SmscBackend(HTTPBackend):
    """Sends through SMSC.ru, polls its statuses, verifies its callbacks, reads the balance."""

    display_name = "SMSC"
    # Each message under its own id; status.php by phone and id tells whether it arrived.
    # (batch_size > 1 turns it to NONE on the instance: see the module docstring.)
    retry_safety = RetrySafety.LOOKUP
    supports_callbacks = True
    supports_inbound = True
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("login", str, "", "the SMSC login (the URL's user)"),
        Option(
            "password", str, "", "its password or API password (the URL's password)", secret=True
        ),
        Option(
            "callback_secret",
            str,
            "",
            "what callbacks are signed with (default: the password)",
            secret=True,
        ),
        Option("batch_size", int, 1, "messages per request (>1: no lookup before a resend)", 1),
        Option("numeric_ids", bool, False, "1: send a number made from msg_id as the id"),
    )
    url_user_option = "login"
    url_password_option = "password"
    account_checks = AccountChecks(
        credentials=("login", "password"),
        credentials_message="Provider {alias!r} (SMSC) has no login or password.",
        credentials_hint="Set {env}=smsc://LOGIN:PASSWORD@smsc.ru/?sender=MyCompany "
        "(URL-encode special characters of the password).",
    )

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.login: str = self.options["login"]
        self.password: str = self.options["password"]
        self.callback_secret: str = self.options["callback_secret"] or self.password
        self.numeric_ids: bool = self.options["numeric_ids"]
        self.max_batch_size = min(self.options["batch_size"], MAX_BATCH)
        if self.max_batch_size > 1:
            self.retry_safety = RetrySafety.NONE  # type: ignore[misc]

    def _auth(self) -> list[tuple[str, str]]:
        return [("login", self.login), ("psw", self.password), ("fmt", "3")]

    def smsc_id(self, msg_id: str) -> str:
        """The ``id`` a message goes under: its msg_id, or a number made from it."""
        if self.numeric_ids or not ID_RE.fullmatch(msg_id or ""):
            return str(numeric_id(msg_id))
        return msg_id

    # --- sending -------------------------------------------------------------------------
    def split_batch(self, batch: list[OutgoingSMS]) -> list[list[int]]:
        """Requests of one sender and one text, up to ``batch_size`` phones, no phone twice."""
        return requests_by_key(
            batch,
            key=lambda sms: (sms.sender or self.default_sender, sms.text),
            number=lambda sms: _digits(sms.to),
            size=self.max_batch_size,
        )

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """One form POST to send.php: the messages share the text, the sender and the id of
        the first one."""
        first = messages[0]
        self.validate_text(first.text)
        sender = first.sender or self.default_sender
        if sender:
            self.validate_sender(sender)
        phones = [_digits(sms.to) for sms in messages]
        if not all(7 <= len(p) <= 15 for p in phones):
            raise ValidationError(
                gettext("The number is not in international format (+79001234212)."),
                code="invalid_phone",
            )
        data = [
            *self._auth(),
            ("charset", "utf-8"),
            ("op", "1"),
            ("phones", ",".join(phones)),
            ("mes", first.text),
            ("id", self.smsc_id(first.msg_id)),
        ]
        if sender:
            data.append(("sender", sender))
        return HTTPRequest(self.base_url + SEND_PATH, data=data)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """A request-wide error for every message, else each phone's entry of ``phones``."""
        data = answer.data
        if not isinstance(data, dict):
            return None
        if "error" in data or "error_code" in data:
            code = _int(data.get("error_code"))
            status, message = classify_send_error(code, str(data.get("error") or ""))
            return [
                SendResult(status, error_code=str(code), error_message=message, raw=data)
                for _ in messages
            ]
        if "id" not in data and "cnt" not in data:
            return None
        sent_id = str(data.get("id") or self.smsc_id(messages[0].msg_id))
        entries = {
            _digits(e.get("phone")): e for e in data.get("phones") or [] if isinstance(e, dict)
        }
        summary = {k: v for k, v in data.items() if k != "phones"}
        return [self._phone_result(sms, sent_id, entries, summary) for sms in messages]

    def _phone_result(
        self, sms: OutgoingSMS, sent_id: str, entries: dict[str, dict], summary: dict
    ) -> SendResult:
        """ACCEPTED unless the phone's entry has an error or a failure status."""
        phone = _digits(sms.to)
        entry = entries.get(phone)
        raw = {**summary, "phone": entry} if entry else summary
        code = _int(entry.get("status")) if entry else None
        err = _int(entry.get("error")) if entry else None
        failed = code is not None and STATUS_CODES.get(code, (D.UNDELIVERED,))[0] == D.UNDELIVERED
        if failed or err:
            _status, error_code, message = status_report(code if failed else 20, err) or (
                "",
                "",
                "",
            )
            return SendResult(S.REJECTED, error_code=error_code, error_message=message, raw=raw)
        return SendResult(S.ACCEPTED, provider_message_id=f"{sent_id}-{phone}", raw=raw)

    # --- asking SMSC ---------------------------------------------------------------------
    def _ask(self, path: str, fields: list[tuple[str, str]]) -> Any:
        """POST a query; its JSON, or ProviderError (unreachable, not JSON, SMSC's error)."""
        answer = self.post(HTTPRequest(self.base_url + path, data=[*self._auth(), *fields]))
        data = answer.data
        if data is None:
            raise self.unexpected_answer(answer)
        if isinstance(data, dict) and ("error" in data or "error_code" in data):
            code = _int(data.get("error_code"))
            status, message = classify_send_error(code, str(data.get("error") or ""))
            result = SendResult(status, error_code=str(code), error_message=message, raw=data)
            raise ProviderError(f"SMSC error {code}: {message}", self.scrub(result))
        return data

    def _statuses(self, pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """status.php for (phone, id) pairs, 100 per request: one entry each, with ``phone``
        and ``id`` (a single pair's answer carries neither: the query's are added)."""
        entries: list[dict[str, Any]] = []
        for start in range(0, len(pairs), MAX_BATCH):
            chunk = pairs[start : start + MAX_BATCH]
            fields = [
                ("phone", ",".join(p for p, _ in chunk)),
                ("id", ",".join(i for _, i in chunk)),
            ]
            data = self._ask(STATUS_PATH, fields)
            items = data if isinstance(data, list) else [data]
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                if len(chunk) == 1 or "phone" not in item:
                    phone, id_ = chunk[min(index, len(chunk) - 1)]
                    item = {"phone": phone, "id": id_, **item}
                entries.append(item)
        return entries

    def query_status(self, messages) -> list[DeliveryReport]:
        """Ask status.php about ``messages`` (objects with ``msg_id`` and
        ``provider_message_id`` "id-phone"). One report per message SMSC knows; -3 yields
        none. Raises ``ProviderError`` when SMSC cannot be reached or refuses the query."""
        by_key: dict[tuple[str, str], Any] = {}
        for message in messages:
            sent_id, _sep, phone = (message.provider_message_id or "").rpartition("-")
            if sent_id and phone:
                by_key[(phone, sent_id)] = message
        reports = []
        for entry in self._statuses(list(by_key)):
            key = (_digits(entry.get("phone")), str(entry.get("id")))
            message = by_key.get(key)
            code = _int(entry.get("status"))
            mapped = None if code is None else status_report(code, _int(entry.get("err")))
            if message is None or mapped is None:
                continue
            status, error_code, error_message = mapped
            reports.append(
                DeliveryReport(
                    status,
                    msg_id=message.msg_id,
                    provider_message_id=f"{key[1]}-{key[0]}",
                    error_code=error_code,
                    error_message=error_message,
                    delivered_at=_when(entry.get("last_timestamp"), status),
                    raw=entry,
                )
            )
        return reports

    def lookup_sent(self, sms: OutgoingSMS) -> SendResult | None:
        """Whether SMSC has ``sms`` (by its phone and id): ACCEPTED with the provider id if it
        does, None when SMSC answers -3 (not found); ProviderError when it cannot say."""
        phone, sent_id = _digits(sms.to), self.smsc_id(sms.msg_id)
        for entry in self._statuses([(phone, sent_id)]):
            code = _int(entry.get("status"))
            if code is None:
                break
            if code == NOT_FOUND:
                return None
            return self.scrub(
                SendResult(S.ACCEPTED, provider_message_id=f"{sent_id}-{phone}", raw=entry)
            )
        result = SendResult(S.RETRY, error_code="bad_response", raw={"phone": phone})
        raise ProviderError("SMSC's status answer has no status", result)

    def balance(self) -> Balance:
        """The account's balance (balance.php); ProviderError when SMSC cannot say."""
        data = self._ask(BALANCE_PATH, [])
        try:
            amount = Decimal(str(data["balance"]))
        except (KeyError, TypeError, InvalidOperation) as exc:
            result = SendResult(S.RETRY, error_code="bad_response", raw=self.redact(data))
            raise ProviderError("SMSC's balance answer has no balance", result) from exc
        return Balance(amount, str(data.get("currency") or "RUB"))

    # --- callbacks -----------------------------------------------------------------------
    def signature(self, sent_id: str, phone: str, status: str) -> str:
        """The ``md5`` SMSC sends: md5("id:phone:status:secret")."""
        text = f"{sent_id}:{phone}:{status}:{self.callback_secret}"
        return hashlib.md5(text.encode("utf-8")).hexdigest()  # noqa: S324 (SMSC's scheme)

    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """Verify and parse SMSC's form POST (``id``, ``phone``, ``status``, ``err``, ``ts``,
        ``md5``); a wrong md5 is CallbackForbidden, a missing field CallbackError."""
        form = request.POST
        sent_id, phone, status = (form.get(k, "") for k in ("id", "phone", "status"))
        if not (sent_id and phone and status):
            raise CallbackError("id, phone and status are required")
        given = form.get("md5", "").strip().lower()
        if not self.callback_secret or not hmac.compare_digest(
            given.encode(), self.signature(sent_id, phone, status).encode()
        ):
            raise CallbackForbidden("the md5 does not match (wrong secret, or a forged report)")
        code = _int(status)
        if code is None:
            raise CallbackError(f"status {status[:20]!r} is not a number")
        mapped = status_report(code, _int(form.get("err")))
        if mapped is None:
            return []
        delivery, error_code, error_message = mapped
        return [
            DeliveryReport(
                delivery,
                provider_message_id=f"{sent_id}-{_digits(phone)}",
                error_code=error_code,
                error_message=error_message,
                delivered_at=_when(form.get("ts"), delivery),
                raw={k: v for k, v in form.items() if k != "md5"},
            )
        ]

    # --- incoming messages ---------------------------------------------------------------
    def inbound_signature(self, phone: str, text: str, to: str, charset: str = "utf-8") -> str:
        """The ``md5`` of an incoming message: md5("phone:mes:to:secret") in its charset."""
        signed = f"{phone}:{text}:{to}:{self.callback_secret}".encode(charset, "replace")
        return hashlib.md5(signed).hexdigest()  # noqa: S324 (SMSC's scheme)

    def callback_is_inbound(self, request: HttpRequest) -> bool:
        """An incoming message, posted to the status URL: it has ``mes``, a report has not."""
        return "mes" in _form(request)[0]

    def parse_inbound(self, request: HttpRequest) -> list[InboundMessage]:
        """Verify and parse an incoming message (``phone``, ``mes``, ``to``, ``md5``…); a wrong
        md5 is CallbackForbidden, a missing ``phone`` or ``mes`` CallbackError."""
        form, charset = _form(request)
        phone, text, to = (form.get(k, "") for k in ("phone", "mes", "to"))
        if not phone or "mes" not in form:
            raise CallbackError("phone and mes are required")
        given = form.get("md5", "").strip().lower()
        if not self.callback_secret or not hmac.compare_digest(
            given.encode(),
            self.inbound_signature(phone, text, to, charset).encode(),
        ):
            raise CallbackForbidden("the md5 does not match (wrong secret, or a forged message)")
        digits = _digits(phone)
        if not 7 <= len(digits) <= 15:
            raise CallbackError(f"phone {phone[:20]!r} is not a phone number")
        raw = {k: v for k, v in form.items() if k != "md5"}
        fields = "\n".join(f"{k}={raw[k]}" for k in sorted(raw))
        message_id = form.get("id") or "h" + hashlib.sha256(fields.encode()).hexdigest()[:32]
        return [
            InboundMessage(
                from_phone=f"+{digits}", to=to, text=text, provider_message_id=message_id, raw=raw
            )
        ]

    # --- housekeeping --------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """SMSC's sender names: up to 11 Latin letters, digits and ``-_. `` or up to 15 digits."""
        if sender and not re.fullmatch(r"[A-Za-z0-9 ._\-!&]{1,11}|\+?\d{1,15}", sender):
            raise ValidationError(
                gettext(
                    "SMSC sender names have 1-11 Latin letters, digits, spaces, '.', '-', '_' "
                    "(or up to 15 digits)."
                ),
                code="invalid_sender",
            )


def _form(request: HttpRequest) -> tuple[Any, str]:
    """The posted form and its charset: UTF-8, or windows-1251 (SMSC's default charset, which
    an account may keep for what it posts) when the form's text is not UTF-8."""
    if request.content_type == "application/x-www-form-urlencoded":
        try:
            unquote_to_bytes(request.body.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:  # Django refuses to parse it: read it here
            return QueryDict(request.body, encoding="windows-1251"), "windows-1251"
    return request.POST, request.encoding or "utf-8"


def _when(value: Any, status: DeliveryStatus) -> datetime | None:
    """A delivery time from unix seconds, for delivered messages only."""
    seconds = _int(value)
    if status != D.DELIVERED or not seconds or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, UTC)
