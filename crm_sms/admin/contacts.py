"""Contacts and groups: phone search in any notation, export (``crm_sms.export_contact``),
import, "Send SMS…" (``crm_sms.send_sms``)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import Count, Prefetch, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy, pgettext, pgettext_lazy
from import_export.admin import ExportMixin
from import_export.formats import base_formats

from ..models import Contact, ContactEvent, ContactGroup
from ..phones import normalize_phone
from ..resources import ContactResource
from .common import EMPTY_VALUE, EXPORT_CONTACTS_PERMISSION
from .consent_actions import ConsentAdminMixin, ContactEventInline, ContactForm
from .contact_history import ContactHistoryMixin
from .event_display import consent_source_label
from .imports import ContactImportMixin
from .paginator import LargeListMixin
from .search import ContactSearchMixin, GroupFilter
from .send_action import SendSMSAdminMixin


def search_phone(term: str) -> str | None:
    """The phone a search term is, in E.164, or None."""
    term = term.strip()
    if not term or not any(ch.isdigit() for ch in term):
        return None
    try:
        return normalize_phone(term)
    except ValidationError:
        return None


class PhoneSearchMixin:
    """Search by a whole phone in any notation (normalized, then an exact indexed match);
    anything else, a part of a number included, goes to the next ``get_search_results``
    (:class:`.search.ContactSearchMixin` on contacts)."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        phone = search_phone(search_term)
        if phone:
            return queryset.filter(phone=phone), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


def _source_help(model: type) -> dict[str, Any]:
    """The help text of ``model.source``-like fields, for the columns that show them
    translated (a method has no help text of its own)."""
    name = "consent_source" if model is Contact else "source"
    return {"source_display": model._meta.get_field(name).help_text}


class ContactAdminForm(ContactForm):
    class Meta(ContactForm.Meta):
        help_texts = _source_help(Contact)


class ContactEventForm(forms.ModelForm):
    class Meta:
        model = ContactEvent
        fields = ()
        help_texts = _source_help(ContactEvent)


class ContactEventLogInline(ContactEventInline):
    """The consent and opt-out history with its sources translated (web form → «веб-форма»);
    admin.css hides the row labels ("1: consent given", the raw __str__)."""

    form = ContactEventForm
    fields = ("kind", "source_display", "reason", "actor", "created_at")
    readonly_fields = fields
    classes = ["crm-sms-log"]
    empty_value_display = EMPTY_VALUE

    @admin.display(description=ContactEvent._meta.get_field("source").verbose_name)
    def source_display(self, event: ContactEvent) -> str:
        return consent_source_label(event.source)


class ContactAdmin(
    ContactHistoryMixin,
    LargeListMixin,
    SendSMSAdminMixin,
    ContactImportMixin,
    PhoneSearchMixin,
    ContactSearchMixin,
    ConsentAdminMixin,
    ExportMixin,
    admin.ModelAdmin,
):
    resource_classes = [ContactResource]
    formats = [base_formats.CSV, base_formats.XLSX]
    import_export_change_list_template = "admin/crm_sms/contact/change_list.html"
    # One name column, not three: the list fits a 1366 px screen with both sidebars (14.4).
    list_display = ("full_name", "phone", "email_column", "group_names", "opted_out_mark")
    list_display_links = ("full_name", "phone")
    list_filter = ("opted_out", GroupFilter)
    # What ContactSearchMixin looks in (crm_sms/admin/search.py), by indexed lookups.
    search_fields = ("last_name__istartswith", "email__iexact", "external_id__exact")
    search_help_text = gettext_lazy(
        "A phone in any notation or a part of one (at least 4 digits), the start of a last name "
        "(and of the first and middle names), an email, an external id."
    )
    readonly_fields = ("opted_out_at", "created_at", "updated_at")
    filter_horizontal = ("groups",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice is costly on big tables
    list_per_page = 100
    empty_value_display = EMPTY_VALUE
    fieldsets = (
        (None, {"fields": ("last_name", "first_name", "middle_name", "phone", "email")}),
        (gettext_lazy("Groups"), {"fields": ("groups",)}),
        (
            gettext_lazy("SMS"),
            {"fields": ("opted_out", "opted_out_at", "notes", "external_id")},
        ),
        (gettext_lazy("History"), {"fields": ("created_at", "updated_at")}),
    )

    def has_export_permission(self, request: HttpRequest) -> bool:
        """The export button, page and file need ``crm_sms.export_contact``, whatever
        IMPORT_EXPORT_EXPORT_PERMISSION_CODE says (unset, django-import-export lets every
        user who can view the list export all of it)."""
        return request.user.has_perm(EXPORT_CONTACTS_PERMISSION)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The groups column: one query per page, not one per contact (into a list: no
        # queryset per row).
        groups = Prefetch("groups", ContactGroup.objects.order_by("name"), to_attr="group_list")
        return super().get_queryset(request).prefetch_related(groups)

    class Media:
        css = {"all": ["crm_sms/admin.css"]}  # the list's widths and the opted-out mark

    form = ContactAdminForm

    # The consent source translated when it is a known one (stored as it came).
    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            (name, {**opts, "fields": [_translated(f) for f in opts.get("fields", ())]})
            for name, opts in super().get_fieldsets(request, obj)
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [_translated(f) for f in super().get_readonly_fields(request, obj)]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        return [
            ContactEventLogInline if inline is ContactEventInline else inline
            for inline in super().get_inlines(request, obj)
        ]

    @admin.display(description=Contact._meta.get_field("consent_source").verbose_name)
    def source_display(self, contact: Contact) -> str:
        return consent_source_label(contact.consent_source) or self.get_empty_value_display()

    @admin.display(description=pgettext_lazy("a person's", "name"), ordering="last_name")
    def full_name(self, contact: Contact) -> str:
        """Last, first and middle name, as Russian lists write them (sorted by the last)."""
        return " ".join(
            n for n in (contact.last_name, contact.first_name, contact.middle_name) if n
        )

    @admin.display(description=gettext_lazy("email"), ordering="email")
    def email_column(self, contact: Contact) -> str:
        """The e-mail, allowed to wrap after its "@" and at its dots only (not mid-word)."""
        parts = re.split(r"(?<=@)|(?=\.)", contact.email)
        return format_html_join(mark_safe("<wbr>"), "{}", ((p,) for p in parts))

    # A short header: the list must fit 1366 px (the filter says it in full).
    @admin.display(
        description=pgettext_lazy("column", "opted out"), ordering="opted_out", empty_value=""
    )
    def opted_out_mark(self, contact: Contact) -> str:
        """A red "opted out" for an opted-out contact, nothing for the others: the few who
        must not get SMS stand out (a mark on every row hid them). Words, not the admin's red
        "no" icon: under the header "opt-out" that read as "not opted out"."""
        if not contact.opted_out:
            return ""
        return format_html(
            '<span class="crm-sms-opted-out">{}</span>', pgettext("mark", "opted out")
        )

    @admin.display(description=gettext_lazy("groups"))
    def group_names(self, contact: Contact) -> str:
        groups = getattr(contact, "group_list", None)
        if groups is None:
            groups = contact.groups.all()
        return ", ".join(g.name for g in groups)


def _translated(field: Any) -> Any:
    return "source_display" if field == "consent_source" else field


class GroupChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Members of the page's groups in one grouped query (not a count over every group).
        through = Contact.groups.through
        counts = dict(
            through.objects.filter(contactgroup_id__in=[g.pk for g in self.result_list])
            .order_by()
            .values_list("contactgroup_id")
            .annotate(n=Count("*"))  # COUNT(*): an index-only scan of the group's index
        )
        for group in self.result_list:
            group._contacts_count = counts.get(group.pk, 0)


class ContactGroupAdmin(SendSMSAdminMixin, admin.ModelAdmin):
    list_display = ("name", "description", "contacts_count")
    search_fields = ("name",)
    show_full_result_count = False
    empty_value_display = EMPTY_VALUE

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return GroupChangeList

    @admin.display(description=gettext_lazy("contacts"))
    def contacts_count(self, group: ContactGroup) -> int:
        count = getattr(group, "_contacts_count", None)
        return group.contacts.count() if count is None else count

    def get_sms_recipients(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """The members of the selected groups, each once (a semi-join, not a list of ids)."""
        through = Contact.groups.through
        members = through.objects.filter(contactgroup__in=queryset.values("pk"))
        return Contact.objects.filter(pk__in=members.values("contact_id"))
