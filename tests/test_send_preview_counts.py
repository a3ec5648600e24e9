"""The "Send SMS…" preview of a templated text counts in SQL (issue 15.1): recipients grouped
by the names their text is made of, each distinct text rendered once. Its recipients,
exclusions, SMS parts, longest text and waiting recipients must be what ``send_campaign``
queues, on a varied data set: Cyrillic, Latin, GSM-7 extension and astral characters, empty
names, opted-out contacts, consent given and withdrawn, phones in other notations (some the
same number as an E.164 row, before or after it), invalid phones, several time zones, texts a
name makes long or empty.

Run on SQLite and on PostgreSQL (``DATABASE_URL=postgres://…``)."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm_sms.models import Contact, Message
from crm_sms.outbox import counting, preview_campaign, send_campaign
from crm_sms.outbox.queueing import longest_text
from crm_sms.outbox.recipients import cached_sms_info

pytestmark = pytest.mark.django_db

NOW = timezone.now()
GIVEN = NOW - timedelta(days=30)

# first, last, middle, phone, opted out, consent (None: never; "given"; "withdrawn"), zone
PEOPLE = [
    ("Анна", "Иванова", "Петровна", "+79000000001", False, "given", "Europe/Moscow"),
    ("Иван", "Иванов", "", "+79000000002", False, "given", "Asia/Kamchatka"),
    ("John", "Smith", "", "+79000000003", False, None, ""),
    ("Zoë", "Brontë", "", "+79000000004", False, "given", "Asia/Yekaterinburg"),
    ("Jean-€", "Dupont^", "", "+79000000005", False, "given", "Europe/Moscow"),
    ("Élodie", "Martin", "", "+79000000006", True, "given", "Europe/Moscow"),
    ("", "Безымянный", "", "+79000000007", False, "withdrawn", "Asia/Kamchatka"),
    (
        "Александра-Виктория",
        "Константинопольская",
        "Владиславовна",
        "+79000000008",
        False,
        "given",
        "Asia/Vladivostok",
    ),
    ("🙂Ok", "Emoji", "", "+79000000009", False, "given", ""),
    ("Мария", "Сидорова", "Ивановна", "8 (900) 000-00-02", False, "given", "Europe/Moscow"),
    ("Пётр", "Петров", "", "12-345", False, "given", "Europe/Moscow"),
    ("Олег", "Кузнецов", "", "8 900 000 00 11", False, "given", "Asia/Kamchatka"),
    ("Oleg", "Kuznetsov", "", "+79000000011", False, "given", "Europe/Moscow"),
    ("Анна", "Смирнова", "", "+79000000012", False, "given", "Europe/Moscow"),
    ("Анна", "Смирнова", "", "+7 900 000-00-12", False, "given", "Asia/Kamchatka"),
    ("Kate", "Brown", "", "+79000000013", True, None, ""),
    ("Kate", "Green", "", "+79000000014", False, "given", "Europe/Kaliningrad"),
    ("Кейт", "Грин", "", "8-900-000-00-14", True, "given", "Europe/Moscow"),
    ("Ivan", "Ivanov", "Ivanovich", "+79000000015", False, "given", "Europe/Samara"),
]

TEMPLATES = [
    "Привет, {{ first_name }}!",
    "Hi {{ first_name }} {{ last_name }}, your number {{ phone }}",
    "{% if middle_name %}{{ first_name }} {{ middle_name }}{% else %}{{ first_name|upper }}"
    "{% endif %}, скидка 10%",
    "{{ middle_name }}",
    "x" * 150 + " {{ first_name }}",
    "{{ last_name }} «{{ first_name }}» – …",
    "Dear {{ last_name|default:'customer' }}, " + "y" * 1960,
    "{{ phone }}{% if first_name %} ok{% endif %}",
]

OPTIONS = [
    {},
    {"translit": True},
    {"smart_encoding": False},
    {"kind": "advertising"},
    {"window": (time(9, 0), time(21, 0))},
    {"kind": "advertising", "translit": True, "window": (time(10, 0), time(18, 0))},
]


@pytest.fixture
def people(sms_providers):
    contacts = []
    for first, last, middle, phone, opted, consent, zone in PEOPLE:
        contacts.append(
            Contact(
                first_name=first,
                last_name=last,
                middle_name=middle,
                phone=phone,
                opted_out=opted,
                consent_given_at=GIVEN if consent else None,
                consent_withdrawn_at=NOW if consent == "withdrawn" else None,
                time_zone=zone,
            )
        )
    Contact.objects.bulk_create(contacts)  # no save(): the zones and phones stay as given
    return Contact.objects.all()


def queued(contacts, text: str, scheduled_at: datetime, **options) -> dict | None:
    """What send_campaign queues (rolled back afterwards), or None when nobody gets it."""
    from django.core.exceptions import ValidationError

    with transaction.atomic():
        try:
            campaign = send_campaign(contacts, text, scheduled_at=scheduled_at, **options)
        except ValidationError as exc:
            assert exc.code == "no_recipients", exc
            return None
        messages = Message.objects.filter(campaign=campaign)
        texts = list(messages.values_list("text", flat=True))
        result = {
            "recipients": campaign.recipients_count,
            "excluded": campaign.excluded,
            "segments": messages.aggregate(n=Sum("segments"))["n"],
            "longest": max(
                (cached_sms_info(t) for t in texts),
                key=lambda i: (i.segments, i.units, i.characters),
            ),
            "waiting": messages.filter(next_attempt_at__gt=scheduled_at).count(),
        }
        transaction.set_rollback(True)
    return result


def summary(preview) -> dict:
    return {
        "recipients": preview.recipients,
        "excluded": preview.excluded,
        "segments": preview.total_segments,
        "longest": preview.longest,
        "waiting": preview.waiting,
    }


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_the_grouped_preview_counts_what_send_campaign_queues(people, options):
    scheduled_at = NOW.replace(hour=23, minute=30, second=0, microsecond=0) + timedelta(days=1)
    for text in TEMPLATES:
        preview = preview_campaign(people, text, scheduled_at=scheduled_at, **options)
        sent = queued(people, text, scheduled_at, **options)
        if sent is None:
            assert preview.recipients == 0, text
            continue
        assert summary(preview) == sent, text


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_grouped_and_streamed_previews_agree(people, options, monkeypatch):
    assert_grouped_and_streamed_agree(people, TEMPLATES, options, monkeypatch)


def assert_grouped_and_streamed_agree(contacts, texts, options, monkeypatch) -> None:
    scheduled_at = NOW.replace(hour=4, minute=0, second=0, microsecond=0) + timedelta(days=1)
    for text in texts:
        grouped = preview_campaign(contacts, text, scheduled_at=scheduled_at, **options)
        with monkeypatch.context() as m:
            m.setattr(counting, "group_recipients", lambda *a, **k: None)
            m.setattr("crm_sms.outbox.queueing.group_recipients", lambda *a, **k: None)
            streamed = preview_campaign(contacts, text, scheduled_at=scheduled_at, **options)
        for name in (
            "recipients",
            "excluded",
            "total_segments",
            "segments_before",
            "changed",
            "estimated_cost",
            "waiting",
            "first_opening",
            "last_opening",
            "longest",
            "longest_before",
            "samples",
        ):
            assert getattr(grouped, name) == getattr(streamed, name), (text, name)


#: Texts whose names' lengths decide them (a Cyrillic text), and two whose lengths do not.
BY_LENGTH = [
    "Привет, {{ first_name }}!",
    "{{ last_name }} {{ first_name }}, скидка 15%!",
    "🎁 {{ first_name }} {{ middle_name }}, " + "ж" * 120 + " {{ last_name }}",
    "Ваш номер {{ phone }}, {{ first_name }}",
    "{{ first_name }}" + "Я" * 990,  # a long name makes it too long for MegaFon
    "Hi {{ first_name }} {{ last_name }}",
    "{{ last_name }} «{{ first_name }}» – …",
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "plain")
def test_grouping_by_the_names_lengths_counts_what_streaming_counts(people, options, monkeypatch):
    monkeypatch.setattr(counting, "_length_grouping_pays", lambda *args: True)  # 1M contacts
    no_emoji = people.exclude(first_name__startswith="🙂")
    assert_grouped_and_streamed_agree(no_emoji, BY_LENGTH, options, monkeypatch)
    # A name beyond the BMP is no stand-in's: grouped by the names, still the same counts.
    assert_grouped_and_streamed_agree(people, BY_LENGTH, options, monkeypatch)


def test_grouping_by_length_is_taken_only_where_the_lengths_decide(people, monkeypatch):
    monkeypatch.setattr(counting, "_length_grouping_pays", lambda *args: True)
    no_emoji = people.exclude(first_name__startswith="🙂")

    def keys(contacts, text):
        groups = counting.group_recipients(_selection(contacts, text), contacts, zoned=False)
        return set(groups.groups)

    by_length = keys(no_emoji, "{{ last_name }} {{ first_name }}, скидка!")
    assert ("жжжжжжж", "жжжж") in by_length  # Иванова Анна, Сидорова Мария, Смирнова Анна…
    assert all(set(last + first) <= {"ж"} for last, first in by_length)
    assert ("Иванова", "Анна") in keys(people, "{{ last_name }} {{ first_name }}, скидка!")
    assert ("Smith", "John") in keys(no_emoji, "{{ last_name }} {{ first_name }}, hello!")


def test_names_are_grouped_in_sql_not_streamed(people):
    groups = counting.group_recipients(
        _selection(people, "Привет, {{ first_name }}!"), people, zoned=False
    )
    assert groups is not None and groups.names == ("first_name",)
    assert groups.groups[("Анна",)] == 2  # one Анна Смирнова is the other's duplicate
    assert groups.excluded == {"opted_out": 3, "invalid": 1, "duplicate": 3}
    phone = _selection(people, "{{ phone }}")
    assert counting.group_recipients(phone, people, zoned=False).groups == {("+10000000000",): 12}
    tagged = _selection(people, "{{ phone }}{% if first_name %}!{% endif %}")
    assert counting.group_recipients(tagged, people, zoned=False) is None


def _selection(contacts, text: str, variables: dict[str, str] | None = None):
    from crm_sms.outbox.recipients import prepare_selection

    return prepare_selection(
        contacts, text, sender=None, provider=None, phone_field="phone", variables=variables
    )


def test_a_templated_preview_of_many_contacts_takes_a_few_queries(sms_providers):
    from tests.fixtures_outbox import make_contacts

    make_contacts(300)
    with CaptureQueriesContext(connection) as queries:
        preview = preview_campaign(Contact.objects.all(), "Hi {{ first_name }}", sample_size=5)
    assert preview.recipients == 300 and len(preview.samples) == 5
    assert len(queries) <= 5, [q["sql"] for q in queries.captured_queries]


def test_longest_text_is_the_worst_recipient_text(people):
    after, before = longest_text(people, "{{ last_name }} {{ first_name }}", translit=True)
    assert before.characters == len("Константинопольская Александра-Виктория")
    assert (before.encoding, after.encoding) == ("UCS-2", "GSM-7")
    assert after.characters > before.characters  # "Konstantinopolskaya Aleksandra-Viktoriya"
    assert longest_text(people.filter(pk=-1), "{{ first_name }}") is None


def test_postgresql_groups_names_by_length_and_other_fields_when_many(
    requires_postgres, people, monkeypatch
):
    """The names go by their lengths on PostgreSQL whatever their number (their astral check is
    an index look); another field only when PostgreSQL expects more than
    LENGTH_GROUPING_FROM groups (one EXPLAIN), as its check reads every row."""
    no_emoji = people.exclude(first_name__startswith="🙂")
    names = counting.group_recipients(
        _selection(no_emoji, "{{ last_name }} {{ first_name }}, скидка!"), no_emoji, zoned=False
    )
    assert ("жжжжжжж", "жжжж") in names.groups  # 18 contacts, by length all the same
    for contact in no_emoji:
        Contact.objects.filter(pk=contact.pk).update(notes=contact.last_name)
    variables = {"note": "notes", "phone": "phone"}
    sel = _selection(no_emoji, "{{ note }}, скидка!", variables)
    few = counting.group_recipients(sel, no_emoji, zoned=False)
    assert ("Иванова",) in few.groups  # a few groups: by the values
    monkeypatch.setattr(counting, "LENGTH_GROUPING_FROM", 0)  # "more than 0 groups expected"
    with CaptureQueriesContext(connection) as queries:
        sel = _selection(no_emoji, "{{ note }}, скидка!", variables)
        many = counting.group_recipients(sel, no_emoji, zoned=False)
    assert ("жжжжжжж",) in many.groups
    assert many.recipients == few.recipients and many.excluded == few.excluded
    assert queries[0]["sql"].upper().startswith("EXPLAIN (FORMAT JSON)")


def test_postgresql_finds_astral_names_through_their_partial_index(
    requires_postgres, people, monkeypatch
):
    """Grouping by length checks for a name beyond the BMP in migration 0014's partial index
    (a handful of entries) instead of running the regular expression over every name."""
    text = "{{ last_name }} {{ first_name }}, скидка!"
    no_emoji = people.exclude(first_name__startswith="🙂")
    with CaptureQueriesContext(connection) as queries:
        groups = counting.group_recipients(_selection(no_emoji, text), no_emoji, zoned=False)
    assert ("жжжжжжж", "жжжж") in groups.groups
    looks = [q["sql"] for q in queries if "~" in q["sql"] and "LIMIT 1" in q["sql"]]
    assert len(looks) == 1, [q["sql"] for q in queries]
    assert not any("OCTET_LENGTH" in q["sql"] for q in queries)  # no regex in the GROUP BY
    assert not any(q["sql"].startswith("EXPLAIN") for q in queries)  # no estimate needed
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # 18 rows: else a scan is cheaper
        cursor.execute("EXPLAIN " + looks[0])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "crm_sms_contact_astral_name" in plan, plan
    # The emoji's contact is found the same way: grouped by the names, as streaming counts.
    with_emoji = counting.group_recipients(_selection(people, text), people, zoned=False)
    assert ("Emoji", "🙂Ok") in with_emoji.groups
