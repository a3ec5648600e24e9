"""SMS.RU (https://sms.ru): many recipients per request, status polling, signed callbacks.

Configured by one URL: ``SMS_URL=smsru://API_ID@sms.ru/?sender=MyCompany`` (``smsru+http://`` for a
local fake). Options: ``api_id`` (required), ``sender`` (``from``; the account's default when
empty), ``test`` (``1``: SMS.RU checks the request but sends nothing), ``timeout`` (the older
name of ``read_timeout``, here 15 s) and the HTTP ones of ``http.HTTPBackend`` (``base_url``,
default ``https://sms.ru``, ``pool_size``, ``connect_timeout``, ``proxy``, ``ca_bundle``).

Unlike MegaFon, SMS.RU

- takes up to 100 recipients in one ``POST /sms/send`` (``to`` comma-separated with one ``msg``, or
  ``multi[<phone>]=<text>`` when texts differ) and answers per number;
- can be polled: ``/sms/status`` with up to 100 ``sms_id``s (``query_status``);
- tells the account's balance in rubles: ``/my/balance`` (``balance()``);
- posts reports to one callback URL set in its control panel (not per message): paste
  ``backend.callback_url()`` there. The reports are signed:
  ``hash = sha256(api_id + "".join(data[]))``; a mismatch is refused (403), and the answer must be
  the body ``100`` or SMS.RU repeats the report.
- has no client message id, so it cannot drop a repeated request: a read timeout after SMS.RU got
  the request is retried (``RETRY``, as for any network problem) and may send that SMS twice.
  Connection errors (nothing reached SMS.RU) are safe to retry.

The code tables below come from SMS.RU's public API page and client libraries.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from ..exceptions import CallbackError, CallbackForbidden, ConfigurationError, ProviderError
from .base import Balance, DeliveryReport, DeliveryStatus, OutgoingSMS, SendResult, SendStatus
from .http import Answer, HTTPBackend, HTTPRequest, requests_by_key
from .options import AccountChecks, Option

DEFAULT_BASE_URL = "https://sms.ru"
MAX_RECIPIENTS = 100

#: Error codes of /sms/send (request-wide or per number) -> how the outbox handles them.
SEND_ERRORS: dict[int, tuple[SendStatus, Any]] = {
    200: (SendStatus.PROVIDER_ERROR, _("Wrong api_id")),
    201: (SendStatus.PROVIDER_ERROR, _("Not enough money on the account")),
    202: (SendStatus.REJECTED, _("Wrong recipient number, or no route to it")),
    203: (SendStatus.REJECTED, _("No message text")),
    204: (SendStatus.PROVIDER_ERROR, _("The sender name is not approved by SMS.RU")),
    205: (SendStatus.REJECTED, _("The message is too long (over 8 SMS parts)")),
    206: (SendStatus.PROVIDER_ERROR, _("The daily sending limit is reached")),
    207: (SendStatus.REJECTED, _("No delivery route to this number")),
    208: (SendStatus.REJECTED, _("Wrong 'time' parameter")),
    209: (SendStatus.REJECTED, _("The number is in the account's stop list")),
    210: (SendStatus.PROVIDER_ERROR, _("GET used where POST is required")),
    211: (SendStatus.PROVIDER_ERROR, _("Method not found")),
    212: (SendStatus.PROVIDER_ERROR, _("The text must be sent in UTF-8")),
    213: (SendStatus.REJECTED, _("More than 100 recipients in one request")),
    220: (SendStatus.RETRY, _("The service is temporarily unavailable")),
    230: (SendStatus.REJECTED, _("The daily limit of messages to this number is reached")),
    231: (SendStatus.RETRY, _("Too many identical messages to this number within a minute")),
    232: (
        SendStatus.REJECTED,
        _("The daily limit of identical messages to this number is reached"),
    ),
    233: (SendStatus.REJECTED, _("Too many repeated code messages to this number")),
    300: (SendStatus.PROVIDER_ERROR, _("Wrong token (it expired or the IP changed)")),
    301: (SendStatus.PROVIDER_ERROR, _("Wrong api_id, or login/password")),
    302: (SendStatus.PROVIDER_ERROR, _("Authorized, but the account is not confirmed")),
    500: (SendStatus.RETRY, _("Server error at SMS.RU")),
}
#: An error code missing from the table: permanent for this message, never retried forever.
UNKNOWN_ERROR = SendStatus.REJECTED

#: Delivery status codes (/sms/status and callbacks) -> DeliveryStatus, with their meaning.
STATUS_CODES: dict[int, tuple[DeliveryStatus, Any]] = {
    100: (DeliveryStatus.SENT, _("In SMS.RU's queue")),
    101: (DeliveryStatus.SENT, _("Being passed to the operator")),
    102: (DeliveryStatus.SENT, _("Sent (on its way)")),
    103: (DeliveryStatus.DELIVERED, _("Delivered")),
    104: (DeliveryStatus.UNDELIVERED, _("Not delivered: its lifetime expired")),
    105: (DeliveryStatus.UNDELIVERED, _("Not delivered: deleted by the operator")),
    106: (DeliveryStatus.UNDELIVERED, _("Not delivered: phone failure")),
    107: (DeliveryStatus.UNDELIVERED, _("Not delivered: unknown reason")),
    108: (DeliveryStatus.UNDELIVERED, _("Not delivered: rejected")),
    110: (DeliveryStatus.DELIVERED, _("Delivered and read")),
    150: (DeliveryStatus.UNDELIVERED, _("Not delivered: no route to this number")),
}
NOT_FOUND = -1  # /sms/status: no such sms_id (yet): no report

# HTTPBackend's failure kinds as SMS.RU's backend has always reported them: one "network"
# code for every passing problem, and any HTTP status but 200 refuses the request.
_NETWORK = (SendStatus.RETRY, "network")
_REFUSED = (SendStatus.PROVIDER_ERROR, "http_{status}")
FAILURE_STATUSES = {
    **dict.fromkeys(
        ("timeout", "proxy_error", "connection_error", "request_error", "tls_error"), _NETWORK
    ),
    **dict.fromkeys(("server_error", "bad_response"), _NETWORK),
    **dict.fromkeys(("credentials", "wrong_address", "throttled", "http_error"), _REFUSED),
}
_NETWORK_TEXT = _("SMS.RU did not answer properly (%(error)s)")
_REFUSED_TEXT = _("SMS.RU refused the request: HTTP %(status)s")
FAILURE_MESSAGES = {
    kind: _NETWORK_TEXT if code == _NETWORK else _REFUSED_TEXT
    for kind, code in FAILURE_STATUSES.items()
}


def _digits(phone: str) -> str:
    return phone.lstrip("+")


def _code(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def classify_send_error(code: int | None, text: str = "") -> tuple[SendStatus, str]:
    """The SendStatus and a readable message for an SMS.RU error code."""
    if code in SEND_ERRORS:
        status, meaning = SEND_ERRORS[code]
        return status, text or str(meaning)
    return UNKNOWN_ERROR, text or gettext("SMS.RU error %(code)s") % {"code": code}


def status_report(code: int, text: str = "") -> tuple[DeliveryStatus, str, str] | None:
    """(DeliveryStatus, error_code, error_message) for a delivery status code; None for -1."""
    if code == NOT_FOUND:
        return None
    status, meaning = STATUS_CODES.get(code, (DeliveryStatus.UNDELIVERED, ""))
    if status == DeliveryStatus.UNDELIVERED:
        return (
            status,
            str(code),
            text or str(meaning) or gettext("SMS.RU status %(code)s") % {"code": code},
        )
    return status, "", ""


class SmsRuBackend(HTTPBackend):
    """Sends through SMS.RU (up to 100 numbers a request), polls and verifies its reports."""

    display_name = "SMS.RU"
    max_batch_size = MAX_RECIPIENTS
    supports_callbacks = True
    supports_balance = True
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("api_id", str, "", "the account's API key (the URL's user)", secret=True),
        Option("test", bool, False, "1: SMS.RU checks each request but sends nothing"),
        Option("read_timeout", float, 15.0, "seconds to wait for the answer", minimum=0.001),
        Option("timeout", float, None, "the older name of read_timeout", minimum=0.001),
    )
    url_user_option = "api_id"
    account_checks = AccountChecks(
        credentials=("api_id",),
        credentials_message="Provider {alias!r} (SMS.RU) has no api_id.",
        credentials_hint="Set {env}=smsru://API_ID@sms.ru/?sender=MyCompany",
    )
    reads_error_answers = False
    failure_statuses = FAILURE_STATUSES
    failure_messages = FAILURE_MESSAGES

    def __init__(
        self, alias: str = "default", options: dict[str, Any] | None = None, rate_limit=None
    ):
        options = dict(options or {})
        if options.get("timeout") and not options.get("read_timeout"):
            options["read_timeout"] = options["timeout"]  # the option's older name
        super().__init__(alias, options, rate_limit=rate_limit)
        self.api_id: str = self.options["api_id"]
        self.test: bool = self.options["test"]

    def _require_api_id(self) -> None:
        if not self.api_id:
            raise ConfigurationError(
                f"Provider {self.alias!r} (SMS.RU) has no api_id: set {self.env_variable}="
                "smsru://API_ID@sms.ru/?sender=..."
            )

    # --- sending -------------------------------------------------------------------------
    def split_batch(self, batch: list[OutgoingSMS]) -> list[list[int]]:
        """Requests of one sender each, at most 100 numbers, no number twice (SMS.RU answers
        per number, so a repeated number could not be told apart)."""
        return requests_by_key(
            batch,
            key=lambda sms: sms.sender or self.default_sender,
            number=lambda sms: _digits(sms.to),
            size=MAX_RECIPIENTS,
        )

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """A form POST to /sms/send: one ``to`` list and ``msg`` when the texts are the same,
        else ``multi[<phone>]=<text>``."""
        self._require_api_id()
        data: list[tuple[str, str]] = [("api_id", self.api_id), ("json", "1")]
        sender = messages[0].sender or self.default_sender
        if sender:
            data.append(("from", sender))
        if self.test:
            data.append(("test", "1"))
        if len({sms.text for sms in messages}) == 1:
            data += [("to", ",".join(_digits(s.to) for s in messages)), ("msg", messages[0].text)]
        else:
            data += [(f"multi[{_digits(s.to)}]", s.text) for s in messages]
        return HTTPRequest(self.base_url + "/sms/send", data=data)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """A request-wide error for every message, else each number's own entry."""
        payload = answer.data
        if not isinstance(payload, dict):
            return None
        if payload.get("status") != "OK":
            code = _code(payload.get("status_code"))
            status, message = classify_send_error(code, str(payload.get("status_text") or ""))
            raw = {k: v for k, v in payload.items() if k != "sms"}
            return [
                SendResult(status, error_code=str(code), error_message=message, raw=raw)
                for _ in messages
            ]
        per_number = payload.get("sms") or {}
        return [self._number_result(per_number.get(_digits(sms.to))) for sms in messages]

    def _number_result(self, entry: Any) -> SendResult:
        if not isinstance(entry, dict):
            # SMS.RU accepted the request but said nothing about this number: we cannot know.
            return SendResult(
                SendStatus.RETRY,
                error_code="no_answer",
                error_message=gettext("SMS.RU's answer does not mention this number"),
            )
        code = _code(entry.get("status_code"))
        if entry.get("status") == "OK" and entry.get("sms_id"):
            return SendResult(
                SendStatus.ACCEPTED, provider_message_id=str(entry["sms_id"]), raw=entry
            )
        status, message = classify_send_error(code, str(entry.get("status_text") or ""))
        return SendResult(status, error_code=str(code), error_message=message, raw=entry)

    # --- polling -------------------------------------------------------------------------
    def query_status(self, messages) -> list[DeliveryReport]:
        """Ask /sms/status about ``messages`` (objects with ``msg_id`` and
        ``provider_message_id``), 100 per request. Returns one report per message SMS.RU knows;
        ``-1`` (not found) yields none. Raises ``ProviderError`` when SMS.RU cannot be reached or
        refuses the query, so polling can stop and try later."""
        self._require_api_id()
        by_id = {m.provider_message_id: m for m in messages if m.provider_message_id}
        ids = list(by_id)
        reports: list[DeliveryReport] = []
        for start in range(0, len(ids), MAX_RECIPIENTS):
            chunk = ids[start : start + MAX_RECIPIENTS]
            fields = {"api_id": self.api_id, "sms_id": ",".join(chunk), "json": "1"}
            answer = self.post(HTTPRequest(self.base_url + "/sms/status", data=fields))
            payload = answer.data
            if not isinstance(payload, dict):
                raise self.unexpected_answer(answer)
            if payload.get("status") != "OK":
                raise self._refused_query(payload)
            for sms_id, entry in (payload.get("sms") or {}).items():
                message = by_id.get(str(sms_id))
                if message is None or not isinstance(entry, dict):
                    continue
                code = _code(entry.get("status_code"))
                text = str(entry.get("status_text") or "")
                mapped = status_report(NOT_FOUND if code is None else code, text)
                if mapped is None:
                    continue
                status, error_code, error_message = mapped
                reports.append(
                    DeliveryReport(
                        status,
                        msg_id=message.msg_id,
                        provider_message_id=str(sms_id),
                        error_code=error_code,
                        error_message=error_message,
                        raw={"sms_id": str(sms_id), **entry},
                    )
                )
        return reports

    def balance(self) -> Balance:
        """The account's balance (``/my/balance``, in rubles); ProviderError when SMS.RU cannot
        be reached or refuses (a wrong api_id: 200)."""
        self._require_api_id()
        fields = {"api_id": self.api_id, "json": "1"}
        answer = self.post(HTTPRequest(self.base_url + "/my/balance", data=fields))
        payload = answer.data
        if not isinstance(payload, dict):
            raise self.unexpected_answer(answer)
        if payload.get("status") != "OK":
            raise self._refused_query(payload)
        try:
            return Balance(Decimal(str(payload["balance"])), "RUB")
        except (KeyError, InvalidOperation) as exc:
            raise self.unexpected_answer(answer) from exc

    def _refused_query(self, payload: dict[str, Any]) -> ProviderError:
        code = _code(payload.get("status_code"))
        status, message = classify_send_error(code, str(payload.get("status_text") or ""))
        result = SendResult(status, error_code=str(code), error_message=message, raw=payload)
        return ProviderError(f"SMS.RU error {code}: {message}", self.scrub(result))

    # --- callbacks -----------------------------------------------------------------------
    def signature(self, entries: list[str]) -> str:
        """The ``hash`` SMS.RU sends with ``entries``: sha256(api_id + all entries joined)."""
        return hashlib.sha256((self.api_id + "".join(entries)).encode("utf-8")).hexdigest()

    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """Verify and parse SMS.RU's form POST: ``data[]`` entries (``data[0]``, ``data[1]``…
        too) of lines ``sms_status``, ``<sms_id>``, ``<code>``, ``<unix time>``, and ``hash``."""
        entries = [
            value
            for key, values in request.POST.lists()
            if key == "data[]" or re.fullmatch(r"data\[\d+\]", key)
            for value in values
        ]
        if not entries:
            raise CallbackError("no data[] entries")
        given = request.POST.get("hash", "")
        if not self.api_id or not hmac.compare_digest(
            given.strip().lower().encode(), self.signature(entries).encode()
        ):
            raise CallbackForbidden("the hash does not match (wrong api_id, or a forged report)")
        reports = []
        for entry in entries:
            lines = entry.replace("\r\n", "\n").split("\n")
            if lines[0] != "sms_status":
                continue  # other kinds of notification (SMS.RU's URL check, replies): no status
            if len(lines) < 3 or _code(lines[2]) is None or not lines[1]:
                raise CallbackError(f"a malformed sms_status entry: {entry[:100]!r}")
            code = int(lines[2])
            mapped = status_report(code)
            if mapped is None:
                continue
            status, error_code, error_message = mapped
            when = _code(lines[3]) if len(lines) > 3 else None
            reports.append(
                DeliveryReport(
                    status,
                    provider_message_id=lines[1],
                    error_code=error_code,
                    error_message=error_message,
                    delivered_at=(
                        datetime.fromtimestamp(when, UTC)
                        if when and status == DeliveryStatus.DELIVERED
                        else None
                    ),
                    raw={"entry": entry},
                )
            )
        return reports

    def callback_response(self, reports: list[DeliveryReport]) -> HttpResponse:
        # Any other answer makes SMS.RU repeat the report.
        return HttpResponse("100", content_type="text/plain")

    # --- housekeeping --------------------------------------------------------------------

    def validate_sender(self, sender: str) -> None:
        """SMS.RU's sender names: up to 11 Latin letters, digits and ``-_. `` (or a number)."""
        if sender and not re.fullmatch(r"[A-Za-z0-9 ._\-!]{1,11}|\+?\d{1,15}", sender):
            raise ValidationError(
                _("SMS.RU sender names have 1-11 Latin letters, digits, spaces, '.', '-', '_'."),
                code="invalid_sender",
            )
