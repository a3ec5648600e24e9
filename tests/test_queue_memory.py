"""Queueing a big campaign holds no set of every phone (issue 15, point 3): the duplicate check
remembers only the phones more than one row may have (``recipients.contested_phones``), and
the opted-out phones of a Contact are looked up per chunk.

The recipients and exclusion counts must stay exactly those of remembering every phone: crafted
rows (repeats in other notations, either first, opted out, invalid, no consent to advertising)
are streamed both ways and compared, on Contact (unique phones) and on Message (any model, its
phones repeat). The memory check streams generated contacts under tracemalloc: the peak must not
grow with the number of rows. Run on SQLite and on PostgreSQL (``DATABASE_URL=postgres://…``);
bench/queue_campaign.py measures time and peak RSS at 100k, 300k and 1M contacts."""

from __future__ import annotations

import tracemalloc

import pytest
from django.utils import timezone

from crm_sms.bulk import RowInserter
from crm_sms.models import Contact, Message
from crm_sms.outbox import preview_campaign, send_campaign
from crm_sms.outbox import recipients as recipients_module
from crm_sms.outbox.recipients import iter_recipients, prepare_selection

pytestmark = pytest.mark.django_db

ROWS = [
    # first name, phone as stored, opted out, consented
    ("Аня", "+79000000001", False, True),
    ("Боря", "8 (900) 000-00-01", False, True),  # a repeat of Аня's, in another notation
    ("Вера", "8 900 000-00-02", False, True),  # first: the E.164 row after it is the repeat
    ("Гоша", "+79000000002", False, True),
    ("Даша", "+7 900 000 00 03", False, True),  # two odd notations of one number
    ("Егор", "8(900)0000003", False, True),
    ("Женя", "+79000000004", True, True),  # opted out
    ("Зоя", "8 900 000-00-04", False, True),  # the opted-out number again: a recipient here
    ("Иван", "12-345", False, True),  # invalid
    ("Катя", "+79000000006", False, False),  # no consent
    ("Лёня", "8 900 000 00 06", False, True),  # Катя's number, with consent
    ("Маша", "+79000000007", False, False),  # no consent
    ("Нина", "+79000000008", False, True),
]


@pytest.fixture
def crafted(sms_providers):
    contacts = []
    for i, (first, _phone, _opted, _consented) in enumerate(ROWS):
        contacts.append(Contact.objects.create(first_name=first, phone=f"+7911000{i:04d}"))
    for contact, (_first, phone, opted, consented) in zip(contacts, ROWS, strict=True):
        # Stored as given (an old import's notation), bypassing save()'s normalization.
        given = timezone.now() if consented else None
        Contact.objects.filter(pk=contact.pk).update(
            phone=phone, opted_out=opted, consent_given_at=given
        )
    return contacts


def stream(queryset, *, kind="service", every_phone=False, monkeypatch=None):
    """(recipients as (contact id, phone, text), excluded) of streaming ``queryset``; with
    ``every_phone`` as before: every phone remembered."""
    if every_phone:
        monkeypatch.setattr(recipients_module, "contested_phones", lambda sel, rows: None)
    sel = prepare_selection(
        queryset,
        "Привет, {{ first_name }}",
        sender=None,
        provider=None,
        phone_field="phone",
        variables=None if queryset.model is Contact else {"first_name": "text"},
        kind=kind,
    )
    got = [(r.contact_id, r.phone, r.text) for r in iter_recipients(sel, queryset)]
    monkeypatch.undo()
    return got, dict(sel.excluded)


@pytest.mark.parametrize("kind", ["service", "advertising"])
def test_contacts_counted_as_when_every_phone_is_remembered(crafted, kind, monkeypatch):
    rows = Contact.objects.all()
    got = stream(rows, kind=kind, monkeypatch=monkeypatch)
    assert got == stream(rows, kind=kind, every_phone=True, monkeypatch=monkeypatch)
    recipients, excluded = got
    names = [Contact.objects.get(pk=pk).first_name for pk, _phone, _text in recipients]
    if kind == "service":
        assert names == ["Аня", "Вера", "Даша", "Зоя", "Катя", "Маша", "Нина"]
        assert excluded == {"opted_out": 1, "invalid": 1, "duplicate": 4}
    else:
        assert names == ["Аня", "Вера", "Даша", "Зоя", "Лёня", "Нина"]
        assert excluded == {"opted_out": 1, "no_consent": 2, "invalid": 1, "duplicate": 3}
    assert len({phone for _pk, phone, _text in recipients}) == len(recipients)


@pytest.mark.parametrize("kind", ["service", "advertising"])
def test_another_model_counted_as_when_every_phone_is_remembered(crafted, kind, monkeypatch):
    """Message: a phone column that repeats, consent and opting out by the Contact's phone."""
    for first, phone, _opted, _consented in ROWS + ROWS[:4]:
        Message.objects.create(phone=phone, text=first, provider="default")
    rows = Message.objects.all()
    got = stream(rows, kind=kind, monkeypatch=monkeypatch)
    assert got == stream(rows, kind=kind, every_phone=True, monkeypatch=monkeypatch)
    recipients, excluded = got
    assert len({phone for _pk, phone, _text in recipients}) == len(recipients)
    assert sum(excluded.values()) + len(recipients) == len(ROWS) + 4
    assert excluded["duplicate"] >= 4


@pytest.mark.parametrize("kind", ["service", "advertising"])
def test_campaign_and_preview_agree(crafted, kind):
    rows = Contact.objects.all()
    preview = preview_campaign(rows, "Привет, {{ first_name }}", kind=kind, window=None)
    campaign = send_campaign(rows, "Привет, {{ first_name }}", kind=kind, window=None)
    assert campaign.excluded == preview.excluded
    assert campaign.recipients_count == preview.recipients == campaign.messages.count()
    phones = list(campaign.messages.values_list("phone", flat=True))
    assert len(set(phones)) == len(phones)


def test_only_odd_and_repeated_phones_are_contested(crafted):
    sel = prepare_selection(
        Contact.objects.all(), "x", sender=None, provider=None, phone_field="phone", variables=None
    )
    contested = recipients_module.contested_phones(sel, Contact.objects.all())
    # The odd notations' numbers; no E.164 phone that only one row has.
    assert contested == {f"+7900000000{i}" for i in (1, 2, 3, 4, 6)}
    assert recipients_module.contested_phones(sel, Contact.objects.all()[:5]) is None


# --- memory ---------------------------------------------------------------------------------


def make_contacts(start: int, count: int) -> None:
    """``count`` contacts with E.164 phones; every 500th repeats the one before in another
    notation (so duplicates are found all along); 50 first names."""
    now = timezone.now()
    constants = {"last_name": "", "middle_name": "", "email": "", "opted_out": False}
    constants |= {"notes": "", "external_id": "", "created_at": now, "updated_at": now}
    rows = []
    for i in range(start, start + count):
        phone = f"+7912{i:07d}"
        if i % 500 == 1:
            phone = f"8 912 {i - 1:07d}"
        rows.append((phone, f"Имя{i % 50}"))
    RowInserter(Contact, constants, ["phone", "first_name"]).insert(rows)


def peak_bytes(every_phone: bool, monkeypatch) -> int:
    """tracemalloc's peak while queueing-style streaming all contacts (nothing kept)."""
    if every_phone:
        monkeypatch.setattr(recipients_module, "contested_phones", lambda sel, rows: None)
    rows = Contact.objects.all()
    sel = prepare_selection(
        rows,
        "Привет, {{ first_name }}",
        sender=None,
        provider=None,
        phone_field="phone",
        variables=None,
    )
    stream = iter_recipients(sel, rows)
    next(stream)  # the caches, the connection, the first chunk: outside the measure
    tracemalloc.start()
    try:
        for _recipient in stream:
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        monkeypatch.undo()


def test_streaming_memory_does_not_grow_with_the_rows(sms_providers, monkeypatch):
    small, large = 8_000, 24_000  # several chunks each: the peak holds two of them
    make_contacts(0, small)
    small_peak = peak_bytes(False, monkeypatch)
    make_contacts(small, large - small)
    large_peak = peak_bytes(False, monkeypatch)
    remembered = peak_bytes(True, monkeypatch)
    # Remembering every phone grows ~80 bytes a row; the streaming's peak is the chunk's.
    assert remembered - small_peak > 40 * (large - small)
    assert large_peak - small_peak < 8 * (large - small), (small_peak, large_peak)
