"""MTS Marketolog (MTS Communicator omnichannel HTTP API, ``omnichannel.mts.ru``): JSON, Basic
auth, a batch endpoint from 10 recipients, statuses by polling ``messages/info``.

``SMS_URL=mts://LOGIN:PASSWORD@omnichannel.mts.ru/?sender=MyCompany`` (``mts+http://`` for the
sandbox). Options: ``login``, ``password`` (the integration login of the Marketolog cabinet),
``sender`` (an approved sender name, required by MTS), ``batch_from`` (10: a request with at
least this many recipients goes to the batch endpoint), ``event_timezone`` (the zone of event
times without an offset, default UTC) and the HTTP ones of ``http.HTTPBackend``. ``RATE_LIMIT``
defaults to MTS's 10 SMS per second (``?rate_limit=`` raises it for a contract with more).

The wire, as far as public client code shows it (MTS publishes its manual at
support.mts.ru/mts_marketolog/.../dokumentatsiya-rest-api; its sections on codes could not be
read here):

- ``POST /http-api/v1/messages`` (fewer than ``batch_from`` recipients) or the batch endpoint
  ``/http-api/v1/b/messages`` (found in one public client only), ``Authorization: Basic``::

    {"messages": [{"content": {"short_text": "..."},
                   "to": [{"msisdn": "79001234212", "message_id": "<our msg_id>"}]}, ...],
     "options": {"from": {"sms_address": "MyCompany"}}}

  The sender is per request, so a batch is split by sender. The answer lists each recipient:
  ``{"messages": [{"internal_id": "...", "message_id": "...", "msisdn": "...",
  "error_code": N, "error_message": "..."}]}``; a request-wide error is ``{"code": N,
  "message": "..."}``. 803 means over 10 SMS a second (the code is from the 1C BSP notes;
  whether it comes per recipient or request-wide is not confirmed: both are read).
- ``POST /http-api/v1/messages/info`` with ``{"int_ids": [internal ids]}`` (polling) or
  ``{"msg_ids": [our message ids]}`` (``lookup_sent``) answers
  ``{"events_info": [{"key": "<id>", "events_info": [{"status": 300, "internal_id": ...,
  "message_id": ..., "event_at": ..., "internal_errors": [...]}]}]}``, and for an id MTS does
  not know ``{"key": "<id>", "error": true, "error_description": "key not exists",
  "events_info": []}``. Status codes: ``STATUS_CODES``.

Never twice: MTS is not known to drop a repeated ``message_id``, but it can be asked about one
(``msg_ids``), so ``retry_safety`` is ``LOOKUP``: after an ambiguous failure ``lookup_sent``
finds whether the message arrived. Not confirmed: how long after acceptance ``msg_ids`` knows
a message (a lookup that comes too early would let a resend through), the batch endpoint's
answer (read like the single one, by ``message_id``), the batch size limit (100 here), the
internal error codes of failed events (kept as numbers) and the zone of ``event_at``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from ..exceptions import ProviderError
from ..phones import international_digits
from .base import DeliveryReport, DeliveryStatus, OutgoingSMS, RetrySafety, SendResult, SendStatus
from .http import JSON_CONTENT_TYPE, Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option, to_timezone

DEFAULT_BASE_URL = "https://omnichannel.mts.ru"
SEND_PATH = "/http-api/v1/messages"
BATCH_PATH = "/http-api/v1/b/messages"
INFO_PATH = "/http-api/v1/messages/info"
#: MTS's throughput per login: the default RATE_LIMIT.
DEFAULT_RATE_LIMIT = 10.0
#: Recipients per request (unconfirmed: the batch endpoint's own limit is not known).
MAX_BATCH_SIZE = 100
#: Ids per messages/info request.
INFO_CHUNK = 100
SENDER_MAX_LENGTH = 11
NOT_FOUND = "key not exists"

S = SendStatus
#: Error codes of a send (per recipient or request-wide) -> (how to handle it, its meaning).
#: Only 803 is confirmed; any other code refuses the message with MTS's own text.
CODES: dict[int, tuple[SendStatus, Any]] = {
    803: (
        S.RETRY,
        gettext_lazy(
            "MTS throttled the message: the login sent more than 10 SMS a second. It will be "
            "retried; keep RATE_LIMIT at the contracted throughput."
        ),
    ),
}

D = DeliveryStatus
#: ``status`` of a messages/info event -> (DeliveryStatus, its meaning).
STATUS_CODES: dict[int, tuple[DeliveryStatus, Any]] = {
    200: (D.SENT, gettext_lazy("Sent to the operator")),
    201: (D.FAILED, gettext_lazy("Not sent: MTS could not pass it to the operator")),
    202: (D.SENT, gettext_lazy("Partly sent (some parts of a long message)")),
    300: (D.DELIVERED, gettext_lazy("Delivered")),
    301: (D.UNDELIVERED, gettext_lazy("Not delivered")),
    302: (D.SENT, gettext_lazy("Partly delivered (some parts of a long message)")),
}
FINAL_STATUSES = frozenset(code for code, (s, _m) in STATUS_CODES.items() if s != D.SENT)


def classify_code(code: int, text: str = "") -> tuple[SendStatus, str]:
    """How to handle an MTS error code, and a message a person understands."""
    if code in CODES:
        status, meaning = CODES[code]
        return status, str(meaning)
    detail = f": {text}" if text else "."
    return S.REJECTED, _("MTS refused the message (error %(code)d)") % {"code": code} + detail


def status_report(code: int, errors: Any = None) -> tuple[DeliveryStatus, str, str]:
    """(DeliveryStatus, error_code, error_message) for an event status; unknown codes are
    kept as on their way (a later, known status decides)."""
    status, meaning = STATUS_CODES.get(code, (D.SENT, ""))
    if status in (D.SENT, D.DELIVERED):
        return status, "", ""
    message = str(meaning)
    if errors:
        codes = ", ".join(str(e) for e in (errors if isinstance(errors, list) else [errors]))
        message += " " + _("(MTS internal errors: %(codes)s)") % {"codes": codes}
    return status, str(code), message


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _digits(phone: str) -> str:
    return phone[1:] if phone.startswith("+") else phone


class MtsBackend(HTTPBackend):
    """Sends through MTS Marketolog (up to 100 recipients a request), polls messages/info."""

    display_name = "MTS Marketolog"
    # MTS can be asked whether a message_id arrived (messages/info by msg_ids).
    retry_safety = RetrySafety.LOOKUP
    max_batch_size = MAX_BATCH_SIZE
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    default_rate_limit = DEFAULT_RATE_LIMIT  # MTS's 10 SMS per second
    declared_options = (
        Option(
            "login", str, "", "the integration login of the Marketolog cabinet (the URL's user)"
        ),
        Option("password", str, "", "its password (the URL's password)", secret=True),
        Option("batch_from", int, 10, "recipients from which the batch endpoint is used", 2),
        Option("event_timezone", to_timezone, UTC, "the zone of event times without an offset"),
    )
    url_user_option = "login"
    url_password_option = "password"
    basic_auth = True
    account_checks = AccountChecks(
        credentials=("login", "password"),
        credentials_hint="Set {env}=mts://LOGIN:PASSWORD@omnichannel.mts.ru/?sender=MyCompany "
        "(URL-encode special characters of the password: %40 for @, %3A for :).",
        provider="MTS",
        sender_hint="Add ?sender=YourName (approved in the Marketolog cabinet) to {env}.",
        plain_http_risk="the password travels unencrypted",
        scheme="mts",
    )

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.login: str = self.options["login"]
        self.password: str = self.options["password"]
        self.batch_from: int = self.options["batch_from"]
        self.event_timezone = self.options["event_timezone"]

    def configure_session(self, session: requests.Session) -> None:
        session.headers.update({"Content-Type": JSON_CONTENT_TYPE, "Accept": "application/json"})

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """An approved MTS sender name: 1-11 Latin characters (``MTSM_Test`` for trials)."""
        if not sender:
            raise ValidationError(
                _("MTS needs a sender name (the one approved in the Marketolog cabinet)."),
                code="sender_empty",
            )
        if len(sender) > SENDER_MAX_LENGTH or not (sender.isascii() and sender.isprintable()):
            raise ValidationError(
                _(
                    "The sender name “%(sender)s” does not fit MTS's rule: 1 to 11 Latin "
                    "letters, digits, spaces or punctuation."
                )
                % {"sender": sender},
                code="invalid_sender",
            )

    # --- sending -------------------------------------------------------------------------
    def split_batch(self, batch: list[OutgoingSMS]) -> list[list[int]]:
        """Requests of one sender each (the sender is per request), ``max_batch_size`` at
        most, in the batch's order within each sender."""
        by_sender: dict[str, list[int]] = {}
        for index, sms in enumerate(batch):
            by_sender.setdefault(sms.sender or self.default_sender, []).append(index)
        size = max(1, self.max_batch_size)
        return [
            indexes[start : start + size]
            for indexes in by_sender.values()
            for start in range(0, len(indexes), size)
        ]

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """One JSON request: the batch endpoint from ``batch_from`` recipients on."""
        sender = messages[0].sender or self.default_sender
        self.validate_sender(sender)
        entries = []
        for sms in messages:
            self.validate_text(sms.text)
            digits = international_digits(sms.to)
            entries.append(
                {
                    "content": {"short_text": sms.text},
                    "to": [{"msisdn": digits, "message_id": sms.msg_id}],
                }
            )
        path = BATCH_PATH if len(messages) >= self.batch_from else SEND_PATH
        body = {"messages": entries, "options": {"from": {"sms_address": sender}}}
        return HTTPRequest(self.base_url + path, json=body)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """Each recipient's entry (by our message_id), or a request-wide ``code`` for all."""
        data = answer.data
        if not isinstance(data, dict):
            return None
        entries = data.get("messages")
        if isinstance(entries, list):
            by_id = {
                str(e.get("message_id")): e
                for e in entries
                if isinstance(e, dict) and e.get("message_id")
            }
            in_order = len(entries) == len(messages) and not by_id
            return [
                self._entry_result(by_id.get(sms.msg_id) or (entries[i] if in_order else None))
                for i, sms in enumerate(messages)
            ]
        code = _int(data.get("code"))
        if code is None:
            return None
        status, text = classify_code(code, str(data.get("message") or ""))
        return [
            SendResult(status, error_code=str(code), error_message=text, raw=answer.raw)
            for _sms in messages
        ]

    @staticmethod
    def _entry_result(entry: Any) -> SendResult:
        if not isinstance(entry, dict):
            # MTS took the request but said nothing of this message: it may have it.
            return SendResult(
                S.RETRY,
                error_code="no_answer",
                error_message=_("MTS's answer does not mention this message."),
                ambiguous=True,
            )
        code = _int(entry.get("error_code"))
        if code:
            status, text = classify_code(code, str(entry.get("error_message") or ""))
            return SendResult(status, error_code=str(code), error_message=text, raw=entry)
        if entry.get("internal_id"):
            return SendResult(S.ACCEPTED, provider_message_id=str(entry["internal_id"]), raw=entry)
        return SendResult(
            S.RETRY,
            error_code="no_answer",
            error_message=_("MTS's answer gives this message no id."),
            raw=entry,
            ambiguous=True,
        )

    # --- status queries ------------------------------------------------------------------
    def info(self, field: str, ids: list[str]) -> dict[str, dict[str, Any]]:
        """messages/info for ``ids`` (``field`` is ``int_ids`` or ``msg_ids``): key -> its
        entry. Raises ProviderError when MTS cannot be reached or answers otherwise."""
        entries: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), INFO_CHUNK):
            chunk = ids[start : start + INFO_CHUNK]
            answer = self.post(HTTPRequest(self.base_url + INFO_PATH, json={field: chunk}))
            data = answer.data
            items = data.get("events_info") if isinstance(data, dict) else None
            if answer.http_status != 200 or not isinstance(items, list):
                raise self.unexpected_answer(answer)
            for item in items:
                if isinstance(item, dict) and item.get("key") is not None:
                    entries[str(item["key"])] = item
        return entries

    def query_status(self, messages) -> list[DeliveryReport]:
        """The latest status of each of ``messages`` (with ``msg_id`` and
        ``provider_message_id``), asked by internal id; unknown ids give no report."""
        by_id = {m.provider_message_id: m for m in messages if m.provider_message_id}
        reports = []
        for key, entry in self.info("int_ids", list(by_id)).items():
            message = by_id.get(key)
            event = latest_event(entry)
            if message is None or event is None:
                continue
            code = _int(event.get("status"))
            if code is None:
                continue
            status, error_code, error_message = status_report(code, event.get("internal_errors"))
            delivered_at = self._event_time(event) if status == D.DELIVERED else None
            reports.append(
                DeliveryReport(
                    status,
                    msg_id=message.msg_id,
                    provider_message_id=key,
                    error_code=error_code,
                    error_message=error_message,
                    delivered_at=delivered_at,
                    raw=self.redact(entry),
                )
            )
        return reports

    def lookup_sent(self, sms: OutgoingSMS) -> SendResult | None:
        """Ask messages/info by our ``message_id``: ACCEPTED with MTS's internal id when it has
        the message, None when it answers "key not exists"; ProviderError otherwise."""
        entry = self.info("msg_ids", [sms.msg_id]).get(sms.msg_id)
        if entry is None:
            raise ProviderError(
                f"{self.display_name}: messages/info did not answer about {sms.msg_id}",
                SendResult(S.RETRY, error_code="bad_response"),
            )
        if entry.get("error") and str(entry.get("error_description", "")).lower() == NOT_FOUND:
            return None
        for event in entry.get("events_info") or []:
            if isinstance(event, dict) and event.get("internal_id"):
                return SendResult(
                    S.ACCEPTED,
                    provider_message_id=str(event["internal_id"]),
                    raw=self.redact(entry),
                )
        # Known but without events (or another error): MTS cannot say yet; ask again later.
        raise ProviderError(
            f"{self.display_name}: no answer yet about {sms.msg_id}",
            SendResult(S.RETRY, error_code="bad_response", raw=self.redact(entry)),
        )

    def _event_time(self, event: dict[str, Any]) -> datetime | None:
        try:
            when = parse_datetime(str(event.get("event_at") or ""))
        except ValueError:
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.event_timezone)
        return when.astimezone(UTC)


def latest_event(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The event that decides a message's status: a final one before any other, then the
    latest ``event_at``, then the last listed."""
    events = [e for e in entry.get("events_info") or [] if isinstance(e, dict)]
    if not events:
        return None
    ranked = sorted(
        enumerate(events),
        key=lambda pair: (
            _int(pair[1].get("status")) in FINAL_STATUSES,
            str(pair[1].get("event_at") or ""),
            pair[0],
        ),
    )
    return ranked[-1][1]
