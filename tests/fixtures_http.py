"""A scripted HTTP server on loopback, for backend tests that need answers no emulator gives
(every row of a code table, a garbled body, a dropped connection).

``scripted(answer)`` (the fixture, in tests/conftest.py's ``pytest_plugins``) starts one and
closes it after the test::

    def test_a_5xx_is_retry(scripted):
        server = scripted((503, b"busy", "text/html"))
        result = backend_for(server.base_url).send(sms())
        assert server.requests[0]["body"] == b"..."
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

#: What a test answers: (status, body[, content type or headers]), or "drop".
Answer = Any


class ScriptedServer:
    """A loopback HTTP server that answers each request as ``answer`` says: a fixed answer,
    or a function of the request's body (of its method, path and body when ``routed``).

    An answer is ``(status, body)``, ``(status, body, content type)`` or ``(status, body,
    {header: value})``, a dict or list body being sent as UTF-8 JSON; or ``"drop"``: the
    connection is closed without an answer. ``content_type`` is the Content-Type of answers
    that name none (None: no such header). Every request is kept in ``requests``: dicts
    with ``method``, ``path``, ``headers`` and the raw ``body``."""

    def __init__(
        self,
        answer: Answer | Callable[..., Answer],
        *,
        routed: bool = False,
        content_type: str | None = "application/json",
    ):
        self.answer = answer
        self.routed = routed
        self.content_type = content_type
        self.requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.port: int = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.base_url = f"http://{self.address}"

    def answer_to(self, method: str, path: str, body: bytes) -> Answer:
        """The answer ``answer`` gives to this request."""
        if not callable(self.answer):
            return self.answer
        return self.answer(method, path, body) if self.routed else self.answer(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                scripted.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                result = scripted.answer_to(self.command, self.path, body)
                if result == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                status, payload, *rest = result
                headers = rest[0] if rest else {}
                if isinstance(headers, str):
                    headers = {"Content-Type": headers}
                elif scripted.content_type and not rest:
                    headers = {"Content-Type": scripted.content_type}
                if isinstance(payload, dict | list):
                    payload = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                for name, value in {"Content-Length": str(len(payload)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST

        return Handler


@contextmanager
def scripted_servers(**options: Any) -> Iterator[Callable[..., ScriptedServer]]:
    """``make(answer)`` starts a ScriptedServer with ``options``; all are closed on exit."""
    started: list[ScriptedServer] = []

    def make(answer: Answer | Callable[..., Answer]) -> ScriptedServer:
        server = ScriptedServer(answer, **options)
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.close()


@pytest.fixture(name="scripted")
def scripted_fixture() -> Iterator[Callable[..., ScriptedServer]]:
    """``scripted(answer)``: a started ScriptedServer whose answers are a function of the
    request's body (or fixed); closed after the test."""
    with scripted_servers() as make:
        yield make
