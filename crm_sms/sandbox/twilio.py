"""Twilio's Messages API in the sandbox (``SandboxServer(provider="twilio")``, ``sms_sandbox
--provider twilio``): the Account SID is the sandbox's ``login``, the auth token its
``password``.

- ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``: Basic auth (401 with code 20003
  otherwise; another account's SID in the path: 404, 20404), a form with ``To``, ``From`` or
  ``MessagingServiceSid``, ``Body``, ``StatusCallback``. Refused at HTTP 400 with Twilio's error
  JSON ``{"code", "message", "more_info", "status"}``: 21604/21211 (To), 21603/21212 (From),
  21705 (a Messaging Service SID that is not ``MG`` + 32 hex), 21602/21617 (Body). Accepted:
  HTTP 201 with the Message resource (``SM…`` sid, ``queued``; ``accepted`` with a Messaging
  Service). Throttling (``throttle_rate``, ``rate``) is HTTP 429 with code 20429.
- ``GET …/Messages/{sid}.json`` (404, 20404, for an unknown sid), ``GET …/Messages.json``
  (``To``, ``From``, ``PageSize``; newest first) and ``GET …/Balance.json``.
- Status callbacks: a form posted to ``StatusCallback`` (``MessageSid``, ``MessageStatus``
  delivered or undelivered, ``ErrorCode`` of an undelivered one, ``RawDlrDoneDate``…), signed
  with ``X-Twilio-Signature`` by the auth token.
- Incoming messages: ``post_inbound(from_phone, text)`` (or ``sandbox.post_inbound``) posts a
  signed incoming-message webhook to ``inbound_url`` (or ``url=``), as Twilio does to a number's
  "A message comes in" URL; ``inbound_request`` builds one without posting it (the same
  ``sid`` twice: a repeated webhook).

Decisions where Twilio's behaviour is not recorded or is simplified:
- ``codes`` forces a code per recipient: a 30xxx (delivery) code is accepted and then reported
  undelivered with it, as Twilio does; 20429 answers 429, 20003 401, 20404 404, others 400.
- Only the final status is posted (Twilio also posts sent, sending… on the way).
- Without a StatusCallback and with ``callbacks`` on, a message settles (by ``deliver_rate``)
  once ``callback_delay`` has passed, so polling sees it; with ``callbacks`` off it stays queued
  until a test sets ``message["status"]``.
- The signature is computed here independently of the backend's code, so a mistake in one is
  not hidden by sharing it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from email.utils import formatdate
from typing import Any
from urllib.parse import urlencode

from .base import ProviderEmulator, RecordedRequest, Reply

API_VERSION = "2010-04-01"
ROUTE_RE = re.compile(
    r"/2010-04-01/Accounts/(?P<sid>[^/]+)/(?P<resource>Messages|Balance)(?:/(?P<msid>[^/]+))?\.json"
)
SERVICE_SID_RE = re.compile(r"MG[0-9a-fA-F]{32}")
TO_RE = re.compile(r"\+[1-9][0-9]{6,14}")
FROM_RE = re.compile(r"\+[1-9][0-9]{6,14}|[0-9]{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 +\-_&]{1,11}")
MAX_BODY = 1600
POOL_NUMBER = "+15005550006"  # the sender Twilio "picks" from a Messaging Service's pool
BALANCE = "25.50"
UNDELIVERED_CODE = 30003  # unreachable handset: the error of a plain undelivered report

MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number is not a valid phone number.",
    21212: "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21705: "The Messaging Service Sid is invalid.",
}
HTTP_STATUS = {20003: 401, 20404: 404, 20429: 429}


def twilio_signature(token: str, url: str, params: dict[str, Any]) -> str:
    """What Twilio puts in ``X-Twilio-Signature``: base64(HMAC-SHA1(token, url + the POST
    parameters' names and values, sorted by name))."""
    data = url + "".join(f"{key}{params[key]}" for key in sorted(params))
    mac = hmac.new(token.encode("utf-8"), data.encode("utf-8"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def error(code: int, status: int | None = None) -> Reply:
    """Twilio's error answer for ``code``."""
    http = status or HTTP_STATUS.get(code, 400)
    body = {
        "code": code,
        "message": MESSAGES.get(code, f"Error {code}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": http,
    }
    return Reply(http, body)


def _date(when: float | None) -> str | None:
    return formatdate(when, usegmt=True) if when else None


class TwilioEmulator(ProviderEmulator):
    """Twilio: one message per POST, 201 with the Message resource, signed form callbacks."""

    name = "twilio"
    title = "Twilio"
    scheme = "twilio"
    routes = {
        ("POST", "/2010-04-01/Accounts/{AccountSid}/Messages.json"): "send",
        ("GET", "/2010-04-01/Accounts/{AccountSid}/Messages.json"): "list_messages",
        ("GET", "/2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json"): "fetch",
        ("GET", "/2010-04-01/Accounts/{AccountSid}/Balance.json"): "balance",
    }
    realm = "Twilio API"
    delivered_status = "delivered"
    failed_status = "undelivered"
    #: Where incoming messages are posted (a number's "A message comes in" URL); "": nowhere.
    inbound_url: str = ""

    def endpoint(self, request: RecordedRequest):
        match = ROUTE_RE.fullmatch(request.route)
        if match is None:
            return None
        resource, one = match["resource"], match["msid"] is not None
        if resource == "Balance" and not one and request.method == "GET":
            return self.balance
        if resource == "Messages" and one and request.method == "GET":
            return self.fetch
        if resource == "Messages" and not one:
            return {"POST": self.send, "GET": self.list_messages}.get(request.method)
        return None

    def not_found(self, request: RecordedRequest) -> Reply:
        return error(20404)

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        if self.sandbox.basic_auth_ok(request):
            return None
        reply = error(20003)
        reply.headers["WWW-Authenticate"] = f'Basic realm="{self.realm}"'
        return reply

    def _other_account(self, request: RecordedRequest) -> bool:
        match = ROUTE_RE.fullmatch(request.route)
        return match is None or match["sid"] != self.sandbox.login

    # --- endpoints -------------------------------------------------------------------------
    def send(self, request: RecordedRequest) -> Reply:
        """One message: 400 for a bad field, a forced code, 429 when throttled, else 201."""
        sandbox = self.sandbox
        form = {key: values[-1] for key, values in request.form().items()}
        msg_id = _msg_id(form.get("StatusCallback", "")) or form.get("To", "")
        sandbox.count_attempt(msg_id)
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        if self._other_account(request):
            return error(20404)
        problem = _validate(form)
        if problem:
            return error(problem)
        forced = sandbox.forced_code(form["To"])
        if forced and forced < 30000:
            return error(forced)
        if sandbox.throttled():
            return error(20429)
        message = self._new_message(form, msg_id, forced)
        sandbox.accept(message["sid"], message)
        reply = Reply(201, self.resource(message, settle=False))  # its first status
        if message["callback_url"]:
            reply.reports.append(message)
        return reply

    def _new_message(self, form: dict[str, str], msg_id: str, forced: int | None) -> dict:
        service = form.get("MessagingServiceSid")
        now = time.time()
        return {
            "sid": "SM" + secrets.token_hex(16),
            "to": form["To"],
            "from": form.get("From") or POOL_NUMBER,
            "messaging_service_sid": service,
            "body": form["Body"],
            "status": "accepted" if service else "queued",
            "accepted_at": now,
            "updated_at": now,
            "callback_url": form.get("StatusCallback"),
            "msg_id": msg_id,
            "forced_error": forced,
        }

    def fetch(self, request: RecordedRequest) -> Reply:
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        sid = ROUTE_RE.fullmatch(request.route)["msid"]
        with self.sandbox._lock:
            message = self.sandbox.accepted.get(sid)
        if message is None or self._other_account(request):
            return error(20404)
        return Reply(200, self.resource(message))

    def list_messages(self, request: RecordedRequest) -> Reply:
        if self._other_account(request):
            return error(20404)
        query = {key: values[-1] for key, values in request.query.items()}
        size = max(1, min(1000, int(query.get("PageSize") or 50)))
        with self.sandbox._lock:
            found = [
                m
                for m in self.sandbox.accepted.values()
                if m["to"] == query.get("To", m["to"]) and m["from"] == query.get("From", m["from"])
            ]
        found.sort(key=lambda m: m["accepted_at"], reverse=True)
        page = [self.resource(m) for m in found[:size]]
        return Reply(200, {"messages": page, "page": 0, "page_size": size, "next_page_uri": None})

    def balance(self, request: RecordedRequest) -> Reply:
        if self._other_account(request):
            return error(20404)
        login = self.sandbox.login
        return Reply(200, {"account_sid": login, "balance": BALANCE, "currency": "USD"})

    # --- the Message resource --------------------------------------------------------------
    def current_status(self, message: dict[str, Any]) -> str:
        """The message's status; settled by ``deliver_rate`` once due when nobody posts
        reports (so polling sees a final state)."""
        if message.get("forced_error") and message["status"] == self.delivered_status:
            message["status"] = self.failed_status  # the report posted said undelivered
        self.settle(message, pending=message["status"] in ("queued", "accepted"))
        return message["status"]

    def finish(self, message: dict[str, Any], delivered: bool) -> None:
        """The final status (undelivered with a forced error) and when it changed."""
        super().finish(message, delivered and not message.get("forced_error"))
        message["updated_at"] = time.time()

    def error_code(self, message: dict[str, Any]) -> int | None:
        """The ErrorCode of an undelivered or failed message."""
        if message["status"] in ("undelivered", "failed"):
            return message.get("forced_error") or UNDELIVERED_CODE
        return None

    def resource(self, message: dict[str, Any], settle: bool = True) -> dict[str, Any]:
        """The Message resource Twilio answers for ``message``."""
        status = self.current_status(message) if settle else message["status"]
        uri = f"/{API_VERSION}/Accounts/{self.sandbox.login}/Messages/{message['sid']}"
        code = self.error_code(message)
        return {
            "account_sid": self.sandbox.login,
            "api_version": API_VERSION,
            "body": message["body"],
            "date_created": _date(message["accepted_at"]),
            "date_sent": _date(message["accepted_at"]) if status != "queued" else None,
            "date_updated": _date(message["updated_at"]),
            "direction": "outbound-api",
            "error_code": code,
            "error_message": None if code is None else f"Error {code}",
            "from": message["from"],
            "messaging_service_sid": message["messaging_service_sid"],
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": message["sid"],
            "status": status,
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": message["to"],
            "uri": f"{uri}.json",
        }

    # --- status callbacks and incoming messages --------------------------------------------
    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """The form Twilio posts to StatusCallback (undelivered when a 30xxx code was forced)."""
        delivered = delivered and not message.get("forced_error")
        status = self.final_status(delivered)
        report = {
            "AccountSid": self.sandbox.login,
            "ApiVersion": API_VERSION,
            "From": message["from"],
            "MessageSid": message["sid"],
            "MessageStatus": status,
            "SmsSid": message["sid"],
            "SmsStatus": status,
            "To": message["to"],
            "RawDlrDoneDate": time.strftime("%y%m%d%H%M", time.gmtime()),
        }
        if message.get("messaging_service_sid"):
            report["MessagingServiceSid"] = message["messaging_service_sid"]
        if not delivered:
            report["ErrorCode"] = str(message.get("forced_error") or UNDELIVERED_CODE)
        return report

    def encode_report(
        self, message: dict[str, Any], report: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        return self.signed_form(message["callback_url"], report)

    def signed_form(self, url: str, params: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a webhook Twilio posts to ``url``."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(self.sandbox.password, url, params),
            "I-Twilio-Idempotency-Token": secrets.token_hex(16),
        }
        return urlencode(params).encode("utf-8"), headers

    def inbound_request(
        self, url: str, from_phone: str, to: str, text: str, sid: str = ""
    ) -> tuple[bytes, dict[str, str]]:
        """The signed webhook of an SMS ``from_phone`` sent to our number ``to`` (``sid``: its
        MessageSid, a new one by default)."""
        sid = sid or "SM" + secrets.token_hex(16)
        params = {
            "AccountSid": self.sandbox.login,
            "ApiVersion": API_VERSION,
            "Body": text,
            "From": from_phone,
            "MessageSid": sid,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "SmsStatus": "received",
            "To": to,
        }
        return self.signed_form(url, params)

    def post_inbound(
        self, from_phone: str, text: str, *, to: str = POOL_NUMBER, url: str = "", sid: str = ""
    ):
        """Post an incoming message to ``url`` (default: ``inbound_url``) as Twilio does;
        returns the response."""
        import requests

        url = url or self.inbound_url
        if not url:
            raise ValueError("Where to? Set the emulator's inbound_url or pass url=")
        body, headers = self.inbound_request(url, from_phone, to, text, sid)
        with requests.Session() as session:
            session.trust_env = False
            return session.post(url, data=body, headers=headers, timeout=(5, 10))


def _validate(form: dict[str, str]) -> int | None:
    """The error code of a send form Twilio refuses, or None."""
    to, sender = form.get("To", ""), form.get("From", "")
    service = form.get("MessagingServiceSid", "")
    if not to:
        return 21604
    if not TO_RE.fullmatch(to):
        return 21211
    if not (sender or service):
        return 21603
    if sender and not FROM_RE.fullmatch(sender):
        return 21212
    if service and not SERVICE_SID_RE.fullmatch(service):
        return 21705
    body = form.get("Body", "")
    if not body:
        return 21602
    if len(body) > MAX_BODY:
        return 21617
    return None


def _msg_id(callback_url: str) -> str:
    """Our msg_id from the StatusCallback URL (the backend adds ``?msg_id=``), or ""."""
    match = re.search(r"[?&]msg_id=([^&]+)", callback_url or "")
    return match.group(1) if match else ""
