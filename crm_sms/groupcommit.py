"""Group commit: concurrent requests of one process share one write and its commit.

A queued delivery report costs one INSERT and one commit (``inbox.queue_reports``). Under a
campaign's load a gunicorn worker with threads has several reports in hand at once; each
commit costs the database a transaction and a WAL flush and the worker a round trip. Here the
first request to arrive writes everything waiting (its own row and those of the requests that
arrived meanwhile) in one statement and one commit, then wakes the others; requests arriving
during that write are taken by the next one. Every request returns only once its row is
committed (or raises the write's error), so an answer 200 still means "stored".

No thread of its own: the writer is always one of the waiting requests, on its own database
connection. A write error reaches every request of the batch (as a copy, so each has its own
traceback): the callback view then spools its reports, as for a write of its own.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Sequence
from typing import Any


class _Item:
    __slots__ = ("done", "error", "value")

    def __init__(self, value: Any):
        self.value, self.done, self.error = value, False, None


class GroupCommit:
    """Calls ``write(values)`` for batches of the values ``submit`` is given concurrently
    (at most ``max_batch`` at a time); ``submit`` returns once its value is written."""

    def __init__(self, write: Callable[[Sequence[Any]], None], max_batch: int = 100):
        self.write, self.max_batch = write, max_batch
        self._condition = threading.Condition()
        self._pending: list[_Item] = []
        self._writing = False
        #: Batches written and values written (for tests and benchmarks).
        self.batches = self.values = 0

    def submit(self, value: Any) -> None:
        """Write ``value`` (with whatever else is waiting); raises what the write raised."""
        item = _Item(value)
        with self._condition:
            self._pending.append(item)
            while self._writing and not item.done:
                self._condition.wait()
            if item.done:
                return self._outcome(item, leader=False)
            self._writing = True
        try:
            while not item.done:  # more than max_batch waiting: a batch at a time, in order
                self._write_batch()
        finally:
            with self._condition:
                self._writing = False
                self._condition.notify_all()
        return self._outcome(item, leader=True)

    def _write_batch(self) -> None:
        with self._condition:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        error: BaseException | None = None
        try:
            self.write([each.value for each in batch])
        except BaseException as exc:
            error = exc
        with self._condition:
            for each in batch:
                each.done, each.error = True, error
            self.batches += 1
            self.values += len(batch)
            self._condition.notify_all()

    @staticmethod
    def _outcome(item: _Item, *, leader: bool) -> None:
        if item.error is None:
            return
        if leader:
            raise item.error
        raise copy.copy(item.error).with_traceback(None) from item.error

    def waiting(self) -> int:
        """How many values wait for the next write."""
        with self._condition:
            return len(self._pending)
