"""crm-sms: SMS for Django CRMs.

The public API is two functions; both validate everything before anything is stored or sent and
raise ``django.core.exceptions.ValidationError`` with a message a person can act on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Campaign, Message

__all__ = ["send_sms", "send_campaign"]


def send_sms(to: str, text: str, **kwargs: Any) -> Message:
    """Queue one SMS to ``to`` (any common phone notation); ``now=True`` sends it in this process.

    Keyword arguments: ``sender``, ``provider`` (alias), ``contact``, ``now``. Returns the Message.
    """
    from .sending import send_sms as _send_sms

    return _send_sms(to, text, **kwargs)


def send_campaign(contacts: Any, text: str, **kwargs: Any) -> Campaign:
    """Create a campaign of ``text`` (a template) to ``contacts`` and queue its messages.

    Keyword arguments: ``name``, ``sender``, ``provider``, ``scheduled_at``, ``created_by``.
    """
    from .sending import send_campaign as _send_campaign

    return _send_campaign(contacts, text, **kwargs)
