"""The campaign page's consent, quiet-hours, transliteration and cost fields (issue 13):
the kind, the send window, the estimate made when it was queued, and the cost of what the
provider took (:func:`crm_sms.costs.campaign_cost`, :func:`crm_sms.costs.billed_segments`)."""

from __future__ import annotations

from django.contrib import admin
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from .. import costs
from ..models import Campaign

#: Read-only on the campaign page, after its counts.
COMPLIANCE_FIELDS = (
    "kind",
    "window_display",
    "translit",
    "currency",
    "estimated_cost",
    "cost_sent",
    "billed_parts",
)


class CampaignComplianceMixin:
    @admin.display(description=gettext_lazy("send window"))
    def window_display(self, campaign: Campaign) -> str:
        if campaign.window_start is None or campaign.window_end is None:
            return _("at any hour")
        return _("%(start)s-%(end)s in each recipient's local time") % {
            "start": f"{campaign.window_start:%H:%M}",
            "end": f"{campaign.window_end:%H:%M}",
        }

    @admin.display(description=gettext_lazy("cost of what was sent"))
    def cost_sent(self, campaign: Campaign) -> str:
        if campaign.pk is None:
            return "—"
        amount, currency = costs.campaign_cost(campaign, _billed(campaign))
        return "—" if amount is None else costs.format_money(amount, currency)

    @admin.display(description=gettext_lazy("billed SMS parts"))
    def billed_parts(self, campaign: Campaign) -> str:
        if campaign.pk is None:
            return "—"
        parts = _billed(campaign)
        return ", ".join(f"{k}: {v}" for k, v in parts.items() if v) or "0"


def _billed(campaign: Campaign) -> dict[str, int]:
    """The campaign's billed parts, read once per page (two fields show them)."""
    if not hasattr(campaign, "_billed_segments"):
        campaign._billed_segments = costs.billed_segments(campaign)
    return campaign._billed_segments
