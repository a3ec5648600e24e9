"""A contact's personal data on request (152-FZ "On Personal Data", art. 14 and 21): export all
of it as JSON, and erase it while keeping the counts that hold no person.

- :func:`export_contact_data`: the contact's fields and groups, its consent and opt-out history
  (``ContactEvent``), every message to it or to its phone with the message's events (provider
  answers and reports included), and the rows of any other model that points at the contact.
- :func:`erase_contact`: cancels what is still waiting to be sent to the contact; blanks the
  phone, text, provider answer, provider id and error text of its messages and the payloads of
  their events; blanks the free-text reasons of its consent events; deletes the contact (its
  groups with it). What stays has no person in it: the messages' status, parts, provider,
  campaign and times (campaign progress, costs and statistics do not change), the consent
  events without the contact, and one "erased" ``ContactEvent`` saying when, by whom, why and
  how much. Refused while a message to the contact is being sent (a minute later it is not).

``manage.py sms_erase_contact`` calls both (``--export FILE``, ``--dry-run``); see
docs/compliance.md for what is stored where and how long to keep it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .models import (
    Contact,
    ContactEvent,
    ContactEventKind,
    EventSource,
    Message,
    MessageEvent,
    MessageStatus,
)

logger = logging.getLogger("crm_sms.privacy")

#: The version of the export's layout (``format`` in it).
EXPORT_FORMAT = "crm-sms contact data 1"
#: Where an erasure's event says it came from.
SOURCE_REQUEST = "data subject request"
#: The message fields an erasure blanks (values that are "empty" for each).
MESSAGE_PERSONAL_FIELDS = {
    "phone": "",
    "text": "",
    "last_response": None,
    "error_message": "",
    "provider_message_id": "",  # SMSC's is "<id>-<phone>"
}


# --- export ------------------------------------------------------------------------------------
def export_contact_data(contact: Contact) -> dict[str, Any]:
    """Everything stored about ``contact``, as JSON-ready data (strings, numbers, lists, dicts;
    times in ISO 8601): ``contact`` (its fields and ``groups``), ``consent_history``,
    ``messages`` (each with its ``events``), ``other`` (rows of other models pointing at it)."""
    contact = Contact.objects.get(pk=contact.pk)
    fields = _row(contact)
    fields["groups"] = sorted(contact.groups.values_list("name", flat=True))
    data = {
        "format": EXPORT_FORMAT,
        "exported_at": timezone.now(),
        "contact": fields,
        "consent_history": [
            {**_row(event), "actor": str(event.actor) if event.actor_id else None}
            for event in ContactEvent.objects.filter(contact=contact).select_related("actor")
        ],
        "messages": _messages_data(contact),
        "other": _other_rows(contact),
    }
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder, default=str))


def _row(obj: models.Model, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The concrete fields of ``obj`` (foreign keys as their ids, by ``attname``)."""
    return {
        field.attname: field.value_from_object(obj)
        for field in obj._meta.concrete_fields
        if field.name not in exclude
    }


def contact_messages(contact: Contact) -> QuerySet[Message]:
    """The messages to ``contact``: linked to it, or to its phone without a contact."""
    return Message.objects.filter(Q(contact=contact) | Q(contact__isnull=True, phone=contact.phone))


def _messages_data(contact: Contact) -> list[dict[str, Any]]:
    messages = contact_messages(contact).select_related("campaign").order_by("created_at", "pk")
    result = []
    for message in messages.prefetch_related("events").iterator(chunk_size=500):
        item = _row(message)
        campaign = message.campaign
        if campaign is not None:
            item["campaign"] = {"id": campaign.pk, "name": campaign.name}
            if hasattr(campaign, "kind"):
                item["campaign"]["kind"] = campaign.kind
        item["events"] = [_row(event, exclude=("message",)) for event in message.events.all()]
        result.append(item)
    return result


def _other_rows(contact: Contact) -> dict[str, list[dict[str, Any]]]:
    """Rows of models other than Message and ContactEvent that point at the contact (a site's
    own, or crm_sms's future ones): related name -> their fields."""
    other: dict[str, list[dict[str, Any]]] = {}
    for relation in Contact._meta.related_objects:
        if relation.related_model in (Message, ContactEvent) or relation.many_to_many:
            continue
        if relation.one_to_one or relation.one_to_many:
            rows = relation.related_model._default_manager.filter(**{relation.field.name: contact})
            other[relation.get_accessor_name()] = [_row(row) for row in rows]
    return other


# --- erasure -----------------------------------------------------------------------------------
def erase_contact(contact: Contact, *, by: Any = None, reason: str = "") -> dict[str, Any]:
    """Erase ``contact``'s personal data (see the module's docstring); ``by`` (a user) and
    ``reason`` go into the "erased" event. Returns what was done: ``contact_id``, ``messages``
    (blanked), ``messages_cancelled``, ``message_events`` (payloads cleared),
    ``contact_events`` (kept without the person), ``erased_at``.

    ValidationError while a message to the contact is being sent."""
    from .consent import cancel_queued

    now = timezone.now()
    with transaction.atomic():
        contact = Contact.objects.select_for_update().get(pk=contact.pk)
        messages = contact_messages(contact)
        if messages.filter(status=MessageStatus.SENDING).exists():
            raise ValidationError(
                _(
                    "A message to %(contact)s is being sent right now; erase the contact in a "
                    "minute, when it is done."
                )
                % {"contact": contact},
                code="sending",
            )
        messages.filter(contact__isnull=True).update(contact=contact)  # to cancel them too
        mine = Message.objects.filter(contact=contact)
        description = gettext_noop("The contact's personal data was erased")
        cancelled = cancel_queued([contact.pk], description, advertising_only=False, now=now)
        cancelled += _cancel_uncertain(mine, description, now)
        done = {
            "contact_id": contact.pk,
            "messages": mine.count(),
            "messages_cancelled": cancelled,
            "message_events": MessageEvent.objects.filter(message__contact=contact)
            .exclude(payload__isnull=True)
            .update(payload=None),
            "contact_events": ContactEvent.objects.filter(contact=contact).update(reason=""),
            "erased_at": now.isoformat(),
        }
        mine.update(**MESSAGE_PERSONAL_FIELDS, contact=None, updated_at=now)
        _erased_event(contact, done, by, reason, now)
        contact.delete()
    logger.info("Contact #%s erased: %s", done["contact_id"], done)
    return done


def erasure_counts(contact: Contact) -> dict[str, Any]:
    """What ``erase_contact`` would do to ``contact`` now (for a dry run), changing nothing."""
    messages = contact_messages(contact)
    waiting = (MessageStatus.QUEUED, MessageStatus.UNCERTAIN)
    return {
        "contact_id": contact.pk,
        "messages": messages.count(),
        "messages_cancelled": messages.filter(status__in=waiting).count(),
        "messages_sending": messages.filter(status=MessageStatus.SENDING).count(),
        "message_events": MessageEvent.objects.filter(message__in=messages)
        .exclude(payload__isnull=True)
        .count(),
        "contact_events": ContactEvent.objects.filter(contact=contact).count(),
    }


def _cancel_uncertain(messages: QuerySet[Message], description: str, now: Any) -> int:
    """Cancel the uncertain ones (an operator could otherwise resend them to nobody)."""
    from .outbox.claiming import lock_campaigns
    from .transitions import MessageMove, move_messages

    uncertain = messages.filter(status=MessageStatus.UNCERTAIN)
    lock_campaigns(uncertain.values_list("campaign_id", flat=True).distinct())
    moves = [
        MessageMove(m, MessageStatus.CANCELLED, EventSource.ADMIN, {}, description)
        for m in uncertain.select_for_update().order_by("pk").defer("text", "last_response")
    ]
    return len(move_messages(moves, now=now, where=()))


def _erased_event(contact: Contact, done: dict, by: Any, reason: str, now: Any) -> None:
    """The "erased" ContactEvent: it outlives the contact (its link becomes empty)."""
    authenticated = getattr(by, "is_authenticated", True)
    ContactEvent.objects.create(
        contact=contact,
        kind=ContactEventKind.ERASED,
        source=SOURCE_REQUEST,
        reason=reason or "",
        actor_id=getattr(by, "pk", None) if authenticated else None,
        created_at=now,
        details={k: v for k, v in done.items() if k != "erased_at"},
    )
