"""Consent to advertising and opt-outs in the contacts admin (issue 13, 38-FZ art. 18).

:class:`ConsentAdminMixin` adds to a Contact admin: the "consent to advertising" column and
filter, the consent fields read-only, an editable time zone (any notation
``crm_sms.quiet_hours.zone_for_region`` reads), the contact's event history, and the actions
"Give consent to advertising…", "Withdraw consent to advertising…", "Opt out…" and "Opt in…".
Each action asks on an intermediate page how and why (the reason is kept in the
``ContactEvent``), then calls :mod:`crm_sms.consent` with the staff user as the actor.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, time
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext_lazy, pgettext_lazy

from .. import consent
from ..models import Contact, ContactEvent
from ..quiet_hours import zone_for_region
from .privacy_actions import PersonalDataAdminMixin

CONSENT_FIELDS = ("consent_given_at", "consent_source", "consent_withdrawn_at")
OTHER = "other"
SOURCE_CHOICES = [
    (consent.SOURCE_WEB_FORM, gettext_lazy("web form")),
    (consent.SOURCE_PAPER, gettext_lazy("paper")),
    ("phone call", gettext_lazy("phone call")),
    (OTHER, gettext_lazy("other (write it below)")),
]


class ContactForm(forms.ModelForm):
    """The contact page's form: the time zone may be written as a city, region or offset."""

    class Meta:
        model = Contact
        # The admin's fieldsets decide what the page shows; these are what may be edited.
        fields = (
            "last_name",
            "first_name",
            "middle_name",
            "phone",
            "email",
            "groups",
            "notes",
            "external_id",
            "time_zone",
        )

    def clean_time_zone(self) -> str:
        value = (self.cleaned_data.get("time_zone") or "").strip()
        if not value:
            return ""
        zone = zone_for_region(value)
        if not zone:
            raise ValidationError(
                _(
                    "“%(value)s” is not a time zone: write e.g. Asia/Novosibirsk, МСК+4, "
                    "UTC+7 or a city."
                )
                % {"value": value},
                code="time_zone",
            )
        return zone


class ConsentFilter(admin.SimpleListFilter):
    title = gettext_lazy("consent to advertising")
    parameter_name = "consent"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("yes", gettext_lazy("Yes")),
            ("no", gettext_lazy("No")),
            ("withdrawn", gettext_lazy("Withdrawn")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "yes":
            return queryset.filter(consent.CONSENTED)
        if value == "no":
            return queryset.exclude(consent.CONSENTED)
        if value == "withdrawn":
            return queryset.filter(consent_withdrawn_at__isnull=False)
        return queryset


class ContactEventInline(admin.TabularInline):
    """The contact's consent and opt-out history: the proof, never edited by hand."""

    model = ContactEvent
    extra = 0
    can_delete = False
    fields = ("kind", "source", "reason", "actor", "created_at")
    readonly_fields = fields
    ordering = ("created_at", "id")
    verbose_name_plural = gettext_lazy("consent and opt-out history")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ConsentActionForm(forms.Form):
    """How and why: the intermediate page of the consent and opt-out actions."""

    source = forms.ChoiceField(label=gettext_lazy("How"), choices=SOURCE_CHOICES)
    source_other = forms.CharField(label=gettext_lazy("Other"), required=False, max_length=100)
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text=gettext_lazy("Kept in each contact's history, e.g. “signed form No. 17”."),
    )
    given_on = forms.DateField(
        label=gettext_lazy("Consent given on"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}, format="%Y-%m-%d"),
        input_formats=["%Y-%m-%d", "%d.%m.%Y"],
        help_text=gettext_lazy("The date on the form; empty: today."),
    )

    def __init__(self, *args: Any, operation: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if operation not in ("give", "withdraw"):
            del self.fields["source"], self.fields["source_other"]
        if operation != "give":
            del self.fields["given_on"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("source") == OTHER and not (data.get("source_other") or "").strip():
            self.add_error("source_other", _("Say how the contact told you."))
        given_on = data.get("given_on")
        if given_on is not None and given_on > timezone.localdate():
            self.add_error("given_on", _("Consent cannot be given in the future."))
        return data

    def source_value(self) -> str:
        source = self.cleaned_data.get("source", consent.SOURCE_ADMIN)
        return self.cleaned_data["source_other"].strip() if source == OTHER else source

    def given_at(self) -> datetime | None:
        day = self.cleaned_data.get("given_on")
        if day is None or day == timezone.localdate():
            return None
        return timezone.make_aware(datetime.combine(day, time.min))


# operation: (function, page title, success message: ngettext_lazy keyed by "count")
OPERATIONS: dict[str, tuple[Callable[..., int], Any, Any]] = {
    "give": (
        consent.give_consent,
        gettext_lazy("Give consent to advertising"),
        ngettext_lazy(
            "Consent to advertising recorded for %(count)d contact.",
            "Consent to advertising recorded for %(count)d contacts.",
            "count",
        ),
    ),
    "withdraw": (
        consent.withdraw_consent,
        gettext_lazy("Withdraw consent to advertising"),
        ngettext_lazy(
            "Consent to advertising withdrawn for %(count)d contact.",
            "Consent to advertising withdrawn for %(count)d contacts.",
            "count",
        ),
    ),
    "opt_out": (
        consent.opt_out,
        gettext_lazy("Opt out of all SMS"),
        ngettext_lazy("%(count)d contact opted out.", "%(count)d contacts opted out.", "count"),
    ),
    "opt_in": (
        consent.opt_in,
        gettext_lazy("Opt in to SMS again"),
        ngettext_lazy(
            "%(count)d contact opted in again.", "%(count)d contacts opted in again.", "count"
        ),
    ),
}
#: Added when some of the selected contacts were in that state already.
UNCHANGED = ngettext_lazy(
    "%(count)d contact was so already.", "%(count)d contacts were so already.", "count"
)


class ConsentAdminMixin(PersonalDataAdminMixin):
    """Consent, opt-out and time zone on a Contact admin (see the module's docstring), and
    the personal-data actions (export, erase)."""

    form = ContactForm
    actions = [
        "give_consent_action",
        "withdraw_consent_action",
        "opt_out_action",
        "opt_in_action",
        "export_personal_data",
        "erase_personal_data",
    ]
    consent_form_template = "admin/crm_sms/contact/consent_form.html"

    def get_list_display(self, request: HttpRequest) -> Any:
        shown = list(super().get_list_display(request))  # type: ignore[misc]
        return shown if "consent_column" in shown else [*shown, "consent_column"]

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = list(super().get_list_filter(request))  # type: ignore[misc]
        return filters if ConsentFilter in filters else [*filters, ConsentFilter]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, *(f for f in (*CONSENT_FIELDS, "opted_out") if f not in fields)]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        listed = {f for _name, opts in fieldsets for f in opts.get("fields", ())}
        extra = [f for f in (*CONSENT_FIELDS, "time_zone") if f not in listed]
        if extra:
            fieldsets.append(
                (gettext_lazy("Consent to advertising and time zone"), {"fields": extra})
            )
        return fieldsets

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> Any:
        inlines = list(super().get_inlines(request, obj))  # type: ignore[misc]
        return inlines if obj is None else [*inlines, ContactEventInline]

    # A short header: the contact list must fit 1366 px (the filter says it in full).
    @admin.display(description=pgettext_lazy("column", "consent"), boolean=True)
    def consent_column(self, contact: Contact) -> bool:
        return contact.has_consent

    @admin.action(description=gettext_lazy("Give consent to advertising…"), permissions=["change"])
    def give_consent_action(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.consent_step(request, queryset, "give")

    @admin.action(
        description=gettext_lazy("Withdraw consent to advertising…"), permissions=["change"]
    )
    def withdraw_consent_action(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.consent_step(request, queryset, "withdraw")

    @admin.action(description=gettext_lazy("Opt out…"), permissions=["change"])
    def opt_out_action(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.consent_step(request, queryset, "opt_out")

    @admin.action(description=gettext_lazy("Opt in…"), permissions=["change"])
    def opt_in_action(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return self.consent_step(request, queryset, "opt_in")

    def consent_step(self, request: HttpRequest, queryset: QuerySet, operation: str) -> Any:
        """The intermediate page, or (its valid POST) the change and a message."""
        function, title, done = OPERATIONS[operation]
        bound = "_consent_step" in request.POST
        form = ConsentActionForm(request.POST if bound else None, operation=operation)
        if bound and form.is_valid():
            kwargs: dict[str, Any] = {
                "source": form.source_value(),
                "reason": form.cleaned_data["reason"],
                "by": request.user,
            }
            if operation == "give":
                kwargs["at"] = form.given_at()
            # Counted first: a filtered selection ("opted out: no") may not hold them after.
            selected = queryset.count()
            try:
                count = function(queryset, **kwargs)
            except ValidationError as exc:
                form.add_error(None, exc)
            else:
                text = done % {"count": count}
                unchanged = selected - count
                if unchanged > 0:
                    text = f"{text} {UNCHANGED % {'count': unchanged}}"
                self.message_user(request, text, messages.SUCCESS)  # type: ignore[attr-defined]
                return None
        return self.consent_page(request, queryset, form, title)

    def consent_page(
        self, request: HttpRequest, queryset: QuerySet, form: ConsentActionForm, title: Any
    ) -> TemplateResponse:
        select_across = request.POST.get("select_across") == "1"
        opts = self.model._meta  # type: ignore[attr-defined]
        context = {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": title,
            "opts": opts,
            "form": form,
            "count": queryset.count(),
            "action_name": request.POST.get("action", ""),
            "select_across": select_across,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,  # type: ignore[attr-defined]
        }
        request.current_app = self.admin_site.name  # type: ignore[attr-defined]
        return TemplateResponse(request, self.consent_form_template, context)
