"""``{% load crm_sms_charts %}{% campaign_charts campaign %}``: a campaign's charts (delivery
over time, the funnel), redrawn while it runs (``crm_sms.admin.dashboard``)."""

from __future__ import annotations

from typing import Any

from django import template

register = template.Library()


@register.inclusion_tag("admin/crm_sms/campaign/charts.html", takes_context=True)
def campaign_charts(context: template.Context, campaign: Any) -> dict[str, Any]:
    from ..admin.dashboard import campaign_charts as charts_of
    from ..models import CampaignStatus

    if campaign is None or campaign.status == CampaignStatus.DRAFT:
        return {"show": False}  # a draft has no messages yet
    request = context.get("request")
    site_name = getattr(request, "current_app", None) or "admin"
    return {"show": True, "campaign": campaign, **charts_of(campaign, site_name)}
