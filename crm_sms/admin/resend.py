"""The "Resend" pages: what will happen is shown before it happens, and a confirmed form is
carried out at most once (see :mod:`crm_sms.outbox.resending`).

``resend_selected`` is the messages' "Resend" action: the first POST shows the confirmation
page (N will be sent again with the same id, M are uncertain and need an explicit tick, K are
left as they are and why); its form posts back once with each row's state token, and only rows
still in that state move. ``retry_failed_page`` is the same for a campaign's "Retry failed"
(what it will do, and the time the page was shown, which the confirmed POST passes on).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import outbox
from ..models import Campaign
from ..outbox.resending import REASONS, Verdict, plan_resend, retry_plan

#: At most this many messages are resent in one action (each is shown on the page).
MAX_RESEND = 500
CONFIRM_FIELD = "confirm_uncertain"


def resend_selected(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> TemplateResponse | None:
    """The "Resend" action: the confirmation page, or (its POST) the resend it confirmed."""
    if queryset.count() > MAX_RESEND:
        modeladmin.message_user(
            request,
            _(
                "Select at most %(max)d messages to resend; for a whole campaign use its "
                "“Retry failed”."
            )
            % {"max": MAX_RESEND},
            messages.ERROR,
        )
        return None
    if request.POST.get("post") == "yes":
        carry_out(modeladmin, request, queryset)
        return None
    plan = plan_resend(queryset.select_related("campaign").order_by("pk"))
    opts = modeladmin.model._meta
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Resend messages?"),
        "opts": opts,
        "plan": plan,
        "selected": [item.message.pk for item in plan.items],
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "confirm_field": CONFIRM_FIELD,
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/crm_sms/message/resend_confirmation.html", context)


def carry_out(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet) -> None:
    """Resend what the confirmation page listed, each row only while still in the state shown
    there; tell the operator what happened."""
    confirmed = request.POST.get(CONFIRM_FIELD) == "yes"
    done: dict[Verdict, int] = defaultdict(int)
    left: dict[str, list[str]] = defaultdict(list)
    for item in plan_resend(queryset.order_by("pk")).items:
        message = item.message
        token = request.POST.get(f"state_{message.pk}")
        if token is None:
            continue  # the page listed it as left as it is
        try:
            outbox.resend_message(message, confirmed=confirmed, token=token, by=str(request.user))
        except ValidationError as exc:
            left[exc.code or "error"].append(f"{message.phone} [{message.msg_id}]")
        else:
            done[item.verdict] += 1
    if done[Verdict.AGAIN]:
        count = done[Verdict.AGAIN]
        text = ngettext(
            "%(count)d message queued again with the same id.",
            "%(count)d messages queued again with the same id.",
            count,
        )
        modeladmin.message_user(request, text % {"count": count}, messages.SUCCESS)
    if done[Verdict.CONFIRM]:
        count = done[Verdict.CONFIRM]
        text = ngettext(
            "%(count)d uncertain message queued again, as you confirmed: it may arrive twice.",
            "%(count)d uncertain messages queued again, as you confirmed: they may arrive twice.",
            count,
        )
        modeladmin.message_user(request, text % {"count": count}, messages.WARNING)
    for code, names in left.items():
        modeladmin.message_user(request, _left_text(code, names), messages.WARNING)


def _left_text(code: str, names: list[str]) -> str:
    if code == "changed":
        why = _("it changed since the confirmation page was shown")
    elif code == "needs_confirmation":
        why = _("uncertain whether sent, and the resend was not confirmed")
    else:
        why = str(REASONS.get(code, code))
    return ngettext(
        "%(count)d message left as it is (%(why)s): %(messages)s.",
        "%(count)d messages left as they are (%(why)s): %(messages)s.",
        len(names),
    ) % {"count": len(names), "why": why, "messages": ", ".join(names[:20])}


def retry_failed_page(
    modeladmin: admin.ModelAdmin, request: HttpRequest, campaigns: list[Campaign]
) -> TemplateResponse:
    """The confirmation page of "Retry failed": per campaign, what it will do."""
    context = {
        **modeladmin.admin_site.each_context(request),
        "title": _("Retry failed messages?"),
        "opts": modeladmin.model._meta,
        "rows": [(campaign, retry_plan(campaign.pk)) for campaign in campaigns],
        "seen_at": timezone.now().isoformat(),
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        "media": modeladmin.media,
    }
    request.current_app = modeladmin.admin_site.name
    return TemplateResponse(request, "admin/crm_sms/campaign/retry_confirmation.html", context)


def seen_at(request: HttpRequest) -> datetime | None:
    """The time the "Retry failed" confirmation page was shown, from its POST."""
    value = parse_datetime(request.POST.get("seen_at") or "")
    return value if value is not None and timezone.is_aware(value) else None
