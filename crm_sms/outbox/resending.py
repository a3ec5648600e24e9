"""What an operator's "Resend" and "Retry failed" would do to each message, said before it is
done; ``controls.resend_message`` and ``controls.retry_failed`` do it.

The rules (docs/statuses.md, "Resending"):

- A resend reuses the message's row and msg_id, so there is never a second copy for a later
  "Retry failed" to pick up, and a provider that drops repeats of our id (MegaFon: 20102)
  drops it if it had it. A definite refusal (``failed`` with the provider's code) is resent as
  a new attempt of the same row and id too: the provider never accepted that id.
- A message that may already be at the provider -- ``uncertain``, or ``maybe_sent`` (the answer
  to its last attempt was lost) with a provider that can neither drop a repeat nor be asked --
  is resent only with the operator's explicit confirmation: the subscriber may get it twice.
  With a provider that can be asked, the worker asks it first (``lookups``).
- Waiting or in-flight messages, opted-out contacts and cancelled campaigns are left as they
  are, and the plan says why; "Resend failed messages" leaves accepted messages as they are.
- At most once per click: the confirmation page carries each row's ``state_token`` (its status
  and last change); the move is made with the row locked, only while the token still matches,
  so a second POST of the same form (a double click, a browser resubmit) changes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from ..backends import get_backend
from ..backends.base import RetrySafety
from ..models import ACTIVE_STATUSES, CampaignStatus, Contact, Message, MessageStatus
from .lookups import retry_safety

M = MessageStatus
#: Statuses in which the provider had accepted the message.
ACCEPTED_STATUSES = (M.SENT, M.DELIVERED, M.UNDELIVERED)


class Verdict(enum.StrEnum):
    AGAIN = "again"  # queued again with the same msg_id
    CONFIRM = "confirm"  # only with the operator's explicit confirmation: may arrive twice
    LEFT = "left"  # left as it is (``code`` and ``reason`` say why)


#: Why a message is left as it is, or needs a confirmation: code -> a text for people.
REASONS = {
    "active": _("already waiting to be sent"),
    "opted_out": _("the contact opted out of SMS"),
    "campaign_cancelled": _("its campaign is cancelled"),
    "accepted": _("the provider accepted it"),
    "not_resendable": _("it is not in a state to resend"),
    "uncertain": _(
        "uncertain whether sent: the provider may have it already, and it cannot drop a "
        "repeat or be asked, so the subscriber may get the SMS twice"
    ),
    "deduplicated": _("sent again with the same id: the provider drops it if it had it"),
    "lookup": _("the provider is asked first whether it has it; sent only if it does not"),
    "refused": _("sent again as a new attempt with the same id"),
    "accepted_again": _("the provider accepted it; sent again with the same id"),
}


def state_token(message: Message) -> str:
    """The row's state as the confirmation page showed it: a resend made with this token
    happens only while the row is still in that state."""
    return f"{message.status}@{message.updated_at.isoformat() if message.updated_at else ''}"


def safety_of(alias: str, cache: dict[str, RetrySafety] | None = None) -> RetrySafety:
    """The retry safety of provider ``alias`` (NONE when it is not configured: be careful)."""
    if cache is not None and alias in cache:
        return cache[alias]
    try:
        safety = retry_safety(get_backend(alias))
    except ImproperlyConfigured:
        safety = RetrySafety.NONE
    if cache is not None:
        cache[alias] = safety
    return safety


def judge(
    message: Message,
    safety: RetrySafety,
    *,
    opted_out: bool,
    campaign_status: str | None,
    accepted_too: bool,
) -> tuple[Verdict, str]:
    """What a resend does to ``message``: a verdict and the code of its reason (``REASONS``).
    ``accepted_too``: sent, delivered and undelivered messages may be resent too (the API);
    "Resend failed messages" in the admin leaves them."""
    status = message.status
    if status in ACTIVE_STATUSES:
        return Verdict.LEFT, "active"
    if opted_out:
        return Verdict.LEFT, "opted_out"
    if campaign_status == CampaignStatus.CANCELLED:
        return Verdict.LEFT, "campaign_cancelled"
    if status in ACCEPTED_STATUSES and not accepted_too:
        return Verdict.LEFT, "accepted"
    if status not in (M.FAILED, M.UNCERTAIN, M.CANCELLED, *ACCEPTED_STATUSES):
        return Verdict.LEFT, "not_resendable"
    may_be_there = message.maybe_sent or status in (M.UNCERTAIN, *ACCEPTED_STATUSES)
    if status == M.UNCERTAIN or (may_be_there and safety is RetrySafety.NONE):
        return Verdict.CONFIRM, "uncertain"
    if may_be_there and safety is RetrySafety.LOOKUP:
        return Verdict.AGAIN, "lookup"
    if may_be_there:
        return Verdict.AGAIN, "deduplicated"
    return Verdict.AGAIN, "refused"


@dataclass
class PlannedResend:
    """One message of a plan: what will happen to it and why."""

    message: Message
    verdict: Verdict
    code: str
    token: str

    @property
    def reason(self) -> str:
        return str(REASONS[self.code])


@dataclass
class ResendPlan:
    """What "Resend" would do to each selected message, for the confirmation page."""

    items: list[PlannedResend] = field(default_factory=list)

    def of(self, verdict: Verdict) -> list[PlannedResend]:
        return [item for item in self.items if item.verdict == verdict]

    @property
    def again(self) -> list[PlannedResend]:
        return self.of(Verdict.AGAIN)

    @property
    def confirm(self) -> list[PlannedResend]:
        return self.of(Verdict.CONFIRM)

    @property
    def left(self) -> list[PlannedResend]:
        return self.of(Verdict.LEFT)


def plan_resend(messages: Iterable[Message], *, accepted_too: bool = False) -> ResendPlan:
    """What resending ``messages`` would do, judged one by one (a few queries in all)."""
    messages = list(messages)
    contact_ids = {m.contact_id for m in messages if m.contact_id}
    opted_out = set(
        Contact.objects.filter(pk__in=contact_ids, opted_out=True).values_list("pk", flat=True)
    )
    campaign_status = campaign_statuses(m.campaign_id for m in messages)
    safeties: dict[str, RetrySafety] = {}
    plan = ResendPlan()
    for message in messages:
        verdict, code = judge(
            message,
            safety_of(message.provider, safeties),
            opted_out=message.contact_id in opted_out,
            campaign_status=campaign_status.get(message.campaign_id),
            accepted_too=accepted_too,
        )
        plan.items.append(PlannedResend(message, verdict, code, state_token(message)))
    return plan


def campaign_statuses(campaign_ids: Iterable[int | None]) -> dict[int, str]:
    """Campaign id -> its status, for the ids given (None skipped)."""
    from ..models import Campaign

    ids = {pk for pk in campaign_ids if pk}
    return dict(Campaign.objects.filter(pk__in=ids).values_list("pk", "status")) if ids else {}


@dataclass
class RetryPlan:
    """What "Retry failed" would do to a campaign's failed and uncertain messages."""

    again: int = 0  # failed: queued again with the same msg_id
    lookup: int = 0  # of ``again``: the provider is asked first
    unsafe: int = 0  # failed, maybe sent to a provider that cannot tell: left (resend one by one)
    opted_out: int = 0  # failed, the contact opted out: left
    uncertain: int = 0  # uncertain: left (each needs an explicit resend)


def unsafe_providers(aliases: Iterable[str]) -> list[str]:
    """Of ``aliases``, the providers that can neither drop a repeat nor be asked."""
    cache: dict[str, RetrySafety] = {}
    return [a for a in set(aliases) if safety_of(a, cache) is RetrySafety.NONE]


def retry_plan(campaign_id: int) -> RetryPlan:
    """Count what ``controls.retry_failed`` would do to the campaign now."""
    messages = Message.objects.filter(campaign_id=campaign_id)
    failed = messages.filter(status=M.FAILED)
    opted = failed.filter(contact__opted_out=True).count()
    failed = failed.exclude(contact__opted_out=True)
    maybe = set(failed.filter(maybe_sent=True).values_list("provider", flat=True).distinct())
    unsafe = unsafe_providers(maybe)
    lookup = [a for a in maybe if safety_of(a) is RetrySafety.LOOKUP]
    return RetryPlan(
        again=failed.exclude(maybe_sent=True, provider__in=unsafe).count(),
        lookup=failed.filter(maybe_sent=True, provider__in=lookup).count(),
        unsafe=failed.filter(maybe_sent=True, provider__in=unsafe).count(),
        opted_out=opted,
        uncertain=messages.filter(status=M.UNCERTAIN).count(),
    )
