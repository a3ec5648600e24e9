"""crm-sms: SMS for Django CRMs.

The public API is two functions; both validate everything before anything is stored or sent and
raise ``django.core.exceptions.ValidationError`` with a message a person can act on. They are
``crm_sms.outbox``'s, imported when first called (so importing ``crm_sms`` loads no models).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from .models import Campaign, Contact, Message

__all__ = ["send_sms", "send_campaign"]


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

    ``sender`` and ``provider`` (an alias) default to the provider's; ``contact`` links the
    message (else it is found by the phone). With ``now=True`` it is sent in this process and
    comes back with its send status. It is a service (transactional) message: no consent is
    asked for and it is not held for quiet hours (an advertising SMS to one contact is a
    campaign of one). ``translit=True`` writes Cyrillic in Latin letters;
    ``smart_encoding`` (on) replaces look-alike punctuation (« » — … NBSP) when that makes the
    text GSM-7 (``crm_sms.translit``). See ``crm_sms.outbox.send_sms``.
    """
    from .outbox import send_sms as queue_sms

    return queue_sms(
        to,
        text,
        sender=sender,
        provider=provider,
        contact=contact,
        now=now,
        translit=translit,
        smart_encoding=smart_encoding,
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
    translit: bool = False,
    smart_encoding: bool = True,
    kind: str = "service",
    window: Any = "default",
) -> Campaign:
    """Create a campaign of ``text`` (a template) to the rows of ``contacts`` and queue it.

    ``contacts`` is a queryset of Contacts, or of any model with a ``phone_field``;
    ``variables`` maps template names to its fields (a Contact's names by default);
    ``scheduled_at`` in the future delays the start. Opted-out, invalid and duplicate phones
    are left out and counted. ``translit`` and ``smart_encoding`` transform each rendered
    text as in ``send_sms``. ``kind="advertising"`` leaves out contacts without consent
    (``crm_sms.consent``); each message goes only inside its ``window`` (the setting
    ``SEND_WINDOW`` by default, e.g. "09:00-21:00"; None: any time) in its recipient's time
    zone (``crm_sms.quiet_hours``). See ``crm_sms.outbox.send_campaign``.
    """
    from .outbox import send_campaign as queue_campaign

    return queue_campaign(
        contacts,
        text,
        name=name,
        sender=sender,
        provider=provider,
        scheduled_at=scheduled_at,
        created_by=created_by,
        phone_field=phone_field,
        variables=variables,
        translit=translit,
        smart_encoding=smart_encoding,
        kind=kind,
        window=window,
    )
