"""Posting delivery reports from the sandbox, as a provider calls back: each report is due
``callback_delay`` seconds after the message was accepted, posted by a pool of threads (one
``requests`` session each, no proxy), retried when the receiver fails.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import SandboxServer


class ReportPoster:
    """Posts delivery reports: a scheduler thread releases each at its due time to a pool of
    posting threads (one ``requests`` session per thread); a failed post is retried."""

    def __init__(self, sandbox: SandboxServer, workers: int):
        self.sandbox = sandbox
        self.workers = workers
        self.executor: ThreadPoolExecutor | None = None
        self.scheduler: threading.Thread | None = None
        self.due: list[tuple[float, int, dict]] = []
        self.due_cond = threading.Condition()
        self.counter = itertools.count()
        self.http = threading.local()
        self.idle = threading.Condition()

    def start(self) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=self.workers, thread_name_prefix="sandbox-callback"
        )
        self.scheduler = threading.Thread(
            target=self.run_scheduler, name="sandbox-callback-scheduler", daemon=True
        )
        self.scheduler.start()

    def stop(self) -> None:
        """Drop the pending reports (the sandbox's ``_stopping`` is set)."""
        with self.due_cond:
            self.due.clear()
            self.due_cond.notify_all()
        if self.scheduler:
            self.scheduler.join(timeout=5)
        if self.executor:
            self.executor.shutdown(wait=False, cancel_futures=True)
        self.scheduler = self.executor = None

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.idle:
            while len(self.sandbox.callbacks_sent) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.idle.wait(left)
        return True

    def schedule(self, message: dict) -> None:
        due = time.monotonic() + float(self.sandbox.callback_delay or 0)
        with self.due_cond:
            heapq.heappush(self.due, (due, next(self.counter), message))
            self.due_cond.notify()

    def run_scheduler(self) -> None:
        stopping = self.sandbox._stopping
        while not stopping.is_set():
            with self.due_cond:
                while not self.due and not stopping.is_set():
                    self.due_cond.wait(0.5)
                if stopping.is_set():
                    return
                due, _, message = self.due[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self.due_cond.wait(min(wait, 0.5))
                    continue
                heapq.heappop(self.due)
            executor = self.executor
            if executor is None:
                return
            try:
                executor.submit(self.post, message)
            except RuntimeError:  # shut down meanwhile
                return

    def session(self):
        import requests

        session = getattr(self.http, "session", None)
        if session is None:
            session = self.http.session = requests.Session()
            session.trust_env = False  # callbacks go to the given URL, never via a proxy
        return session

    def post(self, message: dict) -> None:
        """Post the report of ``message`` (delivered with ``deliver_rate``), retrying a failed
        post ``callback_attempts`` times in all, and record the outcome in ``callbacks_sent``."""
        sandbox, provider = self.sandbox, self.sandbox.provider
        delivered = sandbox._random.random() < sandbox.deliver_rate
        report = provider.delivery_report(message, delivered)
        body, headers = provider.encode_report(message, report)
        outcome: dict[str, Any] = {"url": message["callback_url"], "report": report}
        status: int | str = ""
        attempts = max(1, int(sandbox.callback_attempts))
        for attempt in range(1, attempts + 1):
            try:
                response = self.session().post(
                    message["callback_url"], data=body, headers=headers, timeout=(5, 10)
                )
                status = response.status_code
                if response.ok:
                    break
            except Exception as exc:  # the receiver is down: retry, then give up
                status = f"{type(exc).__name__}"
            if attempt < attempts and sandbox._stopping.wait(0.2 * 2 ** (attempt - 1)):
                break
        outcome.update(status=status, attempts=attempt)
        message["status"] = provider.final_status(delivered)
        with self.idle:
            sandbox.callbacks_sent.append(outcome)
            self.idle.notify_all()
