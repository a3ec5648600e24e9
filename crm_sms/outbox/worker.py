"""The worker: ``Outbox`` claims due messages, sends them from a thread pool and writes the
results; ``run_worker`` (``manage.py sms_worker``) and ``dispatch_due`` (Celery, ``send_now``)
run it.

All database work happens in the thread that calls ``Outbox.run``/``send_batch``; the pool
threads only talk to providers (``pool.send_group``). Results are written in batches
(``results.write_results``) at least every FLUSH_INTERVAL seconds, each after the next batch
is claimed when the pool runs low: the send threads never wait for a write.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TextIO

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connection

from .. import conf, inbox
from ..backends import get_backend, load_backend_class
from ..backends.base import OutgoingSMS
from ..importing.jobs import start_import_jobs
from ..models import Message
from . import results
from .claiming import claim_due_messages, release_stale_claims
from .controls import start_due_campaigns
from .pool import Job, ProviderGate, group_jobs, send_group

logger = logging.getLogger("crm_sms.outbox")

#: How often a running worker takes back stale claims and starts scheduled campaigns, seconds.
HOUSEKEEPING_INTERVAL = 5.0
#: Results are written at least this often while sending, seconds.
FLUSH_INTERVAL = 0.5


@dataclass
class DispatchSummary:
    """What a dispatch run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    given_back: int = 0
    uncertain: int = 0  # the answer was lost; not sent again without an operator
    paused_campaigns: list[int] = field(default_factory=list)
    completed_campaigns: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        done = self.sent + self.failed + self.retried
        return done / self.seconds if self.seconds > 0 else 0.0

    def add(self, batch: DispatchSummary) -> None:
        """Add a written batch's counts to these."""
        for name in ("sent", "failed", "retried", "given_back", "uncertain"):
            setattr(self, name, getattr(self, name) + getattr(batch, name))
        self.paused_campaigns += batch.paused_campaigns
        self.completed_campaigns += batch.completed_campaigns

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "given_back": self.given_back,
            "uncertain": self.uncertain,
            "paused_campaigns": self.paused_campaigns,
            "completed_campaigns": self.completed_campaigns,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
        }


class _Pace:
    """How long the main thread leaves the pool alone (a claim, a write of results: each a
    decaying maximum) and how fast the pool can answer (its threads' seconds per job, which
    include rate-limit waits): how many jobs must wait in the pool for it not to run dry
    meanwhile. On a busy machine writes take longer, and more is claimed ahead."""

    def __init__(self) -> None:
        self.stall: dict[str, float] = {}  # "claim"/"write" -> seconds
        self.job_seconds = 0.0  # a send thread's seconds per job, a moving average
        self.samples: deque[tuple[int, float]] = deque(maxlen=1000)  # from the pool threads

    def took(self, what: str, seconds: float) -> None:
        self.stall[what] = max(seconds, self.stall.get(what, 0.0) * 0.9)

    def sent(self, jobs: int, seconds: float) -> None:
        """A pool thread answered ``jobs`` in ``seconds`` (deque.append is thread-safe)."""
        self.samples.append((jobs, seconds))

    def jobs_needed(self, concurrency: int, max_stall: float) -> float:
        """Jobs ``concurrency`` threads answer during one stall (at most ``max_stall`` s)."""
        while self.samples:
            jobs, seconds = self.samples.popleft()
            per_job = seconds / max(jobs, 1)
            average = self.job_seconds
            self.job_seconds = 0.9 * average + 0.1 * per_job if average else per_job
        if not self.job_seconds:
            return 0.0
        return concurrency / self.job_seconds * min(sum(self.stall.values()), max_stall)


@dataclass
class _Run:
    """The state of one ``Outbox.run``."""

    once: bool
    max_seconds: float | None
    started: float = field(default_factory=time.monotonic)
    total: DispatchSummary = field(default_factory=DispatchSummary)
    inflight: dict[Future, list[Job]] = field(default_factory=dict)  # pool task -> its jobs
    inflight_jobs: int = 0
    completed: queue.SimpleQueue[Future] = field(default_factory=queue.SimpleQueue)
    finished: list[Job] = field(default_factory=list)  # answered, result not written yet
    last_flush: float = field(default_factory=time.monotonic)
    last_housekeeping: float = field(default_factory=time.monotonic)
    next_claim: float = 0.0

    def stopping(self, now: float, stop: threading.Event) -> bool:
        over_time = self.max_seconds is not None and now - self.started > self.max_seconds
        return stop.is_set() or over_time


class Outbox:
    """Claims due messages and sends them from a thread pool. All database work is done by the
    thread that calls ``run``/``send_batch``; the pool threads only call backends."""

    def __init__(
        self,
        concurrency: int | None = None,
        batch_size: int | None = None,
        provider: str | None = None,
        stdout: TextIO | None = None,
        stop: threading.Event | None = None,
    ):
        # CRM_SMS CONCURRENCY / BATCH_SIZE unless given (the sms_worker options).
        self.concurrency = int(concurrency or conf.get_setting("CONCURRENCY"))
        self.batch_size = int(batch_size or conf.get_setting("BATCH_SIZE"))
        self.provider = provider
        self.stdout = stdout
        self.stop = stop or threading.Event()
        self.pause_after = int(conf.get_setting("PAUSE_AFTER"))
        self.claim_timeout = float(conf.get_setting("CLAIM_TIMEOUT"))
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="crm-sms-send")
        self.gates: dict[str, ProviderGate] = {}
        self._gates_lock = threading.Lock()
        # A long-running worker survives database errors; --once runs and send_batch don't.
        self.raise_database_errors = True
        self.pace = _Pace()  # how much to claim ahead
        self._busy_since: float | None = None  # for the progress line's rate
        self._busy_done = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def send_batch(self, messages: list[Message]) -> DispatchSummary:
        """Send already claimed ``messages`` and write their results (waits for all)."""
        started = time.monotonic()
        summary = DispatchSummary(claimed=len(messages))
        jobs = self._jobs(messages)
        self._rearm_gates()
        done = [job for group in self.pool.map(self._send_group, group_jobs(jobs)) for job in group]
        self._write(done, summary)
        summary.seconds = time.monotonic() - started
        return summary

    def run(self, once: bool = False, max_seconds: float | None = None) -> DispatchSummary:
        """Send due messages until stopped (``once``: until nothing is due; ``max_seconds``:
        stop claiming after that long). On stop, requests in flight finish and unsent claims
        are given back (``queued``)."""
        self.raise_database_errors = once
        run = _Run(once, max_seconds)
        idle_sleep = float(conf.get_setting("IDLE_SLEEP"))
        self._housekeeping()
        while True:
            now = time.monotonic()
            stopping = run.stopping(now, self.stop)
            if not once and now - run.last_housekeeping > HOUSEKEEPING_INTERVAL:
                self._flush(run)
                self._housekeeping()
                run.last_housekeeping = now
            claimed = None if stopping else self._claim_more(run, now)
            if stopping:
                self._give_back_unstarted(run)
            if not run.inflight:
                wrote = self._flush(run)
                if stopping or (once and claimed == 0 and not wrote):
                    break  # (results just written may make more due: claim once more)
                if claimed == 0 and not wrote:
                    self._idle(idle_sleep)
                continue
            self._collect_answers(run)
            if len(run.finished) >= self.batch_size or (
                time.monotonic() - run.last_flush > FLUSH_INTERVAL
            ):
                if not stopping:
                    self._claim_more(run, time.monotonic())  # the pool is fed before a write
                self._flush(run)
                run.last_flush = time.monotonic()
        run.total.seconds = time.monotonic() - run.started
        return run.total

    # -- the steps of run -------------------------------------------------------------------
    def low_water(self) -> int:
        """Jobs waiting in the pool below which the next batch is claimed: enough to keep
        every send thread busy while the main thread claims and writes results (twice what
        the pool answers meanwhile). Claims never wait in the pool longer than a quarter of
        CLAIM_TIMEOUT for that, nor more than ten batches."""
        needed = self.pace.jobs_needed(self.concurrency, max_stall=self.claim_timeout / 8)
        static = max(self.concurrency * 2, self.batch_size // 2)
        return max(static, min(int(2 * needed), 10 * self.batch_size))

    def _claim_more(self, run: _Run, now: float) -> int | None:
        """Claim and submit batches while the pool is running low, until it is not. The
        number claimed, or None when it was not time to claim.

        Claiming comes before writing the answered jobs' results, so the send threads have
        work while the results are written; unless one of them tripped its provider's gate:
        then the results first (the campaigns they pause must not be claimed again)."""
        low_water = self.low_water()
        if run.inflight_jobs >= low_water or (run.inflight and now < run.next_claim):
            return None
        if any(job.tripped for job in run.finished):
            self._flush(run)
        claimed = 0
        while run.inflight_jobs < low_water:
            started = time.monotonic()
            jobs = self._claim(self.batch_size)
            self.pace.took("claim", time.monotonic() - started)
            self._submit(run, jobs, now)
            claimed += len(jobs)
            if len(jobs) < self.batch_size:  # drained: don't ask again at every answer
                run.next_claim = now + FLUSH_INTERVAL
                break
        return claimed

    def _submit(self, run: _Run, jobs: list[Job], now: float) -> None:
        run.total.claimed += len(jobs)
        if jobs and self._busy_since is None:
            self._busy_since, self._busy_done = now, 0
        for group in group_jobs(jobs):
            future = self.pool.submit(self._send_group, group)
            run.inflight[future] = group
            run.inflight_jobs += len(group)
            future.add_done_callback(run.completed.put)

    def _give_back_unstarted(self, run: _Run) -> None:
        """Stopping: pool tasks not started yet are cancelled; their claims are given back."""
        for future in list(run.inflight):
            if future.cancel():
                group = run.inflight.pop(future)
                run.inflight_jobs -= len(group)
                for job in group:
                    job.given_back = "stopping"
                run.finished.extend(group)

    def _idle(self, seconds: float) -> None:
        """Nothing is due: apply reports that arrived on a connection, release the database
        connection and sleep (a stop wakes it)."""
        self._busy_since = None
        self._apply_connection_reports()
        close_old_connections()
        self.stop.wait(seconds)

    def _collect_answers(self, run: _Run) -> None:
        """Wait up to FLUSH_INTERVAL for answered pool tasks and take their jobs. Completed
        futures arrive on a queue: O(1) per answer (wait() on hundreds of futures at every
        answer cost more CPU than writing the results)."""
        try:
            done = [run.completed.get(timeout=FLUSH_INTERVAL)]
        except queue.Empty:
            done = []
        while True:
            try:
                done.append(run.completed.get_nowait())
            except queue.Empty:
                break
        for future in done:
            group = run.inflight.pop(future, None)
            if group is None:  # cancelled and given back already
                continue
            run.inflight_jobs -= len(group)
            if not future.cancelled():
                run.finished.extend(future.result())

    def _housekeeping(self) -> None:
        with self._surviving_database_errors("housekeeping"):
            release_stale_claims()
            start_due_campaigns()
            inbox.drain_spool(max_seconds=HOUSEKEEPING_INTERVAL / 2)  # reports kept in an outage
            inbox.apply_queued_reports(max_seconds=HOUSEKEEPING_INTERVAL / 5)  # REPORTS=queued
            start_import_jobs(self.stop)  # background contact imports, in a helper thread
        self._apply_connection_reports()

    def _apply_connection_reports(self) -> None:
        """Apply the delivery reports that arrived on providers' own connections (SMPP
        receipts): from the main thread, the one that does database work."""
        for alias in self.connection_report_providers:
            with self._surviving_database_errors(f"applying {alias}'s reports"):
                get_backend(alias).apply_received_reports()

    @cached_property
    def connection_report_providers(self) -> list[str]:
        """The providers (of this worker) whose reports arrive on their connection."""
        aliases = [self.provider] if self.provider else conf.provider_aliases()
        return [alias for alias in aliases if _receives_reports(alias)]

    def _flush(self, run: _Run) -> bool:
        """Write the finished jobs' results; on a survived database error keep them for the
        next flush. True when results were written."""
        if not run.finished:
            return False
        batch = DispatchSummary()
        started = time.monotonic()
        with self._surviving_database_errors("writing results"):
            self._write(run.finished, batch)
            run.finished.clear()
        if run.finished:
            return False
        self.pace.took("write", time.monotonic() - started)
        run.total.add(batch)
        run.total.seconds = time.monotonic() - run.started
        self._report(batch, run.total)
        self._apply_connection_reports()
        return True

    def _report(self, batch: DispatchSummary, total: DispatchSummary) -> None:
        """The progress line of a written batch, with the rate of the current busy spell (an
        idle worker's lifetime average says nothing)."""
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since, self._busy_done = now, 0
        self._busy_done += batch.sent + batch.failed + batch.retried
        busy = now - self._busy_since
        rate = self._busy_done / busy if busy > 0 else 0.0
        line = (
            f"sent {batch.sent}, failed {batch.failed}, retried {batch.retried}"
            + (f", given back {batch.given_back}" if batch.given_back else "")
            + (f", uncertain {batch.uncertain}" if batch.uncertain else "")
            + f" | total sent {total.sent}, failed {total.failed}, retried {total.retried}, "
            f"{rate:.1f} msg/s"
        )
        if batch.paused_campaigns:
            line += f" | paused campaign(s) {batch.paused_campaigns}"
        if self.stdout is not None:  # the command prints it; logging it too doubled each line
            self.stdout.write(line + "\n")
            self.stdout.flush()
        else:
            logger.info("Outbox batch: %s", line)

    # -- jobs, gates, claims and writes -------------------------------------------------------
    def _gate(self, alias: str) -> ProviderGate:
        gate = self.gates.get(alias)
        if gate is None:
            with self._gates_lock:
                gate = self.gates.setdefault(alias, ProviderGate(self.pause_after))
        return gate

    def _rearm_gates(self) -> None:
        for gate in list(self.gates.values()):
            gate.rearm()

    def _send_group(self, jobs: list[Job]) -> list[Job]:
        """A pool task: one request for ``jobs`` (see ``pool.send_group``)."""
        started = time.monotonic()
        done = send_group(jobs, self._gate(jobs[0].message.provider), self.stop)
        if done[0].result is not None:  # (not given back unsent)
            self.pace.sent(len(done), time.monotonic() - started)
        return done

    def _jobs(self, messages: list[Message]) -> list[Job]:
        jobs = []
        callback_urls: dict[str, str | None] = {}
        for message in messages:
            backend, error = None, ""
            try:
                backend = get_backend(message.provider)
                if message.provider not in callback_urls:
                    callback_urls[message.provider] = backend.callback_url()
            except ImproperlyConfigured as exc:
                error = str(exc)
            sms = OutgoingSMS(
                to=message.phone,
                text=message.text,
                sender=message.sender,
                msg_id=message.msg_id,
                callback_url=callback_urls.get(message.provider),
            )
            gate = self._gate(message.provider)
            jobs.append(Job(message, sms, backend, gate.generation, config_error=error))
        return jobs

    def _claim(self, limit: int) -> list[Job]:
        self._rearm_gates()
        with self._surviving_database_errors("claim"):
            return self._jobs(claim_due_messages(limit, provider=self.provider))
        return []

    @contextlib.contextmanager
    def _surviving_database_errors(self, what: str) -> Iterator[None]:
        """A long-running worker outlives a database restart or a lock timeout: log, wait a
        second and go on (unwritten results are kept and written next time; rows claimed by
        nobody stay queued). With ``raise_database_errors`` the error goes through."""
        try:
            yield
        except DatabaseError:
            if self.raise_database_errors or connection.in_atomic_block:
                raise  # (in the caller's transaction: that transaction is broken)
            logger.exception("Outbox %s failed; retrying in a second", what)
            close_old_connections()
            self.stop.wait(1.0)

    def _write(self, jobs: list[Job], summary: DispatchSummary) -> None:
        """Write the results of ``jobs`` back in bulk, with their events."""
        results.write_results(jobs, summary, self.gates)


_process_outbox_instance: Outbox | None = None
_process_outbox_pid: int | None = None
_process_outbox_lock = threading.Lock()


def _receives_reports(alias: str) -> bool:
    try:
        backend_class = load_backend_class(conf.provider_config(alias).get("BACKEND", ""))
    except ImproperlyConfigured:
        return False  # the send's ValidationError says what is wrong
    return backend_class.receives_reports


def process_outbox() -> Outbox:
    """This process's shared Outbox (thread pool) for ``send_now``; a forked child (a Celery
    prefork worker) makes its own."""
    global _process_outbox_instance, _process_outbox_pid
    with _process_outbox_lock:
        if _process_outbox_instance is None or _process_outbox_pid != os.getpid():
            _process_outbox_instance = Outbox()
            _process_outbox_pid = os.getpid()
        return _process_outbox_instance


def dispatch_due(
    provider: str | None = None,
    batch_size: int | None = None,
    concurrency: int | None = None,
    max_seconds: float | None = None,
) -> dict[str, Any]:
    """Send everything due now (stale claims taken back, scheduled campaigns started first) and
    return a summary dict: claimed, sent, failed, retried, given_back, paused_campaigns,
    completed_campaigns, seconds, rate. ``max_seconds`` bounds the run (a Celery task)."""
    outbox = Outbox(concurrency=concurrency, batch_size=batch_size, provider=provider)
    try:
        return outbox.run(once=True, max_seconds=max_seconds).as_dict()
    finally:
        outbox.close()


def run_worker(
    once: bool = False,
    concurrency: int | None = None,
    batch_size: int | None = None,
    stdout: TextIO | None = None,
    provider: str | None = None,
    stop: threading.Event | None = None,
) -> DispatchSummary:
    """Run the outbox in this process: claim, send and record until ``stop`` is set (or, with
    ``once``, until nothing is due). Writes a progress line per batch to ``stdout``. When
    stopped, requests in flight finish and unsent claims go back to ``queued``."""
    outbox = Outbox(
        concurrency=concurrency, batch_size=batch_size, provider=provider, stdout=stdout, stop=stop
    )
    try:
        return outbox.run(once=once)
    finally:
        outbox.close()
