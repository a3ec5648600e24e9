"""``manage.py import_contacts``: the admin's import for big files, no flags for 1C/Excel."""

from __future__ import annotations

import json

import pytest
from django.core.management import CommandError, call_command

from crm_sms.models import Contact, ContactGroup
from tests.fixtures_admin import csv_bytes, xlsx_bytes

pytestmark = pytest.mark.django_db

ROWS = [
    ["Фамилия", "Имя", "Телефон", "Группы"],
    ["Иванов", "Иван", "8 (900) 123-42-12", "VIP"],
    ["Петров", "Пётр", "8 (900) 123-42-13", ""],
    ["Дубль", "", "+7 900 123-42-12", ""],
    ["Плохой", "", "8 (900) 12", ""],
]


def run(*args: str) -> tuple[str, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    call_command("import_contacts", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_1c_file_without_flags(tmp_path):
    path = tmp_path / "1c.csv"
    path.write_bytes(csv_bytes(ROWS, delimiter=";", encoding="cp1251"))
    out, err = run(str(path), "--group", "Осень")
    assert "CSV, cp1251, delimiter ';'" in out
    assert "line 4 [phone]: The phone +79001234212 repeats line 2" in out
    assert "line 5 [phone]" in out
    assert "2 contacts were created" in out and "2 bad rows skipped" in out
    assert "4 rows: 2 new" in err  # the progress line
    assert Contact.objects.count() == 2
    assert ContactGroup.objects.get(name="Осень").contacts.count() == 2
    assert Contact.objects.get(phone="+79001234212").groups.filter(name="VIP").exists()


def test_dry_run_and_json(tmp_path):
    path = tmp_path / "people.xlsx"
    path.write_bytes(xlsx_bytes([["Phone", "First name"], [79001234212, "A"], ["bad", "B"]]))
    out, _err = run(str(path), "--dry-run", "--json")
    result = json.loads(out)
    assert (result["format"], result["created"], result["skipped"], result["dry_run"]) == (
        "xlsx",
        1,
        1,
        True,
    )
    assert result["errors"][0]["line"] == 3
    assert not Contact.objects.exists()


def test_explicit_options_override_detection(tmp_path):
    path = tmp_path / "odd.txt"
    path.write_bytes("Телефон|Имя\n89001234212|Анна\n".encode("cp1251"))
    run(str(path), "--format", "csv", "--encoding", "cp1251", "--delimiter", "|")
    assert Contact.objects.get(phone="+79001234212").first_name == "Анна"


def test_unreadable_files_are_a_command_error(tmp_path):
    with pytest.raises(CommandError, match="no phone column"):
        path = tmp_path / "x.csv"
        path.write_bytes(b"Name\nx\n")
        run(str(path))
    with pytest.raises(CommandError, match="No such file"):
        run(str(tmp_path / "missing.csv"))
