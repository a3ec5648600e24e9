"""The admin at a million rows (issue 15), checked on small data: the indexed search and group
filter find the right contacts, the paginator's deep pages are the rows OFFSET would give, the
estimated count is used only for whole tables on PostgreSQL, "Send SMS…" counts in SQL what the
streaming preview counts, every page makes at most 10 queries, and migration 0006 applies.

Run on SQLite and on PostgreSQL (``DATABASE_URL=postgres://…``); bench/admin_pages.py measures
the same pages on 1M contacts, 1M messages and 3M events."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm_sms.admin import paginator
from crm_sms.models import Campaign, Contact, ContactGroup, Message, MessageEvent
from crm_sms.outbox import preview_campaign
from crm_sms.outbox.counting import count_recipients
from crm_sms.outbox.recipients import iter_recipients, prepare_selection

pytestmark = pytest.mark.django_db

CONTACTS = "admin:crm_sms_contact_changelist"
PEOPLE = [
    # last, first, email, external id, phone, opted out
    ("Иванов", "Иван", "", "", "+79000000001", False),
    ("Иванова", "Анна", "", "", "+79000000002", False),
    ("Ивановский", "Пётр", "", "", "+79000000003", False),
    ("Петров", "Пётр", "", "", "+79000000004", False),
    ("Сидорова", "Мария", "", "", "+79000000005", True),
    ("Smith", "John", "John.Smith@Example.com", "CRM-0001", "+79000000006", False),
    ("Кузнецов", "Олег", "", "", "8 (900) 000-00-07", False),  # legacy notation
    ("Попов", "Юрий", "", "", "12-345", False),  # invalid
]


@pytest.fixture
def people(sms_providers):
    contacts = [
        Contact.objects.create(
            last_name=last, first_name=first, email=email, external_id=ext, phone=phone
        )
        for last, first, email, ext, phone, _ in PEOPLE
    ]
    Contact.objects.filter(last_name="Сидорова").update(opted_out=True)
    vip = ContactGroup.objects.create(name="VIP")
    vip.contacts.set([contacts[0], contacts[3]])
    ContactGroup.objects.create(name="Опт").contacts.set([contacts[0], contacts[4]])
    return contacts


@pytest.fixture
def log(people):
    """A campaign of three messages with two events each, and a message without one."""
    campaign = Campaign.objects.create(name="Акция", text="Скидка", status="running")
    messages = [
        Message.objects.create(
            campaign=campaign, contact=c, phone=c.phone, text="Скидка", provider="default"
        )
        for c in people[:3]
    ]
    Message.objects.create(phone="+79000000009", text="Один", provider="default")
    now = timezone.now()
    for i, message in enumerate(messages):
        for j, (old, new) in enumerate((("queued", "sending"), ("sending", "sent"))):
            MessageEvent.objects.create(
                message=message,
                source="send",
                old_status=old,
                new_status=new,
                created_at=now + timezone.timedelta(seconds=10 * i + j),
            )
    return campaign, messages


def changelist(client, name: str = CONTACTS, **params):
    response = client.get(reverse(name), params)
    assert response.status_code == 200, response.content[:500]
    return response.context["cl"]


def last_names(cl) -> list[str]:
    return [c.last_name for c in cl.result_list]


# --- search and filters -------------------------------------------------------------------------


def test_search_by_the_start_of_a_last_name(admin_en, people):
    cl = changelist(admin_en, q="Иванов")
    assert last_names(cl) == ["Иванов", "Иванова", "Ивановский"]
    assert changelist(admin_en, q="Щюк").result_count == 0


def test_search_by_last_first_and_middle_name(admin_en, people):
    assert last_names(changelist(admin_en, q="Иванов Пёт")) == ["Ивановский"]
    assert last_names(changelist(admin_en, q="Петров Пётр")) == ["Петров"]


def test_search_by_email_in_any_case_by_external_id_and_by_phone(admin_en, people):
    assert last_names(changelist(admin_en, q="john.smith@EXAMPLE.com")) == ["Smith"]
    assert last_names(changelist(admin_en, q="CRM-0001")) == ["Smith"]
    assert last_names(changelist(admin_en, q="8 900 000-00-04")) == ["Петров"]


def test_cyrillic_search_ignores_case_on_postgres(requires_postgres, admin_en, people):
    assert last_names(changelist(admin_en, q="иванов")) == ["Иванов", "Иванова", "Ивановский"]


def test_group_filter_is_an_exists_without_distinct(admin_en, people):
    vip = ContactGroup.objects.get(name="VIP")
    with CaptureQueriesContext(connection) as queries:
        cl = changelist(admin_en, groups__id__exact=vip.pk)
    assert last_names(cl) == ["Иванов", "Петров"]
    assert not any("DISTINCT" in q["sql"] for q in queries.captured_queries)
    assert last_names(changelist(admin_en, opted_out__exact=1)) == ["Сидорова"]


def test_group_filter_and_search_together(admin_en, people):
    vip = ContactGroup.objects.get(name="VIP")
    assert last_names(changelist(admin_en, q="Иван", groups__id__exact=vip.pk)) == ["Иванов"]


def test_message_and_event_search_by_exact_ids(admin_en, log):
    _, messages = log
    cl = changelist(admin_en, "admin:crm_sms_message_changelist", q=messages[1].msg_id)
    assert list(cl.result_list) == [messages[1]]
    Message.objects.filter(pk=messages[2].pk).update(provider_message_id="777001")
    cl = changelist(admin_en, "admin:crm_sms_message_changelist", q="777001")
    assert list(cl.result_list) == [messages[2]]
    cl = changelist(admin_en, "admin:crm_sms_messageevent_changelist", q=messages[0].msg_id)
    assert {e.message_id for e in cl.result_list} == {messages[0].pk}


def test_the_event_log_is_newest_first(admin_en, log):
    cl = changelist(admin_en, "admin:crm_sms_messageevent_changelist")
    times = [e.created_at for e in cl.result_list]
    assert times == sorted(times, reverse=True) and len(times) == 6


# --- queries per page -------------------------------------------------------------------------


def page_urls(people, log) -> list[tuple[str, str, dict]]:
    campaign, messages = log
    vip = ContactGroup.objects.get(name="VIP")
    contacts = reverse(CONTACTS)
    select_all = {
        "action": "send_sms_action",
        "select_across": "1",
        "index": "0",
        helpers.ACTION_CHECKBOX_NAME: [people[0].pk],
    }
    return [
        ("get", contacts, {}),
        ("get", contacts, {"q": "Иванов"}),
        ("get", contacts, {"q": "john.smith@example.com"}),
        ("get", contacts, {"opted_out__exact": "1"}),
        ("get", contacts, {"groups__id__exact": vip.pk}),
        ("get", contacts, {"p": "2"}),
        ("get", reverse("admin:crm_sms_contact_change", args=[people[0].pk]), {}),
        ("get", reverse("admin:crm_sms_contactgroup_changelist"), {}),
        ("post", contacts, select_all),
        ("get", reverse("admin:crm_sms_campaign_changelist"), {}),
        ("get", reverse("admin:crm_sms_campaign_change", args=[campaign.pk]), {}),
        ("get", reverse("admin:crm_sms_campaign_progress", args=[campaign.pk]), {}),
        ("get", reverse("admin:crm_sms_message_changelist"), {}),
        ("get", reverse("admin:crm_sms_message_changelist"), {"campaign__id__exact": campaign.pk}),
        ("get", reverse("admin:crm_sms_message_change", args=[messages[0].pk]), {}),
        ("get", reverse("admin:crm_sms_messageevent_changelist"), {}),
    ]


def test_every_page_makes_at_most_10_queries(
    admin_en, people, log, django_assert_max_num_queries, monkeypatch
):
    monkeypatch.setattr(admin.site._registry[Contact], "list_per_page", 3)
    for method, url, data in page_urls(people, log):
        with django_assert_max_num_queries(10):
            response = getattr(admin_en, method)(url, data)
        assert response.status_code == 200, (url, data)


# --- paging -----------------------------------------------------------------------------------


def expected_pages(queryset, per_page: int) -> list[list]:
    rows = list(queryset)
    return [rows[i : i + per_page] for i in range(0, len(rows), per_page)]


@pytest.mark.parametrize("params", [{}, {"opted_out__exact": "0"}, {"q": "Last"}])
def test_deep_pages_hold_the_rows_offset_would(admin_en, sms_providers, monkeypatch, params):
    from tests.fixtures_outbox import make_contacts

    make_contacts(47)
    monkeypatch.setattr(admin.site._registry[Contact], "list_per_page", 5)
    monkeypatch.setattr(paginator, "DEEP_OFFSET", 10)
    everyone = Contact.objects.order_by("last_name", "first_name", "id")
    for number, rows in enumerate(expected_pages(everyone, 5), start=1):
        cl = changelist(admin_en, p=number, **params)
        assert sorted(c.pk for c in cl.result_list) == sorted(c.pk for c in rows), number
        if not params.get("q"):  # search results are ordered by UPPER(last_name)
            assert list(cl.result_list) == rows, number


def test_estimated_count_is_none_off_postgres_and_for_filtered_lists(people):
    everyone = Contact.objects.all()
    estimate = paginator.estimated_count(everyone)
    assert (estimate is not None) == (connection.vendor == "postgresql")
    assert paginator.estimated_count(everyone.filter(opted_out=True)) is None
    assert paginator.estimated_count(everyone.distinct()) is None


def test_the_whole_list_is_estimated_only_on_postgres(admin_en, people, monkeypatch):
    monkeypatch.setattr(paginator, "ESTIMATE_ABOVE", 0)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE crm_sms_contact")
    cl = changelist(admin_en)
    assert cl.paginator.estimated == (connection.vendor == "postgresql")
    page = admin_en.get(reverse(CONTACTS)).content.decode()
    assert ("Count exactly" in page) == (connection.vendor == "postgresql")
    assert not changelist(admin_en, opted_out__exact="1").paginator.estimated
    assert not changelist(admin_en, q="Иванов").paginator.estimated
    exact = changelist(admin_en, _exact_count="1")
    assert not exact.paginator.estimated and exact.paginator.count == len(PEOPLE)


def test_an_estimated_list_ends_with_its_last_rows(admin_en, sms_providers, monkeypatch):
    from tests.fixtures_outbox import make_contacts

    make_contacts(23)
    monkeypatch.setattr(admin.site._registry[Contact], "list_per_page", 5)
    monkeypatch.setattr(paginator, "DEEP_OFFSET", 5)
    monkeypatch.setattr(paginator, "ESTIMATE_ABOVE", 0)
    monkeypatch.setattr(paginator, "estimated_count", lambda qs: 30)  # 7 too many
    cl = changelist(admin_en, p=6)
    assert cl.paginator.estimated and cl.paginator.num_pages == 6
    everyone = list(Contact.objects.order_by("last_name", "first_name", "id"))
    assert list(cl.result_list) == everyone[-5:]


# --- Send SMS… counts ---------------------------------------------------------------------------


def streamed(queryset, **kwargs):
    sel = prepare_selection(queryset, ".", sender=None, provider=None, variables=None, **kwargs)
    for _ in iter_recipients(sel, queryset):
        pass
    return sel.recipients, sel.excluded


def test_sql_counts_are_what_streaming_counts(people, log):
    for queryset in (
        Contact.objects.all(),
        Contact.objects.filter(groups__name="Опт"),
        Contact.objects.exclude(last_name="Иванов"),
    ):
        counts = count_recipients(queryset)
        assert (counts.recipients, counts.excluded) == streamed(queryset, phone_field="phone")
    everyone = count_recipients(Contact.objects.all())
    assert everyone.recipients == 6
    assert everyone.excluded == {"opted_out": 1, "invalid": 1, "duplicate": 0}


def test_sql_counts_on_another_model_with_repeated_and_opted_out_phones(people, log):
    opted = Contact.objects.get(last_name="Сидорова")
    for phone in ("+79000000001", "8 900 000-00-01", opted.phone, "8 (900) 000-00-05", "1"):
        Message.objects.create(phone=phone, text="x", provider="default")
    queryset = Message.objects.all()
    counts = count_recipients(queryset)
    assert (counts.recipients, counts.excluded) == streamed(queryset, phone_field="phone")
    assert counts.excluded == {"opted_out": 2, "invalid": 1, "duplicate": 2}


def test_counts_by_a_field_over_e164_phones(people):
    from crm_sms.outbox.counting import E164_SQL, e164_counts_by

    Contact.objects.filter(last_name__in=["Иванов", "Кузнецов", "Попов"]).update(notes="a")
    rows = Contact.objects.filter(opted_out=False)
    expected = {}
    for notes in rows.filter(phone__regex=E164_SQL).values_list("notes", flat=True):
        expected[notes] = expected.get(notes, 0) + 1
    assert e164_counts_by(rows, "notes") == expected == {"a": 1, "": 4}


def test_select_all_page_shows_sql_counts(admin_en, people):
    response = admin_en.post(
        reverse(CONTACTS),
        {
            "action": "send_sms_action",
            "select_across": "1",
            "index": "0",
            helpers.ACTION_CHECKBOX_NAME: [people[0].pk],
        },
    )
    counts = response.context["counts"]
    assert (counts.recipients, counts.excluded) == streamed(
        Contact.objects.all(), phone_field="phone"
    )


def test_a_static_preview_counts_in_sql_and_samples_the_first(people):
    preview = preview_campaign(Contact.objects.all(), "Скидка 15%", sample_size=2)
    assert preview.recipients == 6 and preview.excluded["invalid"] == 1
    assert [s["phone"] for s in preview.samples] == ["+79000000001", "+79000000002"]
    assert preview.total_segments == 6 * preview.samples[0]["info"].segments
    templated = preview_campaign(Contact.objects.all(), "{{ first_name }}, скидка", sample_size=2)
    assert (templated.recipients, templated.excluded) == (preview.recipients, preview.excluded)


def test_preview_samples_are_the_first_recipients_past_a_window(people, monkeypatch):
    from crm_sms.outbox import queueing

    monkeypatch.setattr(queueing, "SAMPLE_WINDOW", 5)  # the first 5 rows give 4 recipients
    preview = preview_campaign(Contact.objects.all(), "Скидка", sample_size=5)
    sel = prepare_selection(
        Contact.objects.all(),
        "Скидка",
        sender=None,
        provider=None,
        variables=None,
        phone_field="phone",
    )
    assert [s["phone"] for s in preview.samples] == [
        r.phone for r in list(iter_recipients(sel, Contact.objects.all()))[:5]
    ]


# --- migration 0006 ---------------------------------------------------------------------------

PORTABLE = {"crm_sms_contact_name", "crm_sms_contact_opted_out", "crm_sms_contact_groups_by_group"}
POSTGRES_ONLY = {
    "crm_sms_contact_last_upper",
    "crm_sms_contact_email_upper",
    "crm_sms_contact_odd_phone",
}
DROPPED = {"crm_sms_message_campaign_id_30375c49", "crm_sms_messageevent_message_id_82567008"}


def index_names() -> set[str]:
    names: set[str] = set()
    with connection.cursor() as cursor:
        for table in (
            "crm_sms_contact",
            "crm_sms_contact_groups",
            "crm_sms_message",
            "crm_sms_messageevent",
        ):
            names |= set(connection.introspection.get_constraints(cursor, table))
    return names


def test_the_scale_indexes_exist():
    names = index_names()
    assert PORTABLE <= names and not DROPPED & names
    if connection.vendor == "postgresql":
        assert POSTGRES_ONLY <= names
    else:
        assert not POSTGRES_ONLY & names


def test_the_prefix_search_uses_its_index_on_postgres(requires_postgres, people):
    queryset = Contact.objects.filter(last_name__istartswith="Иванов")
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")  # a tiny table: ask whether it can
        plan = queryset.explain()
        cursor.execute("RESET enable_seqscan")
    assert "crm_sms_contact_last_upper" in plan


@pytest.mark.django_db(transaction=True)
def test_the_migration_reverses_and_applies_again():
    from importlib import import_module

    migration = import_module("crm_sms.migrations.0006_scale_indexes").Migration
    previous = [name for app, name in migration.dependencies if app == "crm_sms"][0]
    try:
        call_command("migrate", "crm_sms", previous, verbosity=0)
        names = index_names()
        assert not (PORTABLE | POSTGRES_ONLY) & names and DROPPED <= names
    finally:
        call_command("migrate", "crm_sms", verbosity=0)
    test_the_scale_indexes_exist()
