"""Beeline A2P (``a2p-sms-https.beeline.ru``): form requests, XML answers, status polling and
status callbacks.

``SMS_URL=beeline://USER:PASSWORD@a2p-sms-https.beeline.ru/?sender=MyCompany`` (``beeline+http://``
for the sandbox). Options: ``user``, ``password``, ``sender`` (a name registered in the Beeline
cabinet; empty: the account's default name), ``batch_size`` (1, the default: one ``post_sms``
per message, the shape the 1C BSP uses; 2-100: several messages in one request as
``data[i][...]`` entries), ``status_timezone`` (the zone of the dates in status answers,
default Europe/Moscow) and the HTTP ones of ``http.HTTPBackend`` (``base_url``, default
https://a2p-sms-https.beeline.ru; a URL with a path is used as the API's address instead of
``/proto/http/``).

Confirmed -- Beeline's manual "Протокол HTTPS" (a2p-sms.beeline.ru/support/manuals/https, as
saved in a public client repository), the 1C BSP module and public PHP clients:

- ``POST /proto/http/``, ``application/x-www-form-urlencoded; charset=utf-8``: ``user``,
  ``pass``, ``action=post_sms``, ``message`` (at most 2000 characters), ``target`` (numbers,
  comma-separated, ``+7...``), ``sender``, ``post_id`` (the client's id of the message, at most
  36 characters, echoed back); ``gzip=none``, else the answer comes gzip-compressed;
- the answer, also for errors (wrong credentials: 20107), is HTTP 200 with
  ``<output><result sms_group_id><sms id phone post_id .../></result>
  <errors><error code="N">text</error></errors></output>``; the error codes are ``ERRORS``;
- several actions in one request as ``data[i][action]``, ``data[i][message]``, ...;
- ``action=status`` with ``sms_id``: ``<MESSAGES><MESSAGE SMS_ID>`` with ``SMSSTC_CODE``
  (``STATUSES``), ``SMS_STATUS`` (its text), ``SMS_CLOSED`` (1: final), ``SMS_CLOSE_TIME``;
- status callbacks: POSTed to the one URL set in the cabinet ("URL скрипта для приёма статуса";
  paste ``backend.callback_url()`` there) with ``ORDID`` (the sms id), ``STATUS``
  (``CALLBACK_STATUSES``), ``FINALTIME`` (UTC), ``CNRID``, ``RESCOUNT``. Unsigned: the secret
  token in the URL protects the endpoint.

Not confirmed (the code accepts the alternatives):

- that ``<error>`` always has ``code`` (older answers carry only the text: known texts are
  recognised by ``ERROR_TEXTS``; "Неправильный номер телефона: +7..." names the number);
- that ``post_id`` is echoed inside ``data[i]`` batches (results are matched by post_id, else by
  number: one request never holds a number twice);
- the callback's encoding (read as a form, a query string or JSON) and the date formats; the
  zone of ``SMS_CLOSE_TIME`` (``status_timezone``); the most entries one request may hold.

Never twice: Beeline does not say that it refuses a repeated ``post_id``, and a status can be
asked only by Beeline's own id, so a retry after an ambiguous failure cannot be made safe:
``retry_safety`` is NONE (the outbox marks such a message "uncertain" for an operator).
``post_id`` is our msg_id all the same, so an operator can find the message in the cabinet.
Beeline's own rule 20167 (no same text to the same number within the account's minutes) stops
a quick identical resend, but it is not a key, so it is not relied on.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import UTC
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import CallbackError, ConfigurationError, ProviderError
from ..phones import international_digits
from .base import DeliveryReport, DeliveryStatus, OutgoingSMS, RetrySafety, SendResult, SendStatus
from .http import Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option, to_timezone
from .safexml import parse_date, parse_xml

DEFAULT_BASE_URL = "https://a2p-sms-https.beeline.ru"
API_PATH = "/proto/http/"
TEXT_MAX_LENGTH = 2000
SENDER_MAX_LENGTH = 11
POST_ID_MAX_LENGTH = 36
MAX_BATCH_SIZE = 100
STATUS_CHUNK = 50  # sms_ids asked about in one status request

S, D = SendStatus, DeliveryStatus
L = gettext_lazy

#: ``<error code>`` -> how the outbox handles it, what it means (Beeline's texts are in Russian
#: and vary; theirs is appended to ours).
ERRORS: dict[int, tuple[SendStatus, Any]] = {
    20107: (S.PROVIDER_ERROR, L("Beeline refused the user name or password (access denied).")),
    20117: (S.REJECTED, L("Beeline refused the phone number as malformed.")),
    20148: (S.REJECTED, L("Beeline cannot serve this number (no product or route for it).")),
    20154: (S.RETRY, L("Beeline had a transport error; the message will be retried.")),
    20158: (S.REJECTED, L("The number is on the account's blacklist at Beeline.")),
    20167: (
        S.REJECTED,
        L(
            "Beeline refuses the same text to the same number again within the account's set "
            "minutes: an identical message was accepted shortly before."
        ),
    ),
    20170: (S.REJECTED, L("The message is too long for Beeline.")),
    20171: (S.REJECTED, L("The message or sender name did not pass Beeline's censorship check.")),
    20200: (S.REJECTED, L("Beeline refused the request as invalid.")),
    20202: (S.REJECTED, L("Beeline found no inbox for incoming messages.")),
    20203: (S.REJECTED, L("The request named no number and no contact list.")),
    20204: (S.REJECTED, L("Beeline found no phone numbers in the contact list.")),
    20207: (S.REJECTED, L("Beeline refused the date format.")),
    20208: (S.REJECTED, L("Beeline refused the date range: it ends before it starts.")),
    20209: (S.REJECTED, L("Beeline got a request without parameters.")),
    20211: (
        S.RETRY,
        L("Beeline throttled the account (too many messages); the message will be retried."),
    ),
    20212: (S.REJECTED, L("Beeline refused a date range that is too long.")),
    20213: (S.REJECTED, L("Beeline found invalid phone numbers in the request.")),
    20218: (
        S.PROVIDER_ERROR,
        L("The Beeline account may not send to several numbers in one request: set batch_size=1."),
    ),
    20230: (S.REJECTED, L("The sender name is not approved by the recipient's operator.")),
    20280: (S.PROVIDER_ERROR, L("The account's daily sending limit at Beeline is reached.")),
    20281: (S.PROVIDER_ERROR, L("The account's monthly sending limit at Beeline is reached.")),
}
#: Lower-case fragments of error texts without a ``code`` attribute (older answers) -> code.
ERROR_TEXTS: tuple[tuple[str, int], ...] = (
    ("authentication failed", 20107),
    ("ошибка авторизации", 20107),
    ("в доступе отказано", 20107),
    ("неправильный номер телефона", 20117),
    ("чёрный список", 20158),
    ("черный список", 20158),
    ("слишком длинное сообщение", 20170),
    ("too high messages rate", 20211),
)

#: ``SMSSTC_CODE`` of a status answer -> DeliveryStatus, its meaning. ``unknown`` is final only
#: when ``SMS_CLOSED`` is 1; wait, not_delivered and failed are older platforms' codes.
STATUSES: dict[str, tuple[DeliveryStatus, Any]] = {
    "queued": (D.SENT, L("in Beeline's queue, not yet passed to the operator")),
    "wait": (D.SENT, L("passed to the operator for sending")),
    "accepted": (D.SENT, L("passed to the operator, delivery not yet known")),
    "delivered": (D.DELIVERED, L("delivered")),
    "rejected": (D.UNDELIVERED, L("rejected by the operator")),
    "undeliverable": (D.UNDELIVERED, L("cannot be delivered: the subscriber is unavailable")),
    "error": (D.UNDELIVERED, L("a sending error: the message did not reach the subscriber")),
    "expired": (D.UNDELIVERED, L("no final status in time")),
    "unknown": (D.UNDELIVERED, L("the status is unknown")),
    "aborted": (D.FAILED, L("cancelled by a user of the Beeline account")),
    "not_delivered": (D.UNDELIVERED, L("not delivered")),
    "failed": (D.UNDELIVERED, L("a sending error")),
}
#: ``STATUS`` of a status callback -> DeliveryStatus, the error code we store, its meaning.
CALLBACK_STATUSES: dict[str, tuple[DeliveryStatus, str, Any]] = {
    "2": (D.DELIVERED, "", L("delivered")),
    "3": (D.UNDELIVERED, "expired", L("the operator's delivery attempts expired")),
    "5": (D.UNDELIVERED, "undeliverable", L("cannot be delivered (a wrong or unknown number)")),
    "7": (D.UNDELIVERED, "unknown", L("the status is unknown")),
    "8": (D.UNDELIVERED, "rejected", L("not accepted by the operator")),
    "20": (D.FAILED, "aborted", L("cancelled by a user of the Beeline account")),
    "21": (D.UNDELIVERED, "error", L("a system error at Beeline")),
    "22": (D.UNDELIVERED, "expired", L("the operator reported no status in time")),
}

_NUMBER = re.compile(r"(?<!\d)\+?\d{10,15}(?!\d)")


def _digits(phone: str) -> str:
    digits = "".join(ch for ch in phone if ch.isdigit())
    # A federal 8XXXXXXXXXX is the same Russian number as 7XXXXXXXXXX.
    return "7" + digits[1:] if len(digits) == 11 and digits.startswith("8") else digits


def error_code_of(element: ET.Element) -> int | None:
    """The code of an ``<error>``: its ``code`` attribute, else one recognised by its text."""
    try:
        return int(element.get("code", ""))
    except ValueError:
        text = (element.text or "").lower()
        return next((code for fragment, code in ERROR_TEXTS if fragment in text), None)


def classify_error(code: int | None, text: str = "") -> tuple[SendStatus, str]:
    """How to handle an ``<error>`` and a message a person understands (Beeline's text added)."""
    status, meaning = ERRORS.get(code, (S.REJECTED, None)) if code else (S.REJECTED, None)
    if meaning is None:
        meaning = _("Beeline refused the message (error %(code)s).") % {"code": code or "-"}
    return status, f"{meaning} ({text})" if text else str(meaning)


def status_report(code: str, closed: bool, text: str = "") -> tuple[DeliveryStatus, str, str]:
    """(DeliveryStatus, error_code, error_message) for a ``SMSSTC_CODE``; a code that is not
    final yet (or unknown while ``SMS_CLOSED`` is 0) is SENT."""
    code = (code or "").strip().lower()
    status, meaning = STATUSES.get(code, (D.UNDELIVERED, None))
    if status in (D.DELIVERED, D.SENT):
        return status, "", ""
    if not closed and (code == "unknown" or meaning is None):
        return D.SENT, "", ""
    state = str(meaning) if meaning is not None else code
    message = _("Not delivered: %(state)s.") % {"state": state}
    return status, code or "unknown", f"{message} ({text})" if text else message


class BeelineBackend(HTTPBackend):
    """Sends through Beeline's A2P HTTPS API, polls statuses and reads its status callbacks."""

    display_name = "Beeline"
    # Beeline drops no repeated post_id and cannot be asked by it (module docstring).
    retry_safety = RetrySafety.NONE
    supports_callbacks = True
    # Operators keep trying for up to a day or two; Beeline answers status by date for 4 days.
    report_window = 48 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("user", str, "", "the Beeline A2P login (the URL's user)"),
        Option("password", str, "", "its password (the URL's password)", secret=True),
        Option("batch_size", int, 1, "messages per request: 1, or up to 100", minimum=1),
        Option(
            "status_timezone",
            to_timezone,
            ZoneInfo("Europe/Moscow"),
            "the zone of dates in status answers",
        ),
    )
    url_user_option = "user"
    url_password_option = "password"
    account_checks = AccountChecks(
        credentials=("user", "password"),
        credentials_hint="Set {env}=beeline://USER:PASSWORD@a2p-sms-https.beeline.ru/"
        "?sender=MyCompany (URL-encode special characters: %40 for @).",
        plain_http_risk="the password travels unencrypted",
        scheme="beeline",
    )

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.user: str = self.options["user"]
        self.password: str = self.options["password"]
        self.status_timezone = self.options["status_timezone"]
        self.max_batch_size = self.options["batch_size"]
        if self.max_batch_size > MAX_BATCH_SIZE:
            raise ConfigurationError(
                f"{self.env_variable}: Beeline's batch_size is at most {MAX_BATCH_SIZE}"
            )
        has_path = urlsplit(self.base_url).path not in ("", "/")
        self.api_url = self.base_url.rstrip("/") + ("/" if has_path else API_PATH)

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """A name of at most 11 characters or a number of at most 15 digits (the usual rule of
        Russian operators; Beeline checks the name against the cabinet's list). Empty: the
        account's default name."""
        is_number = sender.lstrip("+").isdigit()
        if sender and len(sender.lstrip("+")) > (15 if is_number else SENDER_MAX_LENGTH):
            raise ValidationError(
                _("The sender name “%(sender)s” is too long: Beeline takes at most 11 characters.")
                % {"sender": sender},
                code="sender_too_long",
            )

    def validate_text(self, text: str) -> None:
        super().validate_text(text)
        if len(text) > TEXT_MAX_LENGTH:
            raise ValidationError(
                _("The text has %(count)d characters; Beeline takes at most %(max)d.")
                % {"count": len(text), "max": TEXT_MAX_LENGTH},
                code="text_too_long",
            )

    def validate_message(self, sms: OutgoingSMS) -> None:
        """Raise ValidationError when Beeline would refuse ``sms`` (sender, text, number)."""
        self.validate_sender(sms.sender or self.default_sender)
        self.validate_text(sms.text)
        international_digits(sms.to)

    # --- sending -------------------------------------------------------------------------
    def split_batch(self, batch: list[OutgoingSMS]) -> list[list[int]]:
        """Up to ``batch_size`` messages a request, no number twice in one (answers are matched
        by number when post_id is not echoed); a message Beeline would refuse goes alone, so
        ``build_request`` refuses only it."""
        requests_: list[list[int]] = []
        current: list[int] = []
        numbers: set[str] = set()
        for index, sms in enumerate(batch):
            try:
                self.validate_message(sms)
            except ValidationError:
                requests_.append([index])
                continue
            number = _digits(sms.to)
            if len(current) >= self.max_batch_size or number in numbers:
                requests_.append(current)
                current, numbers = [], set()
            current.append(index)
            numbers.add(number)
        if current:
            requests_.append(current)
        return requests_

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """``post_sms`` for one message, ``data[i][...]`` entries for several (raises
        ValidationError for a message Beeline would refuse)."""
        fields = self.auth_fields()
        for index, sms in enumerate(messages):
            self.validate_message(sms)
            prefix = f"data[{index}]" if len(messages) > 1 else ""
            fields += [(_field(prefix, key), value) for key, value in self.entry(sms)]
        return HTTPRequest(self.api_url, data=fields)

    def auth_fields(self) -> list[tuple[str, str]]:
        return [("user", self.user), ("pass", self.password), ("gzip", "none")]

    def entry(self, sms: OutgoingSMS) -> list[tuple[str, str]]:
        """The fields of one ``post_sms`` action."""
        entry = [("action", "post_sms"), ("message", sms.text), ("target", sms.to)]
        sender = sms.sender or self.default_sender
        if sender:
            entry.append(("sender", sender))
        if 0 < len(sms.msg_id) <= POST_ID_MAX_LENGTH:
            entry.append(("post_id", sms.msg_id))
        return entry

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """Each message's ``<sms>`` (by post_id, else number), else the ``<error>`` naming its
        number, else an error naming no number; None when the answer is not ``<output>``."""
        root = _output(answer)
        if root is None:
            return None
        accepted = list(root.iter("sms"))
        by_post_id = {el.get("post_id"): el for el in accepted if el.get("post_id")}
        by_number = {_digits(el.get("phone", "")): el for el in accepted}
        own_errors: dict[str, ET.Element] = {}
        general: list[ET.Element] = []
        for error in root.iter("error"):
            named = _NUMBER.findall(error.text or "")
            for number in named:
                own_errors.setdefault(_digits(number), error)
            if not named:
                general.append(error)
        group = root.find("result")
        group_id = group.get("sms_group_id", "") if group is not None else ""
        results = []
        for sms in messages:
            number = _digits(sms.to)
            # An Element without children is false: compare with None, never use "or".
            element = by_post_id.get(sms.msg_id)
            if element is None:
                element = by_number.get(number)
            if element is not None and element.get("id"):
                raw = {"sms": dict(element.attrib), "sms_group_id": group_id}
                results.append(SendResult(S.ACCEPTED, element.get("id"), raw=raw))
                continue
            error = own_errors.get(number)
            if error is None and general:
                error = general[0]
            results.append(self._refused(error) if error is not None else _not_mentioned())
        return results

    @staticmethod
    def _refused(error: ET.Element) -> SendResult:
        code, text = error_code_of(error), (error.text or "").strip()
        status, message = classify_error(code, text)
        raw = {"error": {"code": error.get("code", ""), "text": text}}
        return SendResult(status, error_code=str(code or "error"), error_message=message, raw=raw)

    # --- status polling ------------------------------------------------------------------
    def query_status(self, messages) -> list[DeliveryReport]:
        """Ask ``action=status`` about ``messages`` (objects with ``msg_id`` and
        ``provider_message_id``), 50 sms_ids a request. One report per message Beeline
        describes (SENT while on its way). Raises ProviderError when Beeline cannot be reached
        or refuses the query, so polling stops and asks again later."""
        by_id = {m.provider_message_id: m for m in messages if m.provider_message_id}
        ids = list(by_id)
        reports = []
        for start in range(0, len(ids), STATUS_CHUNK):
            chunk = ids[start : start + STATUS_CHUNK]
            if len(chunk) == 1:
                fields = [("action", "status"), ("sms_id", chunk[0])]
            else:
                fields = [
                    (f"data[{i}][{key}]", value)
                    for i, sms_id in enumerate(chunk)
                    for key, value in (("action", "status"), ("sms_id", sms_id))
                ]
            for element in self._ask(self.auth_fields() + fields).iter("MESSAGE"):
                message = by_id.get(element.get("SMS_ID", ""))
                if message is not None:
                    reports.append(self._message_report(element, message))
        return reports

    def _ask(self, fields: list[tuple[str, str]]) -> ET.Element:
        answer = self.post(HTTPRequest(self.api_url, data=fields))
        root = _output(answer)
        if root is None:
            raise self.unexpected_answer(answer)
        errors = list(root.iter("error"))
        if errors and root.find(".//MESSAGE") is None:
            result = self.scrub(self._refused(errors[0]))
            raise ProviderError(result.error_message, result)
        return root

    def _message_report(self, element: ET.Element, message: Any) -> DeliveryReport:
        def child(name: str) -> str:
            return (element.findtext(name) or "").strip()

        code, text = child("SMSSTC_CODE"), child("SMS_STATUS")
        status, error_code, error_message = status_report(code, child("SMS_CLOSED") == "1", text)
        delivered_at = None
        if status == D.DELIVERED:
            delivered_at = parse_date(child("SMS_CLOSE_TIME"), self.status_timezone)
        raw = {"SMS_ID": element.get("SMS_ID"), "SMSSTC_CODE": code, "SMS_STATUS": text}
        raw.update(SMS_CLOSED=child("SMS_CLOSED"), SMS_CLOSE_TIME=child("SMS_CLOSE_TIME"))
        return DeliveryReport(
            status,
            msg_id=message.msg_id,
            provider_message_id=element.get("SMS_ID", ""),
            error_code=error_code,
            error_message=error_message,
            delivered_at=delivered_at,
            raw=raw,
        )

    # --- status callbacks ----------------------------------------------------------------
    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """One status callback (a form, a query string or JSON with ``ORDID`` and ``STATUS``)
        as a DeliveryReport; CallbackError when either is missing."""
        fields = {**request.GET.dict(), **request.POST.dict()}
        if not fields and request.body:
            try:
                body = json.loads(request.body.decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as exc:
                raise CallbackError(f"neither a form nor JSON: {exc}") from exc
            fields = {str(k): str(v) for k, v in body.items()} if isinstance(body, dict) else {}
        sms_id, code = fields.get("ORDID", "").strip(), fields.get("STATUS", "").strip()
        if not sms_id or not code:
            raise CallbackError("a status callback needs ORDID and STATUS")
        status, error_code, meaning = CALLBACK_STATUSES.get(
            code, (D.UNDELIVERED, f"status_{code}", None)
        )
        error_message = ""
        if status != D.DELIVERED:
            state = (
                str(meaning)
                if meaning is not None
                else _("unknown status %(code)s") % {"code": code}
            )
            error_message = _("Not delivered: %(state)s.") % {"state": state}
        delivered_at = parse_date(fields.get("FINALTIME"), UTC) if status == D.DELIVERED else None
        return [
            DeliveryReport(
                status,
                provider_message_id=sms_id,
                error_code=error_code,
                error_message=error_message,
                delivered_at=delivered_at,
                raw=fields,
            )
        ]


def _field(prefix: str, key: str) -> str:
    return f"{prefix}[{key}]" if prefix else key


def _output(answer: Answer) -> ET.Element | None:
    """The answer's ``<output>`` element, or None when the body is not Beeline's XML."""
    response = answer.response
    root = parse_xml(response.content) if response is not None else None
    return root if root is not None and root.tag == "output" else None


def _not_mentioned() -> SendResult:
    # Beeline answered but said nothing about this number: it may have taken it.
    return SendResult(
        S.RETRY,
        error_code="no_answer",
        error_message=_("Beeline's answer does not mention this message; it may have been sent."),
        ambiguous=True,
    )
