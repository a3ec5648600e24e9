"""Failover: a provider that fails hands its queued messages to the next one.

``CRM_SMS["FAILOVER"]`` (env ``SMS_FAILOVER=default,reserve``) lists provider aliases in order
of preference. A message moves from its provider to the next configured alias of the list:

- **the provider refuses it provider-wide** (``PROVIDER_ERROR``: wrong credentials, MegaFon
  1281, a wrong address) or **for a route reason** (``BaseBackend.is_route_refusal``: MegaFon
  1288 region not available, 1281 routing/IP rules): that message moves instead of being
  retried there or failing; the others of the batch stay.
- **the provider's gate trips** (``PAUSE_AFTER`` provider errors in a row): the batch's refused
  and given-back messages move, then every other queued message of that provider (single ones
  and those of running campaigns, ``hand_over``); their campaigns keep running instead of
  pausing. Without a next provider they pause as before.

Never moved: a message that may already be at its provider (``maybe_sent``, or this attempt's
answer was lost), ``uncertain`` or ``sending`` ones, those of a cancelled campaign, and a paused
or scheduled campaign's queue. A campaign's message that may be at a refusing provider stays
there: it is tried there again with its msg_id after a backoff, each provider error using an
attempt (its campaign no longer pauses to stop the retries), and is ``failed`` when they run
out, for "Retry failed" once the provider works again.

Each move gives the message a **new msg_id** (MegaFon de-duplicates by msg_id: ours is per
provider, and the unique constraint holds), sets ``provider``, ``moved_from`` and
``move_reason``, and is one event with the reason; its payload names both providers and both
msg_ids. A queued message's move is ``queued`` -> ``queued`` (a row of ``transitions``); a
message of the batch moves with its attempt's own event (``sending`` -> ``queued``).

Once only: the queue is moved in chunks, each locking its rows (``SKIP LOCKED`` on PostgreSQL;
SQLite's writers take turns) and writing only rows still ``queued`` at the old provider
(``move_messages(where=("provider", "maybe_sent"))``): two workers that trip at once move each
message once. Never back: the list is followed one way, so two providers cannot trade messages.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext_noop

from .. import conf
from ..backends.base import SendStatus
from ..bulk import update_rows
from ..event_text import EventText
from ..models import CampaignStatus, EventSource, Message, MessageStatus, new_msg_ids
from ..quiet_hours import clamp_retry
from ..transitions import MessageMove, move_messages
from .claiming import running_campaigns

if TYPE_CHECKING:
    from .pool import Job
    from .worker import DispatchSummary

logger = logging.getLogger("crm_sms.outbox")

QUEUED, FAILED = MessageStatus.QUEUED, MessageStatus.FAILED
#: Queued messages moved per transaction by ``hand_over``.
CHUNK = 1000
#: ``Message.move_reason`` is cut to this many characters.
REASON_LENGTH = 500


@dataclass(frozen=True)
class Handover:
    """A tripped provider ``old`` whose queue goes to ``new``, because of ``reason``."""

    old: str
    new: str
    reason: str
    error_code: str = ""


def next_provider(alias: str, chain: Sequence[str] | None = None) -> str | None:
    """The provider after ``alias`` in ``CRM_SMS["FAILOVER"]`` (``chain``) that is configured,
    or None (``alias`` is not in the list, or nothing configured follows it)."""
    chain = conf.failover_chain() if chain is None else list(chain)
    if alias not in chain:
        return None
    configured = set(conf.provider_aliases())
    for candidate in chain[chain.index(alias) + 1 :]:
        if candidate in configured:
            return candidate
    return None


def failover_payload(
    old: str, new: str, old_msg_id: str, new_msg_id: str, reason: str, error_code: str
) -> dict[str, Any]:
    """What a move's event keeps: both providers, both msg_ids, the reason and its code."""
    return {
        "failover": {
            "from": old,
            "to": new,
            "old_msg_id": old_msg_id,
            "new_msg_id": new_msg_id,
            "reason": reason,
            "error_code": error_code,
        }
    }


def moved_description(old: str, new: str, reason: str) -> str:
    return EventText(
        gettext_noop("Moved from %(old)s to %(new)s with a new msg_id: %(reason)s"),
        old=old,
        new=new,
        reason=reason or EventText(gettext_noop("the provider refuses all messages")),
    )


# --- a batch of results (called by results.write_results, inside its transaction) ---------


def reroute(
    jobs: list[Job],
    moves: list[MessageMove],
    pause: dict[int, str],
    campaigns: dict[int, str],
    summary: DispatchSummary,
) -> list[Handover]:
    """Rewrite the batch's ``moves`` of messages refused for a route reason, or refused or
    given back by a tripped provider, into moves to the next provider; take the campaigns
    whose tripped providers all hand over out of ``pause``. Returns the tripped providers
    whose remaining queues ``hand_over_queues`` moves once the batch is written."""
    chain = conf.failover_chain()
    if len(chain) < 2:
        return []
    by_pk = {job.message.pk: job for job in jobs}
    targets = {alias: next_provider(alias, chain) for alias in {j.message.provider for j in jobs}}
    handovers: dict[str, Handover] = {}
    now = timezone.now()
    for move in moves:
        job = by_pk.get(move.message.pk)
        target = targets[job.message.provider] if job is not None else None
        why = _why_moved(job, move) if job is not None and target is not None else None
        if job is None or target is None or why is None:
            continue
        provider, (reason, code, kind) = job.message.provider, why
        if kind == TRIPPED:
            handovers.setdefault(provider, Handover(provider, target, reason, code))
        if campaigns.get(job.message.campaign_id) == CampaignStatus.CANCELLED:
            continue  # cancel is final (settle_cancelled)
        if job.message.maybe_sent or move.values.get("maybe_sent"):
            if job.message.campaign_id and move.new == QUEUED:
                _stay(move, job, target, now, summary)
            continue
        if move.new == FAILED:
            summary.failed -= 1
            summary.retried += 1
        _move_over(move, target, reason, code, now)
    _keep_running(jobs, pause, handovers)
    return list(handovers.values())


#: Why a message of the batch moves on (``_why_moved``): its provider tripped (the rest of its
#: queue follows), refused it for a route reason, or refused it provider-wide (PROVIDER_ERROR).
TRIPPED, ROUTE, ERROR = "tripped", "route", "error"


def _tripped(job: Job) -> bool:
    """A message refused by, or given back unsent from, a provider whose gate tripped."""
    return job.tripped and (job.result is None or job.result.status is SendStatus.PROVIDER_ERROR)


def _why_moved(job: Job, move: MessageMove) -> tuple[str, str, str] | None:
    """(reason, error code, TRIPPED/ROUTE/ERROR) when ``job``'s message is a failover case;
    None when its result has nothing to do with its provider."""
    if move.new not in (QUEUED, FAILED):
        return None
    result = job.result
    code = str(result.error_code or "") if result is not None else ""
    if _tripped(job):
        reason = job.trip_reason or (result.error_message if result is not None else "")
        return reason or code, code, TRIPPED
    if result is None:
        return None
    backend = job.backend
    if backend is not None and backend.is_route_refusal(result):
        return result.error_message or code, code, ROUTE
    if result.status is SendStatus.PROVIDER_ERROR:
        return result.error_message or code, code, ERROR
    return None


def _move_over(move: MessageMove, target: str, reason: str, code: str, now: datetime) -> None:
    """Make ``move`` a move to ``queued`` at ``target`` with a new msg_id, due now."""
    message = move.message
    [new_id] = new_msg_ids(1)
    move.payload = {
        **failover_payload(message.provider, target, message.msg_id, new_id, reason, code),
        "response": move.payload,
    }
    move.new = QUEUED
    move.values.update(
        provider=target,
        msg_id=new_id,
        moved_from=message.provider,
        move_reason=reason[:REASON_LENGTH],
        maybe_sent=False,
        provider_message_id="",
        claimed_at=None,
        next_attempt_at=now,
    )
    clamp_retry(message, move.values)  # its send window still holds
    move.description = moved_description(message.provider, target, reason)


def _stay(
    move: MessageMove, job: Job, target: str, now: datetime, summary: DispatchSummary
) -> None:
    """A campaign's message that may be at its refusing provider stays there while the
    campaign goes on at ``target``. It is tried there again with its msg_id after a backoff,
    each try an attempt (else the worker would spin on a provider that refuses everything);
    when they run out it is ``failed``, still ``maybe_sent``: "Retry failed" sends it again,
    with the same msg_id, once the provider is fixed."""
    from .results import retry_delay

    message, attempts = move.message, job.attempts + 1
    names = {"old": message.provider, "new": target}
    move.values["attempts"] = attempts
    if attempts >= int(conf.get_setting("MAX_ATTEMPTS")):
        move.new = FAILED
        move.values.pop("next_attempt_at", None)
        summary.failed += 1
        if job.result is None:
            summary.given_back -= 1
        else:
            summary.retried -= 1
        text = gettext_noop(
            "%(old)s refuses all messages and this one may have reached it already, so it is "
            "not moved to %(new)s; retries exhausted: retry it once %(old)s works again"
        )
        move.description = EventText(text, **names)
        return
    move.values["next_attempt_at"] = now + timedelta(seconds=retry_delay(attempts))
    clamp_retry(message, move.values)
    text = gettext_noop(
        "%(old)s refuses all messages; this one may have reached it already, so it is not "
        "moved to %(new)s and is tried at %(old)s again later"
    )
    move.description = EventText(text, **names)


def _keep_running(jobs: list[Job], pause: dict[int, str], handovers: dict[str, Handover]) -> None:
    """Campaigns in ``pause`` whose every tripped provider in this batch hands over go on."""
    if not handovers or not pause:
        return
    tripped_at: dict[int, set[str]] = {}
    for job in jobs:
        campaign_id = job.message.campaign_id
        if campaign_id in pause and _tripped(job):
            tripped_at.setdefault(campaign_id, set()).add(job.message.provider)
    for campaign_id, providers in tripped_at.items():
        if providers <= handovers.keys():
            del pause[campaign_id]


# --- the rest of a tripped provider's queue -------------------------------------------------


def hand_over_queues(handovers: Sequence[Handover]) -> int:
    """Move the queues of ``handovers``' providers (after the batch that tripped them is
    written); returns how many messages moved."""
    total = 0
    for handover in handovers:
        moved = hand_over(handover.old, handover.new, handover.reason, handover.error_code)
        if moved:
            logger.warning(
                "Failover: moved %d queued message(s) from provider %s to %s: %s",
                moved,
                handover.old,
                handover.new,
                handover.reason,
            )
        total += moved
    return total


def movable(old: str) -> QuerySet[Message]:
    """Queued messages of provider ``old`` that may move: none that may be there already,
    single ones and those of running campaigns."""
    return Message.objects.filter(status=QUEUED, provider=old, maybe_sent=False).filter(
        Q(campaign__isnull=True) | Q(campaign_id__in=running_campaigns())
    )


def hand_over(
    old: str,
    new: str,
    reason: str,
    error_code: str = "",
    *,
    now: datetime | None = None,
    chunk: int = CHUNK,
) -> int:
    """Move every ``movable`` message of provider ``old`` to ``new`` (a new msg_id each, an
    event each), ``chunk`` per transaction; returns how many moved. Safe to run in several
    processes at once: each message moves once."""
    total = 0
    while True:
        moved, seen = _hand_over_chunk(old, new, reason, error_code, now or timezone.now(), chunk)
        total += moved
        if seen < chunk or not moved:
            return total


def _hand_over_chunk(
    old: str, new: str, reason: str, error_code: str, now: datetime, chunk: int
) -> tuple[int, int]:
    """One transaction of ``hand_over``: (messages moved, messages read)."""
    with transaction.atomic():
        rows = movable(old).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        messages = list(rows.defer("text", "last_response")[:chunk])
        if not messages:
            return 0, 0
        values = {"provider": new, "moved_from": old, "move_reason": reason[:REASON_LENGTH]}
        description = moved_description(old, new, reason)
        moves = []
        for message, new_id in zip(messages, new_msg_ids(len(messages)), strict=True):
            payload = failover_payload(old, new, message.msg_id, new_id, reason, error_code)
            moves.append(
                MessageMove(
                    message,
                    QUEUED,
                    EventSource.RETRY,
                    dict(values),
                    description=description,
                    error_code=error_code[:50],
                    payload=payload,
                )
            )
        # Only rows still queued at ``old`` (and not maybe sent) move: a concurrent handover
        # or claim that got there first keeps them.
        moved = move_messages(moves, now=now, where=("provider", "maybe_sent"))
        new_ids = {m.message.pk: m.payload["failover"]["new_msg_id"] for m in moved}
        update_rows(Message, {pk: {"msg_id": msg_id} for pk, msg_id in new_ids.items()})
        for move in moved:
            move.message.msg_id = new_ids[move.message.pk]
    return len(moved), len(messages)
