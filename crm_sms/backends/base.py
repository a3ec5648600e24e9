"""The backend contract: one small base class and the values it passes around.

A backend turns an ``OutgoingSMS`` into a ``SendResult``, a provider's delivery report into
``DeliveryReport``s and, where the provider forwards replies, an incoming-message webhook into
``InboundMessage``s (``crm_sms.inbound`` acts on them). It never touches the database: the
outbox (``crm_sms.outbox``), the report handling (``crm_sms.reports``) and ``crm_sms.inbound``
do, so a backend is easy to write and to test. The exceptions live in ``crm_sms.exceptions``
(re-exported here for backends' convenience).

Every backend takes ``?price=`` (of one SMS part, a decimal) and ``?currency=`` (ISO 4217,
``RUB`` by default) for the cost estimates of ``crm_sms.costs``; one whose provider reports
the account's money implements ``balance() -> Balance`` (``supports_balance`` then says so).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

from django.core import checks
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext as _

from ..exceptions import CallbackError, CallbackForbidden, ConfigurationError, SMSError
from .options import Option, read_options, read_rate_limit

if TYPE_CHECKING:
    from ..conf import SMSURL

__all__ = [
    "Balance",
    "BaseBackend",
    "CallbackError",
    "CallbackForbidden",
    "ConfigurationError",
    "DeliveryReport",
    "DeliveryStatus",
    "InboundMessage",
    "Option",
    "OutgoingSMS",
    "RetrySafety",
    "SMSError",
    "SendResult",
    "SendStatus",
]


class SendStatus(enum.StrEnum):
    ACCEPTED = "accepted"  # the provider took the message: it is sent
    REJECTED = "rejected"  # refused for good, for this message only: failed
    RETRY = "retry"  # a passing problem (timeout, 5xx, throttling): try again later
    PROVIDER_ERROR = "provider_error"  # the provider refuses everything (credentials, IP): pause


class RetrySafety(enum.StrEnum):
    """How a backend keeps a retry after an ambiguous failure from sending a second SMS."""

    DEDUPLICATED = "deduplicated"  # the provider drops a repeat of our key (MegaFon's msg_id)
    LOOKUP = "lookup"  # ``lookup_sent`` asks the provider whether our message arrived
    NONE = "none"  # neither: an ambiguous failure is "uncertain" until an operator decides


class DeliveryStatus(enum.StrEnum):
    """The statuses a delivery report can carry (the same strings as ``MessageStatus``)."""

    SENT = "sent"  # still on its way (a provider's intermediate state)
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"


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
    """What became of one message: ``status`` decides what the outbox does with it."""

    status: SendStatus
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    raw: Any = None  # the provider's answer, for Message.last_response; never credentials
    #: The request may have reached the provider (a read timeout, a connection reset after
    #: sending, a 5xx or a garbled answer to a sent body): whether it was accepted is unknown.
    #: Failures before anything was sent (refused connection, DNS, TLS) are not ambiguous.
    ambiguous: bool = False


@dataclass
class DeliveryReport:
    """A delivery status from a callback or a poll. ``msg_id`` (ours) or
    ``provider_message_id`` identifies the message."""

    status: DeliveryStatus
    msg_id: str = ""
    provider_message_id: str = ""
    error_code: str = ""
    error_message: str = ""
    delivered_at: datetime | None = None
    raw: Any = field(default=None, repr=False)


@dataclass
class InboundMessage:
    """An SMS a subscriber sent to one of our numbers (``BaseBackend.parse_inbound``)."""

    from_phone: str  # the subscriber, E.164 ("+79001234212")
    to: str  # our number (or sender) it was sent to, as the provider gives it
    text: str
    #: The provider's id of the incoming message (what makes a repeated webhook recognisable).
    provider_message_id: str = ""
    raw: Any = field(default=None, repr=False)  # the request's fields, credentials redacted


@dataclass(frozen=True)
class Balance:
    """The money on a provider account (``BaseBackend.balance``)."""

    amount: Decimal
    currency: str  # ISO 4217: "RUB", "USD"


def to_price(value: Any) -> Decimal:
    """A price: a decimal number (``1.95``; a comma is read as the decimal point), not below 0."""
    try:
        price = Decimal(str(value).strip().replace(",", "."))
    except InvalidOperation as exc:
        raise ValueError("is not a decimal number (e.g. 1.95)") from exc
    if not price.is_finite() or price < 0:
        raise ValueError("is not a price of 0 or more (e.g. 1.95)")
    return price


def to_currency(value: Any) -> str:
    """An ISO 4217 currency code: three Latin letters, upper-cased (``rub`` -> ``RUB``)."""
    code = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise ValueError("is not a three-letter ISO 4217 currency code (e.g. RUB, USD)")
    return code


class BaseBackend:
    """Subclass and implement ``send``; the rest is optional."""

    #: The provider's name for people: admin choices and the texts of errors.
    display_name: str = "SMS"
    #: How many recipients ``send_many`` takes in one request (1: it is ``send`` in a loop).
    max_batch_size: int = 1
    #: Whether the provider posts delivery reports to a callback URL.
    supports_callbacks: bool = False
    #: Whether ``validate_text`` looks only at a text's length (and whether it is blank), not
    #: at its characters: the "Send SMS…" preview then counts a big selection by the lengths
    #: of the names (``outbox.counting``). A backend checking characters sets False.
    validates_length_only: ClassVar[bool] = True
    #: Whether the provider posts incoming messages (replies) to us (``parse_inbound``).
    supports_inbound: ClassVar[bool] = False
    #: How long after sending a provider still reports a status (polling stops then), seconds.
    report_window: float = 24 * 3600
    #: How a retry after an ambiguous failure stays safe (see ``RetrySafety``).
    retry_safety: ClassVar[RetrySafety] = RetrySafety.NONE
    #: The provider's error codes (``SendResult.error_code``) that refuse a message for a
    #: route reason (the recipient's region, the account's routing or IP rules): with
    #: ``CRM_SMS["FAILOVER"]`` such a message moves to the next provider (``is_route_refusal``).
    route_refusal_codes: ClassVar[frozenset[str]] = frozenset()
    #: The options this class adds (``option_table`` merges those of the base classes).
    declared_options: ClassVar[tuple[Option, ...]] = (
        Option("sender", str, "", "the default sender name"),
        Option("price", to_price, None, "the price of one SMS part, e.g. 1.95 (cost estimates)"),
        Option("currency", to_currency, "RUB", "the price's ISO 4217 currency (RUB, USD...)"),
    )
    #: Whether ``balance()`` can ask the provider (set for a subclass that defines it).
    supports_balance: ClassVar[bool] = False
    #: RATE_LIMIT (messages per second) when the configuration gives none; None: no limit.
    default_rate_limit: ClassVar[float | None] = None
    #: The options an ``SMS_URL``'s user and password parts fill (None: the URL has none).
    url_user_option: ClassVar[str | None] = None
    url_password_option: ClassVar[str | None] = None

    def __init__(
        self, alias: str = "default", options: Mapping[str, Any] | None = None, rate_limit=None
    ):
        self.alias = alias
        values, problems = self.read_options(options or {}, self.env_variable)
        rate, rate_problems = read_rate_limit(rate_limit, self.env_variable)
        if problems or rate_problems:
            raise ConfigurationError(" ".join(p.msg for p in problems + rate_problems))
        #: Every declared option, converted, defaults filled in.
        self.options: dict[str, Any] = values
        #: What ``crm_sms.ratelimit`` holds the provider to (None: no limit).
        self.rate_limit: float | None = rate if rate is not None else self.default_rate_limit

    # --- options -------------------------------------------------------------------------
    @classmethod
    def option_table(cls) -> dict[str, Option]:
        """Name -> Option of every option this class takes, base classes' included."""
        table: dict[str, Option] = {}
        for klass in reversed(cls.__mro__):
            for option in vars(klass).get("declared_options", ()):
                table[option.name] = option
        return table

    @classmethod
    def read_options(
        cls, given: Mapping[str, Any], env: str
    ) -> tuple[dict[str, Any], list[checks.CheckMessage]]:
        """(the converted options, the problems: unknown names and values that do not fit)."""
        return read_options(cls.option_table(), given, env=env, owner=cls.display_name)

    @classmethod
    def options_from_url(cls, url: SMSURL) -> dict[str, Any]:
        """The OPTIONS an ``SMS_URL`` gives: user and password by ``url_user_option`` and
        ``url_password_option``, ``base_url`` from the host, then the query parameters.
        Raises ConfigurationError for credentials the class has no option for."""
        options: dict[str, Any] = {}
        for part, value, option in (
            ("user", url.user, cls.url_user_option),
            ("password", url.password, cls.url_password_option),
        ):
            if option is not None and (value or (part == "password" and value is not None)):
                options[option] = value
            elif option is None and value:
                raise ConfigurationError(
                    f"{url.scheme}:// takes no {part} in the URL ({cls.display_name})"
                )
        if url.host:
            options["base_url"] = url.base_url
        options.update(url.query)
        return options

    # --- sending -------------------------------------------------------------------------
    @property
    def default_sender(self) -> str:
        return self.options.get("sender", "")

    def validate_sender(self, sender: str) -> None:
        """Raise ValidationError when the provider would refuse ``sender``."""

    def validate_text(self, text: str) -> None:
        """Raise ValidationError when the provider would refuse ``text``."""
        if not text or not text.strip():
            raise ValidationError(_("The message text is empty."), code="empty_text")

    def send(self, sms: OutgoingSMS) -> SendResult:
        raise NotImplementedError(f"{type(self).__name__} must implement send()")

    def send_many(self, batch: list[OutgoingSMS]) -> list[SendResult]:
        """Send several messages; results in the same order. Override where the provider
        takes many recipients per request."""
        return [self.send(sms) for sms in batch]

    def is_route_refusal(self, result: SendResult) -> bool:
        """Whether ``result`` refuses its message for a route reason: another provider may
        deliver it (``crm_sms.outbox.failover``). Only a definite answer counts: REJECTED or
        PROVIDER_ERROR with one of ``route_refusal_codes``, never an ambiguous failure."""
        return (
            result.status in (SendStatus.REJECTED, SendStatus.PROVIDER_ERROR)
            and not result.ambiguous
            and str(result.error_code) in self.route_refusal_codes
        )

    def lookup_sent(self, sms: OutgoingSMS) -> SendResult | None:
        """For ``RetrySafety.LOOKUP`` backends: ask the provider whether ``sms`` (our msg_id,
        its phone) arrived after an ambiguous failure. An ACCEPTED result (with the provider's
        id) if it did, None if it did not; raise ``ProviderError`` when the provider cannot
        say (the outbox then asks again later and never resends blindly)."""
        raise NotImplementedError(f"{type(self).__name__} cannot look up sent messages")

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

    # --- incoming messages ---------------------------------------------------------------
    def parse_inbound(self, request: HttpRequest) -> list[InboundMessage]:
        """Parse an incoming-message webhook (``supports_inbound`` backends); raise
        CallbackForbidden for a bad signature, CallbackError for a malformed request."""
        raise NotImplementedError(f"{type(self).__name__} takes no incoming messages")

    def inbound_response(self, messages: list[InboundMessage]) -> HttpResponse:
        """The answer to an incoming-message webhook (200; Twilio: empty TwiML)."""
        return HttpResponse("OK", content_type="text/plain")

    def callback_is_inbound(self, request: HttpRequest) -> bool:
        """Whether a request posted to the delivery-report URL is an incoming message: for a
        provider that posts both to the one URL of the account's settings (SMSC)."""
        return False

    #: Whether delivery reports arrive on the backend's own connection (SMPP's deliver_sm):
    #: the worker then calls ``apply_received_reports`` between batches and while idle.
    receives_reports: ClassVar[bool] = False

    def apply_received_reports(self) -> dict[str, int]:
        """Apply the reports that arrived on the connection (``receives_reports`` backends);
        the counts of ``crm_sms.reports.apply_delivery_reports``."""
        raise NotImplementedError(f"{type(self).__name__} receives no reports on its connection")

    #: Set to a method ``query_status(messages) -> list[DeliveryReport]`` for pollable providers.
    query_status = None

    # --- money ---------------------------------------------------------------------------
    def balance(self) -> Balance:
        """The money on the account. Raise ``ProviderError`` when the provider cannot say;
        NotImplementedError where it has no balance request (``supports_balance`` False)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read the account's balance")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A class that defines balance() supports it, unless it says otherwise.
        if "balance" in vars(cls) and "supports_balance" not in vars(cls):
            cls.supports_balance = True

    # --- housekeeping --------------------------------------------------------------------
    def check(self) -> list[checks.CheckMessage]:
        """Configuration problems, found without the network (run by Django's system checks)."""
        problems = []
        if self.default_sender:
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
        """The environment variable that configures this provider (for messages)."""
        from ..conf import env_variable

        return env_variable(self.alias)

    def close(self) -> None:
        """Release connections (called when settings change and at shutdown)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias!r}>"
