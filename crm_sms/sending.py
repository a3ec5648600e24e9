"""The outbox: queue messages, claim due ones, send them concurrently, record results, retry.

- ``send_sms`` and ``send_campaign`` validate everything first, then insert ``Message`` rows
  (status ``queued``, a fresh ``msg_id``) in bulk. ``preview_campaign`` runs the same selection
  without storing anything.
- A worker (``run_worker``, ``dispatch_due``, the Celery task) claims due rows in batches
  (``queued`` -> ``sending`` with ``claimed_at``; PostgreSQL ``SKIP LOCKED``, SQLite one writer),
  sends them from a thread pool through the provider's shared backend within its rate limit,
  and writes results back in bulk. A provider taking many recipients per request
  (``max_batch_size`` > 1, SMS.RU) gets up to that many messages in one ``send_many`` call.
  All database work happens in the worker's main thread; the pool threads only talk HTTP.
- Retryable failures go back to ``queued`` with exponential backoff and jitter, always with the
  same ``msg_id`` (the provider's de-duplication key), until ``MAX_ATTEMPTS``.
- A provider-wide failure (bad credentials, IP not allowed) pauses the campaign after at most
  ``PAUSE_AFTER`` requests instead of failing every message.
- Rows left ``sending`` longer than ``CLAIM_TIMEOUT`` (their worker died) are taken back.
- A send result is written only where the row is still ours (``sending`` with our claim time);
  a delivery report that arrived first keeps its status.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import random
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, TextIO

from django.core.exceptions import (
    FieldDoesNotExist,
    FieldError,
    ImproperlyConfigured,
    ValidationError,
)
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from . import conf
from .backends import get_backend
from .backends.base import BaseBackend, OutgoingSMS, SendResult, SendStatus, SMSError
from .bulk import insert_rows
from .events import jsonable, record_events
from .models import (
    Campaign,
    CampaignStatus,
    Contact,
    EventSource,
    Message,
    MessageEvent,
    MessageStatus,
    new_msg_ids,
)
from .phones import normalize_phone
from .ratelimit import get_rate_limiter
from .text import CONTACT_VARIABLES, SMSInfo, SMSTemplate, sms_info

logger = logging.getLogger("crm_sms.sending")

QUEUED, SENDING, SENT, FAILED, CANCELLED = (
    MessageStatus.QUEUED,
    MessageStatus.SENDING,
    MessageStatus.SENT,
    MessageStatus.FAILED,
    MessageStatus.CANCELLED,
)
ACTIVE_STATUSES = (QUEUED, SENDING)

#: Rows per INSERT when queuing a campaign.
INSERT_BATCH = 2000
#: How often a running worker takes back stale claims and starts scheduled campaigns, seconds.
HOUSEKEEPING_INTERVAL = 5.0
#: Results are written at least this often while sending, seconds.
FLUSH_INTERVAL = 0.5


# --- validation --------------------------------------------------------------------------


def resolve_provider(provider: str | None) -> tuple[str, BaseBackend]:
    """The provider alias and its backend; ValidationError when it is not configured."""
    alias = provider or conf.default_provider()
    providers = conf.get_setting("PROVIDERS")
    if alias not in providers:
        raise ValidationError(
            _("There is no SMS provider “%(alias)s”. Configured providers: %(known)s.")
            % {"alias": alias, "known": ", ".join(sorted(providers)) or _("none")},
            code="provider",
        )
    try:
        backend = get_backend(alias)
    except ImproperlyConfigured as exc:
        raise ValidationError(
            _("The SMS provider “%(alias)s” is not configured correctly: %(error)s")
            % {"alias": alias, "error": exc},
            code="provider",
        ) from exc
    return alias, backend


def resolve_sender(backend: BaseBackend, sender: str | None) -> str:
    """``sender`` or the provider's default, checked against the provider's rules."""
    sender = backend.default_sender if sender in (None, "") else sender
    backend.validate_sender(sender)
    return sender


def _opted_out_error(phone: str) -> ValidationError:
    return ValidationError(
        _("The contact with phone %(phone)s has opted out of SMS; nothing was sent.")
        % {"phone": phone},
        code="opted_out",
    )


# --- one message -------------------------------------------------------------------------


def send_sms(
    to: Any,
    text: str,
    *,
    sender: str | None = None,
    provider: str | None = None,
    contact: Contact | None = None,
    now: bool = False,
) -> Message:
    """Queue one SMS to ``to`` (any common phone notation) and return its Message.

    Everything is checked first: the provider alias, the phone, the text and the sender against
    the provider's rules, and that the contact (given, or found by the phone) has not opted out.
    A problem raises ValidationError before anything is stored or sent. With ``now=True`` the
    message is sent in this process through the worker's code path, and the Message comes back
    with its send status (``sent``, ``failed``, or ``queued`` for a retry later).
    """
    alias, backend = resolve_provider(provider)
    phone = normalize_phone(to)
    backend.validate_text(text)
    sender = resolve_sender(backend, sender)
    if contact is None:
        contact = Contact.objects.filter(phone=phone).first()
    if contact is not None and contact.opted_out:
        raise _opted_out_error(phone)
    message = Message.objects.create(
        contact=contact,
        phone=phone,
        text=text,
        sender=sender,
        provider=alias,
        status=QUEUED,
        segments=sms_info(text).segments,
    )
    if now:
        return send_now(message)
    return message


def send_now(message: Message) -> Message:
    """Send one queued message in this process (the worker's code path); returns it refreshed."""
    claimed = claim_messages(Message.objects.filter(pk=message.pk), limit=1)
    if claimed:
        _process_outbox().send_batch(claimed)
    message.refresh_from_db()
    return message


# --- campaigns: selection shared by preview and send -------------------------------------

_E164 = re.compile(r"\+[1-9]\d{7,14}")


def _clean_phone(raw: str) -> str | None:
    """E.164 or None. Contact.phone is stored normalized, so most values pass the cheap check."""
    if isinstance(raw, str) and _E164.fullmatch(raw):
        return raw
    try:
        return normalize_phone(raw)
    except ValidationError:
        return None


@lru_cache(maxsize=20_000)
def _cached_sms_info(text: str) -> SMSInfo:
    return sms_info(text)


@dataclass
class _Selection:
    """A checked campaign: provider, sender, template, and how rows map onto variables."""

    alias: str
    backend: BaseBackend
    sender: str
    template: SMSTemplate
    model: type
    phone_field: str
    variables: dict[str, str]  # template name -> row field
    has_opted_out: bool
    is_contact: bool
    label_fields: list[str]
    excluded: dict[str, int] = field(
        default_factory=lambda: {"opted_out": 0, "invalid": 0, "duplicate": 0}
    )
    recipients: int = 0
    text_error: ValidationError | None = None


@dataclass
class _Recipient:
    contact_id: int | None
    phone: str
    text: str
    label: str


def _field_names(model: type) -> set[str]:
    return {f.name for f in model._meta.get_fields() if getattr(f, "concrete", False)}


def _prepare_selection(
    contacts: Any,
    text: str,
    *,
    sender: str | None,
    provider: str | None,
    phone_field: str,
    variables: dict[str, str] | None,
) -> _Selection:
    alias, backend = resolve_provider(provider)
    sender = resolve_sender(backend, sender)
    model = contacts.model
    fields = _field_names(model)
    if variables is None:
        variables = {name: name for name in CONTACT_VARIABLES if name in fields}
        variables["phone"] = phone_field
    template = SMSTemplate(text, variables=tuple(variables))
    if template.is_static:
        backend.validate_text(template.source)
    try:
        model._meta.get_field(phone_field.split("__")[0])
    except FieldDoesNotExist as exc:
        raise ValidationError(
            _("%(model)s has no field “%(field)s” to read phone numbers from.")
            % {"model": model._meta.verbose_name, "field": phone_field},
            code="phone_field",
        ) from exc
    return _Selection(
        alias=alias,
        backend=backend,
        sender=sender,
        template=template,
        model=model,
        phone_field=phone_field,
        variables=dict(variables),
        has_opted_out="opted_out" in fields,
        is_contact=issubclass(model, Contact),
        label_fields=[n for n in ("last_name", "first_name", "middle_name") if n in fields],
    )


def _iter_recipients(selection: _Selection, contacts: Any) -> Iterator[_Recipient]:
    """Stream the rows of ``contacts`` and yield who gets which text; counts what is left out
    (opted out, invalid phone or text, duplicate phone) on ``selection.excluded``."""
    sel = selection
    columns = ["pk", sel.phone_field, *sel.variables.values(), *sel.label_fields]
    if sel.has_opted_out:
        columns.append("opted_out")
    columns = list(dict.fromkeys(columns))
    # Other models may share a phone with an opted-out Contact: never send to that number.
    opted_out_phones: set[str] = set()
    if not sel.is_contact:
        opted_out_phones = set(
            Contact.objects.filter(opted_out=True).values_list("phone", flat=True)
        )
    seen: set[str] = set()
    try:
        if not contacts.query.is_sliced:
            contacts = contacts.order_by("pk")
        rows = contacts.values(*columns).iterator(chunk_size=2000)
        for row in rows:
            if sel.has_opted_out and row["opted_out"]:
                sel.excluded["opted_out"] += 1
                continue
            phone = _clean_phone(row[sel.phone_field])
            if phone is None:
                sel.excluded["invalid"] += 1
                continue
            if phone in opted_out_phones:
                sel.excluded["opted_out"] += 1
                continue
            if phone in seen:
                sel.excluded["duplicate"] += 1
                continue
            seen.add(phone)
            values = {name: row[attr] for name, attr in sel.variables.items()}
            for name, value in values.items():
                if value is None:
                    values[name] = ""
            if "phone" in values and values["phone"] == row[sel.phone_field]:
                values["phone"] = phone
            try:
                text = sel.template.render(values)
                if not sel.template.is_static:
                    sel.backend.validate_text(text)
            except ValidationError as exc:
                sel.text_error = sel.text_error or exc
                sel.excluded["invalid"] += 1
                continue
            sel.recipients += 1
            label = " ".join(str(row[f]) for f in sel.label_fields if row[f]) or phone
            yield _Recipient(row["pk"] if sel.is_contact else None, phone, text, label)
    except FieldError as exc:
        raise ValidationError(
            _("The contacts cannot be read: %(error)s") % {"error": exc}, code="fields"
        ) from exc


def _no_recipients_error(sel: _Selection) -> ValidationError:
    if sel.text_error is not None:
        return ValidationError(
            _("No message can be sent: %(error)s") % {"error": " ".join(sel.text_error.messages)},
            code="no_recipients",
        )
    return ValidationError(
        _(
            "No recipients: every contact was left out (opted out: %(opted_out)s, invalid "
            "phone: %(invalid)s, duplicate phone: %(duplicate)s)."
        )
        % sel.excluded,
        code="no_recipients",
    )


@dataclass
class CampaignPreview:
    """What ``send_campaign`` would do: recipients, exclusions, sample texts, SMS parts."""

    recipients: int
    excluded: dict[str, int]
    samples: list[dict[str, Any]]
    total_segments: int
    sender: str
    provider: str


def preview_campaign(
    contacts: Any,
    text: str,
    *,
    sender: str | None = None,
    provider: str | None = None,
    phone_field: str = "phone",
    variables: dict[str, str] | None = None,
    sample_size: int = 5,
) -> CampaignPreview:
    """Count recipients and exclusions and render samples, storing nothing.

    Uses the same selection as ``send_campaign`` (so the counts match what it will queue);
    raises ValidationError for a bad template, sender or provider. Rows are streamed.
    """
    sel = _prepare_selection(
        contacts,
        text,
        sender=sender,
        provider=provider,
        phone_field=phone_field,
        variables=variables,
    )
    samples: list[dict[str, Any]] = []
    total_segments = 0
    for recipient in _iter_recipients(sel, contacts):
        info = _cached_sms_info(recipient.text)
        total_segments += info.segments
        if len(samples) < sample_size:
            samples.append(
                {
                    "label": recipient.label,
                    "phone": recipient.phone,
                    "text": recipient.text,
                    "info": info,
                }
            )
    return CampaignPreview(
        recipients=sel.recipients,
        excluded=dict(sel.excluded),
        samples=samples,
        total_segments=total_segments,
        sender=sel.sender,
        provider=sel.alias,
    )


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
) -> Campaign:
    """Create a campaign of ``text`` (a template) to the rows of ``contacts`` and queue it.

    The template is checked once, then rendered per row; opted-out rows, invalid and duplicate
    phones are left out and counted on ``campaign.excluded`` (``recipients_count`` holds the
    rest). Messages are inserted in bulk, in one transaction with the campaign: on any error
    nothing is stored. With ``scheduled_at`` in the future the campaign is ``scheduled`` and
    ``start_due_campaigns`` starts it; otherwise it is ``running`` at once. Raises
    ValidationError for a bad template, sender or provider, or when nobody would get the text.
    """
    sel = _prepare_selection(
        contacts,
        text,
        sender=sender,
        provider=provider,
        phone_field=phone_field,
        variables=variables,
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
        inserter = _MessageInserter(
            campaign_id=campaign.pk,
            sender=sel.sender,
            provider=sel.alias,
            next_attempt_at=due,
            created_at=now,
        )
        batch: list[tuple[int | None, str, str, int]] = []
        for recipient in _iter_recipients(sel, contacts):
            segments = _cached_sms_info(recipient.text).segments
            batch.append((recipient.contact_id, recipient.phone, recipient.text, segments))
            if len(batch) >= INSERT_BATCH:
                inserter.insert(batch)
                batch.clear()
        if batch:
            inserter.insert(batch)
        if not sel.recipients:
            raise _no_recipients_error(sel)
        campaign.recipients_count = sel.recipients
        campaign.excluded = dict(sel.excluded)
        campaign.save(update_fields=["recipients_count", "excluded"])
    logger.info(
        "Campaign %s queued: %d messages, excluded %s%s",
        campaign.pk,
        sel.recipients,
        sel.excluded,
        f", scheduled at {scheduled_at:%Y-%m-%d %H:%M %Z}" if scheduled else "",
    )
    return campaign


class _MessageInserter:
    """Inserts a campaign's messages with one prepared INSERT run per batch (executemany).

    The ORM's bulk_create prepares every field of every row in Python, which dominated a
    100,000-message campaign; here the values shared by all rows are prepared once.
    """

    VARYING = ("contact", "phone", "text", "segments", "msg_id")

    def __init__(self, **shared: Any):
        constants = {
            "status": QUEUED,
            "provider_message_id": "",
            "error_code": "",
            "error_message": "",
            "attempts": 0,
            "claimed_at": None,
            "sent_at": None,
            "delivered_at": None,
            "updated_at": shared["created_at"],
            "last_response": None,
            "campaign": shared.pop("campaign_id"),
            **shared,
        }
        columns, self.constant_values = [], []
        for name, value in constants.items():
            model_field = Message._meta.get_field(name)
            columns.append(model_field.column)
            self.constant_values.append(model_field.get_db_prep_save(value, connection))
        for name in self.VARYING:
            columns.append(Message._meta.get_field(name).column)
        self.columns = columns

    def insert(self, rows: list[tuple[int | None, str, str, int]]) -> None:
        """Insert ``rows`` of (contact_id, phone, text, segments), each with a fresh msg_id."""
        constant = self.constant_values
        params = [
            (*constant, *row, msg_id)
            for row, msg_id in zip(rows, new_msg_ids(len(rows)), strict=True)
        ]
        insert_rows(Message._meta.db_table, self.columns, params)


# --- campaign controls -------------------------------------------------------------------


def _complete_if_done(campaign_ids: Iterable[int], now: datetime | None = None) -> list[int]:
    """Mark running campaigns without queued/sending messages completed; returns their ids."""
    ids = set(campaign_ids)
    if not ids:
        return []
    # One indexed EXISTS per campaign (usually one or two per batch).
    active = {
        cid
        for cid in ids
        if Message.objects.filter(campaign_id=cid, status__in=ACTIVE_STATUSES).exists()
    }
    done = sorted(ids - active)
    if done:
        Campaign.objects.filter(pk__in=done, status=CampaignStatus.RUNNING).update(
            status=CampaignStatus.COMPLETED, finished_at=now or timezone.now()
        )
    return done


def pause_campaign(campaign: Campaign, reason: str = "") -> bool:
    """Stop claiming the campaign's messages (those in flight finish). True if it was paused
    now; a campaign that is not running or scheduled is left alone."""
    updated = Campaign.objects.filter(
        pk=campaign.pk, status__in=(CampaignStatus.RUNNING, CampaignStatus.SCHEDULED)
    ).update(status=CampaignStatus.PAUSED, pause_reason=reason)
    campaign.refresh_from_db()
    return bool(updated)


def resume_campaign(campaign: Campaign) -> bool:
    """Continue a paused campaign where it stopped: its queued messages are due again.
    True if it was resumed."""
    now = timezone.now()
    with transaction.atomic():
        updated = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.PAUSED).update(
            status=CampaignStatus.RUNNING, pause_reason=""
        )
        if updated:
            Campaign.objects.filter(pk=campaign.pk, started_at__isnull=True).update(started_at=now)
            Message.objects.filter(
                campaign_id=campaign.pk, status=QUEUED, next_attempt_at__gt=now
            ).update(next_attempt_at=now)
            _complete_if_done([campaign.pk], now)
    campaign.refresh_from_db()
    return bool(updated)


def _move_messages(
    queryset: Any, old: str, new: str, description: str, now: datetime, **fields: Any
) -> int:
    """Move the rows of ``queryset`` that are in status ``old`` to ``new`` (locked, one UPDATE)
    with an admin event each. Call inside a transaction. Returns how many moved."""
    messages = list(
        queryset.select_for_update()
        .filter(status=old)
        .order_by("pk")
        .defer("text", "last_response")
    )
    if not messages:
        return 0
    Message.objects.filter(pk__in=[m.pk for m in messages], status=old).update(
        status=new, claimed_at=None, updated_at=now, **fields
    )
    for message in messages:
        message.status = new
    record_events(
        [
            MessageEvent(
                message=message,
                source=EventSource.ADMIN,
                old_status=old,
                new_status=new,
                description=description,
                created_at=now,
            )
            for message in messages
        ]
    )
    return len(messages)


def cancel_campaign(campaign: Campaign) -> int:
    """Cancel the campaign: its unsent (queued) messages become ``cancelled``. Messages already
    in flight finish. Returns how many messages were cancelled."""
    now = timezone.now()
    with transaction.atomic():
        Campaign.objects.filter(pk=campaign.pk).exclude(
            status__in=(CampaignStatus.COMPLETED, CampaignStatus.CANCELLED)
        ).update(status=CampaignStatus.CANCELLED, finished_at=now)
        count = _move_messages(
            Message.objects.filter(campaign_id=campaign.pk),
            QUEUED,
            CANCELLED,
            _("Campaign cancelled"),
            now,
        )
    campaign.refresh_from_db()
    return count


def retry_failed(campaign: Campaign) -> int:
    """Queue the campaign's failed messages again (same msg_id, attempts reset) and set the
    campaign running. Returns how many were queued."""
    now = timezone.now()
    with transaction.atomic():
        count = _move_messages(
            Message.objects.filter(campaign_id=campaign.pk).exclude(
                contact_id__in=Contact.objects.filter(opted_out=True).values("pk")
            ),
            FAILED,
            QUEUED,
            _("Queued again after failure"),
            now,
            attempts=0,
            next_attempt_at=now,
            error_code="",
            error_message="",
        )
        if not count:
            return 0
        Campaign.objects.filter(pk=campaign.pk).exclude(status=CampaignStatus.PAUSED).update(
            status=CampaignStatus.RUNNING, finished_at=None
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
        raise _opted_out_error(message.phone)
    now = timezone.now()
    accepted = bool(message.provider_message_id or message.sent_at) or message.status not in (
        FAILED,
        CANCELLED,
    )
    with transaction.atomic():
        if accepted:
            old = message.status
            Message.objects.filter(pk=message.pk).update(
                status=QUEUED, attempts=0, next_attempt_at=now, claimed_at=None, updated_at=now
            )
            message.refresh_from_db()
            record_events(
                [
                    MessageEvent(
                        message=message,
                        source=EventSource.ADMIN,
                        old_status=old,
                        new_status=QUEUED,
                        description=_("Resend requested (same msg_id)"),
                    )
                ]
            )
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
                status=QUEUED,
            )
        if message.campaign_id:
            Campaign.objects.filter(pk=message.campaign_id, status=CampaignStatus.COMPLETED).update(
                status=CampaignStatus.RUNNING, finished_at=None
            )
    return result


def start_due_campaigns(now: datetime | None = None) -> int:
    """Start scheduled campaigns whose time has come; returns how many were started."""
    now = now or timezone.now()
    ids = list(
        Campaign.objects.filter(status=CampaignStatus.SCHEDULED, scheduled_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    if not ids:
        return 0
    started = Campaign.objects.filter(pk__in=ids, status=CampaignStatus.SCHEDULED).update(
        status=CampaignStatus.RUNNING, started_at=now
    )
    # Due at once (``now`` may be given ahead of the clock: never push them into the future).
    due = min(now, timezone.now())
    Message.objects.filter(campaign_id__in=ids, status=QUEUED, next_attempt_at__gt=due).update(
        next_attempt_at=due
    )
    if started:
        logger.info("Started %d scheduled campaign(s)", started)
    return started


def release_stale_claims(now: datetime | None = None) -> int:
    """Take back rows left ``sending`` longer than CLAIM_TIMEOUT (their worker died): they are
    ``queued`` again with the same msg_id, so the provider drops a copy it already has.
    Returns how many were taken back."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=float(conf.get_setting("CLAIM_TIMEOUT")))
    with transaction.atomic():
        stale = Message.objects.filter(status=SENDING, claimed_at__lt=cutoff).order_by("pk")
        if connection.features.has_select_for_update_skip_locked:
            stale = stale.select_for_update(skip_locked=True)
        messages = list(stale.defer("text", "last_response")[:5000])
        if not messages:
            return 0
        claims = {m.pk: m.claimed_at for m in messages}
        taken = []
        for message in messages:
            # Conditional: a worker finishing just now keeps its result.
            if Message.objects.filter(
                pk=message.pk, status=SENDING, claimed_at=claims[message.pk]
            ).update(status=QUEUED, claimed_at=None, next_attempt_at=now, updated_at=now):
                message.status = QUEUED
                taken.append(message)
        record_events(
            [
                MessageEvent(
                    message=m,
                    source=EventSource.RETRY,
                    old_status=SENDING,
                    new_status=QUEUED,
                    description=_("Claim expired (the worker stopped); sending again"),
                    created_at=now,
                )
                for m in taken
            ]
        )
    if taken:
        logger.warning("Took back %d message(s) left in 'sending' by a stopped worker", len(taken))
    return len(taken)


# --- claiming ----------------------------------------------------------------------------


def due_messages(provider: str | None = None, now: datetime | None = None):
    """Queued messages due now whose campaign (if any) is running."""
    now = now or timezone.now()
    running = list(
        Campaign.objects.filter(status=CampaignStatus.RUNNING).values_list("pk", flat=True)
    )
    qs = Message.objects.filter(status=QUEUED, next_attempt_at__lte=now).filter(
        Q(campaign__isnull=True) | Q(campaign_id__in=running)
    )
    if provider:
        qs = qs.filter(provider=provider)
    return qs


def claim_messages(queryset: Any, limit: int, now: datetime | None = None) -> list[Message]:
    """Claim up to ``limit`` queued rows of ``queryset``: set them ``sending`` with a claim time
    and return them. Safe with several workers: PostgreSQL skips rows another worker has
    locked; on SQLite the transaction is the one writer; the conditional update guards both."""
    now = now or timezone.now()
    with transaction.atomic():
        qs = queryset.filter(status=QUEUED).order_by("next_attempt_at", "pk")
        if connection.features.has_select_for_update_skip_locked:
            qs = qs.select_for_update(skip_locked=True, of=("self",))
        ids = list(qs.values_list("pk", flat=True)[:limit])
        if not ids:
            return []
        Message.objects.filter(pk__in=ids, status=QUEUED).update(
            status=SENDING, claimed_at=now, updated_at=now
        )
        messages = list(
            Message.objects.filter(pk__in=ids, status=SENDING, claimed_at=now).order_by(
                "next_attempt_at", "pk"
            )
        )
        record_events(
            [
                MessageEvent(
                    message=m,
                    source=EventSource.RETRY if m.attempts else EventSource.SEND,
                    old_status=QUEUED,
                    new_status=SENDING,
                    description=_("Attempt %(n)d") % {"n": m.attempts + 1},
                    created_at=now,
                )
                for m in messages
            ]
        )
    return messages


def claim_due_messages(
    limit: int, provider: str | None = None, now: datetime | None = None
) -> list[Message]:
    """Claim up to ``limit`` due messages (see ``claim_messages``)."""
    return claim_messages(due_messages(provider, now), limit, now)


def retry_delay(attempts: int) -> float:
    """Seconds before attempt ``attempts + 1``: RETRY_BACKOFF doubling per attempt, capped at
    RETRY_BACKOFF_MAX, with ±20% jitter so many retries do not arrive together."""
    base = float(conf.get_setting("RETRY_BACKOFF"))
    cap = float(conf.get_setting("RETRY_BACKOFF_MAX"))
    delay = min(base * 2 ** max(attempts - 1, 0), cap)
    return min(delay * random.uniform(0.8, 1.2), cap)


# --- sending -----------------------------------------------------------------------------


class _ProviderGate:
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
class _Job:
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

    def __post_init__(self) -> None:
        self.claimed_at = self.message.claimed_at
        self.attempts = self.message.attempts


@dataclass
class DispatchSummary:
    """What a dispatch run did."""

    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    given_back: int = 0
    paused_campaigns: list[int] = field(default_factory=list)
    completed_campaigns: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        done = self.sent + self.failed + self.retried
        return done / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "sent": self.sent,
            "failed": self.failed,
            "retried": self.retried,
            "given_back": self.given_back,
            "paused_campaigns": self.paused_campaigns,
            "completed_campaigns": self.completed_campaigns,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
        }


def _request(backend: BaseBackend, jobs: list[_Job]) -> list[SendResult]:
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


def _gate_answer(results: list[SendResult]) -> SendResult | None:
    """What one request tells the provider gate: any accepted or rejected message proves the
    provider works; else a provider error counts once; else (retries) nothing is learned."""
    for result in results:
        if result.status in (SendStatus.ACCEPTED, SendStatus.REJECTED):
            return result
    for result in results:
        if result.status is SendStatus.PROVIDER_ERROR:
            return result
    return results[0] if results else None


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
        self.pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="crm-sms-send")
        self.gates: dict[str, _ProviderGate] = {}
        self._gates_lock = threading.Lock()
        self.once = True
        self._busy_since: float | None = None  # for the progress line's rate
        self._busy_done = 0

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- the pool side ----------------------------------------------------------------------
    def _gate(self, alias: str) -> _ProviderGate:
        gate = self.gates.get(alias)
        if gate is None:
            with self._gates_lock:
                gate = self.gates.setdefault(alias, _ProviderGate(self.pause_after))
        return gate

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """``jobs`` as pool tasks: up to the backend's ``max_batch_size`` messages of one provider
        per task (one request for many recipients), one per task where it takes one at a time."""
        groups: list[list[_Job]] = []
        open_groups: dict[tuple[str, int], list[_Job]] = {}
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

    def _send_group(self, jobs: list[_Job]) -> list[_Job]:
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
        gate = self._gate(first.message.provider)
        if not gate.enter(first.generation, self.stop):
            tripped = first.generation <= gate.tripped_upto
            for job in jobs:
                job.given_back = "provider_error" if tripped else "stopping"
                if tripped:
                    job.tripped, job.trip_reason = True, gate.reason
            return jobs
        answer = None  # what the gate learns from this request
        try:
            limiter = get_rate_limiter(backend.alias, backend.rate_limit)
            if limiter is not None:
                for _ in jobs:
                    if not limiter.acquire(self.stop):
                        for job in jobs:
                            job.given_back = "stopping"
                        return jobs
            results = _request(backend, jobs)
            for job, result in zip(jobs, results, strict=True):
                job.result = result
            answer = _gate_answer(results)
        finally:
            if gate.leave(answer, first.generation):
                for job in jobs:
                    job.tripped, job.trip_reason = True, gate.reason
        return jobs

    # -- the main-thread side ---------------------------------------------------------------
    def _jobs(self, messages: list[Message]) -> list[_Job]:
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
            jobs.append(_Job(message, sms, backend, gate.generation, config_error=error))
        return jobs

    def _claim(self, limit: int) -> list[_Job]:
        for gate in list(self.gates.values()):
            gate.rearm()
        with self._surviving_database_errors("claim"):
            return self._jobs(claim_due_messages(limit, provider=self.provider))
        return []

    @contextlib.contextmanager
    def _surviving_database_errors(self, what: str) -> Iterator[None]:
        """A long-running worker outlives a database restart or a lock timeout: log, wait a
        second and go on (unwritten results are kept and written next time; rows claimed by
        nobody stay queued). ``--once`` runs let the error through."""
        try:
            yield
        except DatabaseError:
            if self.once or connection.in_atomic_block:  # the caller's transaction is broken
                raise
            logger.exception("Outbox %s failed; retrying in a second", what)
            close_old_connections()
            self.stop.wait(1.0)

    def send_batch(self, messages: list[Message]) -> DispatchSummary:
        """Send already claimed ``messages`` and write their results (waits for all)."""
        started = time.monotonic()
        summary = DispatchSummary(claimed=len(messages))
        jobs = self._jobs(messages)
        for gate in list(self.gates.values()):
            gate.rearm()
        done = [
            job for group in self.pool.map(self._send_group, self._groups(jobs)) for job in group
        ]
        self._write(done, summary)
        summary.seconds = time.monotonic() - started
        return summary

    def run(self, once: bool = False, max_seconds: float | None = None) -> DispatchSummary:
        """Send due messages until stopped (``once``: until nothing is due; ``max_seconds``:
        stop claiming after that long). On stop, requests in flight finish and unsent claims
        are given back (``queued``)."""
        started = time.monotonic()
        self.once = once
        total = DispatchSummary()
        inflight: dict[Future, list[_Job]] = {}  # a pool task -> its jobs (one request)
        inflight_jobs = 0
        completed: queue.SimpleQueue[Future] = queue.SimpleQueue()
        finished: list[_Job] = []
        last_flush = last_housekeeping = time.monotonic()
        # Claim more while this many jobs are still waiting, so the pool never runs dry.
        low_water = max(self.concurrency * 2, self.batch_size // 2)
        self._housekeeping()
        next_claim = 0.0
        # How long an idle worker sleeps before looking for due messages again.
        poll_interval = float(conf.get_setting("POLL_INTERVAL"))
        while True:
            now = time.monotonic()
            stopping = self.stop.is_set() or (
                max_seconds is not None and now - started > max_seconds
            )
            if not once and now - last_housekeeping > HOUSEKEEPING_INTERVAL:
                self._flush(finished, total, started)
                self._housekeeping()
                last_housekeeping = now
            claimed = None  # no claim tried in this round
            if not stopping and inflight_jobs < low_water and (not inflight or now >= next_claim):
                # Results first: a campaign paused by them must not be claimed again.
                self._flush(finished, total, started)
                jobs = self._claim(self.batch_size)
                claimed = len(jobs)
                if claimed < self.batch_size:  # drained: don't ask again at every answer
                    next_claim = now + FLUSH_INTERVAL
                total.claimed += claimed
                if claimed and self._busy_since is None:
                    self._busy_since, self._busy_done = now, 0
                for group in self._groups(jobs):
                    future = self.pool.submit(self._send_group, group)
                    inflight[future] = group
                    inflight_jobs += len(group)
                    future.add_done_callback(completed.put)
            if stopping:
                for future in list(inflight):
                    if future.cancel():
                        group = inflight.pop(future)
                        inflight_jobs -= len(group)
                        for job in group:
                            job.given_back = "stopping"
                        finished.extend(group)
            if not inflight:
                self._flush(finished, total, started)
                if stopping or (once and claimed == 0):
                    break
                if claimed == 0:
                    self._busy_since = None
                    close_old_connections()
                    self.stop.wait(poll_interval)
                continue
            # Completed futures arrive on a queue: O(1) per answer (wait() on hundreds of
            # futures at every answer cost more CPU than writing the results).
            try:
                done = [completed.get(timeout=FLUSH_INTERVAL)]
            except queue.Empty:
                done = []
            while True:
                try:
                    done.append(completed.get_nowait())
                except queue.Empty:
                    break
            for future in done:
                group = inflight.pop(future, None)
                if group is None:  # cancelled and given back above
                    continue
                inflight_jobs -= len(group)
                if not future.cancelled():
                    finished.extend(future.result())
            if len(finished) >= self.batch_size or time.monotonic() - last_flush > FLUSH_INTERVAL:
                self._flush(finished, total, started)
                last_flush = time.monotonic()
        total.seconds = time.monotonic() - started
        return total

    def _housekeeping(self) -> None:
        with self._surviving_database_errors("housekeeping"):
            release_stale_claims()
            start_due_campaigns()

    def _flush(self, finished: list[_Job], total: DispatchSummary, started: float) -> None:
        if not finished:
            return
        batch = DispatchSummary()
        with self._surviving_database_errors("writing results"):
            self._write(finished, batch)
            finished.clear()
        if finished:
            return
        for name in ("sent", "failed", "retried", "given_back"):
            setattr(total, name, getattr(total, name) + getattr(batch, name))
        total.paused_campaigns += batch.paused_campaigns
        total.completed_campaigns += batch.completed_campaigns
        total.seconds = time.monotonic() - started
        # The rate of the current busy spell: an idle worker's lifetime average says nothing.
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since, self._busy_done = now, 0
        self._busy_done += batch.sent + batch.failed + batch.retried
        busy = now - self._busy_since
        rate = self._busy_done / busy if busy > 0 else 0.0
        line = (
            f"sent {batch.sent}, failed {batch.failed}, retried {batch.retried}"
            + (f", given back {batch.given_back}" if batch.given_back else "")
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

    def _write(self, jobs: list[_Job], summary: DispatchSummary) -> None:
        """Write the results of ``jobs`` back in bulk, with their events."""
        _write_results(jobs, summary, self.gates)


def _outcome(job: _Job, now: datetime, max_attempts: int, tripped: bool) -> dict[str, Any]:
    """The field values for a row we still own, and the event description."""
    message, result = job.message, job.result
    if result is None:  # not sent: give the claim back without using an attempt
        delay = 0.0
        if job.given_back == "provider_error" and not message.campaign_id:
            delay = retry_delay(job.attempts + 1)
        return {
            "status": QUEUED,
            "next_attempt_at": now + timedelta(seconds=delay),
            "_description": _("Not sent: the worker stopped")
            if job.given_back == "stopping"
            else _("Not sent: the provider refuses all messages"),
        }
    values: dict[str, Any] = {
        "last_response": jsonable(result.raw),
        "error_code": str(result.error_code or "")[:50],
        "error_message": result.error_message or "",
    }
    attempts = job.attempts + 1
    status = result.status
    if status is SendStatus.ACCEPTED:
        values.update(
            status=SENT,
            attempts=attempts,
            sent_at=now,
            provider_message_id=str(result.provider_message_id or "")[:100],
            error_code="",
            error_message="",
        )
        values["_description"] = (
            _("Accepted earlier (duplicate msg_id)") if result.error_code else _("Accepted")
        )
    elif status is SendStatus.REJECTED:
        values.update(status=FAILED, attempts=attempts, _description=_("Rejected"))
    elif status is SendStatus.PROVIDER_ERROR and message.campaign_id:
        # Not the message's fault: no attempt is used; the campaign pauses once the gate trips.
        values.update(
            status=QUEUED,
            next_attempt_at=now + timedelta(seconds=0 if tripped else retry_delay(1)),
            _description=_("Provider error; the campaign is paused")
            if tripped
            else _("Provider error; will retry"),
        )
    else:  # RETRY, or a provider error of a single message: back off
        if attempts >= max_attempts:
            values.update(status=FAILED, attempts=attempts, _description=_("Retries exhausted"))
        else:
            values.update(
                status=QUEUED,
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=retry_delay(attempts)),
                _description=_("Will retry"),
            )
    return values


def _write_results(
    jobs: list[_Job], summary: DispatchSummary, gates: dict[str, _ProviderGate]
) -> None:
    if not jobs:
        return
    now = timezone.now()
    max_attempts = int(conf.get_setting("MAX_ATTEMPTS"))
    updates: dict[int, dict[str, Any]] = {}
    events: list[MessageEvent] = []
    pause: dict[int, str] = {}
    touched_campaigns: set[int] = set()
    recorded: set[str] = set()  # providers whose trip (pause, backoff) is written here
    with transaction.atomic():
        by_pk = {job.message.pk: job for job in jobs}
        current = {
            pk: (status, claimed_at)
            for pk, status, claimed_at in Message.objects.select_for_update()
            .filter(pk__in=list(by_pk))
            .order_by("pk")
            .values_list("pk", "status", "claimed_at")
        }
        for pk, job in by_pk.items():
            message = job.message
            if job.tripped:
                recorded.add(message.provider)
            status, claimed_at = current.get(pk, (None, None))
            result = job.result
            accepted = result is not None and result.status is SendStatus.ACCEPTED
            ours = status == SENDING and claimed_at == job.claimed_at
            if message.campaign_id:
                # Checked even when the row moved on: a delivery report may have finished the
                # campaign's last message before this result was written.
                touched_campaigns.add(message.campaign_id)
            if not ours and not (accepted and status == QUEUED):
                # Moved on meanwhile (a delivery report, a cancel, a take-back): keep its
                # status; an accepted send still tells us the provider's id.
                if accepted and status is not None:
                    Message.objects.filter(pk=pk, provider_message_id="").update(
                        provider_message_id=str(result.provider_message_id or "")[:100]
                    )
                    Message.objects.filter(pk=pk, sent_at__isnull=True).update(sent_at=now)
                    summary.sent += 1
                continue
            provider_tripped = job.tripped
            values = _outcome(job, now, max_attempts, provider_tripped)
            description = values.pop("_description")
            new_status = values["status"]
            values.update(claimed_at=None, updated_at=now)
            updates[pk] = values
            if new_status == SENT:
                summary.sent += 1
            elif new_status == FAILED:
                summary.failed += 1
            elif result is None:
                summary.given_back += 1
            else:
                summary.retried += 1
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
                and provider_tripped
                and (result is None or result.status is SendStatus.PROVIDER_ERROR)
            ):
                pause[message.campaign_id] = job.trip_reason
            old_status = status
            message.status = new_status
            for name, value in values.items():
                setattr(message, name, value)
            events.append(
                MessageEvent(
                    message=message,
                    source=EventSource.RETRY if message.attempts > 1 else EventSource.SEND,
                    old_status=old_status,
                    new_status=new_status,
                    error_code=values.get("error_code", ""),
                    description=description,
                    payload=values.get("last_response"),
                    created_at=now,
                )
            )
        _apply_updates(updates)
        record_events(events)
        for campaign_id, reason in pause.items():
            if Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.RUNNING).update(
                status=CampaignStatus.PAUSED,
                pause_reason=reason or _("The provider refuses all messages."),
            ):
                summary.paused_campaigns.append(campaign_id)
                logger.error("Campaign %s paused: %s", campaign_id, reason)
        summary.completed_campaigns += _complete_if_done(touched_campaigns - set(pause), now)
    for alias in recorded:
        if alias in gates:
            gates[alias].trip_recorded = True


def _apply_updates(updates: dict[int, dict[str, Any]]) -> None:
    """Write per-row field values: one prepared UPDATE per set of fields, run for all its rows
    (executemany). The rows are locked by the caller's transaction."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for pk, values in updates.items():
        groups[tuple(sorted(values))].append(pk)
    ops = connection.ops
    table = ops.quote_name(Message._meta.db_table)
    pk_column = ops.quote_name(Message._meta.pk.column)
    for names, pks in groups.items():
        fields = [Message._meta.get_field(name) for name in names]
        assignments = ", ".join(f"{ops.quote_name(f.column)} = %s" for f in fields)
        sql = f"UPDATE {table} SET {assignments} WHERE {pk_column} = %s"
        params = [
            [f.get_db_prep_save(updates[pk][f.name], connection) for f in fields] + [pk]
            for pk in pks
        ]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


# --- the worker --------------------------------------------------------------------------

_process_outbox_instance: Outbox | None = None
_process_outbox_pid: int | None = None
_process_outbox_lock = threading.Lock()


def _process_outbox() -> Outbox:
    """This process's shared Outbox (thread pool) for ``send_now`` and ``dispatch_due``;
    a forked child (a Celery prefork worker) makes its own."""
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
