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
    """Stop claiming the campaign's messages (those in flight finish). True if it was paused
    now; a campaign that is not running or scheduled is left alone."""
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
    """Cancel the campaign: its unsent (queued) messages become ``cancelled``. Messages already
    in flight finish. Returns how many messages were cancelled."""
    now = timezone.now()
    with transaction.atomic():
        move_campaigns(
            [campaign.pk], CampaignStatus.CANCELLED, actor=Actor.OPERATOR, finished_at=now
        )
        count = _move_campaign_messages(
            Message.objects.filter(campaign_id=campaign.pk),
            MessageStatus.QUEUED,
            MessageStatus.CANCELLED,
            _("Campaign cancelled"),
            now,
        )
    campaign.refresh_from_db()
    return count


def retry_failed(campaign: Campaign) -> int:
    """Queue the campaign's failed messages again (same msg_id, attempts reset) and set a
    completed or cancelled campaign running again. Returns how many were queued."""
    now = timezone.now()
    with transaction.atomic():
        count = _move_campaign_messages(
            Message.objects.filter(campaign_id=campaign.pk).exclude(
                contact_id__in=Contact.objects.filter(opted_out=True).values("pk")
            ),
            MessageStatus.FAILED,
            MessageStatus.QUEUED,
            _("Queued again after failure"),
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
            old=[CampaignStatus.COMPLETED, CampaignStatus.CANCELLED],
            finished_at=None,
        )
    campaign.refresh_from_db()
    return count


def resend_message(message: Message) -> Message:
    """Send a message again and return the Message that will be sent.

    If the provider never accepted it (``failed``/``cancelled``, no provider id), a new Message
    with a new msg_id is queued (the old one stays as history). If the provider did accept it,
    the same row is queued again with the same msg_id: the provider's de-duplication answers
    "already accepted", so the subscriber never gets a second copy from this system.
    """
    message.refresh_from_db()
    if message.status in ACTIVE_STATUSES:
        raise ValidationError(_("This message is already waiting to be sent."), code="active")
    if message.contact_id and Contact.objects.filter(pk=message.contact_id, opted_out=True):
        raise opted_out_error(message.phone)
    now = timezone.now()
    accepted = bool(message.provider_message_id or message.sent_at) or message.status not in (
        MessageStatus.FAILED,
        MessageStatus.CANCELLED,
    )
    with transaction.atomic():
        if accepted:
            move = MessageMove(
                message,
                MessageStatus.QUEUED,
                EventSource.ADMIN,
                {"attempts": 0, "next_attempt_at": now, "claimed_at": None},
                description=_("Resend requested (same msg_id)"),
            )
            if not move_messages([move], now=now, where=()):
                message.refresh_from_db()  # it moved meanwhile: report what it is now
            result = message
        else:
            result = Message.objects.create(
                campaign_id=message.campaign_id,
                contact_id=message.contact_id,
                phone=message.phone,
                text=message.text,
                sender=message.sender,
                provider=message.provider,
                segments=message.segments,
                status=MessageStatus.QUEUED,
            )
        if message.campaign_id:
            move_campaigns(
                [message.campaign_id],
                CampaignStatus.RUNNING,
                actor=Actor.OPERATOR,
                old=[CampaignStatus.COMPLETED],
                finished_at=None,
            )
    return result


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
