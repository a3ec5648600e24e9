"""The admin: contacts (import, export, "Send SMS…"), groups, campaigns, messages and events.

Every list stays usable with a million rows: related objects are joined or fetched once per page
(never per row), campaign progress is one grouped query per page, costly full counts are off,
and filters use indexed columns. Actions are thin: they call :mod:`crm_sms.sending`.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from import_export.admin import ExportMixin
from import_export.formats import base_formats

from . import conf, text
from .forms import ContactImportConfirmForm, ContactImportForm, SendSMSForm
from .importing import import_contacts
from .models import (
    Campaign,
    CampaignStatus,
    Contact,
    ContactGroup,
    Message,
    MessageEvent,
    MessageStatus,
)
from .phones import normalize_phone
from .resources import ContactResource

SEND_SMS_PERMISSION = "crm_sms.send_sms"
# Why a recipient was left out, as the preview and the campaign page say it.
EXCLUDED_REASONS = {
    "opted_out": gettext_lazy("opted out"),
    "invalid": gettext_lazy("invalid phone"),
    "duplicate": gettext_lazy("duplicate phone"),
}
ACTIVE_CAMPAIGN_STATUSES = {CampaignStatus.RUNNING, CampaignStatus.SCHEDULED}


# --- "Send SMS…" ------------------------------------------------------------------------------


class SendSMSAdminMixin:
    """Adds the "Send SMS…" action to a ModelAdmin, for users with ``crm_sms.send_sms``.

    ``sms_phone_field`` names the model field with the phone; ``sms_template_variables`` maps
    names usable in the text (``{{ first_name }}``) to attributes of the row. Override
    ``get_sms_recipients(request, queryset)`` to send to rows of another model (a group's
    members). "Select all N" works: the queryset is passed through, never loaded as a list.
    """

    sms_phone_field: str = "phone"
    sms_template_variables: Mapping[str, str] | None = None
    send_sms_template: str = "admin/crm_sms/send_sms.html"
    sms_preview_size: int = 5

    def has_send_sms_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SEND_SMS_PERMISSION)

    def get_sms_recipients(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        """The rows to text for the selected ``queryset`` (the same rows by default)."""
        return queryset

    def get_sms_campaign_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"phone_field": self.sms_phone_field}
        if self.sms_template_variables:
            kwargs["variables"] = dict(self.sms_template_variables)
        return kwargs

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes action_location (the change list or, new, the change form);
        # Django 5.2 has no such argument. "Send SMS…" belongs on the change list only.
        if action_location is None:
            actions = super().get_actions(request)  # type: ignore[misc]
        else:
            actions = super().get_actions(request, action_location=action_location)  # type: ignore[misc]
        on_change_list = action_location is None or action_location.name == "CHANGE_LIST"
        if on_change_list and self.has_send_sms_permission(request):
            func = type(self).send_sms_action
            actions["send_sms_action"] = (func, "send_sms_action", func.short_description)
        return actions

    @admin.action(description=gettext_lazy("Send SMS…"), permissions=["send_sms"])
    def send_sms_action(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """The intermediate page: form, recipients and exclusions, preview, then send."""
        from . import sending

        if not self.has_send_sms_permission(request):
            raise PermissionDenied
        recipients = self.get_sms_recipients(request, queryset)
        kwargs = self.get_sms_campaign_kwargs()
        variables = list(kwargs.get("variables") or text.CONTACT_VARIABLES)
        bound = "_sms_step" in request.POST
        form = SendSMSForm(request.POST if bound else None, variables=variables)
        draft = session_draft(request)
        if not bound:
            form.initial["sender"] = _default_sender(conf.default_provider())
            if draft is not None:
                form.initial.update(
                    name=draft.name,
                    text=draft.text,
                    sender=draft.sender or form.initial["sender"],
                    provider=draft.provider or conf.default_provider(),
                )
        preview = None
        if bound and form.is_valid():
            data = form.cleaned_data
            try:
                preview = sending.preview_campaign(
                    recipients,
                    data["text"],
                    sender=data["sender"] or None,
                    provider=data["provider"],
                    sample_size=self.sms_preview_size,
                    **kwargs,
                )
            except ValidationError as exc:
                _add_form_error(form, exc)
            if preview is not None and "_send" in request.POST:
                if data["previewed"] != form.preview_key():
                    messages.warning(
                        request, _("The text or settings changed: check the preview and send.")
                    )
                elif not preview.recipients:
                    messages.error(request, _("No one to send to: every recipient is left out."))
                else:
                    try:
                        campaign = sending.send_campaign(
                            recipients,
                            data["text"],
                            name=data["name"] or None,
                            sender=data["sender"] or None,
                            provider=data["provider"],
                            scheduled_at=data["scheduled_at"],
                            created_by=request.user,
                            **kwargs,
                        )
                    except ValidationError as exc:
                        _add_form_error(form, exc)
                    else:
                        if draft is not None:
                            # The draft became this campaign.
                            Campaign.objects.filter(
                                pk=draft.pk, status=CampaignStatus.DRAFT
                            ).delete()
                            request.session.pop(DRAFT_SESSION_KEY, None)
                        messages.success(
                            request,
                            ngettext(
                                "The campaign “%(name)s” is queued: %(count)d message.",
                                "The campaign “%(name)s” is queued: %(count)d messages.",
                                campaign.recipients_count,
                            )
                            % {"name": campaign.name, "count": campaign.recipients_count},
                        )
                        return HttpResponseRedirect(campaign_url(self.admin_site.name, campaign))
        counts = preview
        if counts is None:
            # Before a text is typed: the recipients and exclusions, from a neutral text.
            try:
                counts = sending.preview_campaign(recipients, ".", sample_size=0, **kwargs)
            except ValidationError:
                counts = None
        select_across = request.POST.get("select_across") == "1"
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": _("Send SMS"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "preview": preview,
            "draft": draft,
            "counts": counts,
            "excluded": _excluded_rows(counts.excluded if counts else {}),
            "preview_key": form.preview_key() if preview is not None else "",
            "action_name": request.POST.get("action", "send_sms_action"),
            "select_across": select_across,
            # Django runs an action only when some pks are posted, even with select_across
            # (which then ignores them): pass on what the list page posted.
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "selected_count": None if select_across else queryset.count(),
            "gsm7_basic": "".join(sorted(text.GSM7_BASIC)),
            "gsm7_extension": "".join(sorted(text.GSM7_EXTENSION)),
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.send_sms_template, context)


DRAFT_SESSION_KEY = "crm_sms_draft"


def session_draft(request: HttpRequest) -> Campaign | None:
    """The draft campaign the user chose to send ("Send to contacts…"), if it is still a draft."""
    session = getattr(request, "session", None)
    pk = session.get(DRAFT_SESSION_KEY) if session is not None else None
    if pk is None:
        return None
    return Campaign.objects.filter(pk=pk, status=CampaignStatus.DRAFT).first()


def campaign_url(site_name: str, campaign: Campaign) -> str:
    """The campaign's change page on ``site_name``, or on the default site where a project's
    own admin site (with the mixin) does not register campaigns."""
    for name in dict.fromkeys((site_name, "admin")):
        try:
            return reverse(f"{name}:crm_sms_campaign_change", args=[campaign.pk])
        except NoReverseMatch:
            continue
    return reverse("admin:index")


def _default_sender(alias: str) -> str:
    from .backends import get_backend

    try:
        return get_backend(alias).default_sender
    except Exception:  # a misconfigured provider: the form still opens, the checks report it
        return ""


_FIELD_OF_CODE = {
    "empty_text": "text",
    "template_syntax": "text",
    "template_variable": "text",
    "text": "text",
    "sender": "sender",
    "invalid_sender": "sender",
    "provider": "provider",
    "unknown_provider": "provider",
}


def _add_form_error(form: SendSMSForm, exc: ValidationError) -> None:
    """Put a ValidationError from the outbox next to the field it is about."""
    if hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            form.add_error(name if name in form.fields else None, errors)
        return
    for error in exc.error_list:
        field = _FIELD_OF_CODE.get(error.code or "")
        form.add_error(field, error)


def _excluded_rows(excluded: Mapping[str, int]) -> list[tuple[str, int]]:
    return [(str(EXCLUDED_REASONS.get(k, k)), n) for k, n in excluded.items() if n]


# --- contacts and groups ----------------------------------------------------------------------


class PhoneSearchMixin:
    """Search by phone in any notation (normalized, then an exact indexed match)."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if term and any(ch.isdigit() for ch in term):
            try:
                phone = normalize_phone(term)
            except ValidationError:
                phone = None
            if phone:
                return queryset.filter(phone=phone), False
        return super().get_search_results(request, queryset, search_term)  # type: ignore[misc]


@admin.register(Contact)
class ContactAdmin(SendSMSAdminMixin, PhoneSearchMixin, ExportMixin, admin.ModelAdmin):
    resource_classes = [ContactResource]
    formats = [base_formats.CSV, base_formats.XLSX]
    import_export_change_list_template = "admin/crm_sms/contact/change_list.html"
    import_template = "admin/crm_sms/contact/import.html"
    list_display = (
        "last_name",
        "first_name",
        "middle_name",
        "phone",
        "email",
        "group_names",
        "opted_out",
    )
    list_display_links = ("last_name", "first_name", "phone")
    list_filter = ("opted_out", "groups")
    search_fields = ("^last_name", "=external_id", "=email")
    search_help_text = gettext_lazy("A phone in any notation, the start of a last name, an email.")
    readonly_fields = ("opted_out_at", "created_at", "updated_at")
    filter_horizontal = ("groups",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER  # a count per filter choice is costly on big tables
    list_per_page = 100
    fieldsets = (
        (None, {"fields": ("last_name", "first_name", "middle_name", "phone", "email")}),
        (gettext_lazy("Groups"), {"fields": ("groups",)}),
        (
            gettext_lazy("SMS"),
            {"fields": ("opted_out", "opted_out_at", "notes", "external_id")},
        ),
        (gettext_lazy("History"), {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The groups column: one query per page, not one per contact.
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description=gettext_lazy("groups"))
    def group_names(self, contact: Contact) -> str:
        return ", ".join(g.name for g in contact.groups.all())

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name=f"{info[0]}_{info[1]}_import",
            ),
            *super().get_urls(),
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {})}
        extra_context["has_import_permission"] = self.has_import_permission(request)
        return super().changelist_view(request, extra_context)

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload → check (what would happen, every bad row with its line) → import."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        opts = self.opts
        changelist_url = reverse(
            f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist"
        )
        result = None
        confirm_form = None
        form = ContactImportForm()
        if request.method == "POST" and "_confirm" in request.POST:
            confirm = ContactImportConfirmForm(request.POST)
            if not confirm.is_valid():
                messages.error(request, _("The uploaded file is gone: upload it again."))
                return HttpResponseRedirect(request.path)
            data = confirm.cleaned_data
            upload = _upload_path(data["token"])
            if not upload.exists():
                messages.error(request, _("The uploaded file is gone: upload it again."))
                return HttpResponseRedirect(request.path)
            try:
                result = import_contacts(
                    upload,
                    filename=data["filename"],
                    format=data["format"] or None,
                    encoding=data["encoding"] or None,
                    delimiter=data["delimiter"] or None,
                    group=data["group"] or None,
                )
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
                return HttpResponseRedirect(request.path)
            finally:
                upload.unlink(missing_ok=True)
            messages.success(request, _import_summary(result))
            if result.skipped:
                messages.warning(
                    request,
                    ngettext(
                        "%(count)d bad row was skipped.",
                        "%(count)d bad rows were skipped.",
                        result.skipped,
                    )
                    % {"count": result.skipped},
                )
            return HttpResponseRedirect(changelist_url)
        if request.method == "POST":
            form = ContactImportForm(request.POST, request.FILES)
            if form.is_valid():
                data = form.cleaned_data
                upload_file = data["file"]
                _remove_stale_uploads()
                token = secrets.token_urlsafe(18)
                upload = _upload_path(token)
                with open(upload, "wb") as out:
                    for chunk in upload_file.chunks():
                        out.write(chunk)
                try:
                    result = import_contacts(
                        upload,
                        filename=upload_file.name,
                        format=data["format"] or None,
                        encoding=data["encoding"] or None,
                        delimiter=data["delimiter"] or None,
                        group=data["group"] or None,
                        dry_run=True,
                    )
                except ValidationError as exc:
                    upload.unlink(missing_ok=True)
                    form.add_error("file", exc)
                else:
                    confirm_form = ContactImportConfirmForm(
                        initial={
                            "token": token,
                            "filename": upload_file.name,
                            "format": result.format,
                            "encoding": result.encoding or "",
                            # A tab is passed by name: hidden inputs keep it, people don't.
                            "delimiter": {"\t": "tab"}.get(
                                result.delimiter or "", result.delimiter or ""
                            ),
                            "group": data["group"],
                        }
                    )
        context = {
            **self.admin_site.each_context(request),
            "title": _("Import contacts"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "confirm_form": confirm_form,
            "result": result,
            "errors_shown": result.errors[:500] if result else [],
            "changelist_url": changelist_url,
            "media": self.media + form.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, self.import_template, context)


def _upload_path(token: str) -> Path:
    return Path(tempfile.gettempdir()) / f"crm_sms_import_{token}"


def _remove_stale_uploads(max_age: float = 24 * 3600) -> None:
    """Uploads checked but never imported (the user went away) are kept a day at most."""
    cutoff = time.time() - max_age
    for upload in Path(tempfile.gettempdir()).glob("crm_sms_import_*"):
        try:
            if upload.stat().st_mtime < cutoff:
                upload.unlink()
        except OSError:
            continue


def _import_summary(result: Any) -> str:
    return _(
        "Import done: %(created)d new contacts, %(updated)d updated, %(unchanged)d unchanged."
    ) % {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}


class GroupChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # Members of the page's groups in one grouped query (not a count over every group).
        through = Contact.groups.through
        counts = dict(
            through.objects.filter(contactgroup_id__in=[g.pk for g in self.result_list])
            .order_by()
            .values_list("contactgroup_id")
            .annotate(n=Count("id"))
        )
        for group in self.result_list:
            group._contacts_count = counts.get(group.pk, 0)


@admin.register(ContactGroup)
class ContactGroupAdmin(SendSMSAdminMixin, admin.ModelAdmin):
    list_display = ("name", "description", "contacts_count")
    search_fields = ("name",)
    show_full_result_count = False

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


# --- campaigns --------------------------------------------------------------------------------


def status_counts(campaign_ids: list[int]) -> dict[int, dict[str, int]]:
    """Messages per status for each campaign: one grouped query (the campaign+status index)."""
    counts: dict[int, dict[str, int]] = {pk: {} for pk in campaign_ids}
    rows = (
        Message.objects.filter(campaign_id__in=campaign_ids)
        .order_by()
        .values_list("campaign_id", "status")
        .annotate(n=Count("id"))
    )
    for campaign_id, status, n in rows:
        counts[campaign_id][status] = n
    return counts


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


def render_progress(counts: Mapping[str, int]) -> str:
    return render_to_string("admin/crm_sms/campaign/progress.html", progress_numbers(counts))


class CampaignChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        # One query for the progress of the whole page.
        counts = status_counts([c.pk for c in self.result_list])
        for campaign in self.result_list:
            campaign._status_counts = counts.get(campaign.pk, {})


CAMPAIGN_OPERATIONS = {
    "use": gettext_lazy("Send to contacts…"),
    "pause": gettext_lazy("Pause"),
    "resume": gettext_lazy("Resume"),
    "cancel": gettext_lazy("Cancel"),
    "retry": gettext_lazy("Retry failed"),
    "copy": gettext_lazy("Copy as a new draft"),
}


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "status",
        "progress",
        "recipients_count",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    )
    list_filter = ("status", "created_at")
    list_select_related = ("created_by",)
    search_fields = ("name",)
    show_full_result_count = False
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
        "created_at",
        "started_at",
        "finished_at",
        "pause_reason",
        "recipients_count",
        "excluded_display",
    )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CampaignChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Campaigns start from "Send SMS…" on contacts or groups.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Campaign | None = None):
        if obj is not None and obj.status == CampaignStatus.DRAFT:
            return [f for f in self.fields if f not in self.editable_when_draft]
        return self.fields

    @admin.display(description=gettext_lazy("progress"))
    def progress(self, campaign: Campaign) -> str:
        counts = getattr(campaign, "_status_counts", None)
        if counts is None:
            counts = status_counts([campaign.pk])[campaign.pk]
        return render_progress(counts)

    @admin.display(description=gettext_lazy("excluded"))
    def excluded_display(self, campaign: Campaign) -> str:
        rows = _excluded_rows(campaign.excluded or {})
        return ", ".join(f"{reason}: {n}" for reason, n in rows) or "—"

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
        if not self.has_change_permission(request, campaign):
            raise PermissionDenied
        queryset = Campaign.objects.filter(pk=campaign.pk)
        handler = {
            "use": self.use_draft,
            "pause": self.pause_action,
            "resume": self.resume_action,
            "cancel": self.cancel_action,
            "retry": self.retry_failed_action,
            "copy": self.copy_action,
        }[operation]
        response = handler(request, queryset)
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
            state = self.campaign_state(campaign)
            messages_url = reverse(f"{self.admin_site.name}:crm_sms_message_changelist")
            extra_context.update(
                {
                    "campaign_state": state,
                    "status_rows": [
                        (
                            s.label,
                            s.value,
                            state["counts"][s.value],
                            f"{messages_url}?campaign__id__exact={campaign.pk}&status__exact={s.value}",
                        )
                        for s in MessageStatus
                    ],
                    "messages_url": f"{messages_url}?campaign__id__exact={campaign.pk}",
                    "progress_url": reverse(
                        f"{self.admin_site.name}:crm_sms_campaign_progress", args=[campaign.pk]
                    ),
                    "operations": self.available_operations(request, campaign, state),
                }
            )
            if campaign.status != CampaignStatus.DRAFT:
                # Everything is read-only once queued: no save buttons.
                extra_context.update(show_save=False, show_save_and_continue=False)
        return super().change_view(request, object_id, form_url, extra_context)

    def available_operations(
        self, request: HttpRequest, campaign: Campaign, state: Mapping[str, Any]
    ) -> list[dict]:
        if not self.has_change_permission(request, campaign):
            return []
        status = campaign.status
        allowed = {
            "use": status == CampaignStatus.DRAFT and request.user.has_perm(SEND_SMS_PERMISSION),
            "pause": status in (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED),
            "resume": status == CampaignStatus.PAUSED,
            "cancel": status
            in (CampaignStatus.RUNNING, CampaignStatus.SCHEDULED, CampaignStatus.PAUSED),
            "retry": state["counts"][MessageStatus.FAILED] > 0,
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
            if allowed[op]
        ]

    def use_draft(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse:
        """Remember the draft and go to the contacts: "Send SMS…" there starts from its text."""
        draft = queryset.get()
        if draft.status != CampaignStatus.DRAFT or not request.user.has_perm(SEND_SMS_PERMISSION):
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

    def _each(self, request: HttpRequest, queryset: QuerySet, func, done_message: str) -> None:
        """Run ``func`` on each campaign; a False result means "not applicable" (left as is)."""
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
        for text_ in failed:
            self.message_user(request, text_, messages.ERROR)

    @admin.action(description=gettext_lazy("Pause"), permissions=["change"])
    def pause_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        from . import sending

        self._each(
            request,
            queryset,
            lambda c: sending.pause_campaign(
                c, reason=_("Paused by %(user)s") % {"user": request.user}
            ),
            _("Campaigns paused: %(count)d."),
        )

    @admin.action(description=gettext_lazy("Resume"), permissions=["change"])
    def resume_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        from . import sending

        self._each(request, queryset, sending.resume_campaign, _("Campaigns resumed: %(count)d."))

    @admin.action(
        description=gettext_lazy("Cancel (unsent messages are cancelled)"), permissions=["change"]
    )
    def cancel_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        from . import sending

        self._each(request, queryset, sending.cancel_campaign, _("Campaigns cancelled: %(count)d."))

    @admin.action(description=gettext_lazy("Retry failed messages"), permissions=["change"])
    def retry_failed_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        from . import sending

        total = 0

        def retry(campaign: Campaign) -> None:
            nonlocal total
            total += sending.retry_failed(campaign) or 0

        self._each(request, queryset, retry, _("Campaigns retried: %(count)d."))
        self.message_user(
            request,
            ngettext(
                "%(count)d failed message queued again.",
                "%(count)d failed messages queued again.",
                total,
            )
            % {"count": total},
        )

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


# --- messages and events ----------------------------------------------------------------------


class ProviderFilter(admin.SimpleListFilter):
    """The configured providers (no DISTINCT over the whole message table)."""

    title = gettext_lazy("provider")
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(alias, alias) for alias in conf.provider_aliases()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(provider=self.value())
        return queryset


class ReadOnlyAdminMixin:
    """The log is written by the outbox and the delivery reports only: nobody adds, edits or
    deletes a row by hand (the audit trail must stay true)."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MessageEventInline(admin.TabularInline):
    model = MessageEvent
    extra = 0
    can_delete = False
    fields = ("created_at", "source", "old_status", "new_status", "error_code", "description")
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(ReadOnlyAdminMixin, PhoneSearchMixin, admin.ModelAdmin):
    list_display = (
        "phone",
        "status",
        "campaign",
        "provider",
        "short_text",
        "segments",
        "attempts",
        "error_code",
        "created_at",
        "sent_at",
        "delivered_at",
    )
    list_filter = ("status", ProviderFilter, "campaign", "created_at")
    list_select_related = ("campaign",)
    search_fields = ("=msg_id", "=provider_message_id")
    search_help_text = gettext_lazy("A phone in any notation, a message id or a provider's id.")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    inlines = [MessageEventInline]
    actions = ["resend_action"]
    readonly_fields = (
        "campaign",
        "contact",
        "phone",
        "text",
        "sender",
        "provider",
        "msg_id",
        "provider_message_id",
        "status",
        "error_code",
        "error_message",
        "attempts",
        "next_attempt_at",
        "claimed_at",
        "segments",
        "created_at",
        "sent_at",
        "delivered_at",
        "updated_at",
        "last_response",
    )
    fields = readonly_fields

    def has_send_sms_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SEND_SMS_PERMISSION)

    @admin.display(description=gettext_lazy("text"))
    def short_text(self, message: Message) -> str:
        return message.text if len(message.text) <= 40 else message.text[:39] + "…"

    @admin.action(description=gettext_lazy("Resend failed messages"), permissions=["send_sms"])
    def resend_action(self, request: HttpRequest, queryset: QuerySet) -> None:
        from . import sending

        failed = queryset.filter(status=MessageStatus.FAILED)
        done, errors = 0, []
        for message in failed:
            try:
                sending.resend_message(message)
            except ValidationError as exc:
                errors.append(f"{message}: {' '.join(exc.messages)}")
            else:
                done += 1
        skipped = queryset.exclude(status=MessageStatus.FAILED).count()
        self.message_user(
            request,
            ngettext("%(count)d message queued again.", "%(count)d messages queued again.", done)
            % {"count": done},
            messages.SUCCESS if done else messages.WARNING,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d message was not failed and was left as is.",
                    "%(count)d messages were not failed and were left as is.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
        for error in errors:
            self.message_user(request, error, messages.ERROR)


@admin.register(MessageEvent)
class MessageEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "created_at",
        "message",
        "source",
        "old_status",
        "new_status",
        "error_code",
        "description",
    )
    list_select_related = ("message",)
    search_fields = ("=message__msg_id",)
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    readonly_fields = (
        "message",
        "source",
        "old_status",
        "new_status",
        "error_code",
        "description",
        "payload",
        "created_at",
    )
    fields = readonly_fields
    raw_id_fields = ("message",)
