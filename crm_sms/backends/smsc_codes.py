"""SMSC.ru's codes as data: send.php's errors, the message statuses and their ``err`` reasons,
with texts for people (English msgids, Russian in crm_sms/locale), and the two functions that
read them. The backend is ``crm_sms.backends.smsc`` (its docstring says what is confirmed).
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .base import DeliveryStatus, SendStatus

S, D = SendStatus, DeliveryStatus
#: send.php's ``error_code`` -> (how the outbox handles it, what it means to a person).
SEND_ERRORS: dict[int, tuple[SendStatus, Any]] = {
    1: (S.REJECTED, _("SMSC refused the request: a parameter is missing or malformed.")),
    2: (
        S.PROVIDER_ERROR,
        _(
            "SMSC refused the login or password (or the request came from an IP address the "
            "account does not allow)."
        ),
    ),
    3: (S.PROVIDER_ERROR, _("Not enough money on the SMSC account.")),
    4: (
        S.PROVIDER_ERROR,
        _("SMSC blocked this IP address for a while after too many wrong requests."),
    ),
    5: (S.REJECTED, _("SMSC refused the request: the date format is wrong.")),
    6: (S.REJECTED, _("SMSC forbade the message (by its text or its sender name).")),
    7: (S.REJECTED, _("SMSC refused the phone number: it is not in a valid format.")),
    8: (S.REJECTED, _("SMSC cannot deliver a message to this number.")),
    9: (
        S.RETRY,
        _(
            "SMSC refused a repeated request within a minute, or too many requests at once; "
            "the message will be retried."
        ),
    ),
}
#: A send error missing from the table: permanent for this message, never retried forever.
UNKNOWN_SEND_ERROR = S.REJECTED

#: status.php's and callbacks' ``status`` -> (DeliveryStatus or None for "no report", meaning).
STATUS_CODES: dict[int, tuple[DeliveryStatus | None, Any]] = {
    -3: (None, _("SMSC has no such message (not found)")),
    -2: (D.UNDELIVERED, _("Not delivered: the sending was stopped")),
    -1: (D.SENT, _("Waiting to be sent")),
    0: (D.SENT, _("Passed to the operator")),
    1: (D.DELIVERED, _("Delivered")),
    2: (D.DELIVERED, _("Delivered and read")),
    3: (D.UNDELIVERED, _("Not delivered: its lifetime expired")),
    4: (D.DELIVERED, _("Delivered; the link in it was opened")),
    20: (D.UNDELIVERED, _("Not delivered: the message cannot be delivered")),
    22: (D.UNDELIVERED, _("Not delivered: wrong number")),
    23: (D.UNDELIVERED, _("Not delivered: prohibited")),
    24: (D.UNDELIVERED, _("Not delivered: not enough money on the account")),
    25: (D.UNDELIVERED, _("Not delivered: the number is unavailable")),
}
NOT_FOUND = -3

#: The ``err`` of a status: why a message was not delivered (0: no error).
STATUS_ERRORS: dict[int, Any] = {
    0: _("no error"),
    1: _("the subscriber does not exist"),
    6: _("the subscriber is not on the network"),
    11: _("no SMS service"),
    12: _("the subscriber's phone failed"),
    13: _("the subscriber is blocked"),
    21: _("the service is not supported"),
    200: _("virtual sending (test mode)"),
    220: _("the operator's queue is full"),
    240: _("the line is busy"),
    241: _("the sound could not be converted"),
    242: _("an answering machine answered"),
    243: _("no contract with the operator"),
    244: _("mailings are forbidden"),
    245: _("no status was received"),
    246: _("a time restriction"),
    247: _("the message limit is exceeded"),
    248: _("no route to the number"),
    249: _("the number is in a wrong format"),
    250: _("the number is forbidden by the account's settings"),
    251: _("the limit for one number is exceeded"),
    252: _("the number is forbidden"),
    253: _("forbidden by the spam filter"),
    254: _("the sender name is not registered"),
    255: _("rejected by the operator"),
}


def classify_send_error(code: int | None, text: str = "") -> tuple[SendStatus, str]:
    """The SendStatus and a readable message for a send.php ``error_code``."""
    if code in SEND_ERRORS:
        status, meaning = SEND_ERRORS[code]
        return status, str(meaning)
    detail = f": {text}" if text else ""
    return UNKNOWN_SEND_ERROR, gettext("SMSC error %(code)s%(detail)s") % {
        "code": code,
        "detail": detail,
    }


def status_report(code: int, err: int | None = None) -> tuple[DeliveryStatus, str, str] | None:
    """(DeliveryStatus, error_code, error_message) for a status code and its ``err``; None for
    -3 (not found): no report. An unknown code is an undelivered message, its code kept."""
    status, meaning = STATUS_CODES.get(code, (D.UNDELIVERED, ""))
    if status is None:
        return None
    if status != D.UNDELIVERED:
        return status, "", ""
    message = str(meaning) or gettext("SMSC status %(code)s") % {"code": code}
    if err and err in STATUS_ERRORS:
        message = gettext("%(status)s (error %(err)s: %(reason)s)") % {
            "status": message,
            "err": err,
            "reason": STATUS_ERRORS[err],
        }
    elif err:
        message = gettext("%(status)s (error %(err)s)") % {"status": message, "err": err}
    return status, str(code), message
