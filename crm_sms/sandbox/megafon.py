"""MegaFon's A2P HTTPS API in the sandbox.

It answers ``POST /sms/v1/sms`` the way ``docs/providers.md`` describes
the real service: Basic auth (401 otherwise), UTF-8 JSON without a byte-order mark,
``20101`` with ``payload`` naming the bad field, ``msg_id`` de-duplication answered ``20102``,
a throughput limit answered ``88``, and delivery reports posted to each message's
``callback_url``.

Decisions where the real service is not documented:
- A body that starts with a UTF-8 BOM is answered HTTP 200 with code 20101 and the payload
  ``{"code": "bom_not_allowed", "description": "body"}`` (a client saw it "refused"; the API
  reports validation errors as 20101 at HTTP 200).
- ``result.msg_id`` of an answer is the client's ``msg_id`` (or one the sandbox made up).
- Unauthenticated requests get HTTP 401 with a ``WWW-Authenticate: Basic`` header.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from .base import ProviderEmulator, RecordedRequest, Reply

SEND_PATH = "/sms/v1/sms"
BOM = b"\xef\xbb\xbf"

# The sender rule of MegaFon (independent of the backend's copy on purpose: the sandbox checks
# the client, so a bug in one is not hidden by sharing it).
SENDER_RE = re.compile(r"[A-Za-z0-9 !\"#$%()*+,\-./:;<=>?@\[\\\]^_`{|}~]{1,11}")
MSG_ID_RE = re.compile(r"[A-Za-z0-9_:\-]{1,16}")
MAX_MESSAGE_LENGTH = 1000

DESCRIPTIONS = {
    0: "ok",
    20101: "Обязательное поле отсутствует или поле содержит данные в неверном формате.",
    20102: "Сообщение с таким msg_id уже было принято.",
    8: "System error",
    20: "Message queue full",
    69: "submit_sm failed",
    88: "Throttling error (ESME has exceeded allowed message limits)",
    257: "SMSC transmitter for the region is not connected",
    1281: "Pdu запрещена по правилам роутинга",
    1282: "Абонент в чёрном списке",
    1284: "Запрещённые слова в тексте сообщения",
    1288: "Отправка в регион недоступна для компании",
}


def _result(msg_id: str, code: int, payload: list[dict] | None = None) -> Reply:
    status: dict[str, Any] = {"code": code, "description": DESCRIPTIONS.get(code, "error")}
    if payload:
        status["payload"] = payload
    return Reply(200, {"result": {"msg_id": msg_id, "status": status}})


def _bad(field_name: str, code: str = "param_is_not_valid") -> dict:
    return {"code": code, "description": field_name}


def _new_id() -> str:
    return secrets.token_hex(8)


def read_body(body: bytes) -> tuple[Any, list[dict]]:
    """The parsed JSON body, or the 20101 payload for a body that is not UTF-8 JSON or has a BOM."""
    if body.startswith(BOM):
        return None, [_bad("body", "bom_not_allowed")]
    try:
        return json.loads(body.decode("utf-8")), []
    except (UnicodeDecodeError, ValueError):
        return None, [_bad("body", "json_is_not_valid")]


def validate_request(data: Any) -> list[dict]:
    """The 20101 payload entries for a parsed request body (empty when it is valid)."""
    if not isinstance(data, dict):
        return [_bad("body")]
    problems = []
    sender = data.get("from")
    if not (
        isinstance(sender, str) and SENDER_RE.fullmatch(sender) and sender == sender.strip(" ")
    ):
        problems.append(_bad("from"))
    to = data.get("to")
    # A JSON number, international format: 11-15 digits (a 10-digit number is refused).
    if not (
        isinstance(to, int) and not isinstance(to, bool) and to > 0 and 11 <= len(str(to)) <= 15
    ):
        problems.append(_bad("to"))
    message = data.get("message")
    if not (isinstance(message, str) and 1 <= len(message) <= MAX_MESSAGE_LENGTH):
        problems.append(_bad("message"))
    msg_id = data.get("msg_id")
    if msg_id is not None and not (isinstance(msg_id, str) and MSG_ID_RE.fullmatch(msg_id)):
        problems.append(_bad("msg_id"))
    callback_url = data.get("callback_url")
    if callback_url is not None and not (
        isinstance(callback_url, str) and callback_url.startswith(("http://", "https://"))
    ):
        problems.append(_bad("callback_url"))
    return problems


def smpp_receipt(
    receipted_id: str, delivered: bool, submitted: float, done: float, err: str | None = None
) -> str:
    """The SMPP delivery receipt text MegaFon puts in ``short_message`` (unix-second dates)."""
    stat = "DELIVRD" if delivered else "UNDELIV"
    err = err or ("000" if delivered else "001")
    return (
        f"id:{receipted_id} sub:001 dlvrd:{'001' if delivered else '000'} "
        f"submit date:{int(submitted)} done date:{int(done)} stat:{stat} err:{err}"
    )


class MegafonEmulator(ProviderEmulator):
    """MegaFon A2P: one message per ``POST /sms/v1/sms``, Basic auth, JSON reports."""

    name = "megafon"
    title = "MegaFon"
    scheme = "megafon"
    routes = {("POST", SEND_PATH): "send"}
    realm = "a2p-api"
    failed_status = "delivery_failed"

    def send(self, request: RecordedRequest) -> Reply:
        """One message: 20101 (bad body or field), a forced code, 20102 (its msg_id was
        accepted before), 88 (over the rate) or 0 (accepted; its report follows)."""
        sandbox = self.sandbox
        data, problems = read_body(request.body)
        client_msg_id = data.get("msg_id") if isinstance(data, dict) else None
        if isinstance(client_msg_id, str):
            sandbox.count_attempt(client_msg_id)
        failure = sandbox.inject_failure()
        if failure is not None:
            return failure
        problems = problems or validate_request(data)
        msg_id = client_msg_id if isinstance(client_msg_id, str) and client_msg_id else None
        if problems:
            return _result(msg_id or _new_id(), 20101, problems)
        msg_id = msg_id or _new_id()
        forced = sandbox.forced_code(data["to"])
        if forced:
            return _result(msg_id, forced)
        if sandbox.is_accepted(msg_id):
            return _result(msg_id, 20102)
        if sandbox.throttled():
            return _result(msg_id, 88)
        message = {
            "msg_id": msg_id,
            "to": data["to"],
            "from": data["from"],
            "message": data["message"],
            "callback_url": data.get("callback_url"),
            "accepted_at": time.time(),
            "receipted_message_id": secrets.token_hex(4),
            "status": "accepted",
        }
        if not sandbox.accept(msg_id, message):  # a concurrent attempt of this msg_id won
            return _result(msg_id, 20102)
        reply = _result(msg_id, 0)
        reply.reports.append(message)
        return reply

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """The JSON MegaFon posts to ``callback_url`` for ``message``."""
        return {
            "msg_id": message["msg_id"],
            "receipted_message_id": message["receipted_message_id"],
            "status": self.final_status(delivered),
            "short_message": smpp_receipt(
                message["receipted_message_id"], delivered, message["accepted_at"], time.time()
            ),
        }
