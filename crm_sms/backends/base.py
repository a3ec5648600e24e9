"""The backend contract: one small base class, the values it passes around, one exception tree.

A backend turns an ``OutgoingSMS`` into a ``SendResult`` and a provider's delivery report into
``DeliveryReport``s. It never touches the database: the outbox (``crm_sms.sending``) and the
report handling (``crm_sms.reports``) do, so a backend is easy to write and to test.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse


class SMSError(Exception):
    """The root of crm-sms's exceptions."""


class ConfigurationError(SMSError, ImproperlyConfigured):
    """A provider is configured wrongly; the message names the setting or env variable."""


class CallbackError(SMSError):
    """A delivery report that cannot be parsed (answered 400)."""


class CallbackForbidden(SMSError):
    """A delivery report whose signature does not match (answered 403)."""


class SendStatus(enum.StrEnum):
    ACCEPTED = "accepted"  # the provider took the message: it is sent
    REJECTED = "rejected"  # refused for good, for this message only: failed
    RETRY = "retry"  # a passing problem (timeout, 5xx, throttling): try again later
    PROVIDER_ERROR = "provider_error"  # the provider refuses everything (credentials, IP): pause


@dataclass
class OutgoingSMS:
    """One message as a backend sees it."""

    to: str  # E.164, "+79001234212"
    text: str
    sender: str
    msg_id: str  # ours; the same on every attempt, so the provider can drop a duplicate
    callback_url: str | None = None


@dataclass
class SendResult:
    status: SendStatus
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    raw: Any = None  # the provider's answer, for Message.last_response; never credentials

    @property
    def retryable(self) -> bool:
        return self.status in (SendStatus.RETRY, SendStatus.PROVIDER_ERROR)

    @property
    def accepted(self) -> bool:
        return self.status is SendStatus.ACCEPTED


@dataclass
class DeliveryReport:
    """A delivery status from a callback or a poll. ``msg_id`` (ours) or
    ``provider_message_id`` identifies the message; ``status`` is a MessageStatus value."""

    status: str
    msg_id: str = ""
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    delivered_at: datetime | None = None
    raw: Any = field(default=None, repr=False)


class BaseBackend:
    """Subclass and implement ``send``; the rest is optional."""

    #: A readable provider name for admin pages and messages.
    display_name: str = "SMS"
    #: How many recipients ``send_many`` takes in one request (1: it is ``send`` in a loop).
    max_batch_size: int = 1
    #: Whether the provider posts delivery reports to a callback URL.
    supports_callbacks: bool = False
    #: How long after sending a provider still reports a status (polling stops then), seconds.
    report_window: float = 24 * 3600

    def __init__(
        self, alias: str = "default", options: dict[str, Any] | None = None, rate_limit=None
    ):
        self.alias = alias
        self.options = dict(options or {})
        self.rate_limit = float(rate_limit) if rate_limit else None

    # --- sending -------------------------------------------------------------------------
    @property
    def default_sender(self) -> str:
        return self.options.get("sender", "")

    def validate_sender(self, sender: str) -> None:
        """Raise ValidationError when the provider would refuse ``sender``."""

    def validate_text(self, text: str) -> None:
        """Raise ValidationError when the provider would refuse ``text``."""
        from django.core.exceptions import ValidationError
        from django.utils.translation import gettext as _

        if not text or not text.strip():
            raise ValidationError(_("The message text is empty."), code="empty_text")

    def send(self, sms: OutgoingSMS) -> SendResult:
        raise NotImplementedError(f"{type(self).__name__} must implement send()")

    def send_many(self, batch: list[OutgoingSMS]) -> list[SendResult]:
        """Send several messages; results in the same order. Override where the provider
        takes many recipients per request."""
        return [self.send(sms) for sms in batch]

    def callback_url(self) -> str | None:
        """Where the provider should post delivery reports, or None without PUBLIC_URL."""
        from django.urls import reverse

        from .. import conf

        public_url = conf.get_setting("PUBLIC_URL")
        tokens = conf.callback_tokens()
        if not (self.supports_callbacks and public_url and tokens):
            return None
        path = reverse("crm_sms:callback", kwargs={"provider": self.alias, "token": tokens[0]})
        return public_url.rstrip("/") + path

    # --- delivery reports ----------------------------------------------------------------
    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        """Parse a delivery-report request; raise CallbackError for a malformed one."""
        raise NotImplementedError(f"{type(self).__name__} takes no delivery callbacks")

    def callback_response(self, reports: list[DeliveryReport]) -> HttpResponse:
        return HttpResponse("OK", content_type="text/plain")

    #: Set to a method ``query_status(messages) -> list[DeliveryReport]`` for pollable providers.
    query_status = None

    # --- housekeeping --------------------------------------------------------------------
    def check(self) -> list[checks.CheckMessage]:
        """Configuration problems, found without the network (run by Django's system checks)."""
        problems = []
        if self.default_sender:
            from django.core.exceptions import ValidationError

            try:
                self.validate_sender(self.default_sender)
            except ValidationError as exc:
                problems.append(
                    checks.Error(
                        f"Provider {self.alias!r}: the sender {self.default_sender!r} would be "
                        f"refused: {' '.join(exc.messages)}",
                        hint=f"Fix ?sender= in {self.env_variable}.",
                        id="crm_sms.E004",
                    )
                )
        return problems

    @property
    def env_variable(self) -> str:
        return "SMS_URL" if self.alias == "default" else f"SMS_URL_{self.alias.upper()}"

    def close(self) -> None:
        """Release connections (called when settings change and at shutdown)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias!r}>"
