"""Consent to advertising (issue 13.1): the consent fields and their history, written in bulk by
``crm_sms.consent``; advertising campaigns leave out contacts without consent and say so."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from crm_sms import consent, outbox
from crm_sms.models import (
    Campaign,
    CampaignKind,
    Contact,
    ContactEvent,
    ContactEventKind,
    Message,
    MessageStatus,
)
from tests.fixtures_outbox import make_contacts

ADS = CampaignKind.ADVERTISING


@pytest.fixture
def people(db):
    """Five contacts: Anna and Boris consented, Vera withdrew, Gleb never said, Dina opted out
    (and had consented)."""
    rows = {
        name: Contact.objects.create(first_name=name, phone=f"+7900123450{i}")
        for i, name in enumerate(("Anna", "Boris", "Vera", "Gleb", "Dina"))
    }
    consent.give_consent(
        Contact.objects.filter(first_name__in=["Anna", "Boris", "Vera", "Dina"]), source="paper"
    )
    consent.withdraw_consent(Contact.objects.filter(first_name="Vera"), source="phone call")
    Contact.objects.filter(first_name="Dina").update(opted_out=True)
    ContactEvent.objects.all().delete()
    for contact in rows.values():
        contact.refresh_from_db()
    return rows


@pytest.fixture
def manager(db):
    return get_user_model().objects.create_user("manager", password="x")


def events(kind=None):
    rows = ContactEvent.objects.order_by("contact_id", "id")
    if kind:
        rows = rows.filter(kind=kind)
    return list(rows)


# --- the functions ------------------------------------------------------------------------------


def test_give_consent_in_bulk_with_one_event_each(people, manager):
    changed = consent.give_consent(
        Contact.objects.all(), source="web form", reason="the shop's form", by=manager
    )
    assert changed == 2  # Vera (withdrawn) and Gleb; the others have consent
    gleb = Contact.objects.get(first_name="Gleb")
    assert gleb.has_consent and gleb.consent_source == "web form"
    assert Contact.objects.get(first_name="Anna").consent_source == "paper"  # unchanged
    given = events(ContactEventKind.CONSENT_GIVEN)
    assert len(given) == 2
    assert {(e.source, e.reason, e.actor_id) for e in given} == {
        ("web form", "the shop's form", manager.pk)
    }
    assert Contact.objects.get(first_name="Dina").opted_out  # consent does not opt in


def test_bulk_consent_is_one_update_per_thousand_contacts(db):
    make_contacts(1500)
    with CaptureQueriesContext(connection) as queries:
        assert consent.give_consent(Contact.objects.all(), source="import") == 1500
    sql = [q["sql"] for q in queries.captured_queries]
    assert len([q for q in sql if q.startswith('UPDATE "crm_sms_contact"')]) == 2
    assert len([q for q in sql if q.startswith('SELECT "crm_sms_contact"')]) == 1
    assert len(sql) < 40  # the events' INSERTs in batches, no query per contact
    assert ContactEvent.objects.filter(kind="consent_given").count() == 1500


def test_consent_given_on_a_date_and_never_in_the_future(people):
    signed = datetime(2025, 5, 14, 10, 0, tzinfo=UTC)
    gleb = people["Gleb"]
    assert consent.give_consent([gleb], source="paper", at=signed) == 1
    assert gleb.consent_given_at == signed  # the instance passed in is updated
    gleb.refresh_from_db()
    assert gleb.consent_given_at == signed
    assert events()[0].details == {"at": signed.isoformat()}
    with pytest.raises(ValidationError):
        consent.give_consent([people["Vera"]], source="paper", at=datetime(2999, 1, 1, tzinfo=UTC))


def test_withdrawing_cancels_queued_advertising_but_not_service_messages(people):
    anna = Contact.objects.filter(pk=people["Anna"].pk)
    ads = outbox.send_campaign(anna, "Sale!", kind=ADS, window=None)
    service = outbox.send_campaign(anna, "Your order is ready", window=None)
    assert consent.withdraw_consent(anna, source="sms reply", reason="НЕ ХОЧУ") == 1
    assert consent.withdraw_consent(anna, source="sms reply") == 0  # already withdrawn
    assert not Contact.objects.get(pk=people["Anna"].pk).has_consent
    assert ads.messages.get().status == MessageStatus.CANCELLED
    assert service.messages.get().status == MessageStatus.QUEUED
    ads.refresh_from_db()
    assert ads.status == "completed"  # nothing left to send
    event = ads.messages.get().events.last()
    assert event.description == "Consent to advertising withdrawn"
    assert [(e.kind, e.reason) for e in events()] == [("consent_withdrawn", "НЕ ХОЧУ")]


def test_opt_out_withdraws_consent_and_cancels_everything_queued(people):
    boris = people["Boris"]
    campaign = outbox.send_campaign(
        Contact.objects.filter(pk=boris.pk), "Hi", kind=ADS, window=None
    )
    single = outbox.send_sms(boris.phone, "Code 1234")
    assert consent.opt_out([boris], source="sms reply", reason="STOP") == 1
    assert boris.opted_out and boris.opted_out_at is not None
    assert boris.consent_withdrawn_at is not None  # the instance too
    boris.refresh_from_db()
    assert boris.opted_out and not boris.has_consent
    assert [(e.kind, e.details) for e in events()] == [
        ("opted_out", {}),
        ("consent_withdrawn", {"opted_out": True}),
    ]
    statuses = set(Message.objects.values_list("status", flat=True))
    assert statuses == {MessageStatus.CANCELLED}
    assert campaign.messages.get().pk != single.pk
    assert consent.opt_out([boris], source="sms reply") == 0
    assert consent.opt_in([boris.pk], source="admin", reason="asked by phone") == 1
    boris.refresh_from_db()
    assert not boris.opted_out and boris.opted_out_at is None and not boris.has_consent


def test_the_import_column_reads_yes_no_and_dates():
    assert consent.parse_consent("да") == (True, None)
    assert consent.parse_consent("Yes") == (True, None)
    assert consent.parse_consent(1) == (True, None)
    assert consent.parse_consent("нет") == (False, None)
    assert consent.parse_consent("0") == (False, None)
    assert consent.parse_consent("") == (None, None)
    assert consent.parse_consent(None) == (None, None)
    given, at = consent.parse_consent("14.05.2025")
    assert given and at.date().isoformat() == "2025-05-14" and at.tzinfo is not None
    assert consent.parse_consent("2025-05-14 10:30")[1].hour == 10
    assert consent.parse_consent(datetime(2025, 5, 14))[0] is True  # an Excel date cell
    for bad in ("maybe", "31.02.2025", "01.01.2999"):
        with pytest.raises(ValidationError):
            consent.parse_consent(bad)


# --- advertising campaigns ----------------------------------------------------------------------


def test_an_advertising_campaign_leaves_out_contacts_without_consent(people, locmem_provider):
    everyone = Contact.objects.all()
    expected = {"opted_out": 1, "no_consent": 2, "invalid": 0, "duplicate": 0}
    static = outbox.preview_campaign(everyone, "Скидка 15%", kind=ADS)
    templated = outbox.preview_campaign(everyone, "{{ first_name }}, скидка 15%", kind=ADS)
    for preview in (static, templated):
        assert (preview.recipients, preview.excluded, preview.kind) == (2, expected, ADS)
    campaign = outbox.send_campaign(everyone, "Скидка 15%", kind=ADS)
    assert (campaign.kind, campaign.recipients_count, campaign.excluded) == (ADS, 2, expected)
    assert set(campaign.messages.values_list("contact__first_name", flat=True)) == {
        "Anna",
        "Boris",
    }
    outbox.dispatch_due()
    assert {sms.to for sms in locmem_provider} == {people["Anna"].phone, people["Boris"].phone}


def test_a_service_campaign_needs_no_consent_and_counts_as_before(people, locmem_provider):
    preview = outbox.preview_campaign(Contact.objects.all(), "Your order is ready")
    assert preview.excluded == {"opted_out": 1, "invalid": 0, "duplicate": 0}
    campaign = outbox.send_campaign(Contact.objects.all(), "Your order is ready")
    assert (campaign.kind, campaign.recipients_count) == (CampaignKind.SERVICE, 4)
    assert outbox.send_sms(people["Gleb"].phone, "Code 1234").status == MessageStatus.QUEUED


def test_nobody_with_consent_says_so(people, locmem_provider):
    with pytest.raises(ValidationError) as error:
        outbox.send_campaign(Contact.objects.filter(first_name="Gleb"), "Sale", kind=ADS)
    assert "no consent to advertising: 1" in error.value.messages[0]
    assert not Campaign.objects.exists()
    with pytest.raises(ValidationError):
        outbox.preview_campaign(Contact.objects.all(), "Sale", kind="spam")


def test_rows_of_another_model_are_checked_by_their_contact(people, locmem_provider):
    for contact in people.values():  # another model's rows with the contacts' phones
        Message.objects.create(phone=contact.phone, text="x", provider="other", status="sent")
    Message.objects.create(phone="+79009999999", text="x", provider="other", status="sent")
    rows = Message.objects.all()
    preview = outbox.preview_campaign(rows, "Sale", kind=ADS)
    assert preview.recipients == 2
    assert preview.excluded == {"opted_out": 1, "no_consent": 3, "invalid": 0, "duplicate": 0}


def test_the_public_api_takes_the_kind(people, locmem_provider):
    import crm_sms

    campaign = crm_sms.send_campaign(Contact.objects.all(), "Sale", kind="advertising")
    assert campaign.recipients_count == 2 and campaign.excluded["no_consent"] == 2


def test_advertising_texts_get_the_unsubscribe_phrase_and_count_it(
    people, locmem_provider, settings
):
    settings.CRM_SMS = {**settings.CRM_SMS, "UNSUBSCRIBE_TEXT": "Отказ: STOP"}
    anna = Contact.objects.filter(pk=people["Anna"].pk)
    preview = outbox.preview_campaign(anna, "Скидка 20%", kind=ADS)
    assert preview.samples[0]["text"] == "Скидка 20%\nОтказ: STOP"
    campaign = outbox.send_campaign(anna, "Скидка 20%", kind=ADS, window=None)
    message = campaign.messages.get()
    assert message.text == "Скидка 20%\nОтказ: STOP"
    assert campaign.text == "Скидка 20%"  # the template as written
    service = outbox.send_campaign(anna, "Заказ готов", window=None).messages.get()
    assert service.text == "Заказ готов"
