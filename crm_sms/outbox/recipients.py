"""Who gets which text: the provider and sender checks, and the recipient selection that
``preview_campaign`` and ``send_campaign`` share (so the preview's counts match what is queued).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from django.core.exceptions import (
    FieldDoesNotExist,
    FieldError,
    ImproperlyConfigured,
    ValidationError,
)
from django.utils.translation import gettext as _

from .. import conf
from ..backends import get_backend
from ..backends.base import BaseBackend
from ..models import Contact
from ..phones import normalize_phone
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
    try:
        return normalize_phone(raw)
    except ValidationError:
        return None


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
) -> Selection:
    """Check the provider, sender, template and phone field before any row is read;
    ValidationError on a problem. ``translit`` and ``smart_encoding``: see
    ``crm_sms.translit.prepare_text``."""
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
    )


def _rows(sel: Selection, contacts: Any) -> Iterator[dict[str, Any]]:
    """The needed columns of ``contacts``, streamed in primary-key order."""
    columns = ["pk", sel.phone_field, *sel.variables.values(), *sel.label_fields]
    if sel.has_opted_out:
        columns.append("opted_out")
    columns = list(dict.fromkeys(columns))
    if not contacts.query.is_sliced:
        contacts = contacts.order_by("pk")
    return contacts.values(*columns).iterator(chunk_size=2000)


def _opted_out_phones(sel: Selection) -> set[str]:
    """Other models may share a phone with an opted-out Contact: never send to that number."""
    if sel.is_contact:
        return set()
    return set(Contact.objects.filter(opted_out=True).values_list("phone", flat=True))


def _render(sel: Selection, row: dict[str, Any], phone: str) -> tuple[str, str] | None:
    """The row's (rendered text, text to send), or None (counted invalid) when the provider
    would refuse it."""
    values = {name: row[attr] for name, attr in sel.variables.items()}
    for name, value in values.items():
        if value is None:
            values[name] = ""
    if "phone" in values and values["phone"] == row[sel.phone_field]:
        values["phone"] = phone
    try:
        original = sel.template.render(values)
        text = sel.prepare(original)
        if not sel.template.is_static:
            sel.backend.validate_text(text)
    except ValidationError as exc:
        sel.text_error = sel.text_error or exc
        sel.excluded["invalid"] += 1
        return None
    return original, text


def _exclusion(sel: Selection, row: dict, phone: str | None, seen: set, opted: set) -> str:
    """Why the row is left out ("" when it is not)."""
    if sel.has_opted_out and row["opted_out"]:
        return "opted_out"
    if phone is None:
        return "invalid"
    if phone in opted:
        return "opted_out"
    if phone in seen:
        return "duplicate"
    return ""


def iter_recipients(sel: Selection, contacts: Any) -> Iterator[Recipient]:
    """Stream the rows of ``contacts`` and yield who gets which text; counts what is left out
    (opted out, invalid phone or text, duplicate phone) on ``sel.excluded``."""
    opted = _opted_out_phones(sel)
    seen: set[str] = set()
    try:
        for row in _rows(sel, contacts):
            phone = _clean_phone(row[sel.phone_field])
            reason = _exclusion(sel, row, phone, seen, opted)
            if reason:
                sel.excluded[reason] += 1
                continue
            seen.add(phone)
            texts = _render(sel, row, phone)
            if texts is None:
                continue
            sel.recipients += 1
            label = " ".join(str(row[f]) for f in sel.label_fields if row[f]) or phone
            contact_id = row["pk"] if sel.is_contact else None
            yield Recipient(contact_id, phone, texts[1], label, original=texts[0])
    except FieldError as exc:
        raise ValidationError(
            _("The contacts cannot be read: %(error)s") % {"error": exc}, code="fields"
        ) from exc


def no_recipients_error(sel: Selection) -> ValidationError:
    """The error when every row was left out."""
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
