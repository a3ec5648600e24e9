"""Issue 13 in the admin: the Send SMS page's kind, send window, transliteration, cost and
balance; consent, opt-out, time zone, export and erasure on contacts; the campaign's kind and
cost; the message's zone and window."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.contrib.admin import helpers
from django.test import Client
from django.urls import reverse

from crm_sms import costs
from crm_sms.backends.base import Balance
from crm_sms.models import Campaign, Contact, ContactEvent, Message

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:crm_sms_contact_changelist"
MSK = ZoneInfo("Europe/Moscow")
KAMCHATKA = "+74152123456"
MOSCOW = "+74951234567"
TEXT = "Скидка 20% на всё до воскресенья в магазинах сети «Ромашка», приходите!"


def msk(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=MSK).astimezone(UTC)


@pytest.fixture
def site(settings, sms_providers):
    """Priced providers (2.50 RUB a part), the unsubscribe phrase, Moscow time."""
    settings.TIME_ZONE = "Europe/Moscow"
    providers = {
        alias: {**conf, "OPTIONS": {**conf["OPTIONS"], "price": "2.50"}}
        for alias, conf in settings.CRM_SMS["PROVIDERS"].items()
    }
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PROVIDERS": providers,
        "UNSUBSCRIBE_TEXT": "Отказ: STOP",
    }
    costs.forget_balance("default")


@pytest.fixture
def people(site):
    """Moscow and Kamchatka fixed lines with consent, a mobile without."""
    now = datetime(2025, 1, 1, tzinfo=UTC)
    moscow = Contact.objects.create(first_name="Анна", phone=MOSCOW, consent_given_at=now)
    kamchatka = Contact.objects.create(first_name="Пётр", phone=KAMCHATKA, consent_given_at=now)
    nobody = Contact.objects.create(first_name="Олег", phone="+79001234212")
    return [moscow, kamchatka, nobody]


def post_action(client: Client, action: str, contacts, **data):
    pks = [c.pk for c in contacts]
    payload = {"action": action, "index": "0", helpers.ACTION_CHECKBOX_NAME: pks, **data}
    return client.post(reverse(CHANGELIST), payload)


def sms_step(client: Client, contacts, **fields):
    data = {"_sms_step": "1", "sender": "", "provider": "default", "name": "", **fields}
    return post_action(client, "send_sms_action", contacts, **data)


# --- the Send SMS page ---------------------------------------------------------------------


def test_the_form_has_kind_window_translit_and_smart_encoding(admin_en, people, settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "SEND_WINDOW": "09:00-21:00"}
    page = post_action(admin_en, "send_sms_action", people)
    html = page.content.decode()
    form = page.context["form"]
    assert form["kind"].value() == "service"
    assert 'type="radio" name="kind" value="advertising"' in html
    assert (form["window_start"].value(), form["window_end"].value()) == (time(9), time(21))
    assert form["translit"].value() is not True and form["smart_encoding"].value() is True
    config = json.loads(re.search(r'id="sms-translit"[^>]*>(.*?)</script>', html, re.S)[1])
    assert config["schema"] == "mosmetro"
    assert config["unsubscribe"] == {"phrase": "Отказ: STOP", "separator": "\n"}


def test_advertising_preview_with_translit_cost_balance_and_window(
    admin_en, people, clock, monkeypatch
):
    clock.set(msk(2, 12))  # 21:00 in Kamchatka: its window has closed
    monkeypatch.setattr(costs, "cached_balance", lambda alias=None: Balance(Decimal(3), "RUB"))
    page = sms_step(
        admin_en,
        people,
        text=TEXT,
        kind="advertising",
        window_start="09:00",
        window_end="21:00",
        translit="on",
        smart_encoding="on",
        _preview="1",
    )
    html = page.content.decode()
    preview = page.context["preview"]
    assert preview.recipients == 2 and preview.excluded["no_consent"] == 1
    assert "no consent to advertising — 1" in html
    sample = preview.samples[0]
    assert sample["changed"] and sample["text"].endswith("Otkaz: STOP")
    assert sample["original"] == TEXT + "\nОтказ: STOP"
    assert f"{sample['original_info'].segments} &rarr; {sample['info'].segments}" in html
    assert (preview.segments_before, preview.segments_after) == (4, 2)  # 2 recipients
    assert "SMS parts as written: 4; after the changes: 2." in html
    assert "Send window: 09:00-21:00 in each recipient&#x27;s local time." in html
    assert "1 recipient&#x27;s window is closed: they get it at" in html
    assert "Estimated cost: 5.00 RUB." in html and "As written it would cost 10.00 RUB." in html
    assert "Balance of the provider: 3.00 RUB." in html
    assert 'id="sms-balance-warning"' in html and "exceeds the balance" in html


def test_send_passes_the_options_and_a_changed_option_needs_a_new_preview(admin_en, people):
    fields = {"text": TEXT, "kind": "advertising", "translit": "on", "smart_encoding": "on"}
    page = sms_step(admin_en, people, window_start="10:00", window_end="20:00", **fields)
    key = page.context["preview_key"]
    sample = page.context["preview"].samples[0]
    stale = sms_step(admin_en, people, previewed=key, _send="1", **{**fields, "translit": ""})
    assert stale.status_code == 200 and not Campaign.objects.exists()
    assert "The text or settings changed" in stale.content.decode()
    sent = sms_step(
        admin_en,
        people,
        window_start="10:00",
        window_end="20:00",
        previewed=key,
        _send="1",
        **fields,
    )
    assert sent.status_code == 302
    campaign = Campaign.objects.get()
    assert (campaign.kind, campaign.translit, campaign.smart_encoding) == (
        "advertising",
        True,
        True,
    )
    assert (campaign.window_start, campaign.window_end) == (time(10), time(20))
    assert campaign.excluded["no_consent"] == 1
    texts = set(Message.objects.values_list("text", flat=True))
    assert texts == {sample["text"]}


def test_no_window_sends_at_any_hour_and_half_a_window_is_an_error(admin_en, people):
    page = sms_step(admin_en, people, text="Hi", window_start="09:00", _preview="1")
    assert page.context["preview"] is None
    assert "Give both times of the send window" in page.content.decode()
    page = sms_step(admin_en, people, text="Hi", _preview="1")
    assert page.context["preview"].window == ""
    assert "Send window: at any hour." in page.content.decode()


# --- contacts ------------------------------------------------------------------------------


def test_consent_column_and_filter(admin_en, people):
    withdrawn = Contact.objects.create(
        phone="+79001234213",
        consent_given_at=datetime(2025, 1, 1, tzinfo=UTC),
        consent_withdrawn_at=datetime(2025, 2, 1, tzinfo=UTC),
    )
    page = admin_en.get(reverse(CHANGELIST))
    assert "consent to advertising" in page.content.decode()
    assert "column-consent_column" in page.content.decode()
    for value, expected in (
        ("yes", {people[0].pk, people[1].pk}),
        ("no", {people[2].pk, withdrawn.pk}),
        ("withdrawn", {withdrawn.pk}),
    ):
        page = admin_en.get(reverse(CHANGELIST), {"consent": value})
        assert {c.pk for c in page.context["cl"].result_list} == expected, value


def test_give_and_withdraw_consent_with_source_reason_and_date(admin_en, admin_user, people):
    nobody = people[2]
    page = post_action(admin_en, "give_consent_action", [nobody])
    assert page.status_code == 200 and 'name="reason"' in page.content.decode()
    page = post_action(
        admin_en, "give_consent_action", [nobody], _consent_step="1", source="other", reason="x"
    )
    assert "Say how the contact told you." in page.content.decode()
    done = post_action(
        admin_en,
        "give_consent_action",
        [nobody],
        _consent_step="1",
        source="other",
        source_other="at the shop",
        reason="signed form No. 17",
        given_on="2025-05-14",
    )
    assert done.status_code == 302
    nobody.refresh_from_db()
    assert nobody.has_consent and nobody.consent_source == "at the shop"
    assert nobody.consent_given_at.astimezone(MSK).date().isoformat() == "2025-05-14"
    event = ContactEvent.objects.get(contact=nobody)
    assert (event.kind, event.reason, event.actor) == (
        "consent_given",
        "signed form No. 17",
        admin_user,
    )
    post_action(
        admin_en,
        "withdraw_consent_action",
        [nobody],
        _consent_step="1",
        source="phone call",
        reason="asked by phone",
    )
    nobody.refresh_from_db()
    assert not nobody.has_consent and nobody.consent_withdrawn_at is not None
    page = admin_en.get(reverse("admin:crm_sms_contact_change", args=[nobody.pk]))
    html = page.content.decode()
    assert "asked by phone" in html and "signed form No. 17" in html  # the history inline
    assert 'name="consent_given_at"' not in html  # read-only


def test_opt_out_and_in_and_opted_out_is_read_only(admin_en, people):
    contact = people[0]
    post_action(admin_en, "opt_out_action", [contact], _consent_step="1", reason="called")
    contact.refresh_from_db()
    assert contact.opted_out and not contact.has_consent
    assert set(ContactEvent.objects.values_list("kind", "source")) == {
        ("opted_out", "admin"),
        ("consent_withdrawn", "admin"),
    }
    post_action(admin_en, "opt_in_action", [contact], _consent_step="1", reason="asked again")
    contact.refresh_from_db()
    assert not contact.opted_out
    page = admin_en.get(reverse("admin:crm_sms_contact_change", args=[contact.pk]))
    assert 'name="opted_out"' not in page.content.decode()


def test_time_zone_is_read_in_any_notation(admin_en, people):
    contact = people[2]
    url = reverse("admin:crm_sms_contact_change", args=[contact.pk])
    data = {
        "last_name": "",
        "first_name": "Олег",
        "middle_name": "",
        "phone": contact.phone,
        "email": "",
        "notes": "",
        "external_id": "",
        "events-TOTAL_FORMS": "0",
        "events-INITIAL_FORMS": "0",
    }
    page = admin_en.post(url, {**data, "time_zone": "Марс"})
    assert page.status_code == 200 and "is not a time zone" in page.content.decode()
    assert admin_en.post(url, {**data, "time_zone": "МСК+4"}).status_code == 302
    contact.refresh_from_db()
    assert contact.time_zone == "Asia/Novosibirsk"


def test_export_personal_data_needs_the_export_permission(admin_en, client, viewer_user, people):
    response = post_action(admin_en, "export_personal_data", [people[0]])
    assert response["Content-Type"].startswith("application/json")
    assert "attachment" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["contact"]["phone"] == MOSCOW
    client.force_login(viewer_user)
    assert "export_personal_data" not in client.get(reverse(CHANGELIST)).content.decode()


def test_erase_personal_data_asks_then_erases(admin_en, admin_user, client, viewer_user, people):
    contact = people[2]
    page = post_action(admin_en, "erase_personal_data", [contact])
    assert "Reason (kept in the record of the erasure)" in page.content.decode()
    done = post_action(
        admin_en, "erase_personal_data", [contact], confirmed="yes", reason="заявление"
    )
    assert done.status_code == 302 and not Contact.objects.filter(pk=contact.pk).exists()
    event = ContactEvent.objects.get(kind="erased")
    assert (event.reason, event.actor) == ("заявление", admin_user)
    client.force_login(viewer_user)
    assert "erase_personal_data" not in client.get(reverse(CHANGELIST)).content.decode()


# --- campaigns and messages ----------------------------------------------------------------


def test_campaign_kind_window_and_costs(admin_en, people):
    from crm_sms import outbox

    campaign = outbox.send_campaign(
        Contact.objects.all(), "Hi", kind="advertising", window="09:00-21:00"
    )
    Message.objects.filter(campaign=campaign).update(status="sent", segments=2)
    page = admin_en.get(
        reverse("admin:crm_sms_campaign_changelist"), {"kind__exact": "advertising"}
    )
    assert list(page.context["cl"].result_list) == [campaign]
    listing = page.content.decode()
    assert "column-status_column" in listing and "advertising" in listing  # kind under status
    html = admin_en.get(
        reverse("admin:crm_sms_campaign_change", args=[campaign.pk])
    ).content.decode()
    assert "09:00-21:00 in each recipient" in html
    assert "Cost of what was sent" in html and "10.00 RUB" in html  # 2 messages x 2 parts x 2.50
    assert "default: 4" in html
    assert "no consent to advertising: 1" in html


def test_message_page_shows_zone_and_window(admin_en, people):
    from crm_sms import outbox

    outbox.send_campaign(Contact.objects.filter(phone=KAMCHATKA), "Hi", window="09:00-21:00")
    message = Message.objects.get()
    html = admin_en.get(reverse("admin:crm_sms_message_change", args=[message.pk])).content.decode()
    assert "Asia/Kamchatka" in html
    assert "Window closes at" in html and "Next attempt at" in html
