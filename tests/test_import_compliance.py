"""The import's consent and time-zone columns (issue 13): consent given, dated or withdrawn
with its history event; a zone from the file, else guessed from a fixed-line phone."""

from __future__ import annotations

import io
from datetime import datetime

import pytest
from django.utils import timezone

from crm_sms.importing import import_contacts
from crm_sms.models import Contact, ContactEvent

pytestmark = pytest.mark.django_db


def run(text: str, **kwargs):
    return import_contacts(io.BytesIO(text.encode("utf-8")), filename="c.csv", **kwargs)


def test_a_consent_column_gives_dates_and_withdraws_consent_with_events():
    Contact.objects.create(phone="+79001230003", consent_given_at=timezone.now())
    result = run(
        "Телефон;Имя;Согласие на рекламу\n"
        "+79001230001;Анна;да\n"
        "+79001230002;Борис;2025-03-01\n"
        "+79001230003;Вера;нет\n"
        "+79001230004;Глеб;\n"
    )
    assert (result.created, result.updated + result.unchanged, result.skipped) == (3, 1, 0)
    contacts = {c.phone[-1]: c for c in Contact.objects.all()}
    assert contacts["1"].has_consent and contacts["1"].consent_source == "import"
    given = timezone.localtime(contacts["2"].consent_given_at)  # midnight in the site's zone
    assert (given.date(), given.hour) == (datetime(2025, 3, 1).date(), 0)
    assert not contacts["3"].has_consent and contacts["3"].consent_withdrawn_at is not None
    assert not contacts["4"].has_consent and contacts["4"].consent_given_at is None
    kinds = sorted(ContactEvent.objects.values_list("contact__phone", "kind"))
    assert kinds == [
        ("+79001230001", "consent_given"),
        ("+79001230002", "consent_given"),
        ("+79001230003", "consent_withdrawn"),
    ]


def test_a_bad_consent_cell_is_a_row_error():
    result = run("Телефон;Согласие\n+79001230001;может быть\n")
    assert result.skipped == 1 and not Contact.objects.exists()
    assert result.errors[0].column == "consent"


def test_time_zone_from_the_file_else_from_a_fixed_line_phone():
    Contact.objects.create(phone="+79001230009", time_zone="Asia/Omsk")
    run(
        "Phone,Region\n"
        "+74152200000,\n"  # Kamchatka fixed line, no region: guessed
        "+79001230001,Новосибирск\n"
        "+79001230002,МСК+9\n"
        "+79001230009,Atlantis\n"  # unknown: the contact keeps its zone
    )
    zones = dict(Contact.objects.values_list("phone", "time_zone"))
    assert zones == {
        "+74152200000": "Asia/Kamchatka",
        "+79001230001": "Asia/Novosibirsk",
        "+79001230002": "Asia/Kamchatka",
        "+79001230009": "Asia/Omsk",
    }
