"""A loopback fake of SMS.RU's API (send, status, signed callbacks) and its pytest fixtures.

``FakeSmsRu`` is a ThreadingHTTPServer on an ephemeral port speaking the subset of SMS.RU's JSON
API that ``SmsRuBackend`` uses. Tests steer it through attributes:

- ``number_errors``: {digits: code} answered per number (e.g. 207 no route);
- ``request_error``: a request-wide error code (200 bad api_id, 201 no funds, 220 unavailable);
- ``http_status``: answer every request with this HTTP status (e.g. 503);
- ``callback_url`` + ``auto_callbacks``: after accepting messages, post signed ``sms_status``
  callbacks (``callback_codes``, default 102 then 103) there, like SMS.RU does, after
  ``callback_delay`` seconds.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

API_ID = "FAKE-API-ID-0001"


def sign(api_id: str, entries: list[str]) -> str:
    """SMS.RU's callback signature."""
    return hashlib.sha256((api_id + "".join(entries)).encode()).hexdigest()


def status_entry(sms_id: str, code: int, when: int | None = None) -> str:
    return f"sms_status\n{sms_id}\n{code}\n{int(time.time()) if when is None else when}"


def callback_form(api_id: str, entries: list[str], *, hash_: str | None = None) -> list:
    """The form fields of a callback with ``entries``, signed with ``api_id``."""
    return [("data[]", e) for e in entries] + [("hash", hash_ or sign(api_id, entries))]


class FakeSmsRu:
    def __init__(self, api_id: str = API_ID):
        self.api_id = api_id
        self.number_errors: dict[str, int] = {}
        self.request_error: int | None = None
        self.http_status: int | None = None
        self.callback_url: str | None = None
        self.auto_callbacks = False
        self.callback_codes: tuple[int, ...] = (102, 103)
        self.callback_delay = 0.0  # seconds before the first callback
        self.callback_answers: list[tuple[int, str]] = []
        self.messages: dict[str, dict] = {}  # sms_id -> {"phone", "text", "from", "status_code"}
        self.requests: list[tuple[str, list[tuple[str, str]]]] = []  # (path, form fields)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def sms_url(self, sender: str = "Test") -> str:
        return f"smsru+http://{self.api_id}@127.0.0.1:{self.port}/?sender={sender}"

    def start(self) -> FakeSmsRu:
        self._thread.start()
        return self

    def stop(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)
        self.server.shutdown()
        self.server.server_close()

    # --- what tests call -----------------------------------------------------------------
    def set_status(self, sms_id: str, code: int) -> None:
        self.messages[sms_id]["status_code"] = code

    def post_callback(self, entries: list[str], url: str | None = None, **kwargs):
        """Post a signed callback with ``entries`` (``status_entry(...)``) like SMS.RU does."""
        response = requests.post(
            url or self.callback_url, data=callback_form(self.api_id, entries, **kwargs), timeout=10
        )
        with self._lock:
            self.callback_answers.append((response.status_code, response.text))
        return response

    def wait_callbacks(self, timeout: float = 10) -> None:
        for thread in list(self._threads):
            thread.join(timeout=timeout)

    # --- the API -------------------------------------------------------------------------
    def _send(self, form: dict[str, str], fields: list[tuple[str, str]]) -> dict:
        if "multi" in "".join(k for k, _ in fields):
            targets = [(k[6:-1], v) for k, v in fields if k.startswith("multi[")]
        else:
            if not form.get("msg"):
                return {"status": "ERROR", "status_code": 203, "status_text": "Нет текста"}
            targets = [(p, form["msg"]) for p in form.get("to", "").split(",") if p]
        if len(targets) > 100:
            return {"status": "ERROR", "status_code": 213, "status_text": "Более 100 номеров"}
        result: dict[str, dict] = {}
        accepted = []
        for phone, text in targets:
            code = self.number_errors.get(phone)
            if code:
                result[phone] = {"status": "ERROR", "status_code": code, "status_text": "Ошибка"}
                continue
            sms_id = f"{next(self._ids):06d}-{int(time.time()) % 10**7:07d}"
            with self._lock:
                self.messages[sms_id] = {
                    "phone": phone,
                    "text": text,
                    "from": form.get("from", ""),
                    "status_code": 100,
                }
            result[phone] = {"status": "OK", "status_code": 100, "sms_id": sms_id}
            accepted.append(sms_id)
        if accepted and self.auto_callbacks and self.callback_url:
            thread = threading.Thread(target=self._report, args=(accepted,), daemon=True)
            self._threads.append(thread)
            thread.start()
        return {"status": "OK", "status_code": 100, "sms": result, "balance": 100.5}

    def _report(self, sms_ids: list[str]) -> None:
        time.sleep(self.callback_delay)
        for code in self.callback_codes:
            for sms_id in sms_ids:
                self.set_status(sms_id, code)
            try:
                self.post_callback([status_entry(i, code) for i in sms_ids])
            except requests.RequestException:
                pass

    def _status(self, form: dict[str, str]) -> dict:
        result = {}
        for sms_id in filter(None, form.get("sms_id", "").split(",")):
            message = self.messages.get(sms_id)
            if message is None:
                result[sms_id] = {
                    "status": "ERROR",
                    "status_code": -1,
                    "status_text": "Сообщение не найдено",
                }
            else:
                result[sms_id] = {
                    "status": "OK",
                    "status_code": message["status_code"],
                    "status_text": f"status {message['status_code']}",
                }
        return {"status": "OK", "status_code": 100, "sms": result, "balance": 100.5}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _answer(self, status: int, payload: dict | str) -> None:
                body = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, body: bytes) -> None:
                split = urlsplit(self.path)
                fields = parse_qsl(split.query, keep_blank_values=True) + parse_qsl(
                    body.decode(), keep_blank_values=True
                )
                with fake._lock:
                    fake.requests.append((split.path, fields))
                if fake.http_status:
                    return self._answer(fake.http_status, "<html>error</html>")
                form = dict(fields)
                if form.get("api_id") != fake.api_id:
                    return self._answer(
                        200, {"status": "ERROR", "status_code": 200, "status_text": "api_id"}
                    )
                if fake.request_error:
                    return self._answer(
                        200,
                        {"status": "ERROR", "status_code": fake.request_error, "status_text": ""},
                    )
                if split.path == "/sms/send":
                    return self._answer(200, fake._send(form, fields))
                if split.path == "/sms/status":
                    return self._answer(200, fake._status(form))
                return self._answer(
                    200, {"status": "ERROR", "status_code": 211, "status_text": "no method"}
                )

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                self._handle(self.rfile.read(length))

            def do_GET(self):
                self._handle(b"")

        return Handler


@pytest.fixture
def smsru_fake():
    """A started FakeSmsRu, stopped after the test."""
    fake = FakeSmsRu().start()
    yield fake
    fake.stop()


@pytest.fixture
def smsru_provider(settings, smsru_fake):
    """CRM_SMS with provider "smsru" (also the default) pointing at the fake; returns the fake."""
    from crm_sms.conf import parse_sms_url

    settings.CRM_SMS = {
        "PROVIDERS": {"smsru": parse_sms_url(smsru_fake.sms_url())},
        "DEFAULT_PROVIDER": "smsru",
        "CALLBACK_TOKEN": "smsru-token",
    }
    return smsru_fake
