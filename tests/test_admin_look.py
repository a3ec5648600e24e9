"""Issue 14, points 4 and 7, in the admin: counts in the right plural form in Russian (and
English), the opted-out mark only on opted-out contacts, times to the second where order
matters, and the contact search by part of a number (with its trigram index on PostgreSQL).

The Russian assertions read the translations of /work/notes/look-ru.po once they are in
crm_sms's compiled catalog."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.admin import helpers
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm_sms.admin.search import contact_search, phone_digits
from crm_sms.models import Campaign, CampaignStatus, Contact, Message, MessageStatus

pytestmark = pytest.mark.django_db

CONTACTS = reverse("admin:crm_sms_contact_changelist")
CAMPAIGNS = reverse("admin:crm_sms_campaign_changelist")
MESSAGES = reverse("admin:crm_sms_message_changelist")

# Russian's forms for 1, 2, 5, 0, 21 (and English's).
COUNTS = (1, 2, 5, 0, 21)
CONTACTS_RU = {
    1: "1 контакт",
    2: "2 контакта",
    5: "5 контактов",
    0: "0 контактов",
    21: "21 контакт",
}
MESSAGES_RU = {
    1: "1 сообщение",
    2: "2 сообщения",
    5: "5 сообщений",
    0: "0 сообщений",
    21: "21 сообщение",
}
CAMPAIGNS_RU = {
    1: "1 рассылка",
    2: "2 рассылки",
    5: "5 рассылок",
    0: "0 рассылок",
    21: "21 рассылка",
}


@pytest.fixture
def admin_ru(db, admin_user) -> Client:
    client = Client(headers={"accept-language": "ru"})
    client.force_login(admin_user)
    return client


def result_count(html: str) -> str:
    """The list's count under the table ("5 контактов")."""
    found = re.search(r'<span class="crm-sms-result-count">([^<]*)</span>', html)
    assert found, "no count under the list"
    return " ".join(found.group(1).split())


def make_messages(n: int, **fields) -> list[Message]:
    return [
        Message.objects.create(
            phone=f"+7900555{i:04d}",
            text="Привет",
            provider="default",
            msg_id=f"look-{i}",
            status=MessageStatus.DELIVERED,
            **fields,
        )
        for i in range(n)
    ]


def post_action(client: Client, url: str, action: str, objects, **data):
    payload = {
        "action": action,
        "index": "0",
        helpers.ACTION_CHECKBOX_NAME: [o.pk for o in objects],
        **data,
    }
    return client.post(url, payload, follow=True)


def messages_of(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- 14.4 plural forms ------------------------------------------------------------------------


@pytest.mark.parametrize("n", COUNTS)
def test_list_counts_in_russian_plural_forms(admin_ru, sms_providers, contact_factory, n):
    contact_factory(n)
    make_messages(n)
    for i in range(n):
        Campaign.objects.create(name=f"Рассылка {i}", text="x", status=CampaignStatus.DRAFT)
    assert result_count(admin_ru.get(CONTACTS).content.decode()) == CONTACTS_RU[n]
    assert result_count(admin_ru.get(MESSAGES).content.decode()) == MESSAGES_RU[n]
    assert result_count(admin_ru.get(CAMPAIGNS).content.decode()) == CAMPAIGNS_RU[n]


@pytest.mark.parametrize("n", (1, 2))
def test_list_counts_in_english(admin_en, sms_providers, contact_factory, n):
    contact_factory(n)
    expected = {1: "1 contact", 2: "2 contacts"}[n]
    assert result_count(admin_en.get(CONTACTS).content.decode()) == expected


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "1 рассылка приостановлена."),
        (2, "2 рассылки приостановлены."),
        (5, "5 рассылок приостановлено."),
        (21, "21 рассылка приостановлена."),
    ],
)
def test_campaign_action_messages_in_russian(admin_ru, sms_providers, n, expected):
    campaigns = [
        Campaign.objects.create(name=f"Р{i}", text="x", status=CampaignStatus.RUNNING)
        for i in range(n)
    ]
    done = post_action(admin_ru, CAMPAIGNS, "pause_action", campaigns)
    assert expected in messages_of(done)
    assert Campaign.objects.filter(status=CampaignStatus.PAUSED).count() == n


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, "1 контакт отписан от SMS."),
        (2, "2 контакта отписаны от SMS."),
        (5, "5 контактов отписано от SMS."),
        (21, "21 контакт отписан от SMS."),
    ],
)
def test_opt_out_messages_in_russian(admin_ru, sms_providers, contact_factory, n, expected):
    contacts = contact_factory(n)
    done = post_action(
        admin_ru, CONTACTS, "opt_out_action", contacts, _consent_step="1", reason="звонок"
    )
    assert messages_of(done) == [expected]
    assert Contact.objects.filter(opted_out=True).count() == n


def test_opt_out_message_says_how_many_were_so_already(admin_en, sms_providers, contact_factory):
    contacts = contact_factory(3)
    Contact.objects.filter(pk=contacts[0].pk).update(opted_out=True)
    done = post_action(
        admin_en, CONTACTS, "opt_out_action", contacts, _consent_step="1", reason="call"
    )
    assert messages_of(done) == ["2 contacts opted out. 1 contact was so already."]


def test_dashboard_summary_counts_messages_in_their_plural_form(admin_ru, admin_en, sms_providers):
    make_messages(1, created_at=timezone.now())
    url = reverse("admin:crm_sms_dashboard_changelist")
    assert "30 days: 1 message, " in admin_en.get(url).content.decode()
    html = " ".join(admin_ru.get(url).content.decode().split())
    assert "Последние 30 дней: 1 сообщение, доставлено" in html


# --- 14.4 the opted-out column ----------------------------------------------------------------


def test_opted_out_mark_only_on_opted_out_contacts(admin_en, sms_providers, contact_factory):
    contacts = contact_factory(4)
    Contact.objects.filter(pk__in=[contacts[1].pk, contacts[3].pk]).update(opted_out=True)
    html = admin_en.get(CONTACTS).content.decode()
    cells = re.findall(r'<td class="field-opted_out_mark">(.*?)</td>', html, re.S)
    assert len(cells) == 4
    marked = [c for c in cells if "crm-sms-opted-out" in c]
    assert len(marked) == 2 and all(">opted out</span>" in c for c in marked)
    assert all(c.strip() in ("", "&nbsp;") for c in cells if c not in marked)
    assert "icon-yes.svg" not in "".join(cells) and "icon-no.svg" not in "".join(cells)


def test_opted_out_filter_and_sort_still_work(admin_en, sms_providers, contact_factory):
    contacts = contact_factory(3)
    Contact.objects.filter(pk=contacts[2].pk).update(opted_out=True)
    only = admin_en.get(CONTACTS, {"opted_out__exact": "1"})
    assert [c.pk for c in only.context["cl"].result_list] == [contacts[2].pk]
    index = list(only.context["cl"].list_display).index("opted_out_mark")
    ordered = admin_en.get(CONTACTS, {"o": f"-{index}"})
    assert ordered.context["cl"].result_list[0].pk == contacts[2].pk


# --- 14.4 times to the second -----------------------------------------------------------------

SENT = datetime(2026, 3, 9, 10, 15, 42, tzinfo=UTC)  # 13:15:42 in Moscow


def sent_message(campaign: Campaign | None = None) -> Message:
    message = make_messages(1, campaign=campaign)[0]
    Message.objects.filter(pk=message.pk).update(
        sent_at=SENT, delivered_at=SENT + timedelta(seconds=3)
    )
    return message


def test_message_list_and_page_show_times_to_the_second(
    admin_en, admin_ru, sms_providers, settings
):
    settings.TIME_ZONE = "Europe/Moscow"
    message = sent_message()
    for client in (admin_en, admin_ru):
        listing = client.get(MESSAGES).content.decode()
        assert "13:15:42" in listing and "13:15:45" in listing
        page = client.get(reverse("admin:crm_sms_message_change", args=[message.pk]))
        html = page.content.decode()
        assert "13:15:42" in html and "13:15:45" in html
    assert "09.03.2026 13:15:42" in admin_ru.get(MESSAGES).content.decode()


def test_campaign_page_shows_its_times_to_the_second(admin_en, sms_providers, settings):
    settings.TIME_ZONE = "Europe/Moscow"
    campaign = Campaign.objects.create(name="Весна", text="x", status=CampaignStatus.COMPLETED)
    Campaign.objects.filter(pk=campaign.pk).update(
        started_at=SENT, finished_at=SENT + timedelta(minutes=1, seconds=5)
    )
    html = admin_en.get(reverse("admin:crm_sms_campaign_change", args=[campaign.pk]))
    text = html.content.decode()
    assert "13:15:42" in text and "13:16:47" in text


def test_message_list_is_sorted_by_its_time_columns(admin_en, sms_providers):
    early, late = make_messages(2)
    Message.objects.filter(pk=early.pk).update(sent_at=SENT)
    Message.objects.filter(pk=late.pk).update(sent_at=SENT + timedelta(seconds=1))
    cl = admin_en.get(MESSAGES).context["cl"]
    index = list(cl.list_display).index("sent_at_column")
    ordered = admin_en.get(MESSAGES, {"o": f"-{index}"}).context["cl"].result_list
    assert [m.pk for m in ordered] == [late.pk, early.pk]


# --- 14.7 search by part of a number ----------------------------------------------------------


def test_phone_digits_of_a_search_term():
    assert phone_digits("900555") == "900555"
    assert phone_digits("(900) 555-1") == "9005551"
    assert phone_digits("900") is None  # too short to be worth it
    assert phone_digits("CRM-000123") is None  # an external id
    assert phone_digits("Иванов") is None
    assert phone_digits("٩٠٠٥٥٥") is None  # other scripts' digits: not in a stored phone


@pytest.fixture
def numbered(sms_providers):
    rows = [
        ("Иванов", "+79005551234", "CRM-000123"),
        ("Петров", "+79161234900", "555"),
        ("Сидоров", "+79269005550", ""),
        ("Смирнов", "+74957005551", "900555"),
    ]
    return {
        name: Contact.objects.create(last_name=name, phone=phone, external_id=ext)
        for name, phone, ext in rows
    }


def search(client: Client, term: str) -> set[str]:
    page = client.get(CONTACTS, {"q": term})
    assert page.status_code == 200
    return {c.last_name for c in page.context["cl"].result_list}


def test_search_finds_contacts_by_part_of_a_number(admin_en, numbered):
    assert search(admin_en, "900555") == {"Иванов", "Сидоров", "Смирнов"}  # Смирнов: his id
    assert search(admin_en, "900-555") == {"Иванов", "Сидоров"}  # the id is "900555"
    assert search(admin_en, "1234") == {"Иванов", "Петров"}
    assert search(admin_en, "7005551") == {"Смирнов"}


def test_search_keeps_whole_phones_ids_names_and_emails(admin_en, numbered):
    assert search(admin_en, "8 (900) 555-12-34") == {"Иванов"}  # a whole phone: exactly
    assert search(admin_en, "+7 926 900-55-50") == {"Сидоров"}
    assert search(admin_en, "CRM-000123") == {"Иванов"}
    assert search(admin_en, "555") == {"Петров"}  # 3 digits: an id, not part of a number
    assert search(admin_en, "Петр") == {"Петров"}
    assert search(admin_en, "missing@example.com") == set()


def test_part_of_a_number_is_answered_by_the_trigram_index(requires_postgres, numbered):
    # Unordered: the point is that the index fits the condition Django writes (phone::text
    # LIKE '%900555%'); on a big table the planner picks it by itself.
    queryset = Contact.objects.filter(contact_search("900555")).order_by()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
    assert "crm_sms_contact_phone_trgm" in plan, plan


def test_the_trigram_index_is_on_postgresql_only():
    assert trigram_index_exists() == (connection.vendor == "postgresql")


def trigram_index_exists() -> bool:
    with connection.cursor() as cursor:
        return "crm_sms_contact_phone_trgm" in connection.introspection.get_constraints(
            cursor, "crm_sms_contact"
        )


@pytest.mark.django_db(transaction=True)
def test_the_trigram_migration_reverses_and_applies_again():
    from django.core.management import call_command

    try:
        call_command("migrate", "crm_sms", "0011", verbosity=0)
        assert not trigram_index_exists()
    finally:
        call_command("migrate", "crm_sms", verbosity=0)
    assert trigram_index_exists() == (connection.vendor == "postgresql")
