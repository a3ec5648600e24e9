"""Asking the provider before a retry (``RetrySafety.LOOKUP`` backends).

A message whose last attempt may have reached the provider (``Message.maybe_sent``: its answer
was lost) is not sent again blindly. For a backend that can be asked (``lookup_sent``), the
next attempt asks first, in the pool thread, instead of sending:

- the provider has it (an ACCEPTED result, with its id): that is the attempt's result, the
  message is ``sent`` and nothing is sent again;
- the provider does not have it (None): it is sent as usual, in the same pool task;
- the provider cannot say (``ProviderError``, or any failure of the lookup): the attempt's
  result is a RETRY that keeps ``maybe_sent``, so the next attempt asks again after the backoff.

Backends that drop a repeat of our msg_id (``DEDUPLICATED``) are simply retried; for those that
can do neither (``NONE``) the results module makes the message ``uncertain``. No database work
happens here: the worker's main thread claimed the rows and writes the results.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from django.utils.translation import gettext as _

from ..backends.base import BaseBackend, RetrySafety, SendResult, SendStatus
from ..exceptions import ProviderError

if TYPE_CHECKING:
    from .pool import Job

logger = logging.getLogger("crm_sms.outbox")

#: ``Job.lookup``: what asking first found.
FOUND, NOT_FOUND, UNKNOWN = "found", "not_found", "unknown"
#: The error code of an attempt whose lookup could not be answered.
LOOKUP_FAILED = "lookup_failed"


def retry_safety(backend: BaseBackend | None) -> RetrySafety:
    """How a retry after an ambiguous failure stays safe with ``backend`` (NONE without one)."""
    return getattr(backend, "retry_safety", RetrySafety.NONE) or RetrySafety.NONE


def needs_lookup(job: Job) -> bool:
    """Whether ``job``'s attempt must ask the provider before sending."""
    return job.message.maybe_sent and retry_safety(job.backend) is RetrySafety.LOOKUP


def look_up(backend: BaseBackend, jobs: list[Job]) -> tuple[dict[int, SendResult], list[Job]]:
    """Ask the provider about the jobs that need it (``needs_lookup``); set their ``lookup``.
    Returns the results of the jobs this settled (by ``id(job)``) and the jobs to send."""
    settled: dict[int, SendResult] = {}
    to_send: list[Job] = []
    for job in jobs:
        if not needs_lookup(job):
            to_send.append(job)
            continue
        try:
            found = backend.lookup_sent(job.sms)
        except Exception as exc:  # the provider cannot say, or a backend bug: ask again later
            job.lookup = UNKNOWN
            settled[id(job)] = _unknown(backend, job, exc)
            continue
        if found is None:
            job.lookup = NOT_FOUND
            to_send.append(job)
        else:
            job.lookup = FOUND
            settled[id(job)] = found
    return settled, to_send


def _unknown(backend: BaseBackend, job: Job, exc: Exception) -> SendResult:
    """The result of an attempt whose lookup failed: retry later, still maybe sent."""
    if isinstance(exc, ProviderError) and isinstance(exc.result, SendResult):
        detail, raw = exc.result.error_message or str(exc), exc.result.raw
    else:
        logger.exception("%r: looking up msg_id %s failed", backend, job.sms.msg_id)
        detail, raw = f"{type(exc).__name__}: {exc}"[:500], None
    message = _(
        "Could not ask %(provider)s whether the message arrived (%(detail)s); it is not sent "
        "again until the provider answers."
    ) % {"provider": backend.display_name, "detail": detail}
    return SendResult(
        SendStatus.RETRY, error_code=LOOKUP_FAILED, error_message=message, raw=raw, ambiguous=True
    )
