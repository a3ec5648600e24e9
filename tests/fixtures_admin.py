"""Fixtures for the admin tests: users, an English admin client, a locmem provider, files.

- ``sms_providers``: CRM_SMS with one provider ("default", locmem, sender "CRM-Test") and a
  second one ("backup"), so the send page has a provider choice.
- ``admin_en``: the test client logged in as a superuser, asking for English pages.
- ``sender_user`` / ``viewer_user``: staff with and without ``crm_sms.send_sms``.
- ``contact_factory(n, **fields)``: n contacts with valid phones +7900000XXXX.
- ``csv_bytes(rows, delimiter=",", encoding="utf-8", bom=False)`` and ``xlsx_bytes(rows)``.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

PHONE_BASE = 79000000000  # +7 900 000-00-00: a valid Russian mobile range


def phone(i: int) -> str:
    return f"+{PHONE_BASE + i}"


@pytest.fixture
def sms_providers(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {
                "BACKEND": "crm_sms.backends.locmem.LocmemBackend",
                "OPTIONS": {"sender": "CRM-Test"},
            },
            "backup": {
                "BACKEND": "crm_sms.backends.locmem.LocmemBackend",
                "OPTIONS": {"sender": "Backup"},
            },
        },
        "DEFAULT_PROVIDER": "default",
    }
    return settings.CRM_SMS


@pytest.fixture
def admin_en(db, admin_user) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(admin_user)
    return client


def _staff(username: str, codenames: list[str]) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm_sms", codename__in=codenames)
    )
    return user


@pytest.fixture
def sender_user(db) -> User:
    return _staff(
        "sender",
        [
            "view_contact",
            "change_contact",
            "view_contactgroup",
            "view_campaign",
            "change_campaign",
            "view_message",
            "send_sms",
        ],
    )


@pytest.fixture
def viewer_user(db) -> User:
    return _staff("viewer", ["view_contact", "change_contact", "view_contactgroup"])


@pytest.fixture
def contact_factory(db):
    """``contact_factory(n, start=0, **fields)``: a list of n new contacts (make_contacts)."""
    from tests.fixtures_outbox import make_contacts

    def make(n: int, start: int = 0, **fields) -> list:
        return list(make_contacts(n, start=start, **fields))

    return make


def csv_bytes(
    rows: list[list[object]], delimiter: str = ",", encoding: str = "utf-8", bom: bool = False
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerows(rows)
    data = out.getvalue().encode(encoding)
    return (b"\xef\xbb\xbf" + data) if bom else data


def xlsx_bytes(rows: list[list[object]]) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
