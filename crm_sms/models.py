"""Contacts, campaigns, messages and their audit trail. Field names are the public contract."""

from __future__ import annotations

import os
import string

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

MSG_ID_ALPHABET = string.ascii_letters + string.digits
MSG_ID_LENGTH = 16


# os.urandom bytes below 248 (4 * 62) map onto the 62 letters without bias; the rest are dropped.
_ID_TABLE = bytes(MSG_ID_ALPHABET.encode()[b % 62] if b < 248 else 0 for b in range(256))
_ID_DROP = bytes(range(248, 256))


def new_msg_ids(count: int) -> list[str]:
    """``count`` fresh msg_ids ([A-Za-z0-9]{16}) from one read of os.urandom (campaigns take
    100,000 at a time)."""
    chars = b""
    need = count * MSG_ID_LENGTH
    while len(chars) < need:
        chars += os.urandom((need - len(chars)) * 9 // 8 + 16).translate(_ID_TABLE, _ID_DROP)
    text = chars[:need].decode("ascii")
    return [text[i : i + MSG_ID_LENGTH] for i in range(0, need, MSG_ID_LENGTH)]


def new_msg_id() -> str:
    """A fresh message id: 16 characters of [A-Za-z0-9], the provider's de-duplication key."""
    return new_msg_ids(1)[0]


class ContactGroup(models.Model):
    name = models.CharField(_("name"), max_length=200, unique=True)
    description = models.TextField(_("description"), blank=True)

    class Meta:
        verbose_name = _("contact group")
        verbose_name_plural = _("contact groups")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Contact(models.Model):
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    # Indexed in Meta: the list's order (last, first, id), and on PostgreSQL UPPER(last_name) for
    # the admin's prefix search (migration 0006).
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    middle_name = models.CharField(_("middle name"), max_length=150, blank=True)
    phone = models.CharField(
        _("phone"), max_length=20, unique=True, help_text=_("E.164, e.g. +79001234212")
    )
    email = models.EmailField(_("email"), blank=True)
    groups = models.ManyToManyField(
        ContactGroup, verbose_name=_("groups"), related_name="contacts", blank=True
    )
    opted_out = models.BooleanField(
        _("opted out"), default=False, help_text=_("Never send SMS to this contact.")
    )
    opted_out_at = models.DateTimeField(_("opted out at"), null=True, blank=True)
    # Consent to advertising (38-FZ art. 18): crm_sms.consent writes these with a ContactEvent.
    consent_given_at = models.DateTimeField(_("consent given at"), null=True, blank=True)
    consent_source = models.CharField(
        _("consent source"),
        max_length=100,
        blank=True,
        default="",
        db_default="",  # bulk inserts (the import) may leave it out
        help_text=_("How the consent was given: web form, paper, import…"),
    )
    consent_withdrawn_at = models.DateTimeField(_("consent withdrawn at"), null=True, blank=True)
    # IANA name; "" means the site's TIME_ZONE (crm_sms.quiet_hours).
    time_zone = models.CharField(
        _("time zone"),
        max_length=64,
        blank=True,
        default="",
        db_default="",  # bulk inserts (the import) may leave it out
        help_text=_(
            "IANA name, e.g. Asia/Novosibirsk. Filled from a fixed-line number; empty: the "
            "site's time zone."
        ),
    )
    notes = models.TextField(_("notes"), blank=True)
    external_id = models.CharField(_("external id"), max_length=100, blank=True, db_index=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ["last_name", "first_name", "id"]
        # Exporting hands out every phone and email: its own permission, not "view".
        permissions = [("export_contact", _("Can export contacts"))]
        indexes = [
            # The admin list's order: its first page, and its last one read backwards.
            models.Index(fields=["last_name", "first_name", "id"], name="crm_sms_contact_name"),
            # The "opted out: yes" filter, in the list's order (a few percent of the rows).
            models.Index(
                fields=["last_name", "first_name", "id"],
                condition=models.Q(opted_out=True),
                name="crm_sms_contact_opted_out",
            ),
            # PostgreSQL only (migration 0006): UPPER(last_name) and UPPER(email) for the
            # admin's istartswith/iexact search (crm_sms/admin/search.py), and the few rows whose
            # phone is not E.164 (crm_sms/outbox/counting.py).
        ]

    def __str__(self) -> str:
        name = " ".join(p for p in (self.last_name, self.first_name, self.middle_name) if p)
        return f"{name} ({self.phone})" if name else self.phone

    def save(self, *args, **kwargs) -> None:
        update_fields = kwargs.get("update_fields")
        if (
            not self.time_zone
            and self.phone
            and (update_fields is None or "phone" in update_fields)
        ):
            from .quiet_hours import guess_time_zone

            self.time_zone = guess_time_zone(self.phone)
            if update_fields is not None and self.time_zone:
                kwargs["update_fields"] = {*update_fields, "time_zone"}
        if self.opted_out and self.opted_out_at is None:
            self.opted_out_at = timezone.now()
        elif not self.opted_out:
            self.opted_out_at = None
        super().save(*args, **kwargs)

    @property
    def has_consent(self) -> bool:
        """Consent to advertising given and not withdrawn (``crm_sms.consent.CONSENTED``)."""
        return self.consent_given_at is not None and self.consent_withdrawn_at is None


class ContactEventKind(models.TextChoices):
    CONSENT_GIVEN = "consent_given", _("consent given")
    CONSENT_WITHDRAWN = "consent_withdrawn", _("consent withdrawn")
    OPTED_OUT = "opted_out", _("opted out")
    OPTED_IN = "opted_in", _("opted in again")
    ERASED = "erased", _("personal data erased")


class ContactEvent(models.Model):
    """A change of a contact's consent or opt-out (and its erasure): who, when, why, how.
    Written by ``crm_sms.consent``; the record a company shows when asked for its consents."""

    contact = models.ForeignKey(
        Contact,
        verbose_name=_("contact"),
        null=True,  # an erased contact's "erased" event stays, without the person
        blank=True,
        on_delete=models.SET_NULL,
        related_name="events",
        db_index=False,  # the (contact, created_at) index leads with it
    )
    kind = models.CharField(_("kind"), max_length=30, choices=ContactEventKind.choices)
    source = models.CharField(
        _("source"), max_length=100, blank=True, help_text=_("web form, paper, import, SMS reply…")
    )
    reason = models.TextField(_("reason"), blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_contact_events",
    )
    created_at = models.DateTimeField(_("time"), default=timezone.now)
    details = models.JSONField(_("details"), default=dict, blank=True)

    class Meta:
        verbose_name = _("contact event")
        verbose_name_plural = _("contact events")
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["contact", "created_at"], name="crm_sms_contact_event")]

    def __str__(self) -> str:
        return f"{self.contact_id or '-'}: {self.get_kind_display()}"


class CampaignStatus(models.TextChoices):
    # Moves between these: crm_sms.transitions (docs/statuses.md).
    DRAFT = "draft", _("draft")
    SCHEDULED = "scheduled", _("scheduled")
    RUNNING = "running", _("running")
    PAUSED = "paused", _("paused")
    COMPLETED = "completed", _("completed")
    # Russian needs the campaign's own gender here: «рассылка отменена», «сообщение отменено».
    CANCELLED = "cancelled", pgettext_lazy("campaign status", "cancelled")


class CampaignKind(models.TextChoices):
    # Service (transactional) texts need no consent; advertising ones do (38-FZ art. 18):
    # an advertising campaign leaves out contacts without it (crm_sms.consent).
    SERVICE = "service", _("service")
    ADVERTISING = "advertising", _("advertising")


class Campaign(models.Model):
    name = models.CharField(_("name"), max_length=200)
    text = models.TextField(
        _("text"), help_text=_("A template: {{ first_name }}, {{ last_name }}…")
    )
    sender = models.CharField(_("sender"), max_length=20, blank=True)
    provider = models.CharField(_("provider"), max_length=50, blank=True)
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=CampaignStatus.choices,
        default=CampaignStatus.DRAFT,
        db_index=True,
    )
    scheduled_at = models.DateTimeField(_("scheduled at"), null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_campaigns",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    pause_reason = models.TextField(_("pause reason"), blank=True)
    # What send_campaign counted when it built the campaign.
    recipients_count = models.PositiveIntegerField(_("recipients"), default=0)
    excluded = models.JSONField(
        _("excluded"),
        default=dict,
        blank=True,
        help_text=_("Contacts left out and why: opted_out, no_consent, invalid, duplicate."),
    )
    kind = models.CharField(
        _("kind"),
        max_length=20,
        choices=CampaignKind.choices,
        default=CampaignKind.SERVICE,
        help_text=_("Advertising is sent only to contacts who consented to it."),
    )
    # Quiet hours: sent only between these local times of each recipient (crm_sms.quiet_hours);
    # both empty: at any time.
    window_start = models.TimeField(_("send from"), null=True, blank=True)
    window_end = models.TimeField(_("send until"), null=True, blank=True)
    # How the texts were made and what they were estimated to cost (queueing._snapshot).
    translit = models.BooleanField(_("transliterate"), default=False)
    smart_encoding = models.BooleanField(_("replace look-alike characters"), default=True)
    part_price = models.DecimalField(
        _("price of one SMS part"), max_digits=12, decimal_places=4, null=True, blank=True
    )
    currency = models.CharField(_("currency"), max_length=3, blank=True)
    estimated_cost = models.DecimalField(
        _("estimated cost"), max_digits=14, decimal_places=4, null=True, blank=True
    )

    class Meta:
        verbose_name = _("campaign")
        verbose_name_plural = _("campaigns")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "scheduled_at"], name="crm_sms_campaign_due")]

    def __str__(self) -> str:
        return self.name


class MessageStatus(models.TextChoices):
    # The seven states of the 1C BSP SMS subsystem, and "uncertain". Which moves between them
    # exist, and who makes them: crm_sms.transitions (docs/statuses.md).
    QUEUED = "queued", _("queued")
    SENDING = "sending", _("sending")
    SENT = "sent", _("sent")
    DELIVERED = "delivered", _("delivered")
    UNDELIVERED = "undelivered", _("undelivered")
    FAILED = "failed", _("failed")
    CANCELLED = "cancelled", _("cancelled")
    # The answer to a send was lost (a read timeout, a connection dropped after the request,
    # a 5xx) and the provider can neither drop a repeat nor be asked: it may have the message.
    # The worker never sends it again; only an operator's confirmed resend does.
    UNCERTAIN = "uncertain", _("uncertain whether sent")


FINAL_STATUSES = frozenset(
    {
        MessageStatus.DELIVERED,
        MessageStatus.UNDELIVERED,
        MessageStatus.FAILED,
        MessageStatus.CANCELLED,
    }
)
#: Waiting to be sent or being sent: the outbox still owes these a send. (``uncertain`` is
#: neither final nor active: only a report or an operator moves it.)
ACTIVE_STATUSES = (MessageStatus.QUEUED, MessageStatus.SENDING)


class Message(models.Model):
    campaign = models.ForeignKey(
        Campaign,
        verbose_name=_("campaign"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="messages",
        db_index=False,  # Meta's (campaign, status) and (campaign, created_at, id) start with it
    )
    contact = models.ForeignKey(
        Contact,
        verbose_name=_("contact"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    phone = models.CharField(_("phone"), max_length=20, db_index=True)
    text = models.TextField(_("text"))
    sender = models.CharField(_("sender"), max_length=20, blank=True)
    provider = models.CharField(_("provider"), max_length=50, db_index=True)
    # Failover (crm_sms.outbox.failover): the provider it last moved from, and why ("": never).
    moved_from = models.CharField(
        _("moved from provider"), max_length=50, blank=True, default="", db_default=""
    )
    move_reason = models.TextField(_("why it moved"), blank=True, default="", db_default="")
    msg_id = models.CharField(
        _("message id"), max_length=MSG_ID_LENGTH, unique=True, default=new_msg_id, editable=False
    )
    provider_message_id = models.CharField(_("provider message id"), max_length=100, blank=True)
    status = models.CharField(
        _("status"), max_length=20, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    error_message = models.TextField(_("error message"), blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    maybe_sent = models.BooleanField(
        _("may have been sent"),
        default=False,
        db_default=False,  # bulk inserts (crm_sms.bulk) may leave it out
        help_text=_(
            "The answer to the last attempt was lost after the request may have reached the "
            "provider. Before it is sent again the provider drops a repeat of its message id, "
            "or is asked whether it has it, or an operator decides."
        ),
    )
    next_attempt_at = models.DateTimeField(_("next attempt at"), default=timezone.now)
    # Quiet hours (crm_sms.quiet_hours): the recipient's local window and zone, and the instant
    # the window that next_attempt_at falls in closes (the claim skips it from then on).
    time_zone = models.CharField(
        _("time zone"), max_length=64, blank=True, default="", db_default=""
    )
    window_start = models.TimeField(_("send from"), null=True, blank=True)
    window_end = models.TimeField(_("send until"), null=True, blank=True)
    window_end_at = models.DateTimeField(_("window closes at"), null=True, blank=True)
    claimed_at = models.DateTimeField(_("claimed at"), null=True, blank=True)
    segments = models.PositiveSmallIntegerField(_("SMS parts"), default=1)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    delivered_at = models.DateTimeField(_("delivered at"), null=True, blank=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)
    last_response = models.JSONField(_("last provider response"), null=True, blank=True)

    class Meta:
        verbose_name = _("message")
        verbose_name_plural = _("messages")
        ordering = ["-created_at", "-id"]
        permissions = [("send_sms", _("Can send SMS"))]
        indexes = [
            # The worker's claim: due queued rows, and stale 'sending' rows.
            models.Index(fields=["status", "next_attempt_at"], name="crm_sms_msg_due"),
            models.Index(fields=["status", "claimed_at"], name="crm_sms_msg_claimed"),
            # Queued messages whose window closed before they were sent: rescheduled.
            models.Index(
                fields=["status", "window_end_at"],
                condition=models.Q(window_end_at__isnull=False),
                name="crm_sms_msg_window",
            ),
            # Campaign progress counts (an index-only scan).
            models.Index(fields=["campaign", "status"], name="crm_sms_msg_campaign_status"),
            # A campaign's messages, newest first (the admin list filtered by campaign).
            models.Index(
                fields=["campaign", "created_at", "id"], name="crm_sms_msg_campaign_created"
            ),
            # Delivery reports and polling look messages up by the provider's id.
            models.Index(
                fields=["provider", "provider_message_id"], name="crm_sms_msg_provider_id"
            ),
            # The SMS dashboard (crm_sms.stats): messages per day, provider and status of the
            # last 30 days, an index-only scan; and the failures of a period with their reasons.
            models.Index(fields=["created_at", "provider", "status"], name="crm_sms_msg_daily"),
            models.Index(
                fields=["created_at"],
                condition=models.Q(status__in=["failed", "undelivered"]),
                name="crm_sms_msg_failures",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.phone} [{self.msg_id}]"


class Dashboard(Message):
    """The admin's "SMS dashboard" page (``crm_sms.admin.dashboard``): a proxy, no table of
    its own, so the page is listed with the app's models and reads the messages."""

    class Meta:
        proxy = True
        verbose_name = _("SMS dashboard")
        verbose_name_plural = _("SMS dashboard")
        default_permissions = ()  # seeing it takes crm_sms.view_message


class EventSource(models.TextChoices):
    SEND = "send", _("send")
    RETRY = "retry", _("retry")
    CALLBACK = "callback", _("callback")
    POLL = "poll", _("poll")
    ADMIN = "admin", _("admin")


class MessageEvent(models.Model):
    """One status change of a message: the audit trail."""

    message = models.ForeignKey(
        Message,
        verbose_name=_("message"),
        on_delete=models.CASCADE,
        related_name="events",
        db_index=False,  # the (message, created_at) index leads with it
    )
    source = models.CharField(_("source"), max_length=20, choices=EventSource.choices)
    old_status = models.CharField(
        _("old status"), max_length=20, choices=MessageStatus.choices, blank=True
    )
    new_status = models.CharField(_("new status"), max_length=20, choices=MessageStatus.choices)
    error_code = models.CharField(_("error code"), max_length=50, blank=True)
    # English (a msgid); with parameters, ``params`` holds them: crm_sms/event_text.py.
    description = models.TextField(_("description"), blank=True)
    params = models.JSONField(_("description parameters"), null=True, blank=True)
    payload = models.JSONField(_("payload"), null=True, blank=True)
    created_at = models.DateTimeField(_("time"), default=timezone.now)

    class Meta:
        verbose_name = _("message event")
        verbose_name_plural = _("message events")
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["message", "created_at"], name="crm_sms_event_message"),
            # The event log in time order, paged without deep scans.
            models.Index(fields=["created_at", "id"], name="crm_sms_event_created"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id}: {self.old_status or '-'} → {self.new_status}"


class ImportJobStatus(models.TextChoices):
    QUEUED = "queued", pgettext_lazy("import job status", "queued")
    RUNNING = "running", pgettext_lazy("import job status", "running")
    DONE = "done", pgettext_lazy("import job status", "done")
    FAILED = "failed", pgettext_lazy("import job status", "failed")


class ImportJob(models.Model):
    """A contact import (or its check, ``dry_run``) run in the background by ``sms_worker`` or
    Celery (``crm_sms.importing.jobs``): the uploaded file, the options, the progress."""

    file_path = models.CharField(_("file path"), max_length=500)
    filename = models.CharField(_("file name"), max_length=255, blank=True)
    file_size = models.BigIntegerField(_("file size"), default=0)
    options = models.JSONField(_("options"), default=dict, blank=True)  # format, encoding…
    dry_run = models.BooleanField(_("check only"), default=False)
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=ImportJobStatus.choices,
        default=ImportJobStatus.QUEUED,
    )
    # Progress, committed with each batch of contacts.
    rows = models.PositiveIntegerField(_("rows read"), default=0)
    created = models.PositiveIntegerField(_("created"), default=0)
    updated = models.PositiveIntegerField(_("updated"), default=0)
    unchanged = models.PositiveIntegerField(_("unchanged"), default=0)
    skipped = models.PositiveIntegerField(_("skipped"), default=0)
    fraction = models.FloatField(_("part of the file read"), null=True, blank=True)
    # ImportResult.as_dict(): the running result (where a taken-back job goes on), then the end.
    result = models.JSONField(_("result"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("created by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sms_import_jobs",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last progress at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        verbose_name = _("contact import")
        verbose_name_plural = _("contact imports")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="crm_sms_import_due")]

    def __str__(self) -> str:
        return f"{self.filename or self.file_path} ({self.get_status_display()})"


class QueuedReport(models.Model):
    """The delivery reports of one callback request, waiting to be applied in a batch
    (``CRM_SMS["REPORTS"] = "queued"``; ``crm_sms.inbox``). A row is deleted in the
    transaction that applies it; ``error`` set: it failed alone and waits for an operator."""

    id = models.BigAutoField(primary_key=True)
    provider = models.CharField(_("provider"), max_length=50)
    source = models.CharField(_("source"), max_length=20, choices=EventSource.choices)
    received_at = models.DateTimeField(_("received at"), default=timezone.now)
    reports = models.TextField(_("reports"))  # a JSON list, cleaned (reports.clean_report)
    error = models.TextField(_("error"), blank=True)

    class Meta:
        verbose_name = _("queued delivery report")
        verbose_name_plural = _("queued delivery reports")

    def __str__(self) -> str:
        return f"{self.provider} {self.received_at:%Y-%m-%d %H:%M:%S}"


class CampaignStatusCount(models.Model):
    """How many of a campaign's messages are in ``status``: kept in the transaction of every
    insert and status move (``crm_sms.campaign_counts``), so the admin reads a few rows instead
    of counting a million messages; ``manage.py sms_recount`` recomputes it."""

    campaign = models.ForeignKey(
        Campaign, on_delete=models.CASCADE, related_name="status_counts", db_index=False
    )
    status = models.CharField(max_length=20, choices=MessageStatus.choices)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "status"], name="crm_sms_campaign_status_count"
            )
        ]

    def __str__(self) -> str:
        return f"{self.campaign_id} {self.status}: {self.count}"


def _count_created_message(sender, instance, created, raw=False, **kwargs) -> None:
    # Messages made one at a time through the ORM (the outbox inserts in bulk and counts
    # itself): counted too, so such a campaign's numbers stay right. Fixtures (raw) bring theirs.
    if created and not raw and instance.campaign_id is not None:
        from .campaign_counts import add_counts

        add_counts({(instance.campaign_id, instance.status): 1})


models.signals.post_save.connect(
    _count_created_message, sender=Message, dispatch_uid="crm_sms_campaign_counts"
)
