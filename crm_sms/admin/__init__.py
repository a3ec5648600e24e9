"""The admin: contacts (import, export, "Send SMS…"), groups, campaigns, messages and events.

Every list stays usable with a million rows: related objects are joined or fetched once per page
(never per row), campaign progress is one grouped query per page, costly full counts are off,
and filters use indexed columns. Actions are thin: they call :mod:`crm_sms.outbox` and
:mod:`crm_sms.importing`.

One module per job:

- ``send_action.py``: :class:`SendSMSAdminMixin`, the "Send SMS…" page (public: add it to your
  own ModelAdmin, ``from crm_sms.admin import SendSMSAdminMixin``);
- ``imports.py``: the contact import pages (upload → check → import);
- ``contacts.py``: contacts and groups;
- ``campaigns.py``: campaigns, their progress and controls;
- ``messages.py``: messages and their events, read-only;
- ``dashboard.py``: the SMS dashboard and a campaign's charts;
- ``common.py``: the send permission, the draft in the session, exclusion reasons.

This module registers the models with ``admin.site``.
"""

from django.contrib import admin

from ..models import Campaign, Contact, ContactGroup, Dashboard, Message, MessageEvent
from .campaigns import (
    CampaignAdmin,
    CampaignChangeList,
    progress_numbers,
    render_progress,
    status_counts,
)
from .common import DRAFT_SESSION_KEY, EXCLUDED_REASONS, SEND_SMS_PERMISSION
from .contacts import ContactAdmin, ContactGroupAdmin, GroupChangeList, PhoneSearchMixin
from .dashboard import DashboardAdmin
from .imports import ContactImportMixin
from .messages import (
    MessageAdmin,
    MessageEventAdmin,
    MessageEventInline,
    ProviderFilter,
    ReadOnlyAdminMixin,
)
from .send_action import SendSMSAdminMixin, campaign_url, session_draft

__all__ = [
    "DRAFT_SESSION_KEY",
    "EXCLUDED_REASONS",
    "SEND_SMS_PERMISSION",
    "CampaignAdmin",
    "CampaignChangeList",
    "ContactAdmin",
    "ContactGroupAdmin",
    "ContactImportMixin",
    "DashboardAdmin",
    "GroupChangeList",
    "MessageAdmin",
    "MessageEventAdmin",
    "MessageEventInline",
    "PhoneSearchMixin",
    "ProviderFilter",
    "ReadOnlyAdminMixin",
    "SendSMSAdminMixin",
    "campaign_url",
    "progress_numbers",
    "render_progress",
    "session_draft",
    "status_counts",
]

admin.site.register(Contact, ContactAdmin)
admin.site.register(ContactGroup, ContactGroupAdmin)
admin.site.register(Campaign, CampaignAdmin)
admin.site.register(Message, MessageAdmin)
admin.site.register(MessageEvent, MessageEventAdmin)
admin.site.register(Dashboard, DashboardAdmin)
