"""SMS4B (``sms4b.ru``) through the web service the 1C BSP uses: ``SendTXT``, one recipient per
request, and ``StatusTXT`` polling.

``SMS_URL=sms4b://LOGIN:PASSWORD@sms4b.ru/?sender=MyCompany`` (``sms4b+http://`` for the
sandbox). Options: ``login``, ``password``, ``sender`` (required by SMS4B: code -66 without
one), ``max_text_length`` (480, the BSP's limit) and the HTTP ones of ``http.HTTPBackend``
(``base_url``, default https://sms4b.ru; a URL with a path is used as the service's address
instead of ``/ws/s1c.asmx``).

Confirmed -- the 1C BSP module "ОтправкаSMSЧерезSMS4B" (its 2019-2021 versions, CC BY 4.0) and
the BSP's ``PrepareHTTPRequest``:

- ``POST https://sms4b.ru/ws/s1c.asmx/SendTXT``, ``application/x-www-form-urlencoded`` (UTF-8):
  ``Login``, ``Password``, ``Source`` (the sender name), ``Phone`` (digits only), ``Text``;
- the answer is an XML document whose root is ``<string>`` (an ASMX web service): the message's
  id, 20 characters, or an error code (``ERRORS``);
- ``POST .../StatusTXT`` with ``Login``, ``Password``, ``MessageId`` answers ``<string>`` with a
  status number ``n``: ``n % 256`` parts in all, ``(n // 256) % 256`` parts done, final when
  ``n >= 65536``. Final with every part done is delivered, final otherwise not delivered; not
  final is on its way (``decode_status``). -21 and -22 (the message is not known yet) mean
  "pending" to the BSP; other negative numbers are errors (``ERRORS``).

Not confirmed (the code accepts the alternatives):

- the namespace of ``<string>`` (ignored) and the id's alphabet (any 20 characters);
- whether ``n // 65536`` of a final status carries a reason (it is kept in ``raw``);
- the HTTP status of SMS4B's own errors (an ASMX service answers a missing parameter with HTTP
  500: a server error to ``HTTPBackend``); SMS4B's own text limit (the BSP's is 480);
- a balance method and delivery callbacks on this service: none are known, so statuses are
  polled, one ``StatusTXT`` request per message (SMS4B's SOAP API at ``/webservices/sms.asmx``
  has more, behind sessions; it is not used).

Never twice: ``SendTXT`` takes no id of ours and SMS4B cannot be asked whether a message
arrived, so a retry after an ambiguous failure cannot be made safe: ``retry_safety`` is NONE
(the outbox marks such a message "uncertain" for an operator).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import ProviderError
from ..phones import international_digits
from .base import DeliveryReport, DeliveryStatus, OutgoingSMS, RetrySafety, SendResult, SendStatus
from .http import Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option
from .safexml import parse_xml

DEFAULT_BASE_URL = "https://sms4b.ru"
SERVICE_PATH = "/ws/s1c.asmx"
ID_LENGTH = 20
SENDER_MAX_LENGTH = 11
TEXT_MAX_LENGTH = 480

S, D = SendStatus, DeliveryStatus
L = gettext_lazy

#: SendTXT's and StatusTXT's error codes -> how the outbox handles them, what they mean.
ERRORS: dict[int, tuple[SendStatus, Any]] = {
    0: (S.RETRY, L("SMS4B's limit of open sessions is exceeded; the message will be retried.")),
    -1: (S.PROVIDER_ERROR, L("SMS4B refused the login or password.")),
    -10: (S.RETRY, L("SMS4B's service failed; the message will be retried.")),
    -20: (S.RETRY, L("SMS4B's communication session failed; the message will be retried.")),
    -21: (S.REJECTED, L("SMS4B did not identify the message.")),
    -22: (S.REJECTED, L("SMS4B refused the message id as invalid.")),
    -29: (S.REJECTED, L("SMS4B's spam filter rejected the message.")),
    -30: (S.REJECTED, L("SMS4B refused the message's encoding.")),
    -31: (S.REJECTED, L("SMS4B does not serve the recipient's tariff zone.")),
    -50: (S.PROVIDER_ERROR, L("SMS4B refused the sender name.")),
    -51: (S.REJECTED, L("SMS4B does not allow this recipient.")),
    -52: (S.PROVIDER_ERROR, L("Not enough money on the SMS4B account.")),
    -53: (S.PROVIDER_ERROR, L("The sender name is not registered at SMS4B.")),
    -65: (
        S.PROVIDER_ERROR,
        L("SMS4B needs guarantees for the sender name: contact SMS4B's support."),
    ),
    -66: (S.PROVIDER_ERROR, L("No sender name was given: SMS4B needs one.")),
    -68: (S.PROVIDER_ERROR, L("The SMS4B account is blocked.")),
}
#: StatusTXT answers meaning "not known yet": no report, ask again later.
PENDING = frozenset({-21, -22})
FINAL = 65536  # a status number at or above it is final


def classify_error(code: int) -> tuple[SendStatus, str]:
    """How to handle an SMS4B error code and a message a person understands."""
    if code in ERRORS:
        status, meaning = ERRORS[code]
        return status, str(meaning)
    return S.REJECTED, _("SMS4B error code %(code)d.") % {"code": code}


def decode_status(number: int) -> tuple[DeliveryStatus, str, str]:
    """(DeliveryStatus, error_code, error_message) of a StatusTXT number (module docstring)."""
    total, done = number % 256, (number // 256) % 256
    if number < FINAL:
        return D.SENT, "", ""
    if total > 0 and done >= total:
        return D.DELIVERED, "", ""
    message = _("Not delivered: %(done)d of %(total)d parts reached the phone.") % {
        "done": done,
        "total": total,
    }
    return D.UNDELIVERED, str(number), message


def answer_text(answer: Answer) -> str | None:
    """The text of the answer's ``<string>`` element, or None when it is not one."""
    response = answer.response
    root = parse_xml(response.content) if response is not None else None
    if root is None or root.tag != "string":
        return None
    return (root.text or "").strip()


def _code(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d{1,9}", text) else None


class Sms4bBackend(HTTPBackend):
    """Sends through SMS4B's ``SendTXT`` and polls ``StatusTXT``."""

    display_name = "SMS4B"
    # SendTXT takes no id of ours and cannot be asked about one (module docstring).
    retry_safety = RetrySafety.NONE
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("login", str, "", "the SMS4B login (the URL's user)"),
        Option("password", str, "", "its password (the URL's password)", secret=True),
        Option("max_text_length", int, TEXT_MAX_LENGTH, "the longest text sent", minimum=1),
    )
    url_user_option = "login"
    url_password_option = "password"
    account_checks = AccountChecks(
        credentials=("login", "password"),
        credentials_hint="Set {env}=sms4b://LOGIN:PASSWORD@sms4b.ru/?sender=MyCompany "
        "(URL-encode special characters: %40 for @).",
        sender_message="Provider {alias!r}: no default sender name; every send must pass "
        "sender=... or SMS4B refuses it (-66).",
        sender_hint="Add ?sender=YourName (a name registered at SMS4B) to {env}.",
        plain_http_risk="the password travels unencrypted",
        scheme="sms4b",
    )
    # SMS4B's codes come in <string> at HTTP 200; any other status is judged by itself.
    reads_error_answers = False

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.login: str = self.options["login"]
        self.password: str = self.options["password"]
        self.max_text_length: int = self.options["max_text_length"]
        has_path = urlsplit(self.base_url).path not in ("", "/")
        self.service_url = self.base_url.rstrip("/") + ("" if has_path else SERVICE_PATH)

    def method_url(self, method: str) -> str:
        return f"{self.service_url}/{method}"

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """A name of 1-11 characters or a number of at most 15 digits (the usual rule of
        Russian operators; SMS4B checks the name against the account's list)."""
        if not sender:
            raise ValidationError(
                _("The sender name is empty: SMS4B needs one."), code="sender_empty"
            )
        is_number = sender.lstrip("+").isdigit()
        if len(sender.lstrip("+")) > (15 if is_number else SENDER_MAX_LENGTH):
            raise ValidationError(
                _("The sender name “%(sender)s” is too long: SMS4B takes at most 11 characters.")
                % {"sender": sender},
                code="sender_too_long",
            )

    def validate_text(self, text: str) -> None:
        super().validate_text(text)
        if len(text) > self.max_text_length:
            raise ValidationError(
                _("The text has %(count)d characters; SMS4B takes at most %(max)d.")
                % {"count": len(text), "max": self.max_text_length},
                code="text_too_long",
            )

    # --- sending -------------------------------------------------------------------------
    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """``SendTXT`` for one message (raises ValidationError for one SMS4B would refuse)."""
        [sms] = messages
        sender = sms.sender or self.default_sender
        self.validate_sender(sender)
        self.validate_text(sms.text)
        digits = international_digits(sms.to)
        fields = [*self.auth_fields(), ("Source", sender), ("Phone", digits), ("Text", sms.text)]
        return HTTPRequest(self.method_url("SendTXT"), data=fields)

    def auth_fields(self) -> list[tuple[str, str]]:
        return [("Login", self.login), ("Password", self.password)]

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """A 20-character id: accepted; a number: ``ERRORS``; anything else: None."""
        text = answer_text(answer)
        if text is None:
            return None
        raw = {"answer": text}
        if len(text) == ID_LENGTH:
            return [SendResult(S.ACCEPTED, provider_message_id=text, raw=raw)]
        code = _code(text)
        if code is None:
            return None
        status, message = classify_error(code)
        return [SendResult(status, error_code=str(code), error_message=message, raw=raw)]

    # --- status polling ------------------------------------------------------------------
    def query_status(self, messages) -> list[DeliveryReport]:
        """Ask ``StatusTXT`` about each of ``messages`` (objects with ``msg_id`` and
        ``provider_message_id``), one request each. One report per message SMS4B knows (SENT
        while on its way); none while it answers -21/-22. Raises ProviderError when SMS4B
        cannot be reached or answers an error, so polling stops and asks again later."""
        reports = []
        for message in messages:
            if not message.provider_message_id:
                continue
            number = self._status_number(message.provider_message_id)
            if number in PENDING:
                continue
            status, error_code, error_message = decode_status(number)
            reports.append(
                DeliveryReport(
                    status,
                    msg_id=message.msg_id,
                    provider_message_id=message.provider_message_id,
                    error_code=error_code,
                    error_message=error_message,
                    raw={"MessageId": message.provider_message_id, "status": number},
                )
            )
        return reports

    def _status_number(self, message_id: str) -> int:
        fields = [*self.auth_fields(), ("MessageId", message_id)]
        answer = self.post(HTTPRequest(self.method_url("StatusTXT"), data=fields))
        text = answer_text(answer)
        number = _code(text) if text is not None else None
        if number is None:
            raise self.unexpected_answer(answer)
        if number < 0 and number not in PENDING:
            status, message = classify_error(number)
            result = SendResult(status, error_code=str(number), error_message=message, raw=text)
            raise ProviderError(message, self.scrub(result))
        return number
