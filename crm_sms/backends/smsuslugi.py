"""SMS-Uslugi (СМС-Услуги, ``lcab.sms-uslugi.ru``): the XML API the 1C BSP uses; statuses by
polling ``report.php``.

``SMS_URL=smsuslugi://LOGIN:PASSWORD@lcab.sms-uslugi.ru/?sender=MyCompany`` (``smsuslugi+http://``
for the sandbox). Options: ``login``, ``password`` (the cabinet's), ``sender`` (``<source>``; the
account's default when empty) and the HTTP ones of ``http.HTTPBackend``.

The wire, from public client code of this platform (the same API serves lcab.smsint.ru,
lcab.smsprofi.ru and lcab.sms-sending.ru):

- ``POST /API/XML/send.php``, ``Content-Type: text/xml; charset=utf-8``, the credentials in the
  body::

    <?xml version='1.0' encoding='utf-8'?>
    <data><login>L</login><password>P</password><action>send</action><source>Shop</source>
    <text>Hello</text><to number="79001234212" /><smsid>our msg_id</smsid></data>

  answered ``<data><code>1</code><descr>…</descr><smsid>…</smsid><colSendAbonent>1</colSendAbonent>
  …</data>``: code 1 is success, any other code an error (``CODES``). ``smsid`` is "the id you
  gave, or ours if you gave none" (at most 21 characters); ours is the message's msg_id, one
  recipient per request, so each message can be asked about by its own id.
- ``POST /API/XML/report.php`` with ``<login/><password/><smsid/>`` answers code 1 and a
  ``<detail>`` that lists the numbers by state (``STATES``): ``enqueued``, ``onModer``,
  ``process``, ``waiting``, ``delivered``, ``notDelivered``, ``cancel``.
- ``POST /API/XML/balance.php`` with ``<login/><password/>`` answers code 1 and
  ``<account>`` (the money on the account, in rubles): ``balance()``.

Never twice: SMS-Uslugi is not known to refuse a repeated ``smsid``, but ``report.php`` can be
asked about ours, so ``retry_safety`` is ``LOOKUP``. Not confirmed: what ``report.php`` answers
for an smsid it does not know (read here as code 1 without our number: not sent; any other code
makes the lookup undecided, never a resend); error code 502 means "sender not allowed" in newer
client code and "smsid over 21 characters" in older (ours has 16, so the sender reading is
taken); throttling has no known code (an HTTP 429 is retried). Answers are parsed without DTDs
or entity declarations (``safexml.parse_xml``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import ProviderError
from ..phones import international_digits
from .base import (
    Balance,
    DeliveryReport,
    DeliveryStatus,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from .http import Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option
from .safexml import parse_xml

DEFAULT_BASE_URL = "https://lcab.sms-uslugi.ru"
SEND_PATH = "/API/XML/send.php"
REPORT_PATH = "/API/XML/report.php"
BALANCE_PATH = "/API/XML/balance.php"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"
SMSID_MAX_LENGTH = 21
SENDER_MAX_LENGTH = 11
OK = 1

S = SendStatus
#: ``<code>`` of send.php and report.php -> (how to handle it, its meaning). 7xx: XML errors.
CODES: dict[int, tuple[SendStatus, Any]] = {
    OK: (S.ACCEPTED, gettext_lazy("SMS-Uslugi accepted the message.")),
    500: (S.REJECTED, gettext_lazy("SMS-Uslugi: a required parameter is missing.")),
    501: (
        S.PROVIDER_ERROR,
        gettext_lazy("SMS-Uslugi refused the login and password (could not authorize)."),
    ),
    502: (
        S.PROVIDER_ERROR,
        gettext_lazy(
            "SMS-Uslugi refused the sender name: it is not in GSM format or not approved in the "
            "cabinet (older API versions: the smsid is over 21 characters)."
        ),
    ),
    503: (S.REJECTED, gettext_lazy("SMS-Uslugi: wrong datetime format (yyyy-mm-dd HH:MM:SS).")),
    504: (S.PROVIDER_ERROR, gettext_lazy("SMS-Uslugi refused the sender address.")),
    510: (S.REJECTED, gettext_lazy("SMS-Uslugi: the request has no recipients.")),
    511: (S.PROVIDER_ERROR, gettext_lazy("The SMS-Uslugi account is blocked.")),
    512: (S.PROVIDER_ERROR, gettext_lazy("SMS sending is not enabled for the SMS-Uslugi account.")),
    516: (S.PROVIDER_ERROR, gettext_lazy("Not enough money on the SMS-Uslugi account.")),
    517: (
        S.REJECTED,
        gettext_lazy(
            "SMS-Uslugi will not deliver to this number: it is not a mobile number, or the "
            "direction is disabled in the tariff."
        ),
    ),
    518: (S.REJECTED, gettext_lazy("SMS-Uslugi: invalid date or time.")),
    519: (
        S.PROVIDER_ERROR,
        gettext_lazy("SMS-Uslugi does not allow a digital sender on the expensive channel."),
    ),
    520: (S.REJECTED, gettext_lazy("SMS-Uslugi: the request has no recipients.")),
}
XML_ERROR = (S.REJECTED, gettext_lazy("SMS-Uslugi could not parse the request's XML."))

D = DeliveryStatus
#: The groups of report.php's ``<detail>`` -> (DeliveryStatus, their meaning).
STATES: dict[str, tuple[DeliveryStatus, Any]] = {
    "enqueued": (D.SENT, gettext_lazy("In the queue")),
    "onModer": (D.SENT, gettext_lazy("On moderation")),
    "process": (D.SENT, gettext_lazy("Being sent")),
    "waiting": (D.SENT, gettext_lazy("Sent, waiting for the delivery report")),
    "delivered": (D.DELIVERED, gettext_lazy("Delivered")),
    "notDelivered": (D.UNDELIVERED, gettext_lazy("Not delivered")),
    "cancel": (D.FAILED, gettext_lazy("Cancelled: not sent")),
}
# A number listed in two groups (a report mid-update) takes the most advanced one.
_STATE_ORDER = ("enqueued", "onModer", "process", "waiting", "cancel", "notDelivered", "delivered")


def classify_code(code: int) -> tuple[SendStatus, str]:
    """How to handle an SMS-Uslugi ``<code>`` and a message a person understands."""
    if code in CODES:
        status, meaning = CODES[code]
        return status, str(meaning)
    if 700 <= code <= 799:
        return XML_ERROR[0], str(XML_ERROR[1])
    return S.REJECTED, _("SMS-Uslugi error code %(code)d.") % {"code": code}


def state_report(group: str) -> tuple[DeliveryStatus, str, str]:
    """(DeliveryStatus, error_code, error_message) of a ``<detail>`` group."""
    status, meaning = STATES[group]
    if status in (D.SENT, D.DELIVERED):
        return status, "", ""
    return status, group, str(meaning)


def element_dict(element: ElementTree.Element) -> Any:
    """An element as JSON-like data (for ``raw``): its text, or its children by tag (a list
    where a tag repeats)."""
    if len(element) == 0:
        return (element.text or "").strip()
    data: dict[str, Any] = {}
    for child in element:
        value = element_dict(child)
        if child.tag in data:
            previous = data[child.tag]
            data[child.tag] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            data[child.tag] = value
    return data


def numbers_by_state(detail: ElementTree.Element | None) -> dict[str, str]:
    """number -> its ``<detail>`` group (the most advanced where one is listed twice)."""
    found: dict[str, str] = {}
    if detail is None:
        return found
    for group in _STATE_ORDER:
        for node in detail.findall(f"{group}/number"):
            number = "".join(ch for ch in (node.text or "") if ch.isdigit())
            if number:
                found[number] = group
    return found


def _same_number(a: str, b: str) -> bool:
    return a[-10:] == b[-10:] and len(a) >= 10


class SmsUslugiBackend(HTTPBackend):
    """Sends through SMS-Uslugi's XML API (one recipient per request, our msg_id as smsid) and
    polls report.php."""

    display_name = "SMS-Uslugi"
    # report.php can be asked about our smsid (the msg_id) before a resend.
    retry_safety = RetrySafety.LOOKUP
    supports_balance = True
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("login", str, "", "the SMS-Uslugi cabinet login (the URL's user)"),
        Option("password", str, "", "its password (the URL's password)", secret=True),
    )
    url_user_option = "login"
    url_password_option = "password"
    account_checks = AccountChecks(
        credentials=("login", "password"),
        credentials_hint="Set {env}=smsuslugi://LOGIN:PASSWORD@lcab.sms-uslugi.ru/"
        "?sender=MyCompany (URL-encode special characters of the password).",
        plain_http_risk="the password travels unencrypted in every request",
        scheme="smsuslugi",
    )

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.login: str = self.options["login"]
        self.password: str = self.options["password"]

    def secrets(self) -> list[str]:
        # The credentials travel in the XML body: their escaped forms are secrets too.
        plain = [self.password] + ([self.login] if len(self.login) >= 3 else [])
        escaped = [escape(v, {'"': "&quot;", "'": "&apos;"}) for v in plain if v]
        return [*super().secrets(), *plain, *(escape(v) for v in plain if v), *escaped]

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """Up to 11 Latin characters, or a number of up to 15 digits (empty: the account's)."""
        if not sender:
            return
        digits = sender.removeprefix("+")
        if digits.isdigit() and digits.isascii() and len(digits) <= 15:
            return
        if len(sender) > SENDER_MAX_LENGTH or not (sender.isascii() and sender.isprintable()):
            raise ValidationError(
                _(
                    "The sender name “%(sender)s” does not fit SMS-Uslugi's rule: 1 to 11 Latin "
                    "letters, digits, spaces or punctuation, or a number."
                )
                % {"sender": sender},
                code="invalid_sender",
            )

    def validate_text(self, text: str) -> None:
        """Non-empty, and no control characters but line breaks and tabs (XML 1.0 has none)."""
        super().validate_text(text)
        if any(ord(ch) < 32 and ch not in "\n\r\t" for ch in text):
            raise ValidationError(
                _("The text contains control characters SMS-Uslugi's XML cannot carry."),
                code="invalid_text",
            )

    # --- requests ------------------------------------------------------------------------
    def xml_request(self, path: str, fields: dict[str, str], to: str = "") -> HTTPRequest:
        """A POST of ``<data>`` with the credentials, ``fields`` and an optional ``<to>``."""
        root = ElementTree.Element("data")
        for name, value in {"login": self.login, "password": self.password, **fields}.items():
            ElementTree.SubElement(root, name).text = value
        if to:
            ElementTree.SubElement(root, "to", number=to)
        body = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        return HTTPRequest(
            self.base_url + path, data=body, headers={"Content-Type": XML_CONTENT_TYPE}
        )

    @staticmethod
    def read_xml(answer: Answer) -> ElementTree.Element | None:
        """The ``<data>`` element of an answer, or None when it is not the API's XML."""
        root = parse_xml(answer.response.content if answer.response is not None else b"")
        if root is None or root.tag != "data" or root.find("code") is None:
            return None
        return root

    # --- sending -------------------------------------------------------------------------
    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """One recipient per request, its msg_id as ``smsid`` (raises ValidationError)."""
        [sms] = messages
        sender = sms.sender or self.default_sender
        self.validate_sender(sender)
        self.validate_text(sms.text)
        digits = international_digits(sms.to)
        if not (sms.msg_id and len(sms.msg_id) <= SMSID_MAX_LENGTH and sms.msg_id.isalnum()):
            raise ValidationError(
                _(
                    "The message id %(msg_id)r does not fit SMS-Uslugi's smsid (1-21 letters "
                    "or digits)."
                )
                % {"msg_id": sms.msg_id},
                code="invalid_msg_id",
            )
        fields = {"action": "send", "text": sms.text, "smsid": sms.msg_id}
        if sender:
            fields["source"] = sender
        return self.xml_request(SEND_PATH, fields, to=digits)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """By ``<code>``; code 1 with no recipient left to send to is refused."""
        [sms] = messages
        root = self.read_xml(answer)
        if root is None:
            return None
        raw = element_dict(root)
        code = _int(raw.get("code"))
        if code is None:
            return None
        status, message = classify_code(code)
        if status is not S.ACCEPTED:
            descr = raw.get("descr") or ""
            text = f"{message} ({descr})" if descr and descr not in message else message
            return [SendResult(status, error_code=str(code), error_message=text, raw=raw)]
        if str(raw.get("colSendAbonent", "")).strip() == "0":
            return [
                SendResult(
                    S.REJECTED,
                    error_code="not_sendable",
                    error_message=_(
                        "SMS-Uslugi took the request but will not send to this number."
                    ),
                    raw=raw,
                )
            ]
        smsid = raw.get("smsid") or sms.msg_id
        return [SendResult(S.ACCEPTED, provider_message_id=str(smsid), raw=raw)]

    # --- reports -------------------------------------------------------------------------
    def ask(self, path: str, fields: dict[str, str], what: str) -> ElementTree.Element:
        """The ``<data>`` answer (code 1) to a request of ``fields`` to ``path``; ProviderError
        for anything else (``what`` names the request in its message)."""
        answer = self.post(self.xml_request(path, fields))
        root = self.read_xml(answer)
        if root is None:
            raise self.unexpected_answer(answer)
        code = _int(root.findtext("code"))
        if code != OK:
            status, message = classify_code(code if code is not None else 0)
            result = SendResult(
                status if status is not S.ACCEPTED else S.RETRY,
                error_code=str(code),
                error_message=message,
                raw=self.redact(element_dict(root)),
            )
            raise ProviderError(f"{self.display_name} {what}: {message}", result)
        return root

    def report(self, smsid: str) -> ElementTree.Element:
        """report.php's ``<data>`` for ``smsid`` (code 1); ProviderError for anything else."""
        return self.ask(REPORT_PATH, {"smsid": smsid}, f"report for {smsid}")

    def balance(self) -> Balance:
        """The account's money (balance.php's ``<account>``, in rubles); ProviderError when
        SMS-Uslugi cannot say."""
        root = self.ask(BALANCE_PATH, {}, "balance")
        try:
            return Balance(Decimal((root.findtext("account") or "").strip()), "RUB")
        except InvalidOperation as exc:
            result = SendResult(
                S.RETRY, error_code="bad_response", raw=self.redact(element_dict(root))
            )
            message = f"{self.display_name}'s balance answer has no amount"
            raise ProviderError(message, result) from exc

    def query_status(self, messages) -> list[DeliveryReport]:
        """One report.php request per message (by its smsid); a message whose mailing lists no
        number yet gives no report. ProviderError when SMS-Uslugi cannot be asked."""
        reports = []
        for message in messages:
            smsid = message.provider_message_id
            if not smsid:
                continue
            root = self.report(smsid)
            states = numbers_by_state(root.find("detail"))
            if not states:
                continue
            # One recipient per smsid: the most advanced state listed is this message's.
            group = max(states.values(), key=_STATE_ORDER.index)
            status, error_code, error_message = state_report(group)
            reports.append(
                DeliveryReport(
                    status,
                    msg_id=message.msg_id,
                    provider_message_id=smsid,
                    error_code=error_code,
                    error_message=error_message,
                    raw=self.redact(element_dict(root)),
                )
            )
        return reports

    def lookup_sent(self, sms: OutgoingSMS) -> SendResult | None:
        """Ask report.php about our smsid: ACCEPTED when it lists our number, None when it
        answers code 1 without it; ProviderError (undecided) for any other answer."""
        root = self.report(sms.msg_id)
        digits = sms.to.removeprefix("+")
        if any(_same_number(number, digits) for number in numbers_by_state(root.find("detail"))):
            return SendResult(
                S.ACCEPTED, provider_message_id=sms.msg_id, raw=self.redact(element_dict(root))
            )
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None
