"""Campaign controls: pause, resume, cancel, retry failed messages, resend one message, start
scheduled campaigns, and complete the campaigns with nothing left to send.

Each status change goes through ``crm_sms.transitions`` (the operator's moves, the worker's
scheduled start and completion).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from ..event_text import EventText
from ..models import (
    ACTIVE_STATUSES,
    Campaign,
    CampaignStatus,
    Contact,
    EventSource,
    Message,
    MessageStatus,
)
from ..transitions import Actor, MessageMove, move_campaigns, move_messages
from . import resending
from .claiming import lock_campaigns
from .recipients import opted_out_error

logger = logging.getLogger("crm_sms.outbox")


def complete_finished_campaigns(
    campaign_ids: Iterable[int], now: datetime | None = None, *, actor: Actor = Actor.WORKER
) -> list[int]:
    """Mark the running campaigns among ``campaign_ids`` that have no queued or sending message
    left completed; returns their ids."""
    ids = set(campaign_ids)
    if not ids:
        return []
    # One indexed EXISTS per campaign (usually one or two per batch).
    done = [
        cid
        for cid in sorted(ids)
        if not Message.objects.filter(campaign_id=cid, status__in=ACTIVE_STATUSES).exists()
    ]
    if not done:
        return []
    return move_campaigns(
        done, CampaignStatus.COMPLETED, actor=actor, finished_at=now or timezone.now()
    )


def pause_campaign(campaign: Campaign, reason: str = "") -> bool:
    """Stop claiming the campaign's messages. True if it was paused now; a campaign that is
    not running or scheduled is left alone.

    No claim that starts after this commits takes its messages (the claim reads the
    campaign's status itself, ``claiming.due_messages``); messages already claimed finish, and
    those that come back (a retry, an expired claim) stay ``queued``, not due until resumed."""
    moved = move_campaigns(
        [campaign.pk], CampaignStatus.PAUSED, actor=Actor.OPERATOR, pause_reason=reason
    )
    campaign.refresh_from_db()
    return bool(moved)


def resume_campaign(campaign: Campaign) -> bool:
    """Continue a paused campaign where it stopped: its queued messages are due again.
    True if it was resumed."""
    now = timezone.now()
    with transaction.atomic():
        moved = move_campaigns(
            [campaign.pk],
            CampaignStatus.RUNNING,
            actor=Actor.OPERATOR,
            old=[CampaignStatus.PAUSED],
            pause_reason="",
        )
        if moved:
            Campaign.objects.filter(pk=campaign.pk, started_at__isnull=True).update(started_at=now)
            Message.objects.filter(
                campaign_id=campaign.pk, status=MessageStatus.QUEUED, next_attempt_at__gt=now
            ).update(next_attempt_at=now)
            complete_finished_campaigns([campaign.pk], now, actor=Actor.OPERATOR)
    campaign.refresh_from_db()
    return bool(moved)


def _move_campaign_messages(
    queryset: Any, old: str, new: str, description: str, now: datetime, **values: Any
) -> int:
    """Move the rows of ``queryset`` that are in status ``old`` to ``new`` (locked, conditional)
    with an admin event each. Call inside a transaction. Returns how many moved."""
    messages = queryset.select_for_update().filter(status=old).order_by("pk")
    moves = [
        MessageMove(message, new, EventSource.ADMIN, {"claimed_at": None, **values}, description)
        for message in messages.defer("text", "last_response")
    ]
    return len(move_messages(moves, now=now, where=()))


def cancel_campaign(campaign: Campaign) -> int:
    """Cancel the campaign, for good: its unsent (queued) messages become ``cancelled``.
    Messages in flight finish; those the provider does not accept (a retry, a claim given back
    or expired) become ``cancelled`` too, never ``queued`` (``claiming.settle_cancelled``).
    The campaign row is locked first, then its messages: the order every writer that looks at
    the campaign's status keeps (``claiming.lock_campaigns``). Returns how many messages were
    cancelled now."""
    now = timezone.now()
    with transaction.atomic():
        move_campaigns(
            [campaign.pk], CampaignStatus.CANCELLED, actor=Actor.OPERATOR, finished_at=now
        )
        count = _move_campaign_messages(
            Message.objects.filter(campaign_id=campaign.pk),
            MessageStatus.QUEUED,
            MessageStatus.CANCELLED,
            gettext_noop("Campaign cancelled"),
            now,
        )
        # Uncertain ones too (UNCERTAIN): nobody is to be asked to resend them any more.
        count += _move_campaign_messages(
            Message.objects.filter(campaign_id=campaign.pk),
            MessageStatus.UNCERTAIN,
            MessageStatus.CANCELLED,
            gettext_noop("Campaign cancelled"),
            now,
        )
    campaign.refresh_from_db()
    return count


def retry_failed(campaign: Campaign, *, seen_at: datetime | None = None) -> int:
    """Queue the campaign's failed messages again (same row and msg_id, attempts reset) and set
    a completed campaign running again. Returns how many were queued. A cancelled campaign is
    final: ValidationError (code ``campaign_cancelled``).

    Never an ``uncertain`` message, one already queued or sent, one of an opted-out contact, or
    a failed one whose last attempt may have reached a provider that can neither drop a repeat
    nor be asked (``maybe_sent``): those are resent one by one, with a confirmation.
    ``seen_at``: when the confirmation page was shown; a message that changed since (queued by
    a first click, failed again) is left, so a second POST of the same form does nothing."""
    now = timezone.now()
    failed = Message.objects.filter(campaign_id=campaign.pk).exclude(
        contact_id__in=Contact.objects.filter(opted_out=True).values("pk")
    )
    if seen_at is not None:
        failed = failed.filter(updated_at__lte=seen_at)
    maybe = failed.filter(status=MessageStatus.FAILED, maybe_sent=True).values_list("provider")
    unsafe = resending.unsafe_providers(alias for (alias,) in maybe.distinct())
    if unsafe:
        failed = failed.exclude(maybe_sent=True, provider__in=unsafe)
    with transaction.atomic():
        # The campaign first, then its messages: the order result writing and cancel use.
        status = lock_campaigns([campaign.pk]).get(campaign.pk)
        if status == CampaignStatus.CANCELLED:
            raise ValidationError(
                _("A cancelled campaign is final: its messages are not sent again."),
                code="campaign_cancelled",
            )
        count = _move_campaign_messages(
            failed,
            MessageStatus.FAILED,
            MessageStatus.QUEUED,
            gettext_noop("Queued again after failure (same msg_id)"),
            now,
            attempts=0,
            next_attempt_at=now,
            error_code="",
            error_message="",
        )
        if not count:
            return 0
        move_campaigns(
            [campaign.pk],
            CampaignStatus.RUNNING,
            actor=Actor.OPERATOR,
            old=[CampaignStatus.COMPLETED],
            finished_at=None,
        )
    campaign.refresh_from_db()
    return count


def resend_message(
    message: Message, *, confirmed: bool = False, token: str | None = None, by: str = ""
) -> Message:
    """Send ``message`` again: its own row is queued again with the same msg_id (there is
    never a second copy). Returns it, refreshed. The rules are ``resending.judge``'s:

    - a provider that drops repeats of our id (MegaFon) drops it if it had it; one that can be
      asked is asked first; a definite refusal is resent as a new attempt with the same id;
    - a message that may already be at a provider that can do neither (``uncertain``) needs
      ``confirmed=True``: the subscriber may get it twice;
    - ``token`` (``resending.state_token`` as the confirmation page showed it): the row is
      moved only while still in that state, so a repeated POST does nothing.

    Raises ValidationError (code ``active``, ``opted_out``, ``campaign_cancelled``,
    ``not_resendable``, ``needs_confirmation`` or ``changed``) and changes nothing then.
    ``by``: who asked, for the event."""
    now = timezone.now()
    with transaction.atomic():
        locked = Message.objects.select_for_update().get(pk=message.pk)
        if token is not None and resending.state_token(locked) != token:
            raise ValidationError(
                _("It changed since the confirmation page was shown; left as is."), code="changed"
            )
        verdict, code = _judge_resend(locked)
        if verdict is resending.Verdict.LEFT:
            if code == "opted_out":
                raise opted_out_error(locked.phone)
            raise ValidationError(resending.REASONS[code], code=code)
        if verdict is resending.Verdict.CONFIRM and not confirmed:
            raise ValidationError(
                _("Not resent without an explicit confirmation: %(reason)s.")
                % {"reason": resending.REASONS[code]},
                code="needs_confirmation",
            )
        _requeue(locked, verdict, now, by)
        if locked.campaign_id:
            move_campaigns(
                [locked.campaign_id],
                CampaignStatus.RUNNING,
                actor=Actor.OPERATOR,
                old=[CampaignStatus.COMPLETED],
                finished_at=None,
            )
    message.refresh_from_db()
    return message


def _judge_resend(message: Message) -> tuple[resending.Verdict, str]:
    opted_out = bool(
        message.contact_id and Contact.objects.filter(pk=message.contact_id, opted_out=True)
    )
    statuses = resending.campaign_statuses([message.campaign_id])
    return resending.judge(
        message,
        resending.safety_of(message.provider),
        opted_out=opted_out,
        campaign_status=statuses.get(message.campaign_id),
        accepted_too=True,
    )


def _requeue(message: Message, verdict: str, now: datetime, by: str) -> None:
    """Move the locked ``message`` to ``queued`` for a new attempt with the same msg_id."""
    if verdict == resending.Verdict.CONFIRM:
        description = gettext_noop("Resend confirmed (the subscriber may get it twice)")
    else:
        description = gettext_noop("Resend requested (same msg_id)")
    if by:
        description = EventText(
            gettext_noop("%(what)s by %(user)s"), what=EventText(description), user=by
        )
    maybe_sent = message.maybe_sent or message.status in (
        MessageStatus.UNCERTAIN,
        *resending.ACCEPTED_STATUSES,
    )
    values = {
        "attempts": 0,
        "next_attempt_at": now,
        "claimed_at": None,
        "error_code": "",
        "error_message": "",
        "maybe_sent": maybe_sent,  # a provider that can be asked is asked first
    }
    move = MessageMove(message, MessageStatus.QUEUED, EventSource.ADMIN, values, description)
    move_messages([move], now=now)


def start_due_campaigns(now: datetime | None = None) -> int:
    """Start scheduled campaigns whose time has come; returns how many were started."""
    now = now or timezone.now()
    started = move_campaigns(
        Campaign.objects.filter(scheduled_at__lte=now),
        CampaignStatus.RUNNING,
        actor=Actor.WORKER,
        started_at=now,
    )
    if not started:
        return 0
    # Due at once (``now`` may be given ahead of the clock: never push them into the future).
    due = min(now, timezone.now())
    Message.objects.filter(
        campaign_id__in=started, status=MessageStatus.QUEUED, next_attempt_at__gt=due
    ).update(next_attempt_at=due)
    logger.info("Started %d scheduled campaign(s)", len(started))
    return len(started)
