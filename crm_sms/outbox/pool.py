"""What the worker's pool threads do: one provider request per group of jobs, within the
provider's rate limit and behind its gate. No database work happens here (the worker's main
thread claims rows and writes results).
"""

from __future__ import annotations

import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

from ..backends.base import BaseBackend, OutgoingSMS, SendResult, SendStatus
from ..exceptions import SMSError
from ..models import Message
from ..ratelimit import get_rate_limiter
from .lookups import look_up, needs_lookup

logger = logging.getLogger("crm_sms.outbox")


class ProviderGate:
    """Keeps a provider-wide failure (wrong password, IP not allowed) from costing more than
    PAUSE_AFTER requests: until the provider has accepted (or refused) one message, at most
    PAUSE_AFTER - errors requests may be in flight; after PAUSE_AFTER provider errors in a
    row the gate trips and the jobs submitted before that are given back unsent."""

    def __init__(self, pause_after: int):
        self.pause_after = max(1, pause_after)
        self.cond = threading.Condition()
        self.proven = False
        self.errors = 0
        self.inflight = 0
        self.generation = 0
        self.tripped_upto = -1
        self.reason = ""
        self.trip_recorded = False  # the pause it caused is written: a new probe may start

    @property
    def tripped(self) -> bool:
        return self.tripped_upto >= self.generation

    def enter(self, generation: int, stop: threading.Event) -> bool:
        """Wait for a slot for a request of ``generation``; False when tripped or stopping."""
        with self.cond:
            while True:
                if generation <= self.tripped_upto or stop.is_set():
                    return False
                if self.proven or self.inflight + self.errors < self.pause_after:
                    self.inflight += 1
                    return True
                self.cond.wait(0.1)

    def leave(self, result: SendResult | None, generation: int) -> bool:
        """Record a job's result; True when the gate is tripped for its generation."""
        with self.cond:
            self.inflight -= 1
            if result is not None:
                if result.status is SendStatus.PROVIDER_ERROR:
                    self.proven = False
                    self.errors += 1
                    self.reason = result.error_message or result.error_code
                    if self.errors >= self.pause_after and self.tripped_upto < self.generation:
                        self.tripped_upto = self.generation
                        self.trip_recorded = False
                elif result.status in (SendStatus.ACCEPTED, SendStatus.REJECTED):
                    self.proven = True
                    self.errors = 0
            self.cond.notify_all()
            return generation <= self.tripped_upto

    def rearm(self) -> None:
        """Once the trip is recorded (campaigns paused, single messages backed off): allow a
        new probe for the messages claimed from now on."""
        with self.cond:
            if self.tripped and self.trip_recorded:
                self.generation += 1
                self.errors = 0
                self.proven = False
            self.cond.notify_all()


@dataclass
class Job:
    """A claimed message on its way: what to send, through which backend, and what came of it."""

    message: Message
    sms: OutgoingSMS
    backend: BaseBackend | None
    generation: int
    config_error: str = ""
    result: SendResult | None = None
    given_back: str = ""  # why it was not sent
    tripped: bool = False  # a provider-wide failure stopped this provider's sending
    trip_reason: str = ""
    # As claimed: the message instance is updated when results are written.
    claimed_at: datetime | None = None
    attempts: int = 0
    # What asking the provider first found (``lookups``: found, not_found, unknown), or "".
    lookup: str = ""

    def __post_init__(self) -> None:
        self.claimed_at = self.message.claimed_at
        self.attempts = self.message.attempts


def group_jobs(jobs: list[Job]) -> list[list[Job]]:
    """``jobs`` as pool tasks: up to the backend's ``max_batch_size`` messages of one provider
    per task (one request for many recipients), one per task where it takes one at a time."""
    groups: list[list[Job]] = []
    open_groups: dict[tuple[str, int], list[Job]] = {}
    for job in jobs:
        size = int(getattr(job.backend, "max_batch_size", 1) or 1)
        if size <= 1:
            groups.append([job])
            continue
        key = (job.message.provider, job.generation)
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(job)
    return groups


def send_group(jobs: list[Job], gate: ProviderGate, stop: threading.Event) -> list[Job]:
    """Runs in a pool thread: one request for ``jobs`` (one provider), no database. The
    provider gate counts the group as one request; each message uses a rate-limit slot."""
    first = jobs[0]
    backend = first.backend
    if backend is None:
        for job in jobs:
            job.result = SendResult(
                SendStatus.PROVIDER_ERROR,
                error_code="configuration",
                error_message=job.config_error,
            )
        return jobs
    if not gate.enter(first.generation, stop):
        tripped = first.generation <= gate.tripped_upto
        for job in jobs:
            job.given_back = "provider_error" if tripped else "stopping"
            if tripped:
                job.tripped, job.trip_reason = True, gate.reason
        return jobs
    answer = None  # what the gate learns from this request
    try:
        limiter = get_rate_limiter(backend.alias, backend.rate_limit)
        # A place per message, held until the request is answered: the provider never sees
        # more than RATE_LIMIT in a second, however late the request reaches it.
        with limiter.hold(len(jobs), stop) if limiter else nullcontext(True) as granted:
            if not granted:
                for job in jobs:
                    job.given_back = "stopping"
                return jobs
            results = request(backend, jobs)
        for job, result in zip(jobs, results, strict=True):
            job.result = result
        answer = gate_answer(results)
    finally:
        if gate.leave(answer, first.generation):
            for job in jobs:
                job.tripped, job.trip_reason = True, gate.reason
    return jobs


def request(backend: BaseBackend, jobs: list[Job]) -> list[SendResult]:
    """One result per job. A job whose last attempt may have reached a provider that can be
    asked is looked up first and sent only if the provider does not have it
    (``lookups.look_up``); the rest are sent (``send_jobs``)."""
    if not any(needs_lookup(job) for job in jobs):
        return send_jobs(backend, jobs)
    settled, to_send = look_up(backend, jobs)
    sent = iter(send_jobs(backend, to_send) if to_send else ())
    return [settled[id(job)] if id(job) in settled else next(sent) for job in jobs]


def send_jobs(backend: BaseBackend, jobs: list[Job]) -> list[SendResult]:
    """One result per job: ``send`` for one message, ``send_many`` for several. A backend that
    raises (or answers with the wrong number of results) gets every job retried: a backend bug
    must not lose a message or stop the worker."""
    try:
        if len(jobs) == 1:
            return [backend.send(jobs[0].sms)]
        results = list(backend.send_many([job.sms for job in jobs]))
        if len(results) != len(jobs):
            raise SMSError(f"send_many returned {len(results)} results for {len(jobs)} messages")
        return results
    except Exception as exc:
        logger.exception(
            "Backend %r failed on %d message(s), msg_id %s",
            backend,
            len(jobs),
            ", ".join(job.sms.msg_id for job in jobs[:3]) + (", ..." if len(jobs) > 3 else ""),
        )
        error = f"{type(exc).__name__}: {exc}"[:500]
        return [
            SendResult(SendStatus.RETRY, error_code="exception", error_message=error) for _ in jobs
        ]


def gate_answer(results: list[SendResult]) -> SendResult | None:
    """What one request tells the provider gate: any accepted or rejected message proves the
    provider works; else a provider error counts once; else (retries) nothing is learned."""
    for result in results:
        if result.status in (SendStatus.ACCEPTED, SendStatus.REJECTED):
            return result
    for result in results:
        if result.status is SendStatus.PROVIDER_ERROR:
            return result
    return results[0] if results else None
