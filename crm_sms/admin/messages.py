"""Messages and their events: the read-only log the outbox and the delivery reports write, with
"Resend failed messages" (through :func:`crm_sms.outbox.resend_message`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy, ngettext

from .. import outbox
from ..backends import provider_choices
from ..models import Message, MessageEvent, MessageStatus
from .common import SEND_SMS_PERMISSION
from .contacts import PhoneSearchMixin


class ProviderFilter(admin.SimpleListFilter):
    """The configured providers (no DISTINCT over the whole message table)."""

    title = gettext_lazy("provider")
    parameter_name = "provider"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return provider_choices()

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
        failed = queryset.filter(status=MessageStatus.FAILED)
        done, errors = 0, []
        for message in failed:
            try:
                outbox.resend_message(message)
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
