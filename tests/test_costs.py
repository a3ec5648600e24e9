"""Prices per SMS part (?price=&currency=), the preview's estimate and what a campaign cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm_sms import outbox, send_campaign
from crm_sms.backends import get_backend
from crm_sms.backends.base import BaseBackend, to_currency, to_price
from crm_sms.backends.options import INVALID_OPTION
from crm_sms.conf import parse_sms_url, read_sms_url
from crm_sms.costs import (
    BILLED_STATUSES,
    Price,
    backend_price,
    billed_segments,
    campaign_cost,
    estimate_cost,
    format_money,
    provider_price,
)
from crm_sms.exceptions import ConfigurationError
from crm_sms.models import Contact, Message, MessageStatus
from tests.test_translit import ADVERT

LOCMEM = "crm_sms.backends.locmem.LocmemBackend"


def priced(settings, **providers):
    """Configure providers ``alias={OPTIONS}`` on the locmem backend; the first is default."""
    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {
        alias: {"BACKEND": LOCMEM, "OPTIONS": options} for alias, options in providers.items()
    }
    crm["DEFAULT_PROVIDER"] = next(iter(providers))
    settings.CRM_SMS = crm


# --- the options ----------------------------------------------------------------------------------
def test_price_and_currency_are_options_of_the_url():
    from crm_sms.backends.smsru import SmsRuBackend

    config = parse_sms_url("smsru://KEY@sms.ru/?price=1.95&currency=rub")
    backend = SmsRuBackend("x", config["OPTIONS"])
    assert backend.options["price"] == Decimal("1.95")
    assert backend_price(backend) == Price(Decimal("1.95"), "RUB")
    usd = BaseBackend("x", {"price": "0.0079", "currency": "USD"})
    assert backend_price(usd) == Price(Decimal("0.0079"), "USD")


def test_without_a_price_nothing_is_estimated():
    backend = BaseBackend("x", {})
    assert backend.options["price"] is None and backend.options["currency"] == "RUB"
    assert backend_price(backend) is None
    assert estimate_cost(10, None) is None
    assert estimate_cost(10, Price(Decimal("1.95"), "RUB")) == Decimal("19.50")


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("price=cheap", "is not a decimal number"),
        ("price=-1", "is not a price of 0 or more"),
        ("price=NaN", "is not a price of 0 or more"),
        ("currency=rubles", "is not a three-letter ISO 4217 currency code"),
    ],
)
def test_a_wrong_price_or_currency_is_a_configuration_error(query, reason):
    config, problems = read_sms_url(f"smsru://KEY@sms.ru/?{query}", env="SMS_URL")
    assert [p.id for p in problems] == [INVALID_OPTION]
    assert reason in problems[0].msg and "SMS_URL" in problems[0].msg
    with pytest.raises(ConfigurationError, match=reason):
        parse_sms_url(f"smsru://KEY@sms.ru/?{query}")


def test_converters():
    assert to_price("1,95") == Decimal("1.95") and to_price(2) == Decimal(2)
    assert to_currency(" usd ") == "USD"


def test_every_backend_takes_a_price():
    from crm_sms import conf
    from crm_sms.backends import load_backend_class

    for path in conf.BUILTIN_SCHEMES.values():
        table = load_backend_class(path).option_table()
        assert {"price", "currency"} <= set(table), path


# --- the estimate ---------------------------------------------------------------------------------
@pytest.fixture
def contacts(db):
    Contact.objects.bulk_create(
        [Contact(phone=f"+7900123420{i}", first_name=f"Имя{i}") for i in range(1, 5)]
    )
    return Contact.objects.all()


def test_the_preview_estimates_the_cost(settings, contacts):
    priced(settings, default={"price": "1.95"})
    preview = outbox.preview_campaign(contacts, ADVERT)
    assert (preview.recipients, preview.total_segments) == (4, 20)
    assert (preview.price, preview.currency) == (Decimal("1.95"), "RUB")
    assert preview.estimated_cost == Decimal("39.00")
    assert preview.estimated_cost_before == Decimal("39.00")


def test_the_estimate_counts_the_parts_after_transliteration(settings, contacts):
    priced(settings, default={"price": "1.95"})
    preview = outbox.preview_campaign(contacts, ADVERT, translit=True)
    assert (preview.segments_before, preview.segments_after) == (20, 8)
    assert preview.estimated_cost == Decimal("15.60")
    assert preview.estimated_cost_before == Decimal("39.00")


def test_no_price_no_estimate(settings, contacts):
    priced(settings, default={})
    preview = outbox.preview_campaign(contacts, "Hi")
    assert (preview.estimated_cost, preview.price, preview.currency) == (None, None, "")
    assert preview.estimated_cost_before is None


def test_the_price_of_another_provider(settings, contacts):
    priced(settings, default={"price": "1.95"}, twilio={"price": "0.0079", "currency": "usd"})
    preview = outbox.preview_campaign(contacts, "Hi", provider="twilio")
    assert (preview.estimated_cost, preview.currency) == (Decimal("0.0316"), "USD")
    assert provider_price("twilio") == Price(Decimal("0.0079"), "USD")
    assert provider_price("missing") is None


# --- what went out --------------------------------------------------------------------------------
def _set_statuses(campaign, statuses):
    for message, status in zip(campaign.messages.order_by("pk"), statuses, strict=True):
        Message.objects.filter(pk=message.pk).update(status=status)


def test_campaign_cost_counts_the_parts_that_went_out(settings, contacts):
    priced(settings, default={"price": "1.95"})
    Contact.objects.bulk_create(
        [Contact(phone=f"+7900123430{i}", first_name="X") for i in range(4)]
    )
    campaign = send_campaign(Contact.objects.all(), ADVERT)  # 8 messages of 5 parts
    assert campaign_cost(campaign) == (Decimal(0), "RUB")  # nothing went out yet
    S = MessageStatus
    _set_statuses(
        campaign,
        [
            S.SENT,
            S.DELIVERED,
            S.UNDELIVERED,
            S.FAILED,
            S.QUEUED,
            S.CANCELLED,
            S.SENDING,
            S.DELIVERED,
        ],
    )
    with CaptureQueriesContext(connection) as queries:
        cost = campaign_cost(campaign)
    assert cost == (Decimal("39.00"), "RUB")  # 4 billed x 5 parts x 1.95
    assert len(queries) == 1  # one aggregate, whatever the campaign's size
    assert billed_segments(campaign) == {"default": 20}
    assert set(BILLED_STATUSES) == {S.SENT, S.DELIVERED, S.UNDELIVERED}


def test_campaign_cost_uses_the_campaigns_snapshot_of_the_price(settings, contacts):
    priced(settings, default={"price": "1.95"})
    campaign = send_campaign(contacts, "Hi")
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.DELIVERED)
    assert campaign_cost(campaign) == (Decimal("7.80"), "RUB")
    # a campaign model with a part_price field keeps the price it was sent at
    campaign.part_price, campaign.currency = Decimal("2.50"), "RUB"
    assert campaign_cost(campaign) == (Decimal("10.00"), "RUB")


def test_campaign_cost_without_a_price(settings, contacts):
    priced(settings, default={})
    campaign = send_campaign(contacts, "Hi")
    assert campaign_cost(campaign) == (None, "")
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.SENT)
    assert campaign_cost(campaign) == (None, "")


def test_campaign_cost_in_two_currencies_is_not_added(settings, contacts):
    priced(settings, default={"price": "1.95"}, twilio={"price": "0.01", "currency": "USD"})
    campaign = send_campaign(contacts, "Hi")
    Message.objects.filter(campaign=campaign).update(status=MessageStatus.SENT)
    Message.objects.filter(pk=campaign.messages.first().pk).update(provider="twilio")
    assert campaign_cost(campaign) == (None, "")


def test_send_campaign_works_without_the_snapshot_fields(settings, contacts):
    """The Campaign model may not have translit/part_price/... yet: nothing breaks."""
    priced(settings, default={"price": "1.95"})
    campaign = send_campaign(contacts, ADVERT, translit=True)
    assert campaign.recipients_count == 4
    assert get_backend().options["price"] == Decimal("1.95")


def test_format_money():
    assert format_money(Decimal("1234.5"), "RUB") in ("1,234.50 RUB", "1234.50 RUB")
