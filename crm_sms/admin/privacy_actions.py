"""Personal data (152-FZ) in the contacts admin: "Export personal data" (a JSON file of what
:func:`crm_sms.privacy.export_contact_data` finds, for users with ``crm_sms.export_contact``)
and "Erase personal data (152-FZ)…" (a confirmation page with a reason, then
:func:`crm_sms.privacy.erase_contact`, for users who may delete contacts)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.translation import gettext, gettext_lazy, ngettext

from ..privacy import erase_contact, export_contact_data

#: At most this many contacts in one export file (a data subject request is one person).
MAX_EXPORT = 100


class PersonalDataAdminMixin:
    """The export and erase actions (for a ModelAdmin of Contact with ``has_export_permission``)."""

    @admin.action(description=gettext_lazy("Export personal data (152-FZ)"), permissions=["export"])
    def export_personal_data(self, request: HttpRequest, queryset: QuerySet) -> Any:
        """A JSON file: one contact's data, or a list of them."""
        count = queryset.count()
        if count > MAX_EXPORT:
            self.message_user(  # type: ignore[attr-defined]
                request,
                gettext("Export the data of at most %(max)d contacts at a time.")
                % {"max": MAX_EXPORT},
                messages.ERROR,
            )
            return None
        contacts = list(queryset.order_by("pk"))
        data: Any = [export_contact_data(c) for c in contacts]
        name = "contacts-personal-data.json"
        if len(contacts) == 1:
            data, name = data[0], f"contact-{contacts[0].pk}-personal-data.json"
        body = json.dumps(data, cls=DjangoJSONEncoder, ensure_ascii=False, indent=2)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=gettext_lazy("Erase personal data (152-FZ)…"), permissions=["delete"])
    def erase_personal_data(self, request: HttpRequest, queryset: QuerySet) -> Any:
        """Ask first (with a reason), then erase each selected contact (crm_sms.privacy)."""
        count = queryset.count()
        if request.POST.get("confirmed") != "yes":
            context = {
                **self.admin_site.each_context(request),  # type: ignore[attr-defined]
                "title": ngettext(
                    "Erase the personal data of %(count)d contact?",
                    "Erase the personal data of %(count)d contacts?",
                    count,
                )
                % {"count": count},
                "opts": self.model._meta,  # type: ignore[attr-defined]
                "contacts": queryset.order_by("pk")[:100],
                "count": count,
                "pks": list(queryset.values_list("pk", flat=True)),
                "action_checkbox_name": ACTION_CHECKBOX_NAME,
            }
            return TemplateResponse(
                request, "admin/crm_sms/contact/erase_confirmation.html", context
            )
        reason = request.POST.get("reason", "")[:1000]
        erased = 0
        for contact in queryset.order_by("pk"):
            try:
                erase_contact(contact, by=request.user, reason=reason)
            except ValidationError as exc:
                error = " ".join(exc.messages)
                self.message_user(  # type: ignore[attr-defined]
                    request,
                    gettext("%(contact)s was not erased: %(error)s")
                    % {"contact": contact, "error": error},
                    messages.ERROR,
                )
            else:
                erased += 1
        if erased:
            self.message_user(  # type: ignore[attr-defined]
                request,
                ngettext(
                    "The personal data of %(count)d contact was erased.",
                    "The personal data of %(count)d contacts was erased.",
                    erased,
                )
                % {"count": erased},
                messages.SUCCESS,
            )
        return None
