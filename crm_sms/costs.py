"""What SMS cost: the price per part, a campaign's estimate and actual cost, provider balances.

- **Price.** Each provider's price of one SMS part is an option of its URL:
  ``SMS_URL=smsru://KEY@sms.ru/?price=1.95&currency=RUB`` (``currency`` defaults to RUB).
  Without ``price`` nothing is estimated (``None``), never a made-up figure.
- **Estimate.** ``preview_campaign`` multiplies the SMS parts of what will be sent (after
  transliteration and smart encoding) by the price: ``CampaignPreview.estimated_cost``.
- **Actual cost.** ``campaign_cost(campaign)`` sums, in SQL, the parts of the campaign's
  messages that went out (``BILLED_STATUSES``: sent, delivered, undelivered; not queued,
  sending, failed, cancelled, nor uncertain ones) times the price: the campaign's snapshot of it
  when its model keeps one, else the provider's current price.
- **Balance.** ``get_balance(alias)`` asks the provider (``BaseBackend.balance``);
  ``cached_balance`` keeps the answer (or the failure) ``BALANCE_CACHE_SECONDS`` in Django's
  cache so a page does not ask the provider on each view; ``balance_warning(preview)`` says when
  a campaign's estimate exceeds the balance. ``manage.py sms_balance`` prints every provider's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Sum
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from .backends import get_backend
from .backends.base import Balance, BaseBackend
from .exceptions import SMSError
from .models import Message, MessageStatus

logger = logging.getLogger("crm_sms.costs")

#: Statuses of messages the provider took (and so bills): counted by ``campaign_cost``.
BILLED_STATUSES = (MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED)
#: How long a balance (or a failure to read one) is kept before the provider is asked again.
BALANCE_CACHE_SECONDS = 60
_CACHE_KEY = "crm_sms:balance:{alias}"


@dataclass(frozen=True)
class Price:
    """The price of one SMS part with a provider."""

    amount: Decimal
    currency: str


def backend_price(backend: BaseBackend) -> Price | None:
    """The backend's ``?price=`` and ``?currency=``, or None when it has no price."""
    amount = backend.options.get("price")
    if amount is None:
        return None
    return Price(Decimal(amount), backend.options.get("currency") or "RUB")


def provider_price(alias: str | None = None) -> Price | None:
    """The price of provider ``alias`` (the default one when None); None when it has none or
    is not configured."""
    try:
        return backend_price(get_backend(alias))
    except (ImproperlyConfigured, SMSError):
        return None


def estimate_cost(segments: int, price: Price | None) -> Decimal | None:
    """``segments`` x the price, or None without a price."""
    return None if price is None else price.amount * segments


def billed_segments(campaign: Any) -> dict[str, int]:
    """Provider alias -> SMS parts of the campaign's messages in ``BILLED_STATUSES`` (one
    aggregate query)."""
    rows = (
        Message.objects.filter(campaign=campaign, status__in=BILLED_STATUSES)
        .values_list("provider")
        .annotate(parts=Sum("segments"))
        .order_by()
    )
    return {alias: parts or 0 for alias, parts in rows}


def _campaign_price(campaign: Any, alias: str) -> Price | None:
    """The campaign's own snapshot of its provider's price (a model field, when the model has
    one and it is set), else the provider's current price."""
    snapshot = getattr(campaign, "part_price", None)
    if alias == campaign.provider and isinstance(snapshot, Decimal):
        return Price(snapshot, getattr(campaign, "currency", "") or "RUB")
    return provider_price(alias)


def campaign_cost(campaign: Any, parts: dict[str, int] | None = None) -> tuple[Decimal | None, str]:
    """(what the campaign's messages that went out cost, the currency): their SMS parts times
    the price. (None, "") when a provider they went through has no price, or the prices are in
    different currencies; (0, currency) before anything went out. ``parts``: the campaign's
    ``billed_segments`` when the caller has them already."""
    parts = billed_segments(campaign) if parts is None else parts
    if not parts:
        price = _campaign_price(campaign, campaign.provider)
        return (Decimal(0), price.currency) if price else (None, "")
    total, currencies = Decimal(0), set()
    for alias, count in parts.items():
        price = _campaign_price(campaign, alias)
        if price is None:
            return None, ""
        total += price.amount * count
        currencies.add(price.currency)
    if len(currencies) > 1:
        logger.warning("Campaign %s went through providers priced in %s", campaign.pk, currencies)
        return None, ""
    return total, currencies.pop()


# --- balances ---------------------------------------------------------------------------------
def get_balance(alias: str | None = None) -> Balance:
    """Ask provider ``alias`` (the default one when None) for its balance, now.

    Raises NotImplementedError when the provider has no balance request, ``ProviderError``
    when it cannot say, ``ImproperlyConfigured``/``ConfigurationError`` for a provider that is
    not configured correctly."""
    backend = get_backend(alias)
    if not backend.supports_balance:
        raise NotImplementedError(f"{backend.display_name} has no balance request")
    return backend.balance()


def cached_balance(alias: str | None = None) -> Balance | None:
    """The balance of provider ``alias``, asked at most once per ``BALANCE_CACHE_SECONDS``;
    None when the provider has no balance request or could not say (that is kept as long,
    and logged)."""
    try:
        backend = get_backend(alias)
    except (ImproperlyConfigured, SMSError):
        return None
    if not backend.supports_balance:
        return None
    key = _CACHE_KEY.format(alias=backend.alias)
    kept = cache.get(key)
    if kept is None:
        try:
            balance = backend.balance()
            kept = (str(balance.amount), balance.currency)
        except (SMSError, NotImplementedError) as exc:
            logger.warning("The balance of %s could not be read: %s", backend.alias, exc)
            kept = ()
        cache.set(key, kept, BALANCE_CACHE_SECONDS)
    return Balance(Decimal(kept[0]), kept[1]) if kept else None


def forget_balance(alias: str | None = None) -> None:
    """Drop the kept balance of ``alias`` (after a top-up, or in tests)."""
    cache.delete(_CACHE_KEY.format(alias=get_backend(alias).alias))


def format_money(amount: Decimal, currency: str) -> str:
    """``1 234,50 RUB`` in the active language's number format."""
    return f"{number_format(amount, decimal_pos=2, use_l10n=True, force_grouping=True)} {currency}"


def balance_warning(preview: Any) -> str | None:
    """A warning when the campaign's ``estimated_cost`` exceeds its provider's (cached)
    balance; None when it does not, or either is unknown, or they are in different
    currencies (nothing can be compared)."""
    cost, currency = preview.estimated_cost, preview.currency
    if cost is None or not preview.recipients:
        return None
    balance = cached_balance(preview.provider)
    if balance is None or balance.currency.upper() != currency.upper() or cost <= balance.amount:
        return None
    return _(
        "The estimated cost of this campaign, %(cost)s, exceeds the balance of the provider "
        "“%(provider)s”, %(balance)s: messages will fail once the money runs out. Top up the "
        "account first."
    ) % {
        "cost": format_money(cost, currency),
        "provider": preview.provider,
        "balance": format_money(balance.amount, balance.currency),
    }
