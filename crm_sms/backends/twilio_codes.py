"""Twilio's codes as data: its error codes and message statuses, with texts for people (English
msgids, Russian in crm_sms/locale), and the two functions that read them. The backend is
``crm_sms.backends.twilio``.

Sources: Twilio's error dictionary (https://www.twilio.com/docs/api/errors/<code>) and the
Message resource's status list. Codes missing from ``ERRORS`` are classified by the answer's
HTTP status and keep Twilio's own text. The send status of a delivery-only code (30xxx) matters
only if Twilio ever answers a send with it.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .base import DeliveryStatus, SendStatus

S = SendStatus
#: Twilio error codes (of the send answer, or ``ErrorCode`` of a report) -> (what the outbox
#: does when the send answer carries it, a text for people). Twilio's error dictionary.
ERRORS: dict[int, tuple[SendStatus, Any]] = {
    20003: (S.PROVIDER_ERROR, _("Twilio refused the Account SID and auth token.")),
    20005: (S.PROVIDER_ERROR, _("The Twilio account is not active.")),
    20404: (
        S.PROVIDER_ERROR,
        _("Twilio does not know this resource: check the Account SID and base_url."),
    ),
    20429: (S.RETRY, _("Twilio refused too many simultaneous requests; it will be retried.")),
    20500: (S.RETRY, _("Twilio had an internal error; the message will be retried.")),
    20503: (S.RETRY, _("Twilio is temporarily unavailable; the message will be retried.")),
    21211: (S.REJECTED, _("The recipient number is not a valid phone number.")),
    21212: (
        S.PROVIDER_ERROR,
        _("The sender (From) is not a valid phone number, short code or alphanumeric sender ID."),
    ),
    21265: (S.REJECTED, _("The recipient number is a short code; Twilio cannot send to it.")),
    21401: (S.REJECTED, _("The phone number is not a valid SMS-capable number.")),
    21408: (
        S.REJECTED,
        _("Sending SMS to the recipient's country is not enabled in the Twilio account."),
    ),
    21601: (S.PROVIDER_ERROR, _("The sender (From) is not an SMS-capable number of the account.")),
    21602: (S.REJECTED, _("The message text (Body) is missing.")),
    21603: (S.PROVIDER_ERROR, _("Neither a sender (From) nor a Messaging Service was given.")),
    21604: (S.REJECTED, _("The recipient number (To) is missing.")),
    21606: (
        S.PROVIDER_ERROR,
        _("The sender (From) is not a Twilio number that can send to this destination."),
    ),
    21608: (
        S.REJECTED,
        _("A Twilio trial account sends only to verified numbers; this one is not verified."),
    ),
    21610: (S.REJECTED, _("The recipient unsubscribed from this sender (replied STOP).")),
    21611: (
        S.RETRY,
        _("The sender's queue at Twilio is full (10 hours of messages); it will be retried."),
    ),
    21612: (S.REJECTED, _("Twilio cannot route a message from this sender to this number.")),
    21614: (S.REJECTED, _("The recipient number is not a mobile number.")),
    21617: (S.REJECTED, _("The text is longer than 1600 characters.")),
    21635: (S.REJECTED, _("The recipient number is a landline.")),
    21705: (S.PROVIDER_ERROR, _("The Messaging Service SID is not valid.")),
    30001: (S.RETRY, _("Twilio's queue for the sender overflowed; the message was not sent.")),
    30002: (S.PROVIDER_ERROR, _("The Twilio account was suspended before the message was sent.")),
    30003: (S.REJECTED, _("The recipient's phone is unreachable (off or out of coverage).")),
    30004: (S.REJECTED, _("The message was blocked (by the recipient or the network).")),
    30005: (S.REJECTED, _("Unknown destination: the number does not exist or is not active.")),
    30006: (S.REJECTED, _("The number is a landline or its carrier cannot receive SMS.")),
    30007: (S.REJECTED, _("The carrier filtered the message (spam or content rules).")),
    30008: (S.REJECTED, _("The carrier reported an unknown delivery error.")),
    30010: (S.REJECTED, _("The message price exceeded the maximum price set.")),
}

D = DeliveryStatus
#: Message statuses -> (the report's DeliveryStatus, or None for no report, their meaning).
STATUSES: dict[str, tuple[DeliveryStatus | None, Any]] = {
    "accepted": (D.SENT, _("accepted by the Messaging Service")),
    "scheduled": (D.SENT, _("scheduled for later")),
    "queued": (D.SENT, _("queued at Twilio")),
    "sending": (D.SENT, _("being passed to the carrier")),
    "sent": (D.SENT, _("passed to the carrier")),
    "delivered": (D.DELIVERED, _("delivered")),
    "read": (D.DELIVERED, _("delivered and read")),
    "undelivered": (D.UNDELIVERED, _("not delivered: the carrier could not deliver it")),
    "partially_delivered": (D.UNDELIVERED, _("only partly delivered")),
    "failed": (D.FAILED, _("failed: Twilio could not send it")),
    "canceled": (D.FAILED, _("cancelled before it was sent")),
    "receiving": (None, _("an incoming message")),  # incoming: no report
    "received": (None, _("an incoming message")),
}


def classify_error(code: int | None, http_status: int = 400, text: str = "") -> tuple[S, str]:
    """(SendStatus, a text for people) of a Twilio error code; a code missing from ``ERRORS``
    by the HTTP status (429 retried, 404 provider-wide, others refused) with Twilio's text."""
    if code in ERRORS:
        status, meaning = ERRORS[code]
        return status, str(meaning)
    status = S.RETRY if http_status == 429 else S.REJECTED
    if http_status == 404:
        status = S.PROVIDER_ERROR
    message = gettext("Twilio error %(code)s") % {"code": code if code is not None else "?"}
    return status, f"{message}: {text}" if text else message


def report_fields(
    status_name: str, error_code: Any = None, error_text: str = ""
) -> tuple[DeliveryStatus, str, str] | None:
    """(DeliveryStatus, error_code, error_message) of a message status; None when it makes no
    report (an incoming message). An unknown status is "still on its way" (SENT): every final
    status Twilio documents is in ``STATUSES``."""
    status, meaning = STATUSES.get(status_name, (D.SENT, ""))
    if status is None:
        return None
    if status in (D.SENT, D.DELIVERED):
        return status, "", ""
    code = code_number(error_code)
    if code is not None:
        text = str(ERRORS[code][1]) if code in ERRORS else error_text
        text = text or gettext("Twilio error %(code)s") % {"code": code}
        return status, str(code), text
    return status, status_name, error_text or str(meaning)


def code_number(value: Any) -> int | None:
    """An error code as an int (Twilio sends numbers, forms send strings), or None."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
