"""An ASGI application that takes queued delivery reports itself and hands every other request
to Django.

At a campaign's pace a provider posts thousands of reports a second, one per request
(MegaFon). Through Django and a threaded WSGI server each costs about a millisecond of CPU in
the web process: Django's request, middleware and response, the server's HTTP parsing in
Python, threads handing the GIL around. Here, in an event loop behind uvicorn's C HTTP parser,
a report to the callback URL is authenticated, parsed by its backend (the same
``parse_callback``) and appended to the report queue (``CRM_SMS["REPORTS"] = "queued"``,
``crm_sms.inbox``) by one INSERT per batch of the reports that arrived meanwhile, on one
connection of its own per process; it is answered once its row is committed, so a 200 still
means "stored". Run it with gunicorn's uvicorn workers::

    gunicorn config.asgi -k uvicorn_worker.UvicornWorker --workers 2

where the site's ``asgi.py`` has::

    from crm_sms.asgi import get_asgi_application
    application = get_asgi_application()

The answers are the callback view's (``crm_sms.webhooks``: 200 with the backend's
``callback_response``, 400, 403, 404, 405 is Django's, 413, 500), and a report the database
cannot take now is spooled to disk and answered 200 (``inbox.spool_reports``), as there.
Django itself takes (the body handed on unread) everything else: other URLs, reports in
"direct" mode, a database other than PostgreSQL, incoming messages posted to the report URL
(SMSC), a request ``SECURE_SSL_REDIRECT`` would redirect, and sites with
``DISALLOWED_USER_AGENTS``. The host is checked against ``ALLOWED_HOSTS`` (400 otherwise);
the site's middleware does not run for the reports taken here.
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import DisallowedHost, ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.db import connections
from django.http import Http404, HttpResponse

from . import conf, webhooks
from .backends.base import DeliveryReport
from .handler import callback_prefix, callback_route

logger = logging.getLogger("crm_sms.asgi")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

#: Rows in one INSERT at most (the rest wait for the next one).
MAX_BATCH = 200
#: Connection options of Django's that are not libpq's (or are for its own cursors).
_DJANGO_ONLY_OPTIONS = (
    "cursor_factory",
    "context",
    "pool",
    "isolation_level",
    "assume_role",
    "server_side_binding",
)

try:
    import psycopg
except ImportError:  # pragma: no cover
    psycopg = None  # type: ignore[assignment]


class QueueWriter:
    """Inserts the report queue's rows for one event loop: ``write(row)`` returns once the row
    is committed; rows given while an INSERT runs go together in the next one (autocommit: one
    statement, one commit). One connection, opened at the first row and again after an
    error."""

    def __init__(self, connection_params: dict[str, Any]):
        self.connection_params = connection_params
        self._connection: Any = None
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._draining = False
        #: INSERTs and rows written (for tests and benchmarks).
        self.batches = self.rows = 0

    async def write(self, row: tuple[Any, ...]) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                try:
                    await self._insert([row for row, _ in batch])
                except BaseException as exc:
                    await self.close()  # a new connection for the next batch
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    self.batches += 1
                    self.rows += len(batch)
                    for _, future in batch:
                        if not future.done():
                            future.set_result(None)
        finally:
            self._draining = False

    async def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        from .inbox import insert_sql  # (models: imported once Django is set up)

        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(
                **self.connection_params, autocommit=True
            )
        params = [value for row in rows for value in row]
        await self._connection.execute(insert_sql(len(rows)), params, prepare=False)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                await connection.close()
            except Exception:  # pragma: no cover  (already broken)
                logger.debug("Closing the report queue's connection failed", exc_info=True)


def connection_params(alias: str = "default") -> dict[str, Any]:
    """psycopg's connection parameters for database ``alias``, from Django's settings."""
    params = dict(connections[alias].get_connection_params())
    for name in _DJANGO_ONLY_OPTIONS:
        params.pop(name, None)
    return params


class CallbackApplication:
    """Django's ASGI application; queued delivery reports are taken here (module text)."""

    def __init__(self, django_application: Callable[..., Awaitable[None]] | None = None):
        self.django = django_application or ASGIHandler()
        self._prefix: str | None = None  # found at the first request (the URLconf)
        self._writers: dict[asyncio.AbstractEventLoop, QueueWriter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        route = self._route(scope) if scope["type"] == "http" else None
        if route is None:
            return await self.django(scope, receive, send)
        await self._callback(scope, receive, send, *route)

    def _route(self, scope: Scope) -> tuple[str, str] | None:
        """(provider alias, token) of a POST to a callback URL taken here; None otherwise."""
        if scope["method"] != "POST" or not self._takes_reports():
            return None
        if self._prefix is None:
            self._prefix = callback_prefix()
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        route = callback_route(path, self._prefix)
        if route is None or route[0] != "callback":
            return None
        return route[1], route[2]

    @staticmethod
    def _takes_reports() -> bool:
        return (
            psycopg is not None
            and conf.report_mode() == "queued"
            and connections["default"].vendor == "postgresql"
            and not settings.DISALLOWED_USER_AGENTS
        )

    async def _callback(
        self, scope: Scope, receive: Receive, send: Send, provider: str, token: str
    ) -> None:
        try:
            backend = webhooks.callback_backend(provider, token)
        except Http404:
            return await _answer(send, webhooks.plain("Not Found", 404))
        limit = int(conf.get_setting("CALLBACK_MAX_BYTES"))
        body = await _read_body(receive, limit)
        if body is None:
            return await _answer(send, webhooks.too_large(provider, limit))
        request = ASGIRequest(scope, io.BytesIO(body))
        request._body = body
        try:
            request.get_host()
        except DisallowedHost as exc:
            logger.warning("A %s delivery report refused: %s", provider, exc)
            return await _answer(send, webhooks.plain("Bad Request", 400))
        if (settings.SECURE_SSL_REDIRECT and not request.is_secure()) or (
            backend.supports_inbound and backend.callback_is_inbound(request)
        ):
            return await self.django(scope, _replay(body, receive), send)
        parsed = webhooks.parse_or_refuse(
            lambda: backend.parse_callback(request), provider, "delivery report"
        )
        if isinstance(parsed, HttpResponse):
            return await _answer(send, parsed)
        await _answer(send, await self._queue(backend, provider, parsed))

    async def _queue(
        self, backend: Any, provider: str, reports: list[DeliveryReport]
    ) -> HttpResponse:
        """Queue ``reports`` (spooled when the database is away); the answer to give."""
        from .inbox import queue_row
        from .models import EventSource

        try:
            await self._writer().write(queue_row(reports, provider, EventSource.CALLBACK))
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            return await asyncio.to_thread(webhooks.spool, backend, provider, reports, exc)
        except Exception:
            logger.exception("Queueing %d %s delivery report(s) failed", len(reports), provider)
            return webhooks.plain("Internal error; please retry", 500)
        return backend.callback_response(reports)

    def _writer(self) -> QueueWriter:
        loop = asyncio.get_running_loop()
        writer = self._writers.get(loop)
        if writer is None:
            writer = self._writers[loop] = QueueWriter(connection_params())
        return writer

    async def aclose(self) -> None:
        """Close the running loop's queue connection (at the server's shut-down)."""
        writer = self._writers.pop(asyncio.get_running_loop(), None)
        if writer is not None:
            await writer.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start-up: nothing to do; shut-down: close this loop's queue connection."""
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request's body; None when it is longer than ``limit`` (the rest is not read)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for Django with the body this application has read given back first."""
    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, response: HttpResponse) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.items()]
    content = response.content
    headers.append((b"content-length", str(len(content)).encode()))
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def get_asgi_application() -> CallbackApplication:
    """``django.core.asgi.get_asgi_application`` with queued reports taken in the event loop."""
    django.setup(set_prefix=False)
    if conf.report_mode() == "queued" and psycopg is None:  # pragma: no cover
        raise ImproperlyConfigured("crm_sms.asgi needs psycopg 3 for the report queue")
    return CallbackApplication()
