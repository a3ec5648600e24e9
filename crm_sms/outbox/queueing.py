"""Queueing: ``send_sms`` (one message), ``send_campaign`` (a template to many rows) and
``preview_campaign`` (the same selection, storing nothing).

Everything is checked before anything is stored; messages are created ``queued`` with a fresh
``msg_id`` (a campaign's in bulk, in one transaction with the campaign), and the worker sends them.
The stored text is the rendered one after transliteration (``translit=True``) and smart encoding
(on unless ``smart_encoding=False``): ``crm_sms.translit``. The preview counts the SMS parts
before and after, and estimates the cost when the provider has a ``?price=`` (``crm_sms.costs``).

A campaign is ``service`` or ``advertising`` (``kind``): advertising leaves out contacts without
consent (``crm_sms.consent``). Its messages go only inside its send window (``window``: the
setting ``SEND_WINDOW`` by default) in each recipient's time zone (``crm_sms.quiet_hours``); the
preview counts who will wait and until when. ``send_sms`` is a service message: no consent
check, no window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from itertools import islice
from typing import Any

from django.core.exceptions import FieldError, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext as _

from ..consent import CONSENTED
from ..costs import backend_price, estimate_cost
from ..models import (
    Campaign,
    CampaignKind,
    CampaignStatus,
    Contact,
    Message,
    MessageStatus,
)
from ..phones import normalize_phone
from ..quiet_hours import (
    SendWindow,
    default_window,
    effective_zone,
    parse_window,
)
from ..text import SMSInfo, sms_info
from ..translit import prepare_text
from .claiming import claim_messages
from .counting import (
    TextParts,
    cached_groups,
    count_recipients,
    e164_counts_by,
    group_recipients,
    render_groups,
)
from .inserting import insert_messages
from .recipients import (
    Recipient,
    Selection,
    iter_recipients,
    no_recipients_error,
    opted_out_error,
    prepare_selection,
    resolve_provider,
    resolve_sender,
)

logger = logging.getLogger("crm_sms.outbox")

#: ``window=`` default: the setting ``SEND_WINDOW``.
DEFAULT_WINDOW = "default"


def resolve_window(window: Any) -> SendWindow | None:
    """The send window ``window`` means: ``"default"`` the setting's, None or "" none, else
    ``"09:00-21:00"``, a SendWindow or a (start, end) pair of times."""
    if isinstance(window, str) and window == DEFAULT_WINDOW:
        return default_window()
    return parse_window(window)


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
    kind: str = CampaignKind.SERVICE
    #: The send window ("09:00-21:00"; "" none), and how many recipients' windows are closed
    #: when the campaign starts: they wait until the first and last openings (site's zone).
    window: str = ""
    waiting: int = 0
    first_opening: datetime | None = None
    last_opening: datetime | None = None
    #: The longest text a recipient gets (most SMS parts, then characters), as sent and as
    #: written; None without recipients.
    longest: SMSInfo | None = None
    longest_before: SMSInfo | None = None

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
    kind: str = CampaignKind.SERVICE,
    window: Any = DEFAULT_WINDOW,
    scheduled_at: datetime | None = None,
) -> CampaignPreview:
    """Count recipients, exclusions and SMS parts (before and after ``translit`` and
    ``smart_encoding``), estimate the cost, count who will wait for their ``window`` (from
    ``scheduled_at``, or now) and render samples, storing nothing.

    Uses the same selection as ``send_campaign`` (so the counts match what it will queue);
    raises ValidationError for a bad template, sender, provider, kind or window. Contacts are
    counted in SQL (a text that depends on their names is rendered once per distinct name:
    ``counting.group_recipients``), other rows streamed.
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
        kind=kind,
        window=resolve_window(window),
        due=_due(scheduled_at, timezone.now()),
    )
    texts = _static_texts(sel, contacts)
    if texts is not None:  # the same text for everyone: count in SQL, render samples
        return _static_preview(sel, contacts, sample_size, texts)
    groups = _groups(sel, contacts, zoned=sel.window is not None)
    if groups is not None:  # a text per distinct name: render each once
        recipients, excluded, parts = render_groups(sel, groups)
        samples = [_sample(r) for r in _first_recipients(sel, contacts, sample_size)]
        return _preview(sel, recipients, excluded, samples, parts)
    samples = []
    parts = TextParts()
    for recipient in iter_recipients(sel, contacts):
        infos = parts.add(recipient.original, recipient.text)
        sel.forecast.add(sel.window, recipient.time_zone, sel.due)
        if len(samples) < sample_size:
            samples.append(_sample(recipient, *infos))
    return _preview(sel, sel.recipients, dict(sel.excluded), samples, parts)


def _groups(sel: Selection, contacts: Any, *, zoned: bool, token: str = "") -> Any:
    """``counting.group_recipients`` (``cached_groups`` with a ``token``), a FieldError (a bad
    variable) as a ValidationError."""
    try:
        if token:
            return cached_groups(sel, contacts, token)
        return group_recipients(sel, contacts, zoned=zoned)
    except FieldError as exc:
        raise ValidationError(
            _("The contacts cannot be read: %(error)s") % {"error": exc}, code="fields"
        ) from exc


#: The most rows ``longest_text`` streams when they cannot be grouped in SQL.
STREAM_LIMIT = 20_000


def longest_text(
    contacts: Any,
    text: str,
    *,
    sender: str | None = None,
    provider: str | None = None,
    phone_field: str = "phone",
    variables: dict[str, str] | None = None,
    translit: bool = False,
    smart_encoding: bool = True,
    kind: str = CampaignKind.SERVICE,
    cache_token: str = "",
) -> tuple[SMSInfo, SMSInfo] | None:
    """The info of the longest text ``text`` makes for the recipients among ``contacts`` (most
    SMS parts, then characters), as sent and as written, for the live counter of the "Send
    SMS…" page; None when nobody gets a text, or when the rows cannot be grouped in SQL and
    there are more than ``STREAM_LIMIT`` of them. ValidationError as ``preview_campaign``.
    With a ``cache_token`` (one per page) the groups of recipients are reused for a minute
    (``counting.cached_groups``): a counter may lag behind the contacts, a preview never does."""
    sel = prepare_selection(
        contacts,
        text,
        sender=sender,
        provider=provider,
        phone_field=phone_field,
        variables=variables,
        translit=translit,
        smart_encoding=smart_encoding,
        kind=kind,
        window=None,
    )
    groups = _groups(sel, contacts, zoned=False, token=cache_token)
    if groups is not None:
        parts = render_groups(sel, groups)[2]
    elif contacts.query.is_sliced or contacts.order_by().count() <= STREAM_LIMIT:
        parts = TextParts()
        for recipient in iter_recipients(sel, contacts):
            parts.add(recipient.original, recipient.text)
    else:
        return None
    if parts.longest is None or parts.longest_before is None:
        return None
    return parts.longest, parts.longest_before


def _preview(
    sel: Selection,
    recipients: int,
    excluded: dict[str, int],
    samples: list[dict[str, Any]],
    parts: TextParts,
) -> CampaignPreview:
    """The preview of ``sel``: ``parts`` holds the SMS parts after and before the
    transformations, how many texts they changed, and the longest texts."""
    after, before, changed = parts.after, parts.before, parts.changed
    price = backend_price(sel.backend)
    forecast = sel.forecast
    return CampaignPreview(
        recipients=recipients,
        excluded=excluded,
        samples=samples,
        total_segments=after,
        sender=sel.sender,
        provider=sel.alias,
        segments_before=before,
        changed=changed,
        translit=sel.translit,
        smart_encoding=sel.smart_encoding,
        price=price.amount if price else None,
        currency=price.currency if price else "",
        estimated_cost=estimate_cost(after, price),
        kind=sel.kind,
        window=str(sel.window or ""),
        waiting=forecast.waiting,
        first_opening=_local(forecast.first_opening),
        last_opening=_local(forecast.last_opening),
        longest=parts.longest,
        longest_before=parts.longest_before,
    )


def _local(at: datetime | None) -> datetime | None:
    return None if at is None else timezone.localtime(at)


def _due(scheduled_at: datetime | None, now: datetime) -> datetime:
    """When a campaign's messages are due: ``scheduled_at`` if it is later than ``now``."""
    if scheduled_at is not None and timezone.is_naive(scheduled_at):
        scheduled_at = timezone.make_aware(scheduled_at)
    return scheduled_at if scheduled_at is not None and scheduled_at > now else now


def _static_texts(sel: Selection, contacts: Any) -> tuple[str, str] | None:
    """(rendered, to send) when the template has no variables and renders, and the rows can
    be counted in SQL (Contacts; other models only without consent and window, whose phones'
    zones are guessed in Python); else None (the rows are then streamed, and a text that does
    not render is counted on each)."""
    if not sel.template.is_static or contacts.query.is_sliced:
        return None
    if not sel.is_contact and (sel.advertising or sel.window is not None):
        return None
    try:
        original = sel.template.render({})
        return original, sel.prepare(original)
    except ValidationError:
        return None


def _static_preview(
    sel: Selection, contacts: Any, sample_size: int, texts: tuple[str, str]
) -> CampaignPreview:
    """The preview of a text without variables: recipients and exclusions counted in SQL
    (``counting.count_recipients``: the numbers streaming would give; a million contacts in a
    fraction of a second instead of ten), the first ``sample_size`` recipients rendered."""
    try:
        counts = _sql_counts(sel, contacts)
    except FieldError as exc:
        raise ValidationError(
            _("The contacts cannot be read: %(error)s") % {"error": exc}, code="fields"
        ) from exc
    samples = [_sample(r) for r in _first_recipients(sel, contacts, sample_size)]
    parts = TextParts()
    if counts.recipients:
        parts.add(*texts, counts.recipients)
    return _preview(sel, counts.recipients, dict(counts.excluded), samples, parts)


#: Rows read for the preview's samples before reading on through the whole selection.
SAMPLE_WINDOW = 1000


def _first_recipients(sel: Selection, contacts: Any, count: int) -> list[Recipient]:
    """The first ``count`` recipients, as streaming the whole selection would give them: from
    its first rows (a server-side cursor outside a transaction computes every row of its query
    before the first is read), else from all of them."""
    if count <= 0:
        return []
    if not contacts.query.is_sliced:
        first = list(islice(iter_recipients(sel, contacts.order_by("pk")[:SAMPLE_WINDOW]), count))
        if len(first) == count:
            return first
    with transaction.atomic():  # a cursor without hold: rows are read as needed
        stream = iter_recipients(sel, contacts)
        first = list(islice(stream, count))
        stream.close()
    return first


def _sql_counts(sel: Selection, contacts: Any) -> Any:
    """``count_recipients`` with the advertising's ``no_consent`` (rows neither opted out nor
    consenting: left out before their phone is looked at, as ``iter_recipients`` does) and the
    window's forecast. Zones are counted over the recipients whose phone is stored in E.164
    (every phone the import and the forms store); the rare others count in the site's zone."""
    rows = contacts
    if sel.advertising:
        rows = contacts.filter(CONSENTED | Q(opted_out=True))
    counts = count_recipients(rows, phone_field=sel.phone_field)
    if sel.advertising:
        no_consent = contacts.order_by().filter(opted_out=False).exclude(CONSENTED).count()
        counts.excluded = {
            "opted_out": counts.excluded["opted_out"],
            "no_consent": no_consent,
            "invalid": counts.excluded["invalid"],
            "duplicate": counts.excluded["duplicate"],
        }
    if sel.window is not None:
        kept = rows.filter(opted_out=False).exclude(time_zone="")  # "": the site's, below
        zoned = 0
        for zone, n in e164_counts_by(kept, "time_zone", phone_field=sel.phone_field).items():
            sel.forecast.add(sel.window, effective_zone(zone), sel.due, n)
            zoned += n
        sel.forecast.add(sel.window, effective_zone(""), sel.due, counts.recipients - zoned)
    return counts


def _sample(recipient: Recipient, info: Any = None, original_info: Any = None) -> dict[str, Any]:
    if info is None or original_info is None:
        info, original_info = TextParts().add(recipient.original, recipient.text)
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
    kind: str = CampaignKind.SERVICE,
    window: Any = DEFAULT_WINDOW,
) -> Campaign:
    """Create a campaign of ``text`` (a template) to the rows of ``contacts`` and queue it.

    The template is checked once, then rendered per row; opted-out rows, invalid and duplicate
    phones, and for ``kind="advertising"`` contacts without consent, are left out and counted
    on ``campaign.excluded`` (``recipients_count`` holds the rest). Each message waits for its
    recipient's ``window`` (``SEND_WINDOW`` by default; None: any time) to open. Messages are
    inserted in bulk, in one transaction with the campaign: on any error nothing is stored.
    With ``scheduled_at`` in the future the campaign is ``scheduled`` and
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
        kind=kind,
        window=resolve_window(window),
    )
    now = timezone.now()
    if scheduled_at is not None and timezone.is_naive(scheduled_at):
        scheduled_at = timezone.make_aware(scheduled_at)
    scheduled = scheduled_at is not None and scheduled_at > now
    sel.due = due = scheduled_at if scheduled else now
    with transaction.atomic():
        campaign = Campaign.objects.create(
            name=name
            or _("SMS %(date)s") % {"date": timezone.localtime(now).strftime("%Y-%m-%d %H:%M")},
            text=text,
            status=CampaignStatus.SCHEDULED if scheduled else CampaignStatus.RUNNING,
            scheduled_at=scheduled_at,
            created_by=created_by,
            started_at=None if scheduled else now,
            **_campaign_fields(sel),
        )
        segments = insert_messages(campaign, sel, iter_recipients(sel, contacts), due, now)
        if not sel.recipients:
            raise no_recipients_error(sel)
        campaign.recipients_count = sel.recipients
        campaign.excluded = dict(sel.excluded)
        extra = _snapshot(campaign, sel, segments)
        campaign.save(update_fields=["recipients_count", "excluded", *extra])
    _log_queued(campaign, sel, scheduled_at if scheduled else None)
    return campaign


def _campaign_fields(sel: Selection) -> dict[str, Any]:
    """The new campaign's fields the selection decides."""
    return {
        "sender": sel.sender,
        "provider": sel.alias,
        "kind": sel.kind,
        "window_start": sel.window.start if sel.window else None,
        "window_end": sel.window.end if sel.window else None,
    }


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
