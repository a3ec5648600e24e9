"""An event's description in the reader's language (stored language-neutral:
``crm_sms.event_text``)."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy

from ..event_text import describe
from ..models import MessageEvent


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
        return "—"
    return date_format(timezone.localtime(value), SECONDS_FORMAT)


class EventTimeMixin:
    """``created_at_display``: the event's time to the second."""

    @admin.display(description=gettext_lazy("time"), ordering="created_at")
    def created_at_display(self, event: MessageEvent) -> str:
        return to_the_second(event.created_at)
