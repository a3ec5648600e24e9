"""What the sending threads hold while the session thread works: a ``Pending`` request per
submit_sm, and the ``Failure`` that says why the session is not bound."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Failure:
    """Why the session is not bound. ``kind``: connect_failed, tls_error, bind_refused (with
    ``code``), bind_closed, bind_timeout, not_connected, closed."""

    kind: str
    code: int | None = None
    detail: str = ""


class Pending:
    """One request waiting for its response. ``finish`` is called once (later calls are
    ignored) with the response PDU, or with ``error``: "not_sent" (it never left this
    process: safe to send again), "connection_lost" or "timeout" (it was written and its fate
    is unknown)."""

    def __init__(self) -> None:
        self.response: Any = None
        self.error = ""
        self.written = False
        self.generation = 0
        self.deadline = 0.0
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._release: Callable[[], None] | None = None

    def finish(self, response: Any = None, error: str = "") -> None:
        with self._lock:
            if self._event.is_set():
                return
            self.response, self.error = response, error
            release, self._release = self._release, None
            self._event.set()
        if release is not None:
            release()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    @property
    def ambiguous(self) -> bool:
        return self.error in ("connection_lost", "timeout")
