"""The SMS dashboard (the last 30 days: messages per day by status, delivery rate per provider,
top failure reasons, campaigns in progress) and a campaign's charts (delivery over time and the
funnel recipients → sent → delivered), drawn on the server as SVG (:mod:`crm_sms.charts`) from
the aggregates of :mod:`crm_sms.stats`.

The dashboard is the admin page of the proxy model :class:`crm_sms.models.Dashboard`, so the
admin index and the app list link to it like to any model; it needs ``crm_sms.view_message``.
Its URLs (``get_urls``) are the page and ``campaign/<id>/charts/``, the JSON the campaign page
polls (``static/crm_sms/campaign_charts.js``) to redraw its charts while the campaign runs.
The campaign page shows them with ``{% load crm_sms_charts %}`` and
``{% campaign_charts original counts %}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import charts, stats
from ..backends import provider_choices
from ..models import Campaign, CampaignStatus, MessageStatus
from .campaigns import CampaignAdmin, render_progress, status_counts

VIEW_MESSAGES = "crm_sms.view_message"
IN_PROGRESS = (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED)
IN_PROGRESS_SHOWN = 20
#: How often the campaign page redraws its charts while the campaign runs (the JS reads it):
#: a big campaign's timeline reads all its rows (about 0.5 s at 400,000), so less often.
REFRESH_SECONDS = 10
BIG_CAMPAIGN, BIG_REFRESH_SECONDS = 100_000, 30


def series_for(values: Mapping[str, list[int]]) -> list[charts.Series]:
    """The chart series of ``values`` in their order; the optional ones only when not empty."""
    return [
        charts.Series(key, str(stats.SERIES_LABELS[key]), values[key])
        for key in stats.SERIES
        if key not in stats.OPTIONAL_SERIES or any(values[key])
    ]


def counted(values: Mapping[str, int]) -> str:
    """The charts' descriptions' "12 waiting, 30 delivered…" (the non-empty series)."""
    return ", ".join(
        f"{charts.fmt(values[key])} {stats.SERIES_LABELS[key]}"
        for key in stats.SERIES
        if values.get(key)
    ) or _("no messages")


# --- the dashboard ------------------------------------------------------------------------------


def daily_chart(period: stats.Period) -> str:
    days = len(period.days)
    totals = {key: period.sum(key) for key in stats.SERIES}
    axes = charts.Axes(
        title=ngettext(
            "Messages per day, last %(days)d day", "Messages per day, last %(days)d days", days
        )
        % {"days": days},
        desc=_(
            "Messages created on each day from %(first)s to %(last)s, by their status now: "
            "%(total)s in all; %(counts)s."
        )
        % {
            "first": date_format(period.days[0], "DATE_FORMAT"),
            "last": date_format(period.days[-1], "DATE_FORMAT"),
            "total": charts.fmt(period.total),
            "counts": counted(totals),
        },
        x_label=_("Day created"),
        y_label=_("Messages"),
        empty=_("No messages in these days."),
    )
    categories = [date_format(day, "j M") for day in period.days]
    return charts.stacked_bars(
        "crm-sms-daily",
        axes,
        categories,
        series_for(period.series),
        label_every=5 if days > 10 else 1,
        frame=charts.Frame(1100, 320, show_title=False),
    )


def provider_name(alias: str, names: Mapping[str, str]) -> str:
    return names.get(alias, alias) or "—"


def provider_chart(period: stats.Period) -> str:
    names = dict(provider_choices())
    bars = []
    for row in period.providers:
        text = _("%(rate)s · %(delivered)s of %(attempted)s") % {
            "rate": charts.percent(row.delivered, row.attempted),
            "delivered": charts.fmt(row.delivered),
            "attempted": charts.fmt(row.attempted),
        }
        bars.append(charts.Bar(provider_name(row.alias, names), row.rate, text))
    desc = _("Delivered of the messages handed to each provider in the period: %(rows)s.") % {
        "rows": "; ".join(f"{bar.label} {bar.text}" for bar in bars) or "—"
    }
    return charts.hbars(
        "crm-sms-providers",
        _("Delivery rate by provider"),
        desc,
        bars,
        empty=_("No messages in these days."),
        # Its own size in the half-width module at 1366 px: not scaled down, its text is the
        # tables' size beside it.
        frame=charts.Frame(440, show_title=False),
    )


def reason_rows(period: stats.Period) -> list[dict[str, Any]]:
    failed = period.sum("failed")
    return [
        {
            "code": code or stats.NO_ERROR_CODE,
            "message": message,
            "count": n,
            "share": 100.0 * n / failed if failed else 0.0,
        }
        for code, message, n in period.reasons
    ]


def campaigns_in_progress(request: HttpRequest, site_name: str) -> list[dict[str, Any]]:
    """Running, scheduled and paused campaigns (newest first) with their progress bars."""
    campaigns = list(
        Campaign.objects.filter(status__in=IN_PROGRESS).order_by("-created_at", "-id")[
            :IN_PROGRESS_SHOWN
        ]
    )
    counts = status_counts([c.pk for c in campaigns])
    may_view = request.user.has_perm("crm_sms.view_campaign") or request.user.has_perm(
        "crm_sms.change_campaign"
    )
    return [
        {
            "campaign": campaign,
            "url": reverse(f"{site_name}:crm_sms_campaign_change", args=[campaign.pk])
            if may_view
            else "",
            "progress": render_progress(counts.get(campaign.pk, {})),
        }
        for campaign in campaigns
    ]


# --- a campaign's charts ------------------------------------------------------------------------


def time_ticks(timeline: stats.Timeline, count: int = 6) -> list[tuple[float, str]]:
    """About ``count`` labelled points of the timeline's x axis (x in minutes from its start)."""
    times = timeline.times
    if not times:
        return []
    span = times[-1] - times[0]
    if timeline.step >= timedelta(days=1):
        fmt = "j M"
    elif span >= timedelta(days=1) or times[0].date() != times[-1].date():
        fmt = "j M H:i"
    else:
        fmt = "H:i"
    every = max(1, -(-(len(times) - 1) // (count - 1)))
    indexes = list(range(0, len(times), every))
    return [(_minutes(times[i], times[0]), date_format(times[i], fmt)) for i in indexes]


def _minutes(t: datetime, start: datetime) -> float:
    return (t - start).total_seconds() / 60


def every(step: timedelta) -> str:
    """ "every minute", "every 5 minutes", "every 2 hours", "every day"…"""
    minutes = int(step.total_seconds() // 60)
    if minutes % 1440 == 0:
        n = minutes // 1440
        return (
            _("every day")
            if n == 1
            else ngettext("every %(n)d day", "every %(n)d days", n) % {"n": n}
        )
    if minutes % 60 == 0:
        n = minutes // 60
        return (
            _("every hour")
            if n == 1
            else ngettext("every %(n)d hour", "every %(n)d hours", n) % {"n": n}
        )
    if minutes == 1:
        return _("every minute")
    return ngettext("every %(n)d minute", "every %(n)d minutes", minutes) % {"n": minutes}


def timeline_chart(campaign: Campaign, timeline: stats.Timeline) -> str:
    times = [timezone.localtime(t) for t in timeline.times]
    timeline = stats.Timeline(times, timeline.step, timeline.series)
    desc = _("The messages of “%(name)s” by status over time, %(every)s.") % {
        "name": campaign.name,
        "every": every(timeline.step),
    }
    if times:
        desc += " " + _("At %(time)s: %(counts)s.") % {
            "time": date_format(times[-1], "DATETIME_FORMAT"),
            "counts": counted(timeline.at_end()),
        }
    axes = charts.Axes(
        title=_("Delivery over time"),
        desc=desc,
        x_label=_("Time (%(every)s)") % {"every": every(timeline.step)},
        y_label=_("Messages"),
        empty=_("No messages yet."),
    )
    x = [_minutes(t, times[0]) for t in times] if times else []
    return charts.stacked_area(
        "crm-sms-timeline",
        axes,
        x,
        time_ticks(timeline),
        series_for(timeline.series),
        # Beside the funnel at 1366 px (charts.css), at its own size or nearly.
        frame=charts.Frame(560, 300),
    )


def funnel_chart(campaign: Campaign, counts: Mapping[str, int]) -> str:
    total = sum(counts.values())
    recipients = max(campaign.recipients_count, total)
    delivered = counts.get(MessageStatus.DELIVERED, 0)
    sent = delivered + counts.get(MessageStatus.SENT, 0) + counts.get(MessageStatus.UNDELIVERED, 0)
    steps = [
        ("recipients", _("Recipients"), recipients),
        ("sent", _("Sent"), sent),
        ("delivered", _("Delivered"), delivered),
    ]
    desc = _(
        "Of %(recipients)s recipients %(sent)s were sent (%(sent_share)s) and %(delivered)s "
        "delivered (%(delivered_share)s)."
    ) % {
        "recipients": charts.fmt(recipients),
        "sent": charts.fmt(sent),
        "sent_share": charts.percent(sent, recipients),
        "delivered": charts.fmt(delivered),
        "delivered_share": charts.percent(delivered, recipients),
    }
    return charts.funnel(
        "crm-sms-funnel",
        _("Recipients → sent → delivered"),
        desc,
        steps,
        frame=charts.Frame(width=400),
    )


def campaign_charts(
    campaign: Campaign,
    site_name: str = "admin",
    defer: bool = False,
    counts: Mapping[str, int] | None = None,
) -> dict:
    """The context of ``admin/crm_sms/campaign/charts.html``: both charts, whether the page
    should keep redrawing them, and the URL it polls. With ``defer``, a big campaign's timeline
    that is not cached is left to the page's script (``deferred``): the page comes at once.
    ``counts`` (messages per status) are counted when not given."""
    if counts is None:
        counts = status_counts([campaign.pk])[campaign.pk]
    active = CampaignAdmin.is_active(campaign, counts)
    big = sum(counts.values()) >= BIG_CAMPAIGN
    timeline = stats.campaign_timeline(campaign.pk, counts, active, compute=not (defer and big))
    return {
        "timeline_svg": timeline_chart(campaign, timeline) if timeline is not None else "",
        "funnel_svg": funnel_chart(campaign, counts),
        "active": active,
        "deferred": timeline is None,
        "refresh_seconds": BIG_REFRESH_SECONDS if big else REFRESH_SECONDS,
        "charts_url": reverse(f"{site_name}:crm_sms_dashboard_campaign_charts", args=[campaign.pk]),
    }


# --- the admin ----------------------------------------------------------------------------------


class DashboardAdmin(admin.ModelAdmin):
    """The dashboard page in place of a change list; nothing to add, change or delete."""

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_MESSAGES)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path("", self.admin_site.admin_view(self.dashboard_view), name=f"{prefix}_changelist"),
            path(
                "campaign/<int:campaign_id>/charts/",
                self.admin_site.admin_view(self.campaign_charts_view),
                name=f"{prefix}_campaign_charts",
            ),
        ]

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        period = stats.dashboard_period()
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("SMS dashboard"),
            "period": period,
            "days": len(period.days),
            "delivered_share": charts.percent(period.sum("delivered"), period.total),
            "daily_svg": daily_chart(period),
            "providers_svg": provider_chart(period),
            "reasons": reason_rows(period),
            "campaigns": campaigns_in_progress(request, self.admin_site.name),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/crm_sms/dashboard.html", context)

    def campaign_charts_view(self, request: HttpRequest, campaign_id: int) -> JsonResponse:
        """JSON for the campaign page's poll: the charts' HTML and whether to poll again."""
        campaign = get_object_or_404(Campaign, pk=campaign_id)
        if not (
            request.user.has_perm("crm_sms.view_campaign")
            or request.user.has_perm("crm_sms.change_campaign")
        ):
            raise PermissionDenied
        context = campaign_charts(campaign, self.admin_site.name)
        html = render_to_string("admin/crm_sms/campaign/charts_body.html", context, request)
        return JsonResponse({"html": html, "active": context["active"]})
