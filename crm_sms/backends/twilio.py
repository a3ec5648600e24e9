"""Twilio Programmable Messaging (``api.twilio.com``): one recipient per request, signed status
callbacks, inbound messages, optional polling and the account balance.

``SMS_URL=twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com/?sender=%2B15005550006`` (a ``+`` is
``%2B`` in a URL) or ``?messaging_service_sid=MG…`` in place of a sender; ``twilio+http://`` for
the sandbox. Options: ``account_sid`` (the URL's user), ``auth_token`` (its password), ``sender``
(``From``: an E.164 number, a short code or an alphanumeric sender ID), ``messaging_service_sid``
(``MessagingServiceSid``: Twilio picks the sender from the service's pool; with a sender too,
both are sent), ``poll`` (1: ask Twilio about each sent message, one GET per message, for a
site Twilio's callbacks cannot reach) and the HTTP ones of ``http.HTTPBackend``.

Confirmed from Twilio's public API reference, its error pages and twilio-python:

- send: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded ``To``, ``From``
  or ``MessagingServiceSid``, ``Body`` (at most 1600 characters), ``StatusCallback``; HTTP Basic
  ``AccountSid:AuthToken``. Answer HTTP 201 with the Message resource (``sid``, ``status``
  queued — accepted with a Messaging Service —, ``error_code``); an error is JSON ``{"code",
  "message", "more_info", "status"}`` at HTTP 400 (fields), 401 (20003), 404 (20404), 429 (20429:
  "never processed and always safe to retry").
- status: ``GET …/Messages/{sid}.json``; balance: ``GET …/Balance.json`` (``balance``,
  ``currency``). Statuses: ``STATUSES`` below.
- status callbacks (posted to ``StatusCallback``, not for the initial status) are forms with
  ``MessageSid``, ``MessageStatus``, ``ErrorCode``, ``RawDlrDoneDate`` (YYMMDDhhmm)…; incoming
  messages are forms with ``MessageSid``, ``From``, ``To``, ``Body``…, answered with TwiML. Both
  carry ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, the full URL + every POST
  parameter's name and value, by name, then value)) — Twilio's "Webhooks security" page and
  twilio-python's ``RequestValidator``, which also accepts the URL with or without its default
  port (``signature_urls``). Checked against twilio-python's published test vectors.

We add our ``msg_id`` to the ``StatusCallback`` URL (``?msg_id=…``): the signature covers it, and
a report that overtakes the send result still finds its message.

Never twice: Twilio has no idempotency key for Messages, so ``retry_safety`` is NONE: after an
ambiguous failure an operator decides. ``lookup_sent`` lists the messages to the number and
matches the text; it is an aid for that operator, not proof (see its docstring).

Not confirmed (the code tolerates the alternative): RawDlrDoneDate's zone (read as UTC); that a
429 always carries 20429 (a bare 429 is retried too); error codes missing from ``ERRORS`` are
classified by their HTTP status with Twilio's own message. Not supported: the HMAC-SHA256
signatures of Twilio's Webhooks Rules and JSON-bodied webhooks (``bodySHA256``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import requests
from django.core import checks
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

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
from .http import FAILURE_MESSAGES as HTTP_FAILURE_MESSAGES
from .http import Answer, HTTPBackend, HTTPRequest
from .options import AccountChecks, Option
from .twilio_codes import classify_error, code_number, report_fields

DEFAULT_BASE_URL = "https://api.twilio.com"
API_PATH = "/2010-04-01/Accounts/{sid}"
BODY_MAX_LENGTH = 1600
SIGNATURE_HEADER = "X-Twilio-Signature"
#: The answer to an incoming message: empty TwiML (no automatic reply).
EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'

E164_RE = re.compile(r"\+[1-9][0-9]{6,14}")
SHORT_CODE_RE = re.compile(r"[0-9]{3,8}")
# Alphanumeric sender IDs: up to 11 of these, at least one letter (Twilio's glossary and the
# AlphaSenders resource).
ALPHA_SENDER_RE = re.compile(r"(?=.*[A-Za-z])[A-Za-z0-9 +\-_&]{1,11}")

S, D = SendStatus, DeliveryStatus

FAILURE_MESSAGES: dict[str, Any] = {
    **HTTP_FAILURE_MESSAGES,
    "credentials": _(
        "Twilio refused the Account SID and auth token (HTTP %(status)d): check them in %(env)s."
    ),
    "throttled": _(
        "Twilio did not take the request now (HTTP %(status)d: too many requests, or it timed "
        "out); the message will be retried."
    ),
}


#: The older name of ``base.Balance``, which ``TwilioBackend.balance`` returns.
AccountBalance = Balance


def signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """``X-Twilio-Signature`` of a request to ``url`` with the POST ``params``: base64 of the
    HMAC-SHA1, keyed by the auth token, of the URL followed by each parameter's name and value,
    sorted by name and then value."""
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(token.encode("utf-8"), payload.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def signature_urls(url: str) -> list[str]:
    """``url`` as given, without its port, and with its port (the scheme's default when it has
    none): Twilio's own validator accepts each, its signing not being consistent about ports."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = 443 if parts.scheme == "https" else 80
    variants = [url, parts._replace(netloc=host).geturl()]
    variants.append(parts._replace(netloc=f"{host}:{parts.port or default}").geturl())
    return list(dict.fromkeys(variants))


def _rfc2822(value: Any) -> datetime | None:
    try:
        return parsedate_to_datetime(str(value)).astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        return None


def _dlr_date(value: str) -> datetime | None:
    """``RawDlrDoneDate`` (YYMMDDhhmm, read as UTC) as an aware datetime, or None."""
    try:
        return datetime.strptime(value, "%y%m%d%H%M").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


class TwilioBackend(HTTPBackend):
    """Sends through Twilio's Messages API; reads its signed status callbacks and incoming
    messages, its message statuses (``poll``) and the account balance."""

    display_name = "Twilio"
    # No idempotency key, and listing messages cannot prove one did not arrive: an operator
    # decides after an ambiguous failure (see lookup_sent).
    retry_safety = RetrySafety.NONE
    supports_callbacks = True
    supports_inbound = True
    supports_balance = True
    report_window = 24 * 3600
    default_base_url = DEFAULT_BASE_URL
    declared_options = (
        Option("account_sid", str, "", "the Account SID, AC… (the URL's user)"),
        Option("auth_token", str, "", "the auth token (the URL's password)", secret=True),
        Option("messaging_service_sid", str, "", "a Messaging Service SID, MG… (From's stand-in)"),
        Option("poll", bool, False, "1: poll each sent message's status (one GET a message)"),
    )
    url_user_option = "account_sid"
    url_password_option = "auth_token"
    basic_auth = True
    account_checks = AccountChecks(
        credentials=("account_sid", "auth_token"),
        credentials_message="Provider {alias!r}: the Twilio Account SID or auth token is missing.",
        credentials_hint="Set {env}=twilio://ACCOUNT_SID:AUTH_TOKEN@api.twilio.com/"
        "?sender=%2B15005550006",
        sender_options=("sender", "messaging_service_sid"),
        sender_message="Provider {alias!r}: no default sender and no Messaging Service; every "
        "send must pass sender=… or Twilio refuses it (21603).",
        sender_hint="Add ?sender=%2B15005550006 or ?messaging_service_sid=MG… to {env}.",
        plain_http_risk="the auth token travels unencrypted",
        scheme="twilio",
    )
    failure_messages = FAILURE_MESSAGES
    #: ``query_status`` is bound to ``fetch_statuses`` when the ``poll`` option is on.
    query_status = None

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.account_sid: str = self.options["account_sid"]
        self.auth_token: str = self.options["auth_token"]
        self.messaging_service_sid: str = self.options["messaging_service_sid"]
        self.api_url = self.base_url + API_PATH.format(sid=quote(self.account_sid, safe=""))
        if self.options["poll"]:
            self.query_status = self.fetch_statuses

    def configure_session(self, session: requests.Session) -> None:
        session.headers["Accept"] = "application/json"

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """A From Twilio takes: an E.164 number, a short code or an alphanumeric sender ID; or
        none at all with a Messaging Service."""
        if not sender:
            if self.messaging_service_sid:
                return
            raise ValidationError(
                _("No sender: Twilio needs a From number or a messaging_service_sid."),
                code="sender_empty",
            )
        if not (
            E164_RE.fullmatch(sender)
            or SHORT_CODE_RE.fullmatch(sender)
            or ALPHA_SENDER_RE.fullmatch(sender)
        ):
            raise ValidationError(
                _(
                    "The sender “%(sender)s” is neither a phone number in international format "
                    "(+15005550006), a short code, nor an alphanumeric sender ID (1-11 Latin "
                    "letters, digits, spaces, + - _ &, with at least one letter)."
                )
                % {"sender": sender},
                code="invalid_sender",
            )

    def validate_text(self, text: str) -> None:
        """1 to 1600 characters (Twilio splits a long text itself)."""
        super().validate_text(text)
        if len(text) > BODY_MAX_LENGTH:
            raise ValidationError(
                _("The text has %(count)d characters; Twilio takes at most %(max)d.")
                % {"count": len(text), "max": BODY_MAX_LENGTH},
                code="text_too_long",
            )

    # --- sending -------------------------------------------------------------------------
    def status_callback(self, sms: OutgoingSMS) -> str | None:
        """The StatusCallback URL of ``sms``: the callback URL with our msg_id added."""
        url = sms.callback_url or self.callback_url()
        if not url:
            return None
        return f"{url}{'&' if '?' in url else '?'}{urlencode({'msg_id': sms.msg_id})}"

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """One form POST to Messages.json (raises ValidationError for a message Twilio would
        refuse: a bad number, sender or text)."""
        [sms] = messages
        sender = sms.sender or self.default_sender
        self.validate_sender(sender)
        self.validate_text(sms.text)
        if not E164_RE.fullmatch(sms.to or ""):
            raise ValidationError(
                _("The number %(to)s is not in international format (+15005550006).")
                % {"to": sms.to},
                code="invalid_phone",
            )
        data = [("To", sms.to)]
        if sender:
            data.append(("From", sender))
        if self.messaging_service_sid:
            data.append(("MessagingServiceSid", self.messaging_service_sid))
        data.append(("Body", sms.text))
        callback = self.status_callback(sms)
        if callback:
            data.append(("StatusCallback", callback))
        return HTTPRequest(self.api_url + "/Messages.json", data=data)

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """The Message resource (2xx) or an error ``{"code", "message"}``; None for an error
        answer without a code (then the HTTP status decides)."""
        data = answer.data
        if 200 <= answer.http_status < 300:
            if isinstance(data, dict) and data.get("sid"):
                return [self._created(data)]
            raise self.failure("bad_response", answer=answer)  # 201 is success: not by status
        code = code_number(data.get("code")) if isinstance(data, dict) else None
        if code is None:
            return None
        status, message = classify_error(code, answer.http_status, str(data.get("message") or ""))
        result = SendResult(status, error_code=str(code), error_message=message, raw=answer.raw)
        return [result]

    @staticmethod
    def _created(data: dict[str, Any]) -> SendResult:
        """A created message: accepted, unless Twilio already marks it failed (or undelivered,
        or cancelled)."""
        fields = report_fields(str(data.get("status") or ""), data.get("error_code"))
        sid = str(data["sid"])
        if fields and fields[0] in (D.FAILED, D.UNDELIVERED):
            return SendResult(
                S.REJECTED,
                provider_message_id=sid,
                error_code=fields[1],
                error_message=fields[2],
                raw=data,
            )
        return SendResult(S.ACCEPTED, provider_message_id=sid, raw=data)

    # --- reading Twilio ------------------------------------------------------------------
    def get(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        """GET ``path`` under the account's API URL; ProviderError for a transport failure,
        a 5xx or 401/403 (other statuses are the caller's)."""
        return self.post(HTTPRequest(self.api_url + path, method="GET", params=params))

    def _refused(self, answer: Answer) -> ProviderError:
        """The ProviderError of an error answer to a read (its code, else its HTTP status)."""
        data = answer.data if isinstance(answer.data, dict) else {}
        code = code_number(data.get("code"))
        if code is None:
            return self.unexpected_answer(answer)
        status, message = classify_error(code, answer.http_status, str(data.get("message") or ""))
        result = SendResult(status, error_code=str(code), error_message=message, raw=answer.raw)
        return ProviderError(message, self.scrub(result))

    def fetch_statuses(self, messages) -> list[DeliveryReport]:
        """A report for each of ``messages`` (objects with ``msg_id`` and
        ``provider_message_id``) Twilio knows, by one GET each; ``query_status`` when the
        ``poll`` option is on. A message Twilio does not know (404) gets none. Raises
        ProviderError when Twilio cannot be asked, so polling stops and tries later."""
        reports = []
        for message in messages:
            sid = message.provider_message_id
            if not sid:
                continue
            answer = self.get(f"/Messages/{quote(sid, safe='')}.json")
            if answer.http_status == 404:
                continue
            if answer.http_status != 200 or not isinstance(answer.data, dict):
                raise self._refused(answer)
            data = answer.data
            fields = report_fields(
                str(data.get("status") or ""), data.get("error_code"), data.get("error_message")
            )
            if fields is None:
                continue
            status, error_code, error_message = fields
            delivered_at = _rfc2822(data.get("date_updated")) if status == D.DELIVERED else None
            reports.append(
                DeliveryReport(
                    status,
                    msg_id=message.msg_id,
                    provider_message_id=sid,
                    error_code=error_code,
                    error_message=error_message,
                    delivered_at=delivered_at,
                    raw=self.redact(data),
                )
            )
        return reports

    def lookup_sent(self, sms: OutgoingSMS, since: datetime | None = None) -> SendResult | None:
        """Whether Twilio lists an outgoing message to ``sms.to`` with its text (and sender),
        created at ``since`` or later: ACCEPTED with the newest one's sid, or None.

        An aid for the operator deciding an "uncertain" message, not proof, which is why
        ``retry_safety`` is NONE: Twilio keeps no key of ours, so an earlier message with the
        same text to the same number matches too; a body rewritten by the account (redaction,
        smart encoding) does not match; and a request still being processed may not be listed
        yet. Raises ProviderError when Twilio cannot be asked."""
        params = {"To": sms.to, "PageSize": 50}
        sender = sms.sender or self.default_sender
        if sender:
            params["From"] = sender
        answer = self.get("/Messages.json", params)
        if answer.http_status != 200 or not isinstance(answer.data, dict):
            raise self._refused(answer)
        for item in answer.data.get("messages") or []:  # newest first
            if not isinstance(item, dict) or not str(item.get("direction", "")).startswith("out"):
                continue
            created = _rfc2822(item.get("date_created"))
            if since and created and created < since:
                break
            if item.get("body") == sms.text and item.get("sid"):
                sid = str(item["sid"])
                return SendResult(S.ACCEPTED, provider_message_id=sid, raw=self.redact(item))
        return None

    def balance(self) -> Balance:
        """The account's balance (``Balance.json``); ProviderError when Twilio cannot say."""
        answer = self.get("/Balance.json")
        data = answer.data if isinstance(answer.data, dict) else {}
        if answer.http_status != 200 or "balance" not in data:
            raise self._refused(answer)
        try:
            amount = Decimal(str(data["balance"]))
        except InvalidOperation as exc:
            raise self.unexpected_answer(answer) from exc
        return Balance(amount, str(data.get("currency") or "USD").upper())

    # --- callbacks and incoming messages -------------------------------------------------
    def verify_signature(self, request: HttpRequest) -> None:
        """Raise CallbackForbidden unless ``X-Twilio-Signature`` signs ``request``'s URL (as
        this site sees it, or under ``PUBLIC_URL``) and its POST parameters."""
        from .. import conf

        given = request.headers.get(SIGNATURE_HEADER, "")
        if not (given and self.auth_token):
            raise CallbackForbidden(f"no {SIGNATURE_HEADER} header, or no auth_token configured")
        urls = [request.build_absolute_uri()]
        public_url = conf.get_setting("PUBLIC_URL")
        if public_url:
            urls.append(public_url.rstrip("/") + request.get_full_path())
        params = [(k, v) for k, values in request.POST.lists() for v in values]
        ok = False
        for url in dict.fromkeys(u for base in urls for u in signature_urls(base)):
            expected = signature(self.auth_token, url, params)
            ok |= hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))
        if not ok:
            raise CallbackForbidden("the X-Twilio-Signature does not match (wrong auth token?)")

    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """A signed status callback as one report (none for an incoming message's status).
        CallbackForbidden for a bad signature, CallbackError without MessageSid/MessageStatus."""
        self.verify_signature(request)
        form = request.POST
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        status_name = form.get("MessageStatus") or form.get("SmsStatus") or ""
        if not (sid and status_name):
            raise CallbackError("a status callback without MessageSid or MessageStatus")
        fields = report_fields(status_name, form.get("ErrorCode"), form.get("ErrorMessage", ""))
        if fields is None:
            return []
        status, error_code, error_message = fields
        delivered_at = None
        if status == D.DELIVERED:
            delivered_at = _dlr_date(form.get("RawDlrDoneDate", ""))
        return [
            DeliveryReport(
                status,
                msg_id=request.GET.get("msg_id", ""),
                provider_message_id=sid,
                error_code=error_code,
                error_message=error_message,
                delivered_at=delivered_at,
                raw=self.redact(form.dict()),
            )
        ]

    def parse_inbound(self, request: HttpRequest) -> list[InboundMessage]:
        """A signed incoming-message webhook as InboundMessages (one per request).
        CallbackForbidden for a bad signature, CallbackError without MessageSid or From."""
        self.verify_signature(request)
        form = request.POST
        sid = form.get("MessageSid") or form.get("SmsSid") or ""
        from_phone = form.get("From", "")
        if not (sid and from_phone):
            raise CallbackError("an incoming message without MessageSid or From")
        return [
            InboundMessage(
                from_phone=from_phone,
                to=form.get("To", ""),
                text=form.get("Body", ""),
                provider_message_id=sid,
                raw=self.redact(form.dict()),
            )
        ]

    def inbound_response(self, messages: list[InboundMessage]) -> HttpResponse:
        """Empty TwiML: Twilio sends no automatic reply."""
        return HttpResponse(EMPTY_TWIML, content_type="text/xml; charset=utf-8")

    # --- configuration -------------------------------------------------------------------
    def check(self) -> list[checks.CheckMessage]:
        """The account checks (E010, W010 with the Messaging Service as a sender, W011), then
        no way to learn delivery statuses (W012)."""
        from .. import conf

        problems = super().check()
        if not (self.query_status or (conf.get_setting("PUBLIC_URL") and conf.callback_tokens())):
            problems.append(
                checks.Warning(
                    f"Provider {self.alias!r}: Twilio messages will get no delivery status: "
                    "no callback URL (PUBLIC_URL and CALLBACK_TOKEN) and polling is off.",
                    hint=f"Set SMS_PUBLIC_URL and SMS_CALLBACK_TOKEN, or add ?poll=1 to "
                    f"{self.env_variable}.",
                    id="crm_sms.W012",
                )
            )
        return problems
