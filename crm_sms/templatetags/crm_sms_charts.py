"""``{% load crm_sms_charts %}{% campaign_charts campaign [counts] %}``: a campaign's charts
(delivery over time, the funnel), redrawn while it runs (``crm_sms.admin.dashboard``). A big
campaign's timeline, when not cached, is drawn by the page's script right after the page
loads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("admin/crm_sms/campaign/charts.html", takes_context=True)
def campaign_charts(
    context: template.Context, campaign: Any, counts: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """``counts``: the campaign's messages per status when the page has them already."""
    from ..admin.dashboard import campaign_charts as charts_of
    from ..models import CampaignStatus

    if campaign is None or campaign.status == CampaignStatus.DRAFT:
        return {"show": False}  # a draft has no messages yet
    request = context.get("request")
    site_name = getattr(request, "current_app", None) or "admin"
    charts = charts_of(campaign, site_name, defer=True, counts=counts)
    return {"show": True, "campaign": campaign, **charts}
