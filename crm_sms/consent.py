"""Consent to advertising (38-FZ "On Advertising", art. 18) and opting out: one set of
functions writes a contact's consent and opt-out fields together with a ``ContactEvent`` each
(who, when, from where, why), so the history can be shown to whoever asks for it.

Each function takes a queryset or an iterable of Contacts (or their ids), changes only those
whose state changes (one UPDATE per 1,000 contacts and the events in bulk, in one
transaction) and returns how many changed. Instances passed in an iterable are updated too.

- ``give_consent``: consent given (``at``: when, e.g. the date on a paper form; now by
  default). Opted-out contacts stay opted out: ``opt_in`` is a separate step.
- ``withdraw_consent``: consent withdrawn; their queued advertising messages are cancelled.
- ``opt_out``: never send them SMS again (the ``opted_out`` flag); this withdraws their consent
  too, and cancels every message still queued to them.
- ``opt_in``: the opt-out undone (consent is not given back by it).

``CONSENTED`` is the condition an advertising campaign selects by (``has_consent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from .bulk import RowInserter
from .models import (
    CampaignKind,
    Contact,
    ContactEvent,
    ContactEventKind,
    EventSource,
    Message,
    MessageStatus,
)

#: Contacts who consented to advertising and have not withdrawn it.
CONSENTED = Q(consent_given_at__isnull=False, consent_withdrawn_at__isnull=True)

#: Contacts per UPDATE, events per INSERT.
CHUNK = 1000

#: Common sources (free text is accepted too).
SOURCE_ADMIN = "admin"
SOURCE_IMPORT = "import"
SOURCE_SMS_REPLY = "sms reply"
SOURCE_WEB_FORM = "web form"
SOURCE_PAPER = "paper"


def give_consent(
    contacts: Any, *, source: str, reason: str = "", by: Any = None, at: datetime | None = None
) -> int:
    """Record that ``contacts`` consented to advertising ``at`` (now by default; not in the
    future), from ``source``. Contacts who already have consent are left as they are."""
    now = timezone.now()
    at = _aware(at) if at is not None else now
    if at > now:
        raise ValidationError(_("Consent cannot be given in the future."), code="future")
    values = {"consent_given_at": at, "consent_source": source[:100], "consent_withdrawn_at": None}
    details = {"at": at.isoformat()} if at != now else {}
    pks = _change(
        contacts,
        ~CONSENTED,
        values,
        _Event(ContactEventKind.CONSENT_GIVEN, source, reason, by, details),
        now,
    )
    return len(pks)


def withdraw_consent(contacts: Any, *, source: str, reason: str = "", by: Any = None) -> int:
    """Record that ``contacts`` withdrew their consent to advertising; their messages still
    queued in advertising campaigns are cancelled."""
    now = timezone.now()
    with transaction.atomic():
        pks = _change(
            contacts,
            CONSENTED,
            {"consent_withdrawn_at": now},
            _Event(ContactEventKind.CONSENT_WITHDRAWN, source, reason, by),
            now,
        )
        cancel_queued(
            pks, gettext_noop("Consent to advertising withdrawn"), advertising_only=True, now=now
        )
    return len(pks)


def opt_out(contacts: Any, *, source: str, reason: str = "", by: Any = None) -> int:
    """Opt ``contacts`` out of all SMS (a STOP reply, a request): ``opted_out`` with an event;
    a consent they had is withdrawn (its own event), and their queued messages are cancelled.
    Returns how many were opted out now."""
    now = timezone.now()
    with transaction.atomic():
        pks = _change(
            contacts,
            Q(opted_out=False),
            {"opted_out": True, "opted_out_at": now},
            _Event(ContactEventKind.OPTED_OUT, source, reason, by),
            now,
        )
        withdrawn = _change(
            pks,
            CONSENTED,
            {"consent_withdrawn_at": now},
            _Event(ContactEventKind.CONSENT_WITHDRAWN, source, reason, by, {"opted_out": True}),
            now,
        )
        cancel_queued(pks, gettext_noop("The contact opted out"), advertising_only=False, now=now)
    _refresh(contacts, {"consent_withdrawn_at": now}, withdrawn)
    return len(pks)


def opt_in(contacts: Any, *, source: str, reason: str = "", by: Any = None) -> int:
    """Undo ``opt_out``: SMS may be sent to ``contacts`` again (advertising only after a new
    ``give_consent``)."""
    return len(
        _change(
            contacts,
            Q(opted_out=True),
            {"opted_out": False, "opted_out_at": None},
            _Event(ContactEventKind.OPTED_IN, source, reason, by),
            timezone.now(),
        )
    )


class _Event:
    """The event each changed contact gets."""

    def __init__(
        self, kind: str, source: str, reason: str, by: Any, details: dict | None = None
    ) -> None:
        self.kind, self.source, self.reason = kind, (source or "")[:100], reason or ""
        self.actor_id = getattr(by, "pk", None) if getattr(by, "is_authenticated", True) else None
        self.details = details or {}

    def inserter(self, now: datetime) -> RowInserter:
        """INSERTs this event for contacts (their ids), the shared values prepared once."""
        shared = {
            "kind": self.kind,
            "source": self.source,
            "reason": self.reason,
            "actor": self.actor_id,
            "created_at": now,
            "details": self.details,
        }
        return RowInserter(ContactEvent, shared, ["contact"])


def _aware(value: datetime) -> datetime:
    return timezone.make_aware(value) if timezone.is_naive(value) else value


def _contact_rows(contacts: Any) -> QuerySet[Contact]:
    """``contacts`` (a queryset, Contacts, or ids) as a plain queryset that can be locked."""
    if isinstance(contacts, QuerySet):
        return Contact.objects.filter(pk__in=contacts.values("pk"))
    if isinstance(contacts, Contact):
        contacts = [contacts]
    pks = [getattr(c, "pk", c) for c in contacts]
    return Contact.objects.filter(pk__in=[pk for pk in pks if pk is not None])


def _change(
    contacts: Any, needs: Q, values: dict[str, Any], event: _Event, now: datetime
) -> list[int]:
    """Write ``values`` to the contacts that match ``needs`` (locked first) with ``event``
    each; their ids."""
    with transaction.atomic():
        rows = _contact_rows(contacts).filter(needs).order_by("pk").select_for_update()
        pks = list(rows.values_list("pk", flat=True))
        events = event.inserter(now)
        for start in range(0, len(pks), CHUNK):
            chunk = pks[start : start + CHUNK]
            Contact.objects.filter(pk__in=chunk).update(**values, updated_at=now)
            events.insert([(pk,) for pk in chunk])
    _refresh(contacts, values, pks)
    return pks


def _refresh(contacts: Any, values: dict[str, Any], pks: Sequence[int]) -> None:
    """Set ``values`` on the Contact instances the caller passed, of the changed ``pks``."""
    if isinstance(contacts, QuerySet):
        return
    items = [contacts] if isinstance(contacts, Contact) else contacts
    if not isinstance(items, Iterable):
        return
    changed = set(pks)
    for item in items:
        if isinstance(item, Contact) and item.pk in changed:
            for name, value in values.items():
                setattr(item, name, value)


def cancel_queued(
    contact_pks: Sequence[int], description: str, *, advertising_only: bool, now: datetime
) -> int:
    """Cancel the messages still queued to these contacts (of advertising campaigns only, or
    all), and complete the campaigns left with nothing to send. Campaign rows are locked
    before message rows, as every writer does (``outbox.claiming.lock_campaigns``)."""
    from .outbox.claiming import lock_campaigns
    from .outbox.controls import complete_finished_campaigns
    from .transitions import Actor, MessageMove, move_messages

    if not contact_pks:
        return 0
    cancelled = 0
    for start in range(0, len(contact_pks), CHUNK):
        queued = Message.objects.filter(
            contact_id__in=contact_pks[start : start + CHUNK], status=MessageStatus.QUEUED
        )
        if advertising_only:
            queued = queued.filter(campaign__kind=CampaignKind.ADVERTISING)
        with transaction.atomic():
            campaigns = lock_campaigns(queued.values_list("campaign_id", flat=True).distinct())
            rows = Message.objects.filter(pk__in=queued.values("pk"), status=MessageStatus.QUEUED)
            moves = [
                MessageMove(m, MessageStatus.CANCELLED, EventSource.ADMIN, {}, description)
                for m in rows.select_for_update().order_by("pk").defer("text", "last_response")
            ]
            cancelled += len(move_messages(moves, now=now, where=()))
            complete_finished_campaigns(campaigns, now, actor=Actor.OPERATOR)
    return cancelled


# --- the import's consent column ------------------------------------------------------------

_YES = {"yes", "y", "true", "1", "+", "да", "д", "есть", "согласен", "согласна", "x", "✓"}
_NO = {"no", "n", "false", "0", "-", "нет", "н", "отказ", "отозвано", "отозвал", "отозвала"}
_DATE_FORMATS = ("%d.%m.%Y", "%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%d/%m/%Y", "%d.%m.%y")


def parse_consent(value: Any) -> tuple[bool | None, datetime | None]:
    """The import's consent column: (True, when) for yes or a date, (False, None) for no,
    (None, None) for an empty cell (leave the contact as it is). ``when`` is None for a plain
    yes (the import's time). ValidationError for anything else, or a date in the future."""
    if isinstance(value, datetime):
        return True, _checked(_aware(value))
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return (True, None) if value else (False, None)
    text = str(value).strip()
    low = text.lower().rstrip(".")
    if low in _YES:
        return True, None
    if low in _NO:
        return False, None
    when = _parse_when(text)
    if when is None:
        raise ValidationError(
            _("“%(value)s” is not a consent: write yes, no or the date it was given.")
            % {"value": text[:50]},
            code="consent",
        )
    return True, _checked(when)


def _parse_when(text: str) -> datetime | None:
    try:
        when = parse_datetime(text)
        if when is None and (day := parse_date(text)) is not None:
            when = datetime.combine(day, datetime.min.time())
    except ValueError:
        when = None
    for fmt in _DATE_FORMATS:
        if when is not None:
            break
        try:
            when = datetime.strptime(text, fmt)
        except ValueError:
            continue
    return _aware(when) if when is not None else None


def _checked(when: datetime) -> datetime:
    if when > timezone.now():
        raise ValidationError(
            _("The consent date %(date)s is in the future.") % {"date": when.date()},
            code="consent_future",
        )
    return when
