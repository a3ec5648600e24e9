"""Small filters for crm_sms's admin templates."""

from __future__ import annotations

from typing import Any

from django import template

from ..admin.event_display import to_the_second as _to_the_second

register = template.Library()


@register.filter
def to_the_second(value: Any) -> str:
    """A time in the current time zone, to the second (where order matters)."""
    return _to_the_second(value)
