"""Messages and their events: the read-only log the outbox and the delivery reports write, with
"Resend…" (a confirmation page first: :mod:`.resend`, then
:func:`crm_sms.outbox.resend_message`)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy, pgettext_lazy

from ..backends import provider_choices
from ..models import ACTIVE_STATUSES, Message, MessageEvent, MessageStatus
from .common import EMPTY_VALUE, SEND_SMS_PERMISSION
from .contacts import search_phone
from .event_display import (
    EventDescriptionMixin,
    EventTimeMixin,
    seconds_display,
    to_the_second_short,
)
from .paginator import LargeListMixin
from .resend import resend_selected

#: What a status means for what happens next, on the message page.
STATUS_EXPLAINED = {
    MessageStatus.UNCERTAIN: gettext_lazy(
        "Uncertain whether sent: the answer to the last attempt was lost after the request may "
        "have reached the provider (a timeout, a connection dropped, a server error), and this "
        "provider can neither drop a repeat nor be asked whether it has the message. The "
        "subscriber may or may not have got it. It is never sent again by itself: “Resend…” "
        "asks you to confirm, because the subscriber may then get the SMS twice. A delivery "
        "report from the provider settles it."
    ),
    MessageStatus.FAILED: gettext_lazy(
        "Failed: refused by the provider, or its retries ran out. “Resend…” sends it again "
        "with the same message id."
    ),
}
#: Added when the last attempt may have reached the provider (``maybe_sent``).
MAYBE_SENT_EXPLAINED = gettext_lazy(
    "The answer to the last attempt was lost: the provider may have this message. It is sent "
    "again only if the provider drops a repeat of its id, says it does not have it, or you "
    "confirm."
)


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


class MessageEventInline(EventTimeMixin, EventDescriptionMixin, admin.TabularInline):
    model = MessageEvent
    extra = 0
    empty_value_display = EMPTY_VALUE
    # admin.css hides the row labels ("1: queued → sending", the raw __str__): the columns
    # say it, translated.
    classes = ["crm-sms-log"]
    can_delete = False
    fields = (
        "created_at_display",
        "source",
        "old_status",
        "new_status",
        "error_code",
        "description_display",
    )
    readonly_fields = fields
    ordering = ("created_at", "id")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class MessageAdmin(LargeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    # Six columns: the list fits a 1366 px screen with both sidebars (the provider under the
    # phone, the error code under the status, the delivery time under the sending time; parts
    # and attempts are on the message's page).
    list_display = (
        "phone_column",
        "status_column",
        "campaign",
        "short_text",
        "created_at_column",
        "sent_at_column",
    )
    list_display_links = ("phone_column",)
    list_filter = ("status", ProviderFilter, "campaign", "created_at")
    list_select_related = ("campaign",)
    # Searched by get_search_results below: exact and indexed.
    search_fields = ("phone", "msg_id", "provider_message_id")
    search_help_text = gettext_lazy("A phone in any notation, a message id or a provider's id.")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    empty_value_display = EMPTY_VALUE
    inlines = [MessageEventInline]

    class Media:
        css = {"all": ["crm_sms/admin.css"]}  # status colours, the list's widths

    actions = ["resend_action"]
    readonly_fields = (
        "campaign",
        "contact",
        "phone",
        "text",
        "sender",
        "provider",
        "moved_from",
        "move_reason",
        "msg_id",
        "provider_message_id",
        "status_badge",
        "status_explained",
        "maybe_sent",
        "error_code",
        "error_message",
        "attempts",
        "time_zone",
        "window_end_at_display",
        "next_attempt_at_display",
        "claimed_at_display",
        "segments",
        "created_at_display",
        "sent_at_display",
        "delivered_at_display",
        "updated_at_display",
        "last_response",
    )
    fields = readonly_fields

    # Times to the second: the order of a message's steps and events must be readable.
    created_at_column = seconds_display("created_at", Message, short=True)
    window_end_at_display = seconds_display("window_end_at", Message)
    next_attempt_at_display = seconds_display("next_attempt_at", Message)
    claimed_at_display = seconds_display("claimed_at", Message)
    created_at_display = seconds_display("created_at", Message)
    sent_at_display = seconds_display("sent_at", Message)
    delivered_at_display = seconds_display("delivered_at", Message)
    updated_at_display = seconds_display("updated_at", Message)

    def has_send_sms_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(SEND_SMS_PERMISSION)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        """ "Next attempt" only while one is owed (queued, sending): not on a message that
        is sent, delivered, failed, cancelled or uncertain; "may have been sent" and "what it
        means" only when they have something to say."""
        fields = super().get_fields(request, obj)
        if obj is None:
            return fields
        hidden = set()
        if obj.status not in ACTIVE_STATUSES:
            hidden.add("next_attempt_at_display")
        # "May have been sent" and what it means only when it is in doubt: on a plainly
        # delivered message its ✗ and its long help text say nothing.
        if not (obj.maybe_sent or obj.status == MessageStatus.UNCERTAIN):
            hidden.add("maybe_sent")
        if not self.explanation(obj):
            hidden.add("status_explained")
        return [f for f in fields if f not in hidden]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """A phone in any notation, our message id or a provider's id, each through its index:
        exact ids (iexact compares UPPER(…), which no index holds), a provider's id per
        configured provider (the (provider, provider_message_id) index)."""
        term = search_term.strip()
        if not term:
            return queryset, False
        aliases = [alias for alias, _ in provider_choices()]
        condition = Q(msg_id=term) | Q(provider__in=aliases, provider_message_id=term)
        phone = search_phone(term)
        if phone:
            condition |= Q(phone=phone)
        return queryset.filter(condition), False

    @admin.display(description=gettext_lazy("text"))
    def short_text(self, message: Message) -> str:
        return message.text if len(message.text) <= 40 else message.text[:39] + "…"

    @admin.display(description=gettext_lazy("provider"), ordering="provider")
    def provider_column(self, message: Message) -> str:
        """The provider that sent it (or will); "reserve ← default" when failover moved it
        (``crm_sms.outbox.failover``), the reason on hover. No query: fields of the row."""
        if not message.moved_from:
            return message.provider
        return format_html(
            '{} <span class="crm-sms-moved" title="{}">← {}</span>',
            message.provider,
            message.move_reason,
            message.moved_from,
        )

    @admin.display(description=pgettext_lazy("column", "phone / provider"), ordering="phone")
    def phone_column(self, message: Message) -> str:
        return format_html(
            '{}<div class="crm-sms-quiet">{}</div>', message.phone, self.provider_column(message)
        )

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_column(self, message: Message) -> str:
        """The status and, below it, the error code if there is one."""
        if not message.error_code:
            return self.status_badge(message)
        return format_html(
            '{}<div class="crm-sms-quiet">{}</div>', self.status_badge(message), message.error_code
        )

    @admin.display(description=pgettext_lazy("column", "sent / delivered"), ordering="sent_at")
    def sent_at_column(self, message: Message) -> str | None:
        """When it was sent and, below, when it was delivered (to the second)."""
        sent = to_the_second_short(message.sent_at)
        delivered = to_the_second_short(message.delivered_at)
        if delivered is None:
            return sent
        sent = sent or self.get_empty_value_display()
        return format_html('{}<div class="crm-sms-quiet">{}</div>', sent, delivered)

    @admin.display(description=gettext_lazy("status"), ordering="status")
    def status_badge(self, message: Message) -> str:
        # Coloured by admin.css (green done, blue on its way, red failed, amber uncertain),
        # with a dark-theme variant of each.
        return format_html(
            '<span class="crm-sms-status crm-sms-status-{}">{}</span>',
            message.status,
            message.get_status_display(),
        )

    @admin.display(description=gettext_lazy("what it means"))
    def status_explained(self, message: Message) -> str:
        return self.explanation(message) or EMPTY_VALUE

    @staticmethod
    def explanation(message: Message) -> str:
        texts = [str(STATUS_EXPLAINED.get(message.status, ""))]
        if message.maybe_sent and message.status != MessageStatus.UNCERTAIN:
            texts.append(str(MAYBE_SENT_EXPLAINED))
        return " ".join(t for t in texts if t)

    @admin.action(
        description=gettext_lazy("Resend failed or uncertain messages…"), permissions=["send_sms"]
    )
    def resend_action(self, request: HttpRequest, queryset: QuerySet) -> TemplateResponse | None:
        """A confirmation page says what will happen; its POST does it (``resend.py``)."""
        return resend_selected(self, request, queryset)


class MessageEventAdmin(
    EventTimeMixin, EventDescriptionMixin, LargeListMixin, ReadOnlyAdminMixin, admin.ModelAdmin
):
    list_display = (
        "created_at_display",
        "message",
        "source",
        "old_status",
        "new_status",
        "error_code",
        "description_display",
    )
    list_select_related = ("message",)
    search_fields = ("message__msg_id__exact",)
    empty_value_display = EMPTY_VALUE
    # Newest first: the log's first page is what just happened (the (created_at, id) index).
    ordering = ("-created_at", "-id")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    readonly_fields = (
        "message",
        "source",
        "old_status",
        "new_status",
        "error_code",
        "description_display",
        "payload",
        "created_at_display",
    )
    fields = readonly_fields
    raw_id_fields = ("message",)
