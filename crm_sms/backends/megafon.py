"""MegaFon A2P HTTPS (``a2p-api.megalabs.ru``): one recipient per request, delivery reports by
callback, no status query.

``SMS_URL=megafon://LOGIN:PASSWORD@a2p-api.megalabs.ru/?sender=MyCompany`` (``megafon+http://``
for the sandbox). Options: ``login``, ``password``, ``sender``, ``receipt_timezone`` (the zone
of YYMMDDhhmm dates in SMPP receipts, default UTC) and the HTTP ones of ``http.HTTPBackend``
(``base_url``, default https://a2p-api.megalabs.ru, ``pool_size``, ``connect_timeout``,
``read_timeout`` 60 s, ``proxy``, ``ca_bundle``).

The provider's facts (codes, field rules, texts) are the tables below; docs/providers.md
explains them. The transport (timeouts, TLS, 5xx, scrubbing credentials) is ``HTTPBackend``'s.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import requests
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import CallbackError
from ..phones import international_digits
from .base import (
    DeliveryReport,
    DeliveryStatus,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from .http import JSON_CONTENT_TYPE, Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option, to_timezone

DEFAULT_BASE_URL = "https://a2p-api.megalabs.ru"
SEND_PATH = "/sms/v1/sms"

# --- field rules ---------------------------------------------------------------------------
SENDER_MAX_LENGTH = 11
SENDER_SPECIALS = '!"#$%()*+,-./:;<=>?@[\\]^_`{|}~'
SENDER_ALLOWED = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 " + SENDER_SPECIALS
)
TEXT_MAX_LENGTH = 1000
MSG_ID_RE = re.compile(r"[A-Za-z0-9_:\-]{1,16}")

S = SendStatus
# result.status.code -> (how to handle it, what it means to a person).
# 1-255 are SMPP 3.4 command_status values; other SMPP codes are permanent (see classify_code).
CODES: dict[int, tuple[SendStatus, Any]] = {
    0: (S.ACCEPTED, gettext_lazy("MegaFon accepted the message.")),
    20101: (
        S.REJECTED,
        gettext_lazy("MegaFon refused the message: a required field is missing or malformed."),
    ),
    20102: (
        S.ACCEPTED,
        gettext_lazy(
            "MegaFon had already accepted a message with this msg_id: an earlier attempt "
            "went through."
        ),
    ),
    1: (S.REJECTED, gettext_lazy("MegaFon refused the message: invalid message length.")),
    8: (S.RETRY, gettext_lazy("MegaFon system error; the message will be retried.")),
    10: (S.REJECTED, gettext_lazy("MegaFon refused the sender name (invalid source address).")),
    11: (
        S.REJECTED,
        gettext_lazy("MegaFon refused the recipient number (invalid destination address)."),
    ),
    20: (S.RETRY, gettext_lazy("MegaFon's message queue is full; the message will be retried.")),
    69: (S.RETRY, gettext_lazy("MegaFon could not submit the message; it will be retried.")),
    88: (
        S.RETRY,
        gettext_lazy(
            "MegaFon throttled the message: the company's messages-per-second limit was "
            "exceeded. It will be retried; lower the rate limit to the contracted throughput."
        ),
    ),
    257: (
        S.RETRY,
        gettext_lazy(
            "MegaFon's transmitter for the recipient's region is not connected; the message "
            "will be retried."
        ),
    ),
    1281: (
        S.PROVIDER_ERROR,
        gettext_lazy(
            "MegaFon refused the request by its routing rules: it did not come from the IP "
            "address registered in the contract, or SMS sending is not enabled for the account."
        ),
    ),
    1282: (S.REJECTED, gettext_lazy("The recipient is on MegaFon's blacklist.")),
    1284: (S.REJECTED, gettext_lazy("MegaFon refused the text: it contains forbidden words.")),
    1288: (
        S.REJECTED,
        gettext_lazy("Sending to the recipient's region is not available for the company."),
    ),
}

# Codes that refuse a message for a route reason (``BaseBackend.route_refusal_codes``): with
# CRM_SMS["FAILOVER"] the message moves to the next provider instead of failing. 1281: the
# request broke MegaFon's routing rules (not from the contract's IP, or SMS not enabled for the
# account; provider-wide, so the gate pauses the rest too); 1288: the company may not send to
# the recipient's region. (257, a region's transmitter not connected, passes: it is retried.)
ROUTE_REFUSAL_CODES = frozenset({"1281", "1288"})

# Human names of the fields MegaFon names in a 20101 payload.
FIELD_NAMES = {
    "from": gettext_lazy("sender name (from)"),
    "to": gettext_lazy("recipient number (to)"),
    "message": gettext_lazy("text (message)"),
    "msg_id": gettext_lazy("message id (msg_id)"),
    "callback_url": gettext_lazy("callback URL (callback_url)"),
    "body": gettext_lazy("request body"),
}

# The SMPP receipt's ``stat:`` values.
RECEIPT_STATES = {
    "DELIVRD": gettext_lazy("delivered"),
    "EXPIRED": gettext_lazy("the validity period expired (the phone was off or out of reach)"),
    "UNDELIV": gettext_lazy("undeliverable"),
    "REJECTD": gettext_lazy("rejected by the network"),
    "DELETED": gettext_lazy("deleted"),
    "UNKNOWN": gettext_lazy("unknown state"),
    "ACCEPTD": gettext_lazy("accepted by the network"),
    "ENROUTE": gettext_lazy("en route"),
}

CALLBACK_STATUSES = {
    "delivered": DeliveryStatus.DELIVERED,
    "delivery_failed": DeliveryStatus.UNDELIVERED,
}

# The texts of HTTPBackend's failure kinds, in MegaFon's words.
_NOT_JSON = gettext_lazy(
    "MegaFon gave an answer that is not the API's JSON (HTTP %(status)d); the message will be "
    "retried."
)
_UNREACHABLE = gettext_lazy(
    "Could not reach MegaFon (%(host)s): %(reason)s. The message will be retried."
)
FAILURE_MESSAGES: dict[str, Any] = {
    "timeout": gettext_lazy(
        "MegaFon (%(host)s) did not answer within %(seconds)s s; the message will be "
        "retried with the same msg_id."
    ),
    "proxy_error": gettext_lazy(
        "Could not reach MegaFon (%(host)s) through the proxy; the message will be retried."
    ),
    "connection_error": _UNREACHABLE,
    "request_error": _UNREACHABLE,
    "tls_error": gettext_lazy(
        "MegaFon's TLS certificate could not be verified (%(host)s). If a corporate proxy "
        "re-signs HTTPS, add ?ca_bundle=/path/to/ca.pem to %(env)s."
    ),
    "server_error": gettext_lazy(
        "MegaFon had a server error (HTTP %(status)d); the message will be retried."
    ),
    "credentials": gettext_lazy(
        "MegaFon refused the login and password (HTTP %(status)d): check them in %(env)s."
    ),
    "wrong_address": gettext_lazy(
        "MegaFon's address answered HTTP %(status)d: check base_url in %(env)s."
    ),
    "throttled": _NOT_JSON,
    "bad_response": _NOT_JSON,
    "http_error": gettext_lazy("MegaFon refused the request (HTTP %(status)d)."),
}

_RECEIPT_FIELD = re.compile(r"(id|sub|dlvrd|submit date|done date|stat|err|text):(\S*)", re.I)


def classify_code(code: int) -> tuple[SendStatus, str]:
    """How to handle a ``result.status.code`` and a message a person understands."""
    if code in CODES:
        status, message = CODES[code]
        return status, str(message)
    if 1 <= code <= 255:
        return S.REJECTED, _("MegaFon refused the message (SMPP error %(code)d).") % {"code": code}
    return S.REJECTED, _("MegaFon error code %(code)d.") % {"code": code}


def parse_receipt(text: str) -> dict[str, str]:
    """The fields of an SMPP delivery receipt (``id:... stat:DELIVRD err:000``), lower-case keys."""
    return {key.lower(): value for key, value in _RECEIPT_FIELD.findall(text or "")}


def parse_receipt_date(value: str, tz: Any = UTC, now: datetime | None = None) -> datetime | None:
    """A receipt date as an aware UTC datetime, or None when it is not a date.

    MegaFon's example carries unix seconds (``1701241159``); classic SMPP has ``YYMMDDhhmm`` (or
    ``YYMMDDhhmmss``) in the SMSC's zone ``tz``. Ten digits fit both, so the reading closer to
    ``now`` wins: a receipt arrives within a day of the send.
    """
    if not value or not value.isdigit():
        return None
    now = now or timezone.now()
    candidates = []
    if len(value) in (9, 10):
        try:
            candidates.append(datetime.fromtimestamp(int(value), UTC))
        except (OverflowError, OSError, ValueError):
            pass
    if len(value) in (10, 12):
        local = _smpp_time(value, tz)
        if local is not None:
            candidates.append(local.astimezone(UTC))
    if not candidates:
        return None
    return min(candidates, key=lambda dt: abs(dt - now))


def _smpp_time(value: str, tz: Any) -> datetime | None:
    """``YYMMDDhhmm[ss]`` read as ``strptime("%y%m%d%H%M[%S]")`` does (69-99 are 19xx), a
    third of the cost: every delivery report has one."""
    yy, month, day, hour, minute = (int(value[i : i + 2]) for i in range(0, 10, 2))
    second = int(value[10:12]) if len(value) == 12 else 0
    try:
        return datetime(
            1900 + yy if yy >= 69 else 2000 + yy, month, day, hour, minute, second, 0, tz
        )
    except ValueError:
        return None


class MegafonBackend(HTTPBackend):
    """Sends through MegaFon's A2P HTTPS API and parses its delivery reports."""

    display_name = "MegaFon"
    # MegaFon answers 20102 to a msg_id it already has: a retry never sends twice.
    retry_safety = RetrySafety.DEDUPLICATED
    route_refusal_codes = ROUTE_REFUSAL_CODES
    supports_callbacks = True
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("login", str, "", "the login of the MegaFon contract (the URL's user)"),
        Option("password", str, "", "its password (the URL's password)", secret=True),
        Option("receipt_timezone", to_timezone, UTC, "the zone of YYMMDDhhmm receipt dates"),
    )
    url_user_option = "login"
    url_password_option = "password"
    basic_auth = True
    account_checks = AccountChecks(
        credentials=("login", "password"),
        credentials_hint="Set {env}=megafon://LOGIN:PASSWORD@a2p-api.megalabs.ru/?sender=MyCompany "
        "(URL-encode special characters of the password: %40 for @, %3A for :).",
        sender_hint="Add ?sender=YourName (the name in your MegaFon contract, at most 11 Latin "
        "characters) to {env}.",
        plain_http_risk="the password travels unencrypted",
        scheme="megafon",
    )
    failure_messages = FAILURE_MESSAGES

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.login: str = self.options["login"]
        self.password: str = self.options["password"]
        self.receipt_timezone = self.options["receipt_timezone"]
        self.send_url = self.base_url + SEND_PATH

    def configure_session(self, session: requests.Session) -> None:
        session.headers.update({"Content-Type": JSON_CONTENT_TYPE, "Accept": "application/json"})

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """Raise ValidationError unless MegaFon's rules accept ``sender`` as the sender name."""
        if not sender:
            raise ValidationError(
                _("The sender name is empty: MegaFon needs 1 to 11 characters."),
                code="sender_empty",
            )
        if len(sender) > SENDER_MAX_LENGTH:
            raise ValidationError(
                _(
                    "The sender name “%(sender)s” has %(count)d characters; MegaFon allows at "
                    "most 11, spaces included."
                )
                % {"sender": sender, "count": len(sender)},
                code="sender_too_long",
            )
        bad = sorted({ch for ch in sender if ch not in SENDER_ALLOWED})
        if bad:
            raise ValidationError(
                _(
                    "The sender name “%(sender)s” contains characters MegaFon does not allow: "
                    "%(chars)s. Use Latin letters, digits, spaces and %(specials)s"
                )
                % {
                    "sender": sender,
                    "chars": " ".join(f"“{ch}”" for ch in bad),
                    "specials": SENDER_SPECIALS,
                },
                code="sender_characters",
            )
        if sender != sender.strip(" "):
            raise ValidationError(
                _("The sender name “%(sender)s” must not start or end with a space.")
                % {"sender": sender},
                code="sender_spaces",
            )

    def validate_text(self, text: str) -> None:
        """Raise ValidationError unless the text has 1 to 1000 characters (MegaFon splits it)."""
        super().validate_text(text)
        if len(text) > TEXT_MAX_LENGTH:
            raise ValidationError(
                _("The text has %(count)d characters; MegaFon takes at most %(max)d.")
                % {"count": len(text), "max": TEXT_MAX_LENGTH},
                code="text_too_long",
            )

    # --- sending -------------------------------------------------------------------------
    def build_payload(self, sms: OutgoingSMS) -> dict[str, Any]:
        """The JSON object of one send request (``to`` as a number; raises ValidationError)."""
        sender = sms.sender or self.default_sender
        self.validate_sender(sender)
        self.validate_text(sms.text)
        digits = international_digits(sms.to)
        if not MSG_ID_RE.fullmatch(sms.msg_id or ""):
            raise ValidationError(
                _("The message id %(msg_id)r does not fit MegaFon's rule [A-Za-z0-9_:-]{1,16}.")
                % {"msg_id": sms.msg_id},
                code="invalid_msg_id",
            )
        payload: dict[str, Any] = {
            "from": sender,
            "to": int(digits),
            "message": sms.text,
            "msg_id": sms.msg_id,
        }
        callback_url = sms.callback_url or self.callback_url()
        if callback_url:
            payload["callback_url"] = callback_url
        return payload

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """One message per request, as JSON (raises ValidationError: see build_payload)."""
        [sms] = messages
        return HTTPRequest(self.send_url, json=self.build_payload(sms))

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """By ``result.status.code`` (the HTTP status is HTTPBackend's); None without one."""
        [sms] = messages
        data = answer.data
        code = _result_code(data)
        if code is None:
            return None
        if code == 0:  # the usual answer: nothing to say, so no translation to look up
            status, message = S.ACCEPTED, ""
        else:
            status, message = classify_code(code)
        result = SendResult(status, error_code=str(code), error_message=message, raw=answer.raw)
        if status is S.ACCEPTED:
            result.error_code = "" if code == 0 else str(code)
            result.error_message = "" if code == 0 else message
            result.provider_message_id = str(data["result"].get("msg_id") or sms.msg_id)
        elif code == 20101:
            fields = self._bad_fields(data)
            if fields:
                result.error_message = _(
                    "MegaFon refused the message: %(fields)s is missing or malformed."
                ) % {"fields": ", ".join(fields)}
        return [result]

    @staticmethod
    def _bad_fields(data: dict) -> list[str]:
        payload = data["result"]["status"].get("payload") or []
        names = []
        for item in payload if isinstance(payload, list) else [payload]:
            name = item.get("description") if isinstance(item, dict) else item
            if isinstance(name, str) and name:
                names.append(str(FIELD_NAMES.get(name, name)))
        return names

    # --- delivery reports ----------------------------------------------------------------
    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """MegaFon's JSON report (one object or a list) as DeliveryReports.

        ``delivered`` -> DELIVERED; ``delivery_failed`` and unknown values -> UNDELIVERED with
        the text kept. Raises CallbackError for a body that is not JSON or lacks ``msg_id``.
        """
        try:
            data = json.loads(request.body.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CallbackError(f"the body is not UTF-8 JSON: {exc}") from exc
        items = data if isinstance(data, list) else [data]
        if not items:
            raise CallbackError("an empty list of reports")
        return [self.parse_report(item) for item in items]

    def parse_report(self, item: Any) -> DeliveryReport:
        """One report object as a DeliveryReport (raises CallbackError when it has no msg_id)."""
        if not isinstance(item, dict):
            raise CallbackError(f"a report is not a JSON object: {str(item)[:100]!r}")
        msg_id = item.get("msg_id")
        if not isinstance(msg_id, str | int) or isinstance(msg_id, bool) or msg_id == "":
            raise CallbackError("a report without msg_id")
        provider_status = str(item.get("status") or "")
        receipt_text = str(item.get("short_message") or "")
        receipt = parse_receipt(receipt_text)
        status = CALLBACK_STATUSES.get(provider_status, DeliveryStatus.UNDELIVERED)
        stat = receipt.get("stat", "").upper()
        err = receipt.get("err", "")
        error_code = error_message = ""
        if status != DeliveryStatus.DELIVERED:
            error_code = stat or provider_status or "unknown"
            if provider_status not in CALLBACK_STATUSES:
                error_message = _(
                    "MegaFon reported an unknown status “%(status)s”: %(receipt)s"
                ) % {"status": provider_status, "receipt": receipt_text or "-"}
            else:
                error_message = _("Not delivered: %(state)s (network error %(err)s).") % {
                    "state": str(RECEIPT_STATES.get(stat, stat or provider_status)),
                    "err": err or "-",
                }
        delivered_at = None
        if status == DeliveryStatus.DELIVERED:
            delivered_at = parse_receipt_date(receipt.get("done date", ""), self.receipt_timezone)
        return DeliveryReport(
            status=status,
            msg_id=str(msg_id),
            provider_message_id=str(item.get("receipted_message_id") or ""),
            error_code=error_code,
            error_message=error_message,
            delivered_at=delivered_at,
            raw=item,
        )


def _result_code(data: Any) -> int | None:
    """``result.status.code`` of an answer, or None when it has none."""
    result = data.get("result") if isinstance(data, dict) else None
    status = result.get("status") if isinstance(result, dict) else None
    if not isinstance(status, dict):
        return None
    try:
        return int(status.get("code"))
    except (TypeError, ValueError):
        return None
