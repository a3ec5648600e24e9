"""A contact's page: its SMS history (messages with status and campaign, newest first, a page
at a time, a link to all of them in the messages list). Its consent and opt-out events are the
``ContactEventInline`` of :mod:`.consent_actions`."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from ..models import Message

#: Messages per page of a contact's history.
HISTORY_PER_PAGE = 20
HISTORY_PAGE_PARAM = "sms_page"


def contact_history(request: HttpRequest, contact_pk: Any, site_name: str) -> dict[str, Any]:
    """The template context of one page of the contact's messages."""
    messages = (
        Message.objects.filter(contact_id=contact_pk)
        .select_related("campaign")
        .only(
            "pk",
            "status",
            "text",
            "created_at",
            "sent_at",
            "delivered_at",
            "campaign__name",
            "provider",
        )
        .order_by("-created_at", "-id")
    )
    paginator = Paginator(messages, HISTORY_PER_PAGE)
    page = paginator.get_page(request.GET.get(HISTORY_PAGE_PARAM))
    try:
        all_url = reverse(f"{site_name}:crm_sms_message_changelist")
    except NoReverseMatch:  # messages not registered on this site
        all_url = ""
    return {
        "sms_history": page,
        "sms_history_count": paginator.count,
        "sms_history_all_url": f"{all_url}?contact__id__exact={contact_pk}" if all_url else "",
        "sms_history_page_param": HISTORY_PAGE_PARAM,
        "sms_history_site": site_name,
    }


class ContactHistoryMixin:
    """Adds the SMS history to a Contact admin's change page."""

    change_form_template = "admin/crm_sms/contact/change_form.html"

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        extra_context = {**(extra_context or {})}
        if object_id:
            site_name = self.admin_site.name  # type: ignore[attr-defined]
            extra_context.update(contact_history(request, object_id, site_name))
        return super().change_view(  # type: ignore[misc]
            request, object_id, form_url, extra_context
        )
