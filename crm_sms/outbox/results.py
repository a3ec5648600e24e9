"""Writing send results: each finished job becomes a status move of its message (sent, failed,
queued again with a backoff, or ``uncertain`` when the answer was lost and the provider can
neither drop a repeat nor be asked), written in bulk with its event, in one transaction per batch.

A result is written only where the row is still ours (``sending`` with our claim time): a
delivery report that came first, a cancel or a take-back keeps its status (an accepted send
still fills in the provider's id and ``sent_at``). Campaigns whose provider refuses everything
are paused; campaigns with nothing left to send are completed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .. import conf
from ..backends.base import RetrySafety, SendResult, SendStatus
from ..events import jsonable
from ..models import CampaignStatus, EventSource, Message, MessageStatus
from ..quiet_hours import clamp_retry
from ..transitions import Actor, MessageMove, move_campaigns, move_messages
from . import failover
from .claiming import lock_campaigns, settle_cancelled
from .controls import complete_finished_campaigns
from .lookups import FOUND, NOT_FOUND, UNKNOWN, retry_safety
from .pool import Job, ProviderGate

if TYPE_CHECKING:
    from .worker import DispatchSummary

logger = logging.getLogger("crm_sms.outbox")

QUEUED, SENDING, SENT, FAILED, UNCERTAIN = (
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.FAILED,
    MessageStatus.UNCERTAIN,
)


def retry_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: RETRY_BACKOFF doubling per attempt, capped at
    RETRY_BACKOFF_MAX, with ±20% jitter so many retries do not arrive together."""
    base = float(conf.get_setting("RETRY_BACKOFF"))
    cap = float(conf.get_setting("RETRY_BACKOFF_MAX"))
    delay = min(base * 2 ** max(attempts - 1, 0), cap)
    return min(delay * random.uniform(0.8, 1.2), cap)


@dataclass
class Outcome:
    """What a result does to a message we still own: its new status, the fields to write,
    and the event's description."""

    status: str
    values: dict[str, Any]
    description: str  # English: crm_sms/event_text.py


def may_have_arrived(result: SendResult) -> bool:
    """Whether a failed attempt may have reached the provider (its answer was lost)."""
    return result.ambiguous and result.status in (SendStatus.RETRY, SendStatus.PROVIDER_ERROR)


def outcome(job: Job, now: datetime, max_attempts: int) -> Outcome:
    """The outcome of ``job``'s result (or of its being given back unsent).

    After an ambiguous failure (the request may have reached the provider) the message keeps
    ``maybe_sent``: a provider that drops repeats of our msg_id gets a retry as after any
    failure, one that can be asked is asked before the next attempt (``lookups``), and with
    any other the message becomes ``uncertain``, which the worker never sends again."""
    result = job.result
    if result is None:
        return _given_back(job, now)
    values: dict[str, Any] = {
        "last_response": jsonable(result.raw),
        "error_code": str(result.error_code or "")[:50],
        "error_message": result.error_message or "",
        "maybe_sent": may_have_arrived(result) or _still_maybe_sent(job, result),
    }
    attempts = job.attempts + 1
    if result.status is SendStatus.ACCEPTED:
        values.update(
            attempts=attempts,
            sent_at=now,
            provider_message_id=str(result.provider_message_id or "")[:100],
            error_code="",
            error_message="",
        )
        return Outcome(SENT, values, _accepted_description(job))
    if result.status is SendStatus.REJECTED:
        values["attempts"] = attempts
        return Outcome(FAILED, values, gettext_noop("Rejected"))
    if values["maybe_sent"] and retry_safety(job.backend) is RetrySafety.NONE:
        values["attempts"] = attempts
        return Outcome(UNCERTAIN, values, UNCERTAIN_DESCRIPTION)
    if result.status is SendStatus.PROVIDER_ERROR and job.message.campaign_id:
        # Not the message's fault: no attempt is used; the campaign pauses once the gate trips.
        if job.tripped:
            values["next_attempt_at"] = now
            return Outcome(QUEUED, values, gettext_noop("Provider error; the campaign is paused"))
        values["next_attempt_at"] = now + timedelta(seconds=retry_delay(1))
        return Outcome(QUEUED, values, gettext_noop("Provider error; will retry"))
    # RETRY, or a provider error of a single message: back off, until the attempts run out.
    values["attempts"] = attempts
    if attempts >= max_attempts:
        return Outcome(FAILED, values, gettext_noop("Retries exhausted"))
    values["next_attempt_at"] = now + timedelta(seconds=retry_delay(attempts))
    if job.lookup == UNKNOWN:
        return Outcome(
            QUEUED, values, gettext_noop("The provider could not say whether it has it; will ask")
        )
    return Outcome(QUEUED, values, WILL_RETRY)


#: The most frequent descriptions, lazy: a batch of events translates each once.
ACCEPTED = gettext_noop("Accepted")
WILL_RETRY = gettext_noop("Will retry")

#: The event of a message that became ``uncertain``.
UNCERTAIN_DESCRIPTION = gettext_noop(
    "Uncertain whether sent: the answer was lost after the request may have reached the "
    "provider, which cannot drop a repeat or be asked. Not sent again unless an operator "
    "confirms a resend (the subscriber may then get it twice)."
)


def _still_maybe_sent(job: Job, result: SendResult) -> bool:
    """An earlier attempt may have arrived and this failure does not say otherwise: a
    provider that drops repeats is never asked, so only its acceptance or refusal settles it
    (failover never moves such a message to another provider: ``failover``)."""
    return (
        job.message.maybe_sent
        and result.status in (SendStatus.RETRY, SendStatus.PROVIDER_ERROR)
        and retry_safety(job.backend) is RetrySafety.DEDUPLICATED
    )


def _accepted_description(job: Job) -> str:
    result = job.result
    if job.lookup == FOUND:
        return gettext_noop(
            "Found at the provider: the earlier attempt had arrived; not sent again"
        )
    if job.lookup == NOT_FOUND:
        return gettext_noop("Not found at the provider, so sent again: accepted")
    if result is not None and result.error_code:
        return gettext_noop("Accepted earlier (duplicate msg_id)")
    return ACCEPTED


def _given_back(job: Job, now: datetime) -> Outcome:
    """Not sent: the claim goes back without using an attempt."""
    delay = 0.0
    if job.given_back == "provider_error" and not job.message.campaign_id:
        delay = retry_delay(job.attempts + 1)
    if job.given_back == "stopping":
        description = gettext_noop("Not sent: the worker stopped")
    else:
        description = gettext_noop("Not sent: the provider refuses all messages")
    return Outcome(QUEUED, {"next_attempt_at": now + timedelta(seconds=delay)}, description)


@dataclass
class _Batch:
    """What writing one batch of results collects before it writes."""

    now: datetime
    max_attempts: int
    moves: list[MessageMove] = field(default_factory=list)
    pause: dict[int, str] = field(default_factory=dict)  # campaign id -> reason
    touched_campaigns: set[int] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)  # providers whose trip is written here


def write_results(
    jobs: list[Job], summary: DispatchSummary, gates: dict[str, ProviderGate]
) -> None:
    """Write the results of ``jobs`` back in bulk, with their events; count them on
    ``summary``; pause and complete campaigns accordingly."""
    if not jobs:
        return
    batch = _Batch(timezone.now(), int(conf.get_setting("MAX_ATTEMPTS")))
    with transaction.atomic():
        campaigns = lock_campaigns(job.message.campaign_id for job in jobs)  # before the rows
        current = _lock_rows(jobs)
        for job in jobs:
            _take(job, current.get(job.message.pk, (None, None)), batch, summary)
        # Failover: refused or tripped messages move to the next provider, not their campaign.
        handovers = failover.reroute(jobs, batch.moves, batch.pause, campaigns, summary)
        settle_cancelled(batch.moves, campaigns)
        move_messages(batch.moves, now=batch.now)
        _pause_campaigns(batch.pause, summary)
        summary.completed_campaigns += complete_finished_campaigns(
            batch.touched_campaigns - set(batch.pause), batch.now
        )
    failover.hand_over_queues(handovers)  # the rest of a tripped provider's queue
    for alias in batch.recorded:
        if alias in gates:
            gates[alias].trip_recorded = True


def _lock_rows(jobs: list[Job]) -> dict[int, tuple[str, datetime | None]]:
    """The jobs' rows as they are now (status, claimed_at), locked until the batch is written."""
    return {
        pk: (status, claimed_at)
        for pk, status, claimed_at in Message.objects.select_for_update()
        .filter(pk__in=[job.message.pk for job in jobs])
        .order_by("pk")
        .values_list("pk", "status", "claimed_at")
    }


def _take(
    job: Job, current: tuple[str | None, Any], batch: _Batch, summary: DispatchSummary
) -> None:
    """Add ``job``'s move to ``batch`` (or, for a row that moved on, just the provider's id)."""
    message, result = job.message, job.result
    status, claimed_at = current
    if job.tripped:
        batch.recorded.add(message.provider)
    if message.campaign_id:
        # Checked even when the row moved on: a delivery report may have finished the
        # campaign's last message before this result was written.
        batch.touched_campaigns.add(message.campaign_id)
    accepted = result is not None and result.status is SendStatus.ACCEPTED
    ours = status == SENDING and claimed_at == job.claimed_at
    if not ours and not (accepted and status == QUEUED):
        if accepted and status is not None:
            _fill_in_accepted(message.pk, result.provider_message_id, batch.now)
            summary.sent += 1
        elif result is not None and may_have_arrived(result):
            # It moved on meanwhile (a cancel, a take-back): a resend must still know.
            Message.objects.filter(pk=message.pk, provider_message_id="").update(maybe_sent=True)
        return
    found = outcome(job, batch.now, batch.max_attempts)
    found.values["claimed_at"] = None
    if found.status == QUEUED:  # a retry into the night waits for the window to open
        clamp_retry(message, found.values)
    _count(summary, found.status, result is None)
    if result is not None and result.status is SendStatus.PROVIDER_ERROR:
        logger.warning(
            "Provider %s refused msg_id %s: %s %s",
            message.provider,
            message.msg_id,
            result.error_code,
            result.error_message,
        )
    if (
        message.campaign_id
        and job.tripped
        and (result is None or result.status is SendStatus.PROVIDER_ERROR)
    ):
        batch.pause[message.campaign_id] = job.trip_reason
    attempts = found.values.get("attempts", message.attempts)
    batch.moves.append(
        MessageMove(
            message,
            found.status,
            EventSource.RETRY if attempts > 1 else EventSource.SEND,
            found.values,
            description=found.description,
            error_code=found.values.get("error_code", ""),
            payload=found.values.get("last_response"),
            old=status,
        )
    )


def _fill_in_accepted(pk: int, provider_message_id: Any, now: datetime) -> None:
    """A row that moved on meanwhile (a delivery report, a cancel, a take-back) keeps its
    status; an accepted send still tells us the provider's id and when it was sent."""
    Message.objects.filter(pk=pk, provider_message_id="").update(
        provider_message_id=str(provider_message_id or "")[:100]
    )
    Message.objects.filter(pk=pk, sent_at__isnull=True).update(sent_at=now)


def _count(summary: DispatchSummary, status: str, given_back: bool) -> None:
    if status == SENT:
        summary.sent += 1
    elif status == FAILED:
        summary.failed += 1
    elif status == UNCERTAIN:
        summary.uncertain += 1
    elif given_back:
        summary.given_back += 1
    else:
        summary.retried += 1


def _pause_campaigns(pause: dict[int, str], summary: DispatchSummary) -> None:
    """Pause the running campaigns whose provider refuses all messages."""
    for campaign_id, reason in pause.items():
        if move_campaigns(
            [campaign_id],
            CampaignStatus.PAUSED,
            actor=Actor.WORKER,
            pause_reason=reason or _("The provider refuses all messages."),
        ):
            summary.paused_campaigns.append(campaign_id)
            logger.error("Campaign %s paused: %s", campaign_id, reason)
