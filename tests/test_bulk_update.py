"""``bulk.update_rows``: per-row values written in one statement per 1000 rows on PostgreSQL
(``UPDATE ... FROM (VALUES ...)``), a prepared UPDATE per row elsewhere; the same rows either
way. Run on SQLite and on PostgreSQL (``DATABASE_URL=postgres://…``)."""

from __future__ import annotations

import pytest
from django.db import DataError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm_sms import bulk
from crm_sms.models import Contact, Message

pytestmark = pytest.mark.django_db


def _messages(n: int) -> list[Message]:
    return Message.objects.bulk_create(
        Message(phone=f"+7900000{i:04d}", text="x", provider="default", msg_id=f"m{i}")
        for i in range(n)
    )


def test_each_row_gets_its_own_values_of_every_type():
    first, second, third, untouched = _messages(4)
    now = timezone.now()
    bulk.update_rows(
        Message,
        {
            first.pk: {"error_code": "", "sent_at": now, "maybe_sent": True, "attempts": 2,
                       "last_response": {"text": "ж", "codes": [1, None]}},
            second.pk: {"error_code": "1281", "sent_at": None, "maybe_sent": False,
                        "attempts": 0, "last_response": None},
            third.pk: {"error_code": "O'Reilly", "sent_at": now, "maybe_sent": False,
                       "attempts": 1, "last_response": {}},
        },
    )  # fmt: skip
    rows = {m.pk: m for m in Message.objects.all()}
    assert (rows[first.pk].sent_at, rows[first.pk].maybe_sent, rows[first.pk].attempts) == (
        now,
        True,
        2,
    )
    assert rows[first.pk].last_response == {"text": "ж", "codes": [1, None]}
    assert (rows[second.pk].error_code, rows[second.pk].sent_at) == ("1281", None)
    assert rows[second.pk].last_response is None
    assert (rows[third.pk].error_code, rows[third.pk].last_response) == ("O'Reilly", {})
    assert rows[untouched.pk].error_code == "" and rows[untouched.pk].attempts == 0


def test_rows_naming_different_fields_are_written_apart():
    contacts = Contact.objects.bulk_create(
        Contact(phone=f"+7900100{i:04d}", first_name="A") for i in range(3)
    )
    bulk.update_rows(
        Contact,
        {
            contacts[0].pk: {"first_name": "Анна", "opted_out": True},
            contacts[1].pk: {"last_name": "Иванов"},
        },
    )
    rows = {c.pk: c for c in Contact.objects.all()}
    assert (rows[contacts[0].pk].first_name, rows[contacts[0].pk].opted_out) == ("Анна", True)
    assert (rows[contacts[1].pk].first_name, rows[contacts[1].pk].last_name) == ("A", "Иванов")
    assert rows[contacts[2].pk].last_name == ""


def test_a_value_too_long_for_its_column_is_refused_not_cut(requires_postgres):
    """As an UPDATE of the row alone is (SQLite does not check lengths)."""
    first, second = _messages(2)
    with pytest.raises(DataError), transaction.atomic():
        bulk.update_rows(Message, {first.pk: {"status": "x" * 21}, second.pk: {"status": "sent"}})


def test_postgresql_writes_a_chunk_of_rows_in_one_statement(requires_postgres, monkeypatch):
    monkeypatch.setattr(bulk, "UPDATE_CHUNK", 4)
    messages = _messages(10)
    updates = {m.pk: {"provider_message_id": f"p{m.pk}"} for m in messages}
    with CaptureQueriesContext(connection) as queries:
        bulk.update_rows(Message, updates)
    assert [q["sql"].count("), (") for q in queries] == [3, 3, 1]  # rows of 4, 4 and 2
    assert all(m.provider_message_id == f"p{m.pk}" for m in Message.objects.all())
