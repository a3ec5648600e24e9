"""The "Send SMS…" action: :class:`SendSMSAdminMixin`, public, for any ModelAdmin with phones.

Sites add the mixin to their own customer admin (docs/integration.md). The page shows the
recipients and who is left out, previews the text, and queues the campaign with
:func:`crm_sms.outbox.send_campaign`: the same function code and commands call.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import FieldDoesNotExist, FieldError, PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from .. import conf, outbox, text
from ..backends import get_backend
from ..forms import SendSMSForm
from ..models import Campaign, CampaignStatus
from ..outbox.counting import RecipientCounts, count_recipients
from ..outbox.queueing import longest_text
from .common import DRAFT_SESSION_KEY, SEND_SMS_PERMISSION, excluded_rows
from .send_preview import compliance_context


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
        """Keyword arguments for the outbox: which field holds the phone, which variables."""
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
        if not self.has_send_sms_permission(request):
            raise PermissionDenied
        recipients = self.get_sms_recipients(request, queryset)
        kwargs = self.get_sms_campaign_kwargs()
        variables = list(kwargs.get("variables") or text.CONTACT_VARIABLES)
        bound = "_sms_step" in request.POST
        form = SendSMSForm(request.POST if bound else None, variables=variables)
        if bound and "_sms_counter" in request.POST:
            return self._sms_counter(form, recipients, kwargs)
        draft = session_draft(request)
        if not bound:
            fill_initial(form, draft)
        preview = None
        if bound and form.is_valid():
            preview = self._sms_preview(form, recipients, kwargs)
            if preview is not None and "_send" in request.POST:
                response = self._sms_send(request, form, preview, recipients, kwargs, draft)
                if response is not None:
                    return response
        counts = preview if preview is not None else self._sms_counts(recipients, kwargs)
        context = self._sms_page_context(request, queryset, form, preview, counts, draft)
        request.current_app = self.admin_site.name  # type: ignore[attr-defined]
        return TemplateResponse(request, self.send_sms_template, context)

    # The steps of the page, in order.

    def _sms_preview(
        self, form: SendSMSForm, recipients: QuerySet, kwargs: dict[str, Any]
    ) -> outbox.CampaignPreview | None:
        """The preview of the valid form's text, or None with the outbox's errors on the form."""
        data = form.cleaned_data
        try:
            return outbox.preview_campaign(
                recipients,
                data["text"],
                sender=data["sender"] or None,
                provider=data["provider"],
                sample_size=self.sms_preview_size,
                **form.campaign_options(),
                **kwargs,
            )
        except ValidationError as exc:
            add_form_error(form, exc)
            return None

    def _sms_send(
        self,
        request: HttpRequest,
        form: SendSMSForm,
        preview: outbox.CampaignPreview,
        recipients: QuerySet,
        kwargs: dict[str, Any],
        draft: Campaign | None,
    ) -> HttpResponse | None:
        """Queue the confirmed campaign and redirect to it; None (with a message or a form error)
        when the preview is stale, nobody is left to send to, or the outbox refuses."""
        data = form.cleaned_data
        if data["previewed"] != form.preview_key():
            messages.warning(
                request, _("The text or settings changed: check the preview and send.")
            )
            return None
        if not preview.recipients:
            messages.error(request, _("No one to send to: every recipient is left out."))
            return None
        try:
            campaign = outbox.send_campaign(
                recipients,
                data["text"],
                name=data["name"] or None,
                sender=data["sender"] or None,
                provider=data["provider"],
                created_by=request.user,
                **form.campaign_options(),
                **kwargs,
            )
        except ValidationError as exc:
            add_form_error(form, exc)
            return None
        if draft is not None:
            drop_draft(request, draft)
        messages.success(
            request,
            ngettext(
                "The campaign “%(name)s” is queued: %(count)d message.",
                "The campaign “%(name)s” is queued: %(count)d messages.",
                campaign.recipients_count,
            )
            % {"name": campaign.name, "count": campaign.recipients_count},
        )
        return HttpResponseRedirect(campaign_url(self.admin_site.name, campaign))  # type: ignore[attr-defined]

    def _sms_page_context(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        form: SendSMSForm,
        preview: outbox.CampaignPreview | None,
        counts: outbox.CampaignPreview | RecipientCounts | None,
        draft: Campaign | None,
    ) -> dict[str, Any]:
        """The page's template context: the form, the preview, and who is in and left out."""
        select_across = request.POST.get("select_across") == "1"
        opts = self.model._meta  # type: ignore[attr-defined]
        return {
            **self.admin_site.each_context(request),  # type: ignore[attr-defined]
            "title": _("Send SMS"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "preview": preview,
            "draft": draft,
            "counts": counts,
            "excluded": excluded_rows(counts.excluded if counts else {}),
            "preview_key": form.preview_key() if preview is not None else "",
            "action_name": request.POST.get("action", "send_sms_action"),
            "select_across": select_across,
            # Django runs an action only when some pks are posted, even with select_across
            # (which then ignores them): pass on what the list page posted.
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "counter_token": counter_token(request.POST) or secrets.token_hex(8),
            "selected_count": None if select_across else queryset.count(),
            "gsm7_basic": "".join(sorted(text.GSM7_BASIC)),
            "gsm7_extension": "".join(sorted(text.GSM7_EXTENSION)),
            "media": self.media,  # type: ignore[attr-defined]
            **compliance_context(preview),
        }

    def _sms_counter(
        self, form: SendSMSForm, recipients: QuerySet, kwargs: dict[str, Any]
    ) -> JsonResponse:
        """The live counter asks, as the user types a template: the longest text it makes for
        the recipients (``outbox.queueing.longest_text``), as sent and as written; or the
        text's error. Nothing is stored, so nothing but the action's permission is needed."""
        form.is_valid()
        data = form.cleaned_data
        if "text" not in data:
            return JsonResponse({"error": " ".join(form.errors.get("text", []))})
        options = form.campaign_options()
        try:
            found = longest_text(
                recipients,
                data["text"],
                provider=data.get("provider") or None,
                translit=options["translit"],
                smart_encoding=options["smart_encoding"],
                kind=options["kind"],
                cache_token=counter_token(form.data),
                **kwargs,
            )
        except (ValidationError, FieldDoesNotExist, FieldError) as exc:
            messages_ = getattr(exc, "messages", None) or [str(exc)]
            return JsonResponse({"error": " ".join(messages_)})
        if found is None:
            return JsonResponse({"longest": None, "before": None})
        return JsonResponse({"longest": found[0].as_dict(), "before": found[1].as_dict()})

    def _sms_counts(self, recipients: QuerySet, kwargs: dict[str, Any]) -> RecipientCounts | None:
        """Before a text is typed: the recipients and exclusions, counted in SQL (the same
        numbers the preview of a text would give; a million contacts in a fraction of a
        second, where streaming them took ten)."""
        try:
            return count_recipients(recipients, phone_field=kwargs["phone_field"])
        except (FieldDoesNotExist, FieldError, ValidationError):
            return None


def counter_token(data: Mapping[str, Any]) -> str:
    """The page's token for the live counter's cache (``_sms_counter_page``), "" if none."""
    token = str(data.get("_sms_counter_page", ""))
    return token if re.fullmatch(r"[0-9a-f]{16}", token) else ""


def session_draft(request: HttpRequest) -> Campaign | None:
    """The draft campaign the user chose to send ("Send to contacts…"), if it is still a draft."""
    session = getattr(request, "session", None)
    pk = session.get(DRAFT_SESSION_KEY) if session is not None else None
    if pk is None:
        return None
    return Campaign.objects.filter(pk=pk, status=CampaignStatus.DRAFT).first()


def drop_draft(request: HttpRequest, draft: Campaign) -> None:
    """The draft became a queued campaign: delete it (if still a draft) and forget it."""
    Campaign.objects.filter(pk=draft.pk, status=CampaignStatus.DRAFT).delete()
    request.session.pop(DRAFT_SESSION_KEY, None)


def fill_initial(form: SendSMSForm, draft: Campaign | None) -> None:
    """The unbound form starts from the provider's sender, or from the chosen draft."""
    form.initial["sender"] = default_sender(conf.default_provider())
    if draft is not None:
        form.initial.update(
            name=draft.name,
            text=draft.text,
            sender=draft.sender or form.initial["sender"],
            provider=draft.provider or conf.default_provider(),
        )


def campaign_url(site_name: str, campaign: Campaign) -> str:
    """The campaign's change page on ``site_name``, or on the default site where a project's
    own admin site (with the mixin) does not register campaigns."""
    for name in dict.fromkeys((site_name, "admin")):
        try:
            return reverse(f"{name}:crm_sms_campaign_change", args=[campaign.pk])
        except NoReverseMatch:
            continue
    return reverse("admin:index")


def default_sender(alias: str) -> str:
    """The provider's default sender, or "" when the provider cannot be set up."""
    try:
        return get_backend(alias).default_sender
    except Exception:  # a misconfigured provider: the form still opens, the checks report it
        return ""


# The form field an outbox ValidationError is about, by its code.
FIELD_OF_CODE = {
    "empty_text": "text",
    "template_syntax": "text",
    "template_variable": "text",
    "template_render": "text",
    "text_too_long": "text",
    "text": "text",
    "sender": "sender",
    "invalid_sender": "sender",
    "provider": "provider",
    "unknown_provider": "provider",
    "window": "window_end",
}


def add_form_error(form: SendSMSForm, exc: ValidationError) -> None:
    """Put a ValidationError from the outbox next to the field it is about."""
    if hasattr(exc, "error_dict"):
        for name, errors in exc.error_dict.items():
            form.add_error(name if name in form.fields else None, errors)
        return
    for error in exc.error_list:
        field = FIELD_OF_CODE.get(error.code or "")
        form.add_error(field, error)
