"""Issue 14 (points 2–5) in the admin: a contact's SMS history, the language switch, event
descriptions in the reader's language, Russian titles, the Send SMS form's errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse
from django.utils import timezone, translation

from crm_sms.backends.locmem import LocmemBackend
from crm_sms.event_text import EventText, describe
from crm_sms.events import EventRow, record_events
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    Contact,
    EventSource,
    Message,
    MessageEvent,
    MessageStatus,
)
from crm_sms.text import SMSTemplate

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_ru(db, admin_user) -> Client:
    client = Client(headers={"accept-language": "ru"})
    client.force_login(admin_user)
    return client


@pytest.fixture
def contact(sms_providers) -> Contact:
    return Contact.objects.create(first_name="Анна", last_name="Иванова", phone="+79001234567")


def make_messages(contact: Contact, n: int, campaign: Campaign | None = None) -> list[Message]:
    now = timezone.now()
    return [
        Message.objects.create(
            contact=contact,
            campaign=campaign,
            phone=contact.phone,
            text=f"Текст {i}",
            provider="default",
            msg_id=f"m{contact.pk}-{i}",
            status=MessageStatus.DELIVERED,
            created_at=now - timedelta(minutes=n - i),
        )
        for i in range(n)
    ]


# --- 14.2 the contact's SMS history ---------------------------------------------------------


def test_contact_page_shows_its_sms_newest_first_paginated_with_a_link_to_all(admin_en, contact):
    campaign = Campaign.objects.create(name="Весна", text="x", status=CampaignStatus.COMPLETED)
    make_messages(contact, 25, campaign)
    url = reverse("admin:crm_sms_contact_change", args=[contact.pk])
    page = admin_en.get(url).content.decode()
    assert "SMS history" in page
    assert page.index("Текст 24") < page.index("Текст 5")  # newest first
    assert "Текст 4" not in page  # 20 a page
    assert "Весна" in page and "delivered" in page.lower()
    assert f"?contact__id__exact={contact.pk}" in page and "all 25 messages" in page
    assert "page 1 of 2" in page
    second = admin_en.get(url + "?sms_page=2").content.decode()
    assert "Текст 4" in second and "Текст 24" not in second
    listed = admin_en.get(
        reverse("admin:crm_sms_message_changelist") + f"?contact__id__exact={contact.pk}"
    )
    assert listed.status_code == 200


def test_contact_page_shows_consent_events_too(admin_en, contact):
    make_messages(contact, 6)
    page = admin_en.get(reverse("admin:crm_sms_contact_change", args=[contact.pk]))
    text = page.content.decode()
    assert "consent and opt-out history" in text.lower()
    assert "all 6 messages" in text


# --- 14.3 language switch, language-neutral events, template errors ------------------------


def test_language_switch_in_the_header_switches_the_admin(admin_user, sms_providers):
    client = Client()
    client.force_login(admin_user)
    page = client.get(reverse("admin:index"), headers={"accept-language": "ru"})
    text = page.content.decode()
    assert 'action="/i18n/setlang/"' in text and 'name="language"' in text
    response = client.post("/i18n/setlang/", {"language": "en", "next": "/admin/"})
    assert response.status_code == 302
    english = client.get(reverse("admin:index"), headers={"accept-language": "ru"})
    assert "Log out" in english.content.decode()
    client.post("/i18n/setlang/", {"language": "ru", "next": "/admin/"})
    russian = client.get(reverse("admin:index"))
    assert "Выйти" in russian.content.decode()


def test_event_descriptions_are_stored_in_english_and_shown_in_the_readers_language(contact):
    message = make_messages(contact, 1)[0]
    with translation.override("ru"):  # the worker's language does not matter
        record_events(
            [
                EventRow(message, EventSource.SEND, "queued", "sending", "", *row)
                for row in (
                    (EventText("Attempt %(n)d", n=1),),
                    ("Accepted",),
                    (
                        EventText(
                            "%(what)s by %(user)s",
                            what=EventText("Resend requested (same msg_id)"),
                            user="anna",
                        ),
                    ),
                )
            ]
        )
    events = list(MessageEvent.objects.filter(message=message).order_by("id"))
    assert [e.description for e in events][:2] == ["Attempt 1", "Accepted"]
    assert events[0].params == {"msgid": "Attempt %(n)d", "args": {"n": 1}}
    with translation.override("en"):
        assert describe(events[0].description, events[0].params) == "Attempt 1"
    with translation.override("ru"):
        assert describe(events[0].description, events[0].params) == "Попытка 1"
        assert describe(events[1].description, events[1].params) != "Accepted"
        nested = describe(events[2].description, events[2].params)
        assert "anna" in nested and "Resend" not in nested
    assert describe("Provider said: bad number") == "Provider said: bad number"


def test_message_page_in_english_never_shows_russian_events(admin_en, contact):
    message = make_messages(contact, 1)[0]
    with translation.override("ru"):
        record_events(
            [
                EventRow(
                    message,
                    EventSource.SEND,
                    "queued",
                    "sending",
                    "",
                    EventText("Attempt %(n)d", n=1),
                )
            ]
        )
    page = admin_en.get(reverse("admin:crm_sms_message_change", args=[message.pk]))
    text = page.content.decode()
    assert "Attempt 1" in text and "Попытка" not in text
    ru = Client(headers={"accept-language": "ru"})
    ru.force_login(page.wsgi_request.user)
    ru_text = ru.get(reverse("admin:crm_sms_message_change", args=[message.pk])).content.decode()
    assert "Попытка 1" in ru_text


def test_django_template_errors_are_in_our_words_and_translated():
    with translation.override("ru"), pytest.raises(ValidationError) as caught:
        SMSTemplate("{% if a b %}x{% endif %}")
    text = " ".join(caught.value.messages)
    assert "Unused" not in text and "at end of if expression" not in text


# --- 14.4 wording ----------------------------------------------------------------------------


def test_campaign_titles_in_russian_and_a_finished_campaign_is_viewed(admin_ru, sms_providers):
    done = Campaign.objects.create(name="Весна", text="x", status=CampaignStatus.COMPLETED)
    draft = Campaign.objects.create(name="Лето", text="x", status=CampaignStatus.DRAFT)
    listing = admin_ru.get(reverse("admin:crm_sms_campaign_changelist")).content.decode()
    assert "Выберите рассылка" not in listing
    done_page = admin_ru.get(reverse("admin:crm_sms_campaign_change", args=[done.pk]))
    assert "Изменить рассылка" not in done_page.content.decode()
    draft_page = admin_ru.get(reverse("admin:crm_sms_campaign_change", args=[draft.pk]))
    assert "Изменить рассылка" not in draft_page.content.decode()
    assert done_page.context["title"] != draft_page.context["title"]


def test_delivered_message_has_no_next_attempt_and_event_times_have_seconds(admin_en, contact):
    message = make_messages(contact, 1)[0]
    record_events([EventRow(message, EventSource.SEND, "sent", "delivered", "", "Delivered")])
    page = admin_en.get(reverse("admin:crm_sms_message_change", args=[message.pk]))
    text = page.content.decode()
    assert "Next attempt" not in text and "next attempt" not in text
    event = MessageEvent.objects.get(message=message)
    local = timezone.localtime(event.created_at)
    assert local.strftime("%H:%M:%S") in text


# --- 14.5 the Send SMS form ------------------------------------------------------------------


def sms_step(client: Client, contacts, **fields):
    data = {"_sms_step": "1", "sender": "", "provider": "default", "name": "", **fields}
    payload = {
        "action": "send_sms_action",
        "index": "0",
        helpers.ACTION_CHECKBOX_NAME: [c.pk for c in contacts],
        **data,
    }
    return client.post(reverse("admin:crm_sms_contact_changelist"), payload)


def test_sender_and_template_errors_are_shown_together(admin_en, contact, monkeypatch):
    def refuse(self, sender):
        if sender == "BAD":
            raise ValidationError("The sender BAD is refused.", code="invalid_sender")

    monkeypatch.setattr(LocmemBackend, "validate_sender", refuse)
    page = sms_step(
        admin_en, [contact], text="{% if a b %}x{% endif %}", sender="BAD", _preview="1"
    )
    form = page.context["form"]
    assert form.errors["sender"] == ["The sender BAD is refused."]
    assert "text" in form.errors


def test_a_send_time_in_the_past_is_refused_and_the_zone_is_shown(admin_en, contact, settings):
    settings.TIME_ZONE = "Europe/Moscow"
    page = sms_step(
        admin_en, [contact], text="Привет", scheduled_at="2020-01-01T10:00", _preview="1"
    )
    form = page.context["form"]
    assert "scheduled_at" in form.errors
    assert "Europe/Moscow" in str(form.fields["scheduled_at"].help_text)


def test_the_preview_says_how_many_samples_of_all_are_shown(admin_en, sms_providers):
    contacts = [
        Contact.objects.create(first_name=f"Имя{i}", phone=f"+7900123456{i}") for i in range(8)
    ]
    page = sms_step(admin_en, contacts, text="Привет, {{ first_name }}", _preview="1")
    text = page.content.decode()
    assert "5 of 8 shown" in text
