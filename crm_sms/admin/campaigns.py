"""Campaigns: the list with a progress bar per row, the change page that refreshes while the
campaign runs, and its controls (pause, resume, cancel, retry, copy, send a draft).

The controls call :mod:`crm_sms.outbox`; the admin never moves a status itself. Pause, cancel
and copy (a draft sends nothing) need ``change_campaign``; whatever can make an SMS go out
(resume, retry failed, sending a draft, scheduling one) needs ``crm_sms.send_sms`` too, as an
action, as a button and as a POST to its ``control/`` URL alike (``may_operate``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import django
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format, get_format
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, ngettext_lazy, pgettext_lazy

from .. import outbox
from ..campaign_counts import counts_for
from ..models import Campaign, CampaignStatus, MessageStatus
from . import resend
from .campaign_costs import COMPLIANCE_FIELDS, CampaignComplianceMixin
from .common import DRAFT_SESSION_KEY, EMPTY_VALUE, SEND_SMS_PERMISSION, excluded_rows
from .event_display import seconds_display

ACTIVE_CAMPAIGN_STATUSES = {CampaignStatus.RUNNING, CampaignStatus.SCHEDULED}

# The change page's buttons, in their order.
CAMPAIGN_OPERATIONS = {
    "use": gettext_lazy("Send to contacts…"),
    "pause": gettext_lazy("Pause"),
    "resume": gettext_lazy("Resume"),
    "cancel": gettext_lazy("Cancel"),
    "retry": gettext_lazy("Retry failed"),
    "copy": gettext_lazy("Copy as a new draft"),
}


# Why "Retry failed" refuses a cancelled campaign.
CANCELLED_IS_FINAL = gettext_lazy(
    "A cancelled campaign is final: copy it as a new draft to send its text again."
)


def short_time(value: datetime) -> str:
    """A list column's time: the language's short date and the time to the minute."""
    return date_format(timezone.localtime(value), f"{get_format('SHORT_DATE_FORMAT')} H:i")


def campaign_title(campaign: Campaign) -> str:
    """The change page's title: a finished campaign is viewed, not changed (and Russian needs
    no case of «рассылка» after «Изменить»)."""
    if campaign.status in (CampaignStatus.COMPLETED, CampaignStatus.CANCELLED):
        return _("View campaign: %(name)s") % {"name": campaign.name}
    return _("Campaign: %(name)s") % {"name": campaign.name}


# --- progress ---------------------------------------------------------------------------------


def status_counts(campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """Messages per status for each campaign: read from the counts kept up to date by every
    insert and status move (``crm_sms.campaign_counts``), not counted over the messages."""
    return counts_for(campaign_ids)


def progress_numbers(counts: Mapping[str, int]) -> dict[str, Any]:
    """Sent, delivered and failed of all, as numbers and percentages for the bar."""
    total = sum(counts.values())
    delivered = counts.get(MessageStatus.DELIVERED, 0)
    sent = counts.get(MessageStatus.SENT, 0)  # sent, no report yet
    failed = counts.get(MessageStatus.FAILED, 0) + counts.get(MessageStatus.UNDELIVERED, 0)
    cancelled = counts.get(MessageStatus.CANCELLED, 0)
    pending = counts.get(MessageStatus.QUEUED, 0) + counts.get(MessageStatus.SENDING, 0)

    def pct(n: int) -> float:
        return round(100.0 * n / total, 2) if total else 0.0

    return {
        "label": progress_label(delivered, sent, failed, cancelled, total),
        "total": total,
        "delivered": delivered,
        "sent": sent,
        "failed": failed,
        "cancelled": cancelled,
        "pending": pending,
        "delivered_pct": pct(delivered),
        "sent_pct": pct(sent),
        "failed_pct": pct(failed),
        "cancelled_pct": pct(cancelled),
    }


def progress_label(delivered: int, sent: int, failed: int, cancelled: int, total: int) -> str:
    """ "5 delivered · 3 failed of 10": the counts that are not zero (a "0 sent" is noise)."""
    parts = [
        text % {"count": n}
        for n, text in (
            (delivered, _("%(count)s delivered")),
            (sent, _("%(count)s sent")),
            (failed, _("%(count)s failed")),
            (cancelled, _("%(count)s cancelled")),
        )
        if n
    ]
    if not parts:
        return _("%(total)s waiting") % {"total": total} if total else _("no messages")
    return _("%(counts)s of %(total)s") % {"counts": " · ".join(parts), "total": total}


def render_progress(counts: Mapping[str, int]) -> str:
    """The progress bar's HTML for these counts per status."""
    return render_to_string("admin/crm_sms/campaign/progress.html", progress_numbers(counts))


class CampaignChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # One query for the progress of the whole page.
        counts = status_counts([c.pk for c in self.result_list])
        for campaign in self.result_list:
            campaign._status_counts = counts.get(campaign.pk, {})


# --- the admin --------------------------------------------------------------------------------


class CampaignAdmin(CampaignComplianceMixin, admin.ModelAdmin):
    # Six columns, not nine: the list fits a 1366 px screen with both sidebars (kind under
    # the status, the author under the creation time, the end under the start).
    list_display = (
        "name",
        "status_column",
        "progress",
        "recipients_count",
        "created_column",
        "period_column",
    )
    list_filter = ("status", "kind", "created_at")
    list_select_related = ("created_by",)
    search_fields = ("name",)
    show_full_result_count = False
    empty_value_display = EMPTY_VALUE
    change_form_template = "admin/crm_sms/campaign/change_form.html"

    class Media:
        css = {"all": ["crm_sms/admin.css"]}  # the progress bars of the list

    actions = [
        "pause_action",
        "resume_action",
        "cancel_action",
        "retry_failed_action",
        "copy_action",
    ]
    editable_when_draft = ("name", "text", "sender", "provider", "scheduled_at")
    fields = (
        "name",
        "status",
        "text",
        "sender",
        "provider",
        "scheduled_at",
        "created_by",
        "created_at_display",
        "started_at_display",
        "finished_at_display",
        "pause_reason",
        "recipients_count",
        "excluded_display",
        *COMPLIANCE_FIELDS,
    )

    # Times to the second on the page: when it started and ended, next to its messages' times.
    created_at_display = seconds_display("created_at", Campaign)
    started_at_display = seconds_display("started_at", Campaign)
    finished_at_display = seconds_display("finished_at", Campaign)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CampaignChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Campaigns start from "Send SMS…" on contacts or groups.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None):
        if obj is not None and obj.status == CampaignStatus.DRAFT:
            editable = set(self.editable_when_draft)
            if not self.has_send_sms_permission(request, obj):
                editable.discard("scheduled_at")  # scheduling a send is sending
            return [f for f in self.fields if f not in editable]
        return self.fields

    def has_send_sms_permission(self, request: HttpRequest, obj: Campaign | None = None) -> bool:
        """May make a campaign's SMS go out (resume, retry failed, send or schedule a draft):
        ``crm_sms.send_sms`` and the permission to change campaigns."""
        return request.user.has_perm(SEND_SMS_PERMISSION) and self.has_change_permission(
            request, obj
        )

    def operation_handlers(self) -> dict[str, Callable[[HttpRequest, QuerySet], Any]]:
        """The change page's buttons (``CAMPAIGN_OPERATIONS``) and what each runs."""
        return {
            "use": self.use_draft,
            "pause": self.pause_action,
            "resume": self.resume_action,
            "cancel": self.cancel_action,
            "retry": self.retry_failed_action,
            "copy": self.copy_action,
        }

    def may_operate(self, request: HttpRequest, operation: str, campaign: Campaign) -> bool:
        """Whether the user may run the operation: the same check as Django's for the action
        (its ``allowed_permissions``, ``change`` or ``send_sms``, for this campaign)."""
        handler = self.operation_handlers()[operation]
        checks = {"change": self.has_change_permission, "send_sms": self.has_send_sms_permission}
        return any(checks[name](request, campaign) for name in handler.allowed_permissions)

    @admin.display(description=gettext_lazy("progress"))
    def progress(self, campaign: Campaign) -> str:
        counts = getattr(campaign, "_status_counts", None)
        if counts is None:
            counts = status_counts([campaign.pk])[campaign.pk]
        return render_progress(counts)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_column(self, campaign: Campaign) -> str:
        return format_html(
            '{}<div class="crm-sms-quiet">{}</div>',
            campaign.get_status_display(),
            campaign.get_kind_display(),
        )

    @admin.display(description=gettext_lazy("created"), ordering="created_at")
    def created_column(self, campaign: Campaign) -> str:
        return format_html(
            '{}<div class="crm-sms-quiet">{}</div>',
            short_time(campaign.created_at),
            campaign.created_by or "",
        )

    @admin.display(description=pgettext_lazy("column", "sending"), ordering="started_at")
    def period_column(self, campaign: Campaign) -> str:
        """When it started and, below, when it finished ("…" while it runs)."""
        if campaign.started_at is None:
            return self.get_empty_value_display()
        end = short_time(campaign.finished_at) if campaign.finished_at else "…"
        day, _space, time = end.rpartition(" ")
        # The dash stays with the date (a browser may break a line after "–").
        return format_html(
            '{}<div class="crm-sms-quiet"><span class="crm-sms-nowrap">– {}</span> {}</div>',
            short_time(campaign.started_at),
            day or time,
            time if day else "",
        )

    @admin.display(description=gettext_lazy("excluded"))
    def excluded_display(self, campaign: Campaign) -> str:
        rows = excluded_rows(campaign.excluded or {})
        return ", ".join(f"{reason}: {n}" for reason, n in rows) or EMPTY_VALUE

    # --- pages ---

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name=f"{info[0]}_{info[1]}_progress",
            ),
            path(
                "<path:object_id>/control/<str:operation>/",
                self.admin_site.admin_view(self.control_view),
                name=f"{info[0]}_{info[1]}_control",
            ),
            *super().get_urls(),
        ]

    def campaign_state(self, campaign: Campaign) -> dict[str, Any]:
        """What the change page shows and polls: status, counts per status, the bar."""
        counts = status_counts([campaign.pk])[campaign.pk]
        return {
            "status": campaign.status,
            "status_display": campaign.get_status_display(),
            "counts": {s.value: counts.get(s.value, 0) for s in MessageStatus},
            "progress": progress_numbers(counts),
            "progress_html": render_progress(counts),
            "active": self.is_active(campaign, counts),
        }

    @staticmethod
    def is_active(campaign: Campaign, counts: Mapping[str, int]) -> bool:
        """Worth refreshing: running or scheduled, or messages still in flight."""
        in_flight = sum(
            counts.get(s, 0)
            for s in (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT)
        )
        return campaign.status in ACTIVE_CAMPAIGN_STATUSES or (
            in_flight > 0 and campaign.status != CampaignStatus.PAUSED
        )

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """JSON for the change page's poll: status, counts per status, the bar's HTML."""
        campaign = get_object_or_404(Campaign, pk=object_id)
        if not self.has_view_or_change_permission(request, campaign):
            raise PermissionDenied
        return JsonResponse(self.campaign_state(campaign))

    def control_view(self, request: HttpRequest, object_id: str, operation: str) -> HttpResponse:
        """The change page's buttons: POST pause/resume/cancel/retry/copy."""
        if request.method != "POST" or operation not in CAMPAIGN_OPERATIONS:
            raise PermissionDenied
        campaign = get_object_or_404(Campaign, pk=object_id)
        if not self.may_operate(request, operation, campaign):
            raise PermissionDenied
        queryset = Campaign.objects.filter(pk=campaign.pk)
        response = self.operation_handlers()[operation](request, queryset)
        if response is not None:
            return response
        return HttpResponseRedirect(
            reverse(f"{self.admin_site.name}:crm_sms_campaign_change", args=[campaign.pk])
        )

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        extra_context = {**(extra_context or {})}
        campaign = self.get_object(request, object_id)
        if campaign is not None:
            extra_context.update(self.change_page_context(request, campaign))
            if campaign.status != CampaignStatus.DRAFT:
                # Everything is read-only once queued: no save buttons.
                extra_context.update(show_save=False, show_save_and_continue=False)
            extra_context.setdefault("title", campaign_title(campaign))
        return super().change_view(request, object_id, form_url, extra_context)

    def changelist_view(self, request: HttpRequest, extra_context=None):
        # «Рассылки», not «Выберите рассылка для изменения».
        extra_context = {"title": _("Campaigns"), **(extra_context or {})}
        return super().changelist_view(request, extra_context)

    def change_page_context(self, request: HttpRequest, campaign: Campaign) -> dict[str, Any]:
        """The change page's state, its counts with links to the messages, and its buttons."""
        state = self.campaign_state(campaign)
        messages_url = reverse(f"{self.admin_site.name}:crm_sms_message_changelist")
        of_campaign = f"{messages_url}?campaign__id__exact={campaign.pk}"
        counts = state["counts"]
        return {
            "campaign_state": state,
            "crm_sms_tools_in_header": django.VERSION >= (6, 0),
            "status_rows": [
                (s.label, s.value, counts[s.value], f"{of_campaign}&status__exact={s.value}")
                for s in MessageStatus
            ],
            "messages_url": of_campaign,
            "progress_url": reverse(
                f"{self.admin_site.name}:crm_sms_campaign_progress", args=[campaign.pk]
            ),
            "operations": self.available_operations(request, campaign, state),
        }

    def available_operations(
        self, request: HttpRequest, campaign: Campaign, state: Mapping[str, Any]
    ) -> list[dict]:
        """The buttons this user may press on this campaign, in its present state (a cancelled
        campaign is final: no "Retry failed")."""
        if not self.has_change_permission(request, campaign):
            return []
        status = campaign.status
        allowed = {
            "use": status == CampaignStatus.DRAFT,
            "pause": status in (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED),
            "resume": status == CampaignStatus.PAUSED,
            "cancel": status
            in (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED),
            "retry": state["counts"][MessageStatus.FAILED] > 0
            and status != CampaignStatus.CANCELLED,
            "copy": True,
        }
        return [
            {
                "name": op,
                "label": label,
                "url": reverse(
                    f"{self.admin_site.name}:crm_sms_campaign_control", args=[campaign.pk, op]
                ),
            }
            for op, label in CAMPAIGN_OPERATIONS.items()
            if allowed[op] and self.may_operate(request, op, campaign)
        ]

    # --- actions (also the change page's buttons) ---

    @admin.action(permissions=["send_sms"])  # a button only, not in the actions list
    def use_draft(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        """Remember the draft and go to the contacts: "Send SMS…" there starts from its text."""
        draft = queryset.get()
        if draft.status != CampaignStatus.DRAFT or not self.has_send_sms_permission(request):
            raise PermissionDenied
        request.session[DRAFT_SESSION_KEY] = draft.pk
        self.message_user(
            request,
            _(
                "Select the recipients (or groups) and choose “Send SMS…”: the text of "
                "“%(name)s” is filled in."
            )
            % {"name": draft.name},
        )
        return HttpResponseRedirect(reverse(f"{self.admin_site.name}:crm_sms_contact_changelist"))

    def _each(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        func: Callable[[Campaign], Any],
        done_message: Any,
    ) -> None:
        """Run ``func`` on each campaign; a False result means "not applicable" (left as is).
        ``done_message``: an ``ngettext_lazy(…, "count")``, so the count picks its form."""
        done, failed, left = 0, [], []
        for campaign in queryset:
            try:
                outcome = func(campaign)
            except ValidationError as exc:
                failed.append(f"“{campaign.name}”: {' '.join(exc.messages)}")
            else:
                if outcome is False:
                    left.append(f"“{campaign.name}” ({campaign.get_status_display()})")
                else:
                    done += 1
        if done:
            self.message_user(request, done_message % {"count": done}, messages.SUCCESS)
        if left:
            self.message_user(
                request,
                _("Left as is, not in a state for this: %(campaigns)s.")
                % {"campaigns": ", ".join(left)},
                messages.WARNING,
            )
        for text in failed:
            self.message_user(request, text, messages.ERROR)

    @admin.action(description=gettext_lazy("Pause"), permissions=["change"])
    def pause_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._each(
            request,
            queryset,
            lambda c: outbox.pause_campaign(
                c, reason=_("Paused by %(user)s") % {"user": request.user}
            ),
            ngettext_lazy("%(count)d campaign paused.", "%(count)d campaigns paused.", "count"),
        )

    @admin.action(description=gettext_lazy("Resume"), permissions=["send_sms"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = ngettext_lazy("%(count)d campaign resumed.", "%(count)d campaigns resumed.", "count")
        self._each(request, queryset, outbox.resume_campaign, done)

    @admin.action(
        description=gettext_lazy("Cancel (unsent messages are cancelled)"), permissions=["change"]
    )
    def cancel_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        done = ngettext_lazy(
            "%(count)d campaign cancelled.", "%(count)d campaigns cancelled.", "count"
        )
        self._each(request, queryset, outbox.cancel_campaign, done)

    @admin.action(description=gettext_lazy("Retry failed messages…"), permissions=["send_sms"])
    def retry_failed_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """First a page that says what will happen; the confirmed POST (``post=yes``, with the
        page's time, so a second POST of it does nothing) queues them."""
        campaigns = list(queryset)
        if any(c.status == CampaignStatus.CANCELLED for c in campaigns):
            self.message_user(request, CANCELLED_IS_FINAL, messages.ERROR)
            campaigns = [c for c in campaigns if c.status != CampaignStatus.CANCELLED]
            if not campaigns:
                return None
        if request.POST.get("post") != "yes":
            return resend.retry_failed_page(self, request, campaigns)
        total = 0
        seen_at = resend.seen_at(request)

        def retry(campaign: Campaign) -> None:
            nonlocal total
            if campaign.status == CampaignStatus.CANCELLED:
                raise ValidationError(CANCELLED_IS_FINAL, code="campaign_cancelled")
            total += outbox.retry_failed(campaign, seen_at=seen_at) or 0

        self._each(
            request,
            queryset.filter(pk__in=[c.pk for c in campaigns]),
            retry,
            ngettext_lazy("%(count)d campaign retried.", "%(count)d campaigns retried.", "count"),
        )
        self.message_user(
            request,
            ngettext(
                "%(count)d failed message queued again.",
                "%(count)d failed messages queued again.",
                total,
            )
            % {"count": total},
        )
        return None

    @admin.action(description=gettext_lazy("Copy as a new draft"), permissions=["change"])
    def copy_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        copies = [
            Campaign.objects.create(
                name=_("%(name)s (copy)") % {"name": campaign.name},
                text=campaign.text,
                sender=campaign.sender,
                provider=campaign.provider,
                status=CampaignStatus.DRAFT,
                created_by=request.user,
            )
            for campaign in queryset
        ]
        self.message_user(
            request,
            ngettext("%(count)d draft created.", "%(count)d drafts created.", len(copies))
            % {"count": len(copies)},
            messages.SUCCESS,
        )
        if len(copies) == 1:
            return HttpResponseRedirect(
                reverse(f"{self.admin_site.name}:crm_sms_campaign_change", args=[copies[0].pk])
            )
        return None
