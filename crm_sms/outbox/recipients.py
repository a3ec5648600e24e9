"""Who gets which text: the provider and sender checks, and the recipient selection that
``preview_campaign`` and ``send_campaign`` share (so the preview's counts match what is queued).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from itertools import chain, islice
from typing import Any

from django.core.exceptions import (
    FieldDoesNotExist,
    FieldError,
    ImproperlyConfigured,
    ValidationError,
)
from django.db import connection
from django.db.models import Count, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from .. import conf
from ..backends import get_backend
from ..backends.base import BaseBackend
from ..consent import CONSENTED
from ..inbound import with_unsubscribe
from ..models import CampaignKind, Contact
from ..phones import normalize_phone
from ..quiet_hours import SendWindow, WaitForecast, effective_zone, guess_time_zone
from ..text import CONTACT_VARIABLES, SMSInfo, SMSTemplate, sms_info
from ..translit import cached_prepare_text


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


def opted_out_error(phone: str) -> ValidationError:
    """The error for sending to an opted-out contact."""
    return ValidationError(
        _("The contact with phone %(phone)s has opted out of SMS; nothing was sent.")
        % {"phone": phone},
        code="opted_out",
    )


_E164 = re.compile(r"\+[1-9]\d{7,14}")


def _clean_phone(raw: str) -> str | None:
    """E.164 or None. Contact.phone is stored normalized, so most values pass the cheap check."""
    if isinstance(raw, str) and _E164.fullmatch(raw):
        return raw
    if not isinstance(raw, str):
        return _normalized(raw, conf.get_setting("DEFAULT_REGION"))
    return _cached_normalized(raw, conf.get_setting("DEFAULT_REGION"))


def _normalized(raw: Any, region: str) -> str | None:
    try:
        return normalize_phone(raw, region)
    except ValidationError:
        return None


#: The few phones in other notations are read again by every preview, counter and queueing of
#: the same contacts; parsing one costs about 70 microseconds.
_cached_normalized = lru_cache(maxsize=10_000)(_normalized)


@lru_cache(maxsize=20_000)
def cached_sms_info(text: str) -> SMSInfo:
    """``sms_info`` of a rendered text (campaign texts repeat a lot)."""
    return sms_info(text)


@dataclass
class Selection:
    """A checked campaign: provider, sender, template, and how rows map onto variables.
    ``iter_recipients`` counts onto ``excluded`` and ``recipients`` as it goes."""

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
    #: How each rendered text is transformed before it is stored (``crm_sms.translit``).
    translit: bool = False
    smart_encoding: bool = True
    #: Advertising leaves out rows without consent: by the row's own consent fields
    #: (``consent_fields``: a Contact, or a model with them), else by the Contact with its phone.
    kind: str = CampaignKind.SERVICE
    consent_fields: bool = False
    #: Quiet hours: the window, when the messages are due, and (the preview's) who will wait.
    window: SendWindow | None = None
    due: datetime | None = None
    has_time_zone: bool = False
    forecast: WaitForecast = field(default_factory=WaitForecast)

    @property
    def advertising(self) -> bool:
        return self.kind == CampaignKind.ADVERTISING

    def prepare(self, text: str) -> str:
        """The text to store and send for a rendered ``text`` (transliterated, look-alikes
        replaced, as the selection says)."""
        return cached_prepare_text(text, self.translit, self.smart_encoding)


@dataclass
class Recipient:
    contact_id: int | None
    phone: str
    text: str  # what is stored and sent
    label: str
    original: str = ""  # the rendered text before transliteration and smart encoding
    time_zone: str = ""  # the zone the send window is applied in (the site's if unknown)


def _field_names(model: type) -> set[str]:
    return {f.name for f in model._meta.get_fields() if getattr(f, "concrete", False)}


def prepare_selection(
    contacts: Any,
    text: str,
    *,
    sender: str | None,
    provider: str | None,
    phone_field: str,
    variables: dict[str, str] | None,
    translit: bool = False,
    smart_encoding: bool = True,
    kind: str = CampaignKind.SERVICE,
    window: SendWindow | None = None,
    due: datetime | None = None,
) -> Selection:
    """Check the provider, sender, template and phone field before any row is read;
    ValidationError on a problem. ``translit`` and ``smart_encoding``: see
    ``crm_sms.translit.prepare_text``; ``kind``: a CampaignKind (advertising leaves out rows
    without consent, and its template gets the unsubscribe phrase, ``UNSUBSCRIBE_TEXT``);
    ``window`` and ``due``: quiet hours (``crm_sms.quiet_hours``)."""
    _check_kind(kind)
    if kind == CampaignKind.ADVERTISING:
        text = with_unsubscribe(text)
    alias, backend = resolve_provider(provider)
    sender = resolve_sender(backend, sender)
    model = contacts.model
    fields = _field_names(model)
    if variables is None:
        variables = {name: name for name in CONTACT_VARIABLES if name in fields}
        variables["phone"] = phone_field
    template = SMSTemplate(text, variables=tuple(variables))
    if template.is_static:
        backend.validate_text(cached_prepare_text(template.source, translit, smart_encoding))
    try:
        model._meta.get_field(phone_field.split("__")[0])
    except FieldDoesNotExist as exc:
        raise ValidationError(
            _("%(model)s has no field “%(field)s” to read phone numbers from.")
            % {"model": model._meta.verbose_name, "field": phone_field},
            code="phone_field",
        ) from exc
    return Selection(
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
        translit=translit,
        smart_encoding=smart_encoding,
        kind=kind,
        consent_fields={"consent_given_at", "consent_withdrawn_at"} <= fields,
        window=window,
        due=due,
        has_time_zone="time_zone" in fields,
        excluded=_excluded_keys(kind),
    )


def _check_kind(kind: str) -> None:
    if kind not in CampaignKind.values:
        raise ValidationError(
            _("“%(kind)s” is not a campaign kind: service or advertising.") % {"kind": kind},
            code="kind",
        )


def _excluded_keys(kind: str) -> dict[str, int]:
    """The exclusion counters: ``no_consent`` only for advertising."""
    if kind == CampaignKind.ADVERTISING:
        return {"opted_out": 0, "no_consent": 0, "invalid": 0, "duplicate": 0}
    return {"opted_out": 0, "invalid": 0, "duplicate": 0}


def _rows(sel: Selection, contacts: Any) -> Iterator[dict[str, Any]]:
    """The needed columns of ``contacts``, streamed in primary-key order."""
    columns = ["pk", sel.phone_field, *sel.variables.values(), *sel.label_fields]
    if sel.has_opted_out:
        columns.append("opted_out")
    if sel.advertising and sel.consent_fields:
        columns += ["consent_given_at", "consent_withdrawn_at"]
    if sel.window is not None and sel.has_time_zone:
        columns.append("time_zone")
    columns = list(dict.fromkeys(columns))
    if not contacts.query.is_sliced:
        contacts = contacts.order_by("pk")
    return contacts.values(*columns).iterator(chunk_size=2000)


def _opted_out_phones(sel: Selection, phones: list[str | None]) -> set[str]:
    """Other models may share a phone with an opted-out Contact: never send to that number.
    Which of this chunk's ``phones`` an opted-out Contact has (looked up per chunk, so no set
    of every opted-out phone is held)."""
    if sel.is_contact:
        return set()
    wanted = [p for p in phones if p is not None]
    return set(
        Contact.objects.filter(opted_out=True, phone__in=wanted).values_list("phone", flat=True)
    )


#: E.164 as SQL can check it: ``counting.E164_SQL`` (and the PostgreSQL partial index of the
#: contacts whose phone does not match it, migration 0006).
E164_SQL = r"^\+[1-9][0-9]{7,14}$"


def _phone_is_unique(model: type, phone_field: str) -> bool:
    """Whether no two rows can have the same raw phone (a unique column of the model)."""
    if "__" in phone_field:
        return False
    return bool(model._meta.get_field(phone_field).unique)


def odd_phone(field: str) -> Q:
    """The rows whose ``field`` is not stored in E.164 (on PostgreSQL the partial index
    ``crm_sms_contact_odd_phone`` holds them for Contact): the rows ``_clean_phone`` cannot
    take as they are."""
    odd = ~Q(**{f"{field}__regex": E164_SQL})
    if connection.vendor == "sqlite":  # its REGEXP is re.search: "$" matches before a "\n"
        odd |= Q(**{f"{field}__contains": "\n"})
    return odd


def contested_phones(sel: Selection, contacts: Any) -> set[str] | None:
    """The normalized phones that more than one row of ``contacts`` may have: those of the
    rows whose phone is not E.164 (few: the import and the forms store E.164; on PostgreSQL a
    partial index holds them) and, when the phone column is not unique, the raw phones that
    repeat. Any other phone belongs to one row only and can never be a duplicate, so only
    these need remembering while streaming: memory follows the odd and repeated rows, not the
    selection's size. None (remember every phone) for a sliced or combined queryset."""
    query = contacts.query
    if query.is_sliced or query.combinator:
        return None
    rows = contacts.order_by()
    field = sel.phone_field
    contested: set[str] = set()
    raws = rows.filter(odd_phone(field)).values_list(field, flat=True).iterator(chunk_size=CHUNK)
    if not _phone_is_unique(sel.model, field):
        repeated = rows.values(field).annotate(n=Count("*")).filter(n__gt=1)
        raws = chain(raws, repeated.values_list(field, flat=True).iterator(chunk_size=CHUNK))
    for raw in raws:
        phone = _clean_phone(raw)
        if phone is not None:
            contested.add(phone)
    return contested


class SeenPhones:
    """The phones already given a text, remembered only when they are ``contested`` (all
    when it is None): ``phone in seen`` is then exact for every phone."""

    def __init__(self, contested: set[str] | None):
        self.contested = contested
        self.phones: set[str] = set()

    def __contains__(self, phone: object) -> bool:
        return phone in self.phones

    def add(self, phone: str) -> None:
        if self.contested is None or phone in self.contested:
            self.phones.add(phone)


def _render(sel: Selection, row: dict[str, Any], phone: str) -> tuple[str, str] | None:
    """The row's (rendered text, text to send), or None (counted invalid) when the provider
    would refuse it."""
    values = {name: row[attr] for name, attr in sel.variables.items()}
    for name, value in values.items():
        if value is None:
            values[name] = ""
    if "phone" in values and values["phone"] == row[sel.phone_field]:
        values["phone"] = phone
    texts = render_values(sel, values)
    if texts is None:
        sel.excluded["invalid"] += 1
    return texts


def render_values(sel: Selection, values: dict[str, Any]) -> tuple[str, str] | None:
    """(rendered text, text to send) for a recipient's ``values`` (None already made ""), or
    None when it cannot be made or the provider would refuse it (the first such error is kept
    on ``sel.text_error``; the caller counts the recipient invalid)."""
    try:
        original = sel.template.render(values)
        text = sel.prepare(original)
        if not sel.template.is_static:
            sel.backend.validate_text(text)
    except ValidationError as exc:
        sel.text_error = sel.text_error or exc
        return None
    return original, text


def _exclusion(
    sel: Selection,
    row: dict,
    phone: str | None,
    seen: SeenPhones | set,
    opted: set,
    consenting: set | None,
) -> str:
    """Why the row is left out ("" when it is not). ``consenting``: the phones of this chunk
    whose Contact consented, when consent is looked up by phone."""
    if sel.has_opted_out and row["opted_out"]:
        return "opted_out"
    if sel.advertising and sel.consent_fields and not _consents(row):
        return "no_consent"
    if phone is None:
        return "invalid"
    if phone in opted:
        return "opted_out"
    if consenting is not None and phone not in consenting:
        return "no_consent"
    if phone in seen:
        return "duplicate"
    return ""


def _consents(row: dict[str, Any]) -> bool:
    return row["consent_given_at"] is not None and row["consent_withdrawn_at"] is None


#: Rows read, and looked up by phone, at a time.
CHUNK = 2000


def _consenting_phones(sel: Selection, phones: list[str | None]) -> set[str] | None:
    """For advertising to rows without consent fields: which of ``phones`` belong to a
    Contact who consented (None when consent is not looked up by phone)."""
    if not sel.advertising or sel.consent_fields:
        return None
    wanted = [p for p in phones if p is not None]
    return set(Contact.objects.filter(CONSENTED, phone__in=wanted).values_list("phone", flat=True))


def _zone(sel: Selection, row: dict[str, Any], phone: str) -> str:
    """The zone the row's window is applied in: its own ``time_zone``, else (other models
    than Contact, whose zone was guessed on save) its phone's, else the site's ("" without a
    window)."""
    if sel.window is None:
        return ""
    name = row["time_zone"] if sel.has_time_zone else ""
    if not name and not sel.is_contact:
        name = guess_time_zone(phone)
    return effective_zone(name)


def iter_recipients(sel: Selection, contacts: Any) -> Iterator[Recipient]:
    """Stream the rows of ``contacts`` and yield who gets which text; counts what is left out
    (opted out, no consent to advertising, invalid phone or text, duplicate phone) on
    ``sel.excluded``. Nothing grows with the rows: they are read ``CHUNK`` at a time, the
    phones of opted-out and consenting Contacts looked up per chunk, and only the phones more
    than one row may have (``contested_phones``) remembered for the duplicate check."""
    seen: SeenPhones | None = None
    if sel.due is None:
        sel.due = timezone.now()
    try:
        rows = _rows(sel, contacts)
        while chunk := list(islice(rows, CHUNK)):
            if seen is None:  # after the stream's first read: its rows are all counted in
                seen = SeenPhones(contested_phones(sel, contacts))
            phones = [_clean_phone(row[sel.phone_field]) for row in chunk]
            opted = _opted_out_phones(sel, phones)
            consenting = _consenting_phones(sel, phones)
            for row, phone in zip(chunk, phones, strict=True):
                reason = _exclusion(sel, row, phone, seen, opted, consenting)
                if reason:
                    sel.excluded[reason] += 1
                    continue
                seen.add(phone)
                recipient = _recipient(sel, row, phone)
                if recipient is not None:
                    yield recipient
    except FieldError as exc:
        raise ValidationError(
            _("The contacts cannot be read: %(error)s") % {"error": exc}, code="fields"
        ) from exc


def _recipient(sel: Selection, row: dict[str, Any], phone: str) -> Recipient | None:
    """The row's Recipient, counted; None when its text is invalid (counted so)."""
    texts = _render(sel, row, phone)
    if texts is None:
        return None
    sel.recipients += 1
    zone = _zone(sel, row, phone)
    label = " ".join(str(row[f]) for f in sel.label_fields if row[f]) or phone
    contact_id = row["pk"] if sel.is_contact else None
    return Recipient(contact_id, phone, texts[1], label, original=texts[0], time_zone=zone)


def no_recipients_error(sel: Selection) -> ValidationError:
    """The error when every row was left out."""
    if sel.text_error is not None:
        return ValidationError(
            _("No message can be sent: %(error)s") % {"error": " ".join(sel.text_error.messages)},
            code="no_recipients",
        )
    if sel.advertising:
        message = _(
            "No recipients: every contact was left out (opted out: %(opted_out)s, no consent "
            "to advertising: %(no_consent)s, invalid phone: %(invalid)s, duplicate phone: "
            "%(duplicate)s)."
        )
    else:
        message = _(
            "No recipients: every contact was left out (opted out: %(opted_out)s, invalid "
            "phone: %(invalid)s, duplicate phone: %(duplicate)s)."
        )
    return ValidationError(message % sel.excluded, code="no_recipients")
