"""Queueing: ``send_sms`` (one message), ``send_campaign`` (a template to many rows) and
``preview_campaign`` (the same selection, storing nothing).

Everything is checked before anything is stored; messages are created ``queued`` with a fresh
``msg_id`` (a campaign's in bulk, in one transaction with the campaign), and the worker sends them.
The stored text is the rendered one after transliteration (``translit=True``) and smart encoding
(on unless ``smart_encoding=False``): ``crm_sms.translit``. The preview counts the SMS parts
before and after, and estimates the cost when the provider has a ``?price=`` (``crm_sms.costs``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from ..bulk import RowInserter
from ..costs import backend_price, estimate_cost
from ..models import Campaign, CampaignStatus, Contact, Message, MessageStatus, new_msg_ids
from ..phones import normalize_phone
from ..text import sms_info
from ..translit import prepare_text
from .claiming import claim_messages
from .recipients import (
    Recipient,
    Selection,
    cached_sms_info,
    iter_recipients,
    no_recipients_error,
    opted_out_error,
    prepare_selection,
    resolve_provider,
    resolve_sender,
)

logger = logging.getLogger("crm_sms.outbox")

#: Rows per INSERT when queuing a campaign.
INSERT_BATCH = 2000


def send_sms(
    to: Any,
    text: str,
    *,
    sender: str | None = None,
    provider: str | None = None,
    contact: Contact | None = None,
    now: bool = False,
    translit: bool = False,
    smart_encoding: bool = True,
) -> Message:
    """Queue one SMS to ``to`` (any common phone notation) and return its Message.

    Everything is checked first: the provider alias, the phone, the text and the sender against
    the provider's rules, and that the contact (given, or found by the phone) has not opted out.
    A problem raises ValidationError before anything is stored or sent. With ``now=True`` the
    message is sent in this process through the worker's code path, and the Message comes back
    with its send status (``sent``, ``failed``, or ``queued`` for a retry later). ``translit``
    writes Cyrillic in Latin letters; ``smart_encoding`` replaces look-alike punctuation when
    that makes the text GSM-7 (``crm_sms.translit.prepare_text``): the Message holds the result.
    """
    alias, backend = resolve_provider(provider)
    phone = normalize_phone(to)
    text = prepare_text(text, translit=translit, smart_encoding=smart_encoding)
    backend.validate_text(text)
    sender = resolve_sender(backend, sender)
    if contact is None:
        contact = Contact.objects.filter(phone=phone).first()
    if contact is not None and contact.opted_out:
        raise opted_out_error(phone)
    message = Message.objects.create(
        contact=contact,
        phone=phone,
        text=text,
        sender=sender,
        provider=alias,
        status=MessageStatus.QUEUED,
        segments=sms_info(text).segments,
    )
    if now:
        return send_now(message)
    return message


def send_now(message: Message) -> Message:
    """Send one queued message in this process (the worker's code path); returns it refreshed."""
    from .worker import process_outbox  # the worker imports this package's claiming

    claimed = claim_messages(Message.objects.filter(pk=message.pk), limit=1)
    if claimed:
        process_outbox().send_batch(claimed)
    message.refresh_from_db()
    return message


@dataclass
class CampaignPreview:
    """What ``send_campaign`` would do: recipients, exclusions, sample texts, SMS parts, cost.

    Each sample has ``label``, ``phone``, ``text`` and ``info`` (what is sent: ``SMSInfo``),
    and ``original`` and ``original_info`` (the rendered text before transliteration and smart
    encoding; the same as ``text`` and ``info`` when nothing changed), and ``changed``.
    """

    recipients: int
    excluded: dict[str, int]
    samples: list[dict[str, Any]]
    total_segments: int  # SMS parts of what is sent (the same as segments_after)
    sender: str
    provider: str
    #: SMS parts the rendered texts would take as written, before the transformations.
    segments_before: int = 0
    #: Recipients whose text the transformations changed.
    changed: int = 0
    translit: bool = False
    smart_encoding: bool = True
    #: The provider's price of one SMS part (``?price=``), or None when it has none.
    price: Decimal | None = None
    currency: str = ""
    #: ``total_segments`` x ``price``; None without a price.
    estimated_cost: Decimal | None = None

    @property
    def segments_after(self) -> int:
        return self.total_segments

    @property
    def estimated_cost_before(self) -> Decimal | None:
        """What the texts as written would cost (to show what the transformations save)."""
        return None if self.price is None else self.price * self.segments_before


def preview_campaign(
    contacts: Any,
    text: str,
    *,
    sender: str | None = None,
    provider: str | None = None,
    phone_field: str = "phone",
    variables: dict[str, str] | None = None,
    sample_size: int = 5,
    translit: bool = False,
    smart_encoding: bool = True,
) -> CampaignPreview:
    """Count recipients, exclusions and SMS parts (before and after ``translit`` and
    ``smart_encoding``), estimate the cost and render samples, storing nothing.

    Uses the same selection as ``send_campaign`` (so the counts match what it will queue);
    raises ValidationError for a bad template, sender or provider. Rows are streamed.
    """
    sel = prepare_selection(
        contacts,
        text,
        sender=sender,
        provider=provider,
        phone_field=phone_field,
        variables=variables,
        translit=translit,
        smart_encoding=smart_encoding,
    )
    samples: list[dict[str, Any]] = []
    after = before = changed = 0
    for recipient in iter_recipients(sel, contacts):
        info = original_info = cached_sms_info(recipient.text)
        if recipient.original != recipient.text:
            original_info = cached_sms_info(recipient.original)
            changed += 1
        after += info.segments
        before += original_info.segments
        if len(samples) < sample_size:
            samples.append(_sample(recipient, info, original_info))
    price = backend_price(sel.backend)
    return CampaignPreview(
        recipients=sel.recipients,
        excluded=dict(sel.excluded),
        samples=samples,
        total_segments=after,
        sender=sel.sender,
        provider=sel.alias,
        segments_before=before,
        changed=changed,
        translit=translit,
        smart_encoding=smart_encoding,
        price=price.amount if price else None,
        currency=price.currency if price else "",
        estimated_cost=estimate_cost(after, price),
    )


def _sample(recipient: Recipient, info: Any, original_info: Any) -> dict[str, Any]:
    return {
        "label": recipient.label,
        "phone": recipient.phone,
        "text": recipient.text,
        "info": info,
        "original": recipient.original,
        "original_info": original_info,
        "changed": recipient.original != recipient.text,
    }


def send_campaign(
    contacts: Any,
    text: str,
    *,
    name: str | None = None,
    sender: str | None = None,
    provider: str | None = None,
    scheduled_at: datetime | None = None,
    created_by: Any = None,
    phone_field: str = "phone",
    variables: dict[str, str] | None = None,
    translit: bool = False,
    smart_encoding: bool = True,
) -> Campaign:
    """Create a campaign of ``text`` (a template) to the rows of ``contacts`` and queue it.

    The template is checked once, then rendered per row; opted-out rows, invalid and duplicate
    phones are left out and counted on ``campaign.excluded`` (``recipients_count`` holds the
    rest). Messages are inserted in bulk, in one transaction with the campaign: on any error
    nothing is stored. With ``scheduled_at`` in the future the campaign is ``scheduled`` and
    ``start_due_campaigns`` starts it; otherwise it is ``running`` at once. Raises
    ValidationError for a bad template, sender or provider, or when nobody would get the text.
    Rendered texts are stored as ``translit.prepare_text(translit, smart_encoding)`` makes them.
    """
    sel = prepare_selection(
        contacts,
        text,
        sender=sender,
        provider=provider,
        phone_field=phone_field,
        variables=variables,
        translit=translit,
        smart_encoding=smart_encoding,
    )
    now = timezone.now()
    if scheduled_at is not None and timezone.is_naive(scheduled_at):
        scheduled_at = timezone.make_aware(scheduled_at)
    scheduled = scheduled_at is not None and scheduled_at > now
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name
            or _("SMS %(date)s") % {"date": timezone.localtime(now).strftime("%Y-%m-%d %H:%M")},
            text=text,
            sender=sel.sender,
            provider=sel.alias,
            status=CampaignStatus.SCHEDULED if scheduled else CampaignStatus.RUNNING,
            scheduled_at=scheduled_at,
            created_by=created_by,
            started_at=None if scheduled else now,
        )
        due = scheduled_at if scheduled else now
        segments = _insert_messages(campaign, sel, iter_recipients(sel, contacts), due, now)
        if not sel.recipients:
            raise no_recipients_error(sel)
        campaign.recipients_count = sel.recipients
        campaign.excluded = dict(sel.excluded)
        extra = _snapshot(campaign, sel, segments)
        campaign.save(update_fields=["recipients_count", "excluded", *extra])
    _log_queued(campaign, sel, scheduled_at if scheduled else None)
    return campaign


def _log_queued(campaign: Campaign, sel: Selection, scheduled_at: datetime | None) -> None:
    logger.info(
        "Campaign %s queued: %d messages, excluded %s%s",
        campaign.pk,
        sel.recipients,
        sel.excluded,
        f", scheduled at {scheduled_at:%Y-%m-%d %H:%M %Z}" if scheduled_at else "",
    )


def _snapshot(campaign: Campaign, sel: Selection, segments: int) -> list[str]:
    """Set the campaign's record of how its texts were made and what they were estimated to
    cost, for the fields its model has (``translit``, ``smart_encoding``, ``part_price``,
    ``currency``, ``estimated_cost``); the names of the fields set."""
    price = backend_price(sel.backend)
    values = {
        "translit": sel.translit,
        "smart_encoding": sel.smart_encoding,
        "part_price": price.amount if price else None,
        "currency": price.currency if price else "",
        "estimated_cost": estimate_cost(segments, price),
    }
    names = {f.name for f in Campaign._meta.concrete_fields}
    fields = [name for name in values if name in names]
    for name in fields:
        setattr(campaign, name, values[name])
    return fields


def _insert_messages(
    campaign: Campaign,
    sel: Selection,
    recipients: Any,
    due: datetime,
    now: datetime,
) -> int:
    """INSERT a ``queued`` Message per recipient, each with a fresh msg_id, ``INSERT_BATCH``
    rows at a time (the ORM's bulk_create dominated a 100,000-message campaign); returns the
    SMS parts inserted."""
    inserter = RowInserter(
        Message,
        {
            "status": MessageStatus.QUEUED,
            "provider_message_id": "",
            "error_code": "",
            "error_message": "",
            "attempts": 0,
            "claimed_at": None,
            "sent_at": None,
            "delivered_at": None,
            "updated_at": now,
            "last_response": None,
            "campaign": campaign.pk,
            "sender": sel.sender,
            "provider": sel.alias,
            "next_attempt_at": due,
            "created_at": now,
        },
        ["contact", "phone", "text", "segments", "msg_id"],
    )
    batch: list[Recipient] = []
    segments = 0

    def flush() -> None:
        rows = [
            (r.contact_id, r.phone, r.text, cached_sms_info(r.text).segments, msg_id)
            for r, msg_id in zip(batch, new_msg_ids(len(batch)), strict=True)
        ]
        inserter.insert(rows)
        batch.clear()
        nonlocal segments
        segments += sum(row[3] for row in rows)

    for recipient in recipients:
        batch.append(recipient)
        if len(batch) >= INSERT_BATCH:
            flush()
    if batch:
        flush()
    return segments
