"""An event's description in the reader's language (stored language-neutral:
``crm_sms.event_text``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.utils import timezone
from django.utils.formats import date_format, get_format
from django.utils.translation import gettext_lazy, pgettext_lazy

from .. import consent
from ..event_text import describe
from ..models import MessageEvent
from .common import EMPTY_VALUE


class EventDescriptionMixin:
    """``description_display``: a column and a field for MessageEvent admins and inlines."""

    @admin.display(description=gettext_lazy("description"))
    def description_display(self, event: MessageEvent) -> str:
        return describe(event.description, event.params)


#: Times where order matters (events, a message's times): to the second.
SECONDS_FORMAT = "j E Y, H:i:s"


def to_the_second(value) -> str:
    """A time in the current time zone, with seconds; "—" for none."""
    if value is None:
        return EMPTY_VALUE
    return date_format(timezone.localtime(value), SECONDS_FORMAT)


def to_the_second_short(value) -> str | None:
    """A time for a list column, with seconds in the language's short date: "29.11.2026
    19:55:01" in Russian, "11/29/2026 19:55:01" in English; None (the admin's empty value) for
    none."""
    if value is None:
        return None
    return date_format(timezone.localtime(value), f"{get_format('SHORT_DATE_FORMAT')} H:i:s")


def seconds_display(field: str, model: type[Model], *, short: bool = False) -> Callable:
    """A ModelAdmin method showing ``model.field`` (a time) to the second, under the field's
    own name and sorted by it: a list column (``short``) or a read-only field of a page."""

    def display(self: Any, obj: Model) -> str | None:
        value = getattr(obj, field)
        return to_the_second_short(value) if short else to_the_second(value)

    display.__name__ = f"{field}_display"
    return admin.display(description=model._meta.get_field(field).verbose_name, ordering=field)(
        display
    )


class EventTimeMixin:
    """``created_at_display``: the event's time to the second."""

    @admin.display(description=gettext_lazy("time"), ordering="created_at")
    def created_at_display(self, event: MessageEvent) -> str:
        return to_the_second(event.created_at)


#: The known consent and opt-out sources (``crm_sms.consent.SOURCE_*``, the consent form's
#: choices) as people read them; the stored value stays language-neutral, free text as typed.
CONSENT_SOURCES = {
    consent.SOURCE_ADMIN: gettext_lazy("admin"),
    consent.SOURCE_IMPORT: pgettext_lazy("consent source", "import"),
    consent.SOURCE_SMS_REPLY: pgettext_lazy("consent source", "SMS reply"),
    consent.SOURCE_WEB_FORM: gettext_lazy("web form"),
    consent.SOURCE_PAPER: gettext_lazy("paper"),
    "phone call": gettext_lazy("phone call"),
}


def consent_source_label(source: str) -> str:
    """A consent or opt-out source in the reader's language when it is a known one."""
    return str(CONSENT_SOURCES.get(source, source))
