"""MTS Marketolog's omnichannel HTTP API in the sandbox: ``POST /http-api/v1/messages`` and the
batch endpoint ``/http-api/v1/b/messages`` (Basic auth, JSON), ``POST
/http-api/v1/messages/info`` (statuses by ``int_ids`` or ``msg_ids``).

MTS is polled, so this emulator keeps each message's status itself: an accepted message is
"sent" (event 200) until it is reported; with ``callbacks`` on (the default) a poll after
``callback_delay`` seconds finds it delivered (300) or not delivered (301) by ``deliver_rate``;
tests set ``message["status"]`` to ``delivered``/``undelivered`` instead. ``codes`` answers a
recipient with that ``error_code``; over ``rate`` (or with ``throttle_rate``) a recipient gets
803. A repeated ``message_id`` is accepted again (MTS is not known to drop repeats): that is
what ``lookup_sent`` exists for.

Decisions where the real service is not documented here: the batch endpoint answers like the
single one; a body that is not the API's JSON gets HTTP 400 ``{"code": 400, "message": ...}``;
a recipient without an 11-15 digit ``msisdn`` gets ``error_code`` 400; event times are UTC
ISO 8601 with an offset.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from .base import ProviderEmulator, RecordedRequest, Reply

SEND_PATH = "/http-api/v1/messages"
BATCH_PATH = "/http-api/v1/b/messages"
INFO_PATH = "/http-api/v1/messages/info"
THROTTLED = 803
BAD_REQUEST = 400
ERROR_MESSAGES = {
    THROTTLED: "Превышен лимит отправки: не более 10 SMS в секунду",
    BAD_REQUEST: "Некорректный запрос",
}
DELIVERED, UNDELIVERED = "delivered", "undelivered"
EVENT_STATUS = {DELIVERED: 300, UNDELIVERED: 301}


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat()


def _bad_request(text: str) -> Reply:
    return Reply(400, {"code": BAD_REQUEST, "message": text})


class MtsEmulator(ProviderEmulator):
    """MTS Marketolog: JSON sends (single and batch endpoint), statuses by polling."""

    name = "mts"
    title = "MTS Marketolog"
    scheme = "mts"
    routes = {
        ("POST", SEND_PATH): "send",
        ("POST", BATCH_PATH): "send",
        ("POST", INFO_PATH): "info",
    }
    realm = "omnichannel"
    delivered_status = DELIVERED
    failed_status = UNDELIVERED

    def __init__(self, sandbox):
        super().__init__(sandbox)
        self._by_msg_id: dict[str, list[str]] = {}  # our message_id -> internal ids
        self._lock = threading.Lock()

    @property
    def server_header(self) -> str:
        return "MtsSandbox/1.0"

    def send(self, request: RecordedRequest) -> Reply:
        """Each recipient of each message: a forced code, 803 over the rate, 400 for a bad
        number, else accepted with a new internal id."""
        sandbox = self.sandbox
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            data = None
        recipients = _recipients(data)
        for _message, to in recipients or []:
            if isinstance(to.get("message_id"), str):
                sandbox.count_attempt(to["message_id"])
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        if recipients is None:
            return _bad_request("messages[].content.short_text and messages[].to[] are required")
        sender = ((data.get("options") or {}).get("from") or {}).get("sms_address")
        if not isinstance(sender, str) or not sender:
            return _bad_request("options.from.sms_address is required")
        results = [
            self._one(message, to, sender, batch=request.route == BATCH_PATH)
            for message, to in recipients
        ]
        return Reply(200, {"messages": results})

    def _one(self, message: dict, to: dict, sender: str, batch: bool) -> dict[str, Any]:
        sandbox = self.sandbox
        msisdn, message_id = str(to.get("msisdn") or ""), str(to.get("message_id") or "")
        entry: dict[str, Any] = {"msisdn": msisdn, "message_id": message_id}
        code = sandbox.forced_code(msisdn)
        if code is None and not (msisdn.isdigit() and 11 <= len(msisdn) <= 15):
            code = BAD_REQUEST
        if code is None and sandbox.throttled():
            code = THROTTLED
        if code is not None:
            message_text = ERROR_MESSAGES.get(code, "Сообщение отклонено")
            return {**entry, "error_code": code, "error_message": message_text}
        internal_id = str(uuid.uuid4())
        sandbox.accept(
            internal_id,
            {
                "internal_id": internal_id,
                "message_id": message_id,
                "msisdn": msisdn,
                "naming": sender,
                "text": message["content"]["short_text"],
                "batch": batch,
                "accepted_at": time.time(),
                "status": "sent",
            },
        )
        with self._lock:
            self._by_msg_id.setdefault(message_id, []).append(internal_id)
        return {**entry, "internal_id": internal_id}

    def info(self, request: RecordedRequest) -> Reply:
        """``{"int_ids": [...]}`` or ``{"msg_ids": [...]}``: each key's events."""
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return _bad_request("the body is not JSON")
        if not isinstance(data, dict):
            return _bad_request("int_ids or msg_ids is required")
        by_msg_id = isinstance(data.get("msg_ids"), list)
        keys = data.get("msg_ids") if by_msg_id else data.get("int_ids")
        if not isinstance(keys, list):
            return _bad_request("int_ids or msg_ids is required")
        return Reply(200, {"events_info": [self._events(str(k), by_msg_id) for k in keys]})

    def _events(self, key: str, by_msg_id: bool) -> dict[str, Any]:
        with self._lock:
            internal_ids = list(self._by_msg_id.get(key, [])) if by_msg_id else [key]
        with self.sandbox._lock:
            messages = [self.sandbox.accepted.get(i) for i in internal_ids]
        messages = [m for m in messages if m is not None]
        if not messages:
            return {
                "key": key,
                "error": True,
                "error_description": "key not exists",
                "events_info": [],
            }
        return {"key": key, "events_info": [e for m in messages for e in self._history(m)]}

    def _history(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        """The message's events: 200 when it was accepted, then its final status, if any."""
        self.settle(message, pending=message["status"] not in EVENT_STATUS)
        base = {
            "internal_id": message["internal_id"],
            "message_id": message["message_id"],
            "destination": message["msisdn"],
            "naming": message["naming"],
            "channel": 1,
            "call_direction": "outgoing",
            "received_at": _iso(message["accepted_at"]),
            "total_parts": 1,
        }
        events = [{**base, "status": 200, "event_at": _iso(message["accepted_at"])}]
        final = EVENT_STATUS.get(message["status"])
        if final:
            done = {**base, "status": final, "event_at": _iso(message.get("done_at", time.time()))}
            if final == 301:
                done["internal_errors"] = [10700]
            events.append(done)
        return events

    def finish(self, message: dict[str, Any], delivered: bool) -> None:
        """The final status and when it came (the final event's ``event_at``)."""
        message["done_at"] = time.time()
        super().finish(message, delivered)

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """What messages/info shows for ``message`` once it is final (MTS posts no report
        here: its callbacks are set up in the cabinet, and this backend polls)."""
        status = self.final_status(delivered)
        return {
            "key": message["internal_id"],
            "events_info": self._history({**message, "status": status}),
        }


def _recipients(data: Any) -> list[tuple[dict, dict]] | None:
    """(message, recipient) pairs of a send body, or None when it is not the API's shape."""
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        return None
    pairs = []
    for message in data["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        text = content.get("short_text") if isinstance(content, dict) else None
        to = message.get("to") if isinstance(message, dict) else None
        if not isinstance(text, str) or not text or not isinstance(to, list) or not to:
            return None
        for recipient in to:
            if not isinstance(recipient, dict):
                return None
            pairs.append((message, recipient))
    return pairs or None
