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
    # The column as the file titles it, the phone as the file writes it, the line it repeats.
    assert "line 4 [Телефон] “+7 900 123-42-12”: Repeats the phone of line 2 (+79001234212)" in out
    assert "line 5 [Телефон]" in out
    assert "Телефон → Phone" in out
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


def test_a_second_import_updates_what_the_file_changes(tmp_path):
    """Known phones: the file's columns overwrite, absent columns stay, the opt-out time
    follows the flag, ``updated_at`` moves only for a changed contact, groups are added."""
    kept = Contact.objects.create(phone="+79001234214", first_name="Ольга", notes="keep")
    vip = ContactGroup.objects.create(name="VIP")
    kept.groups.add(vip)
    kept_updated_at = kept.updated_at
    path = tmp_path / "first.csv"
    path.write_bytes(
        csv_bytes(
            [
                ["Телефон", "Имя", "Отказ от рассылки", "Группы"],
                ["89001234212", "Иван", "да", "A"],
                ["89001234213", "Пётр", "нет", ""],
                ["89001234214", "Ольга", "нет", "B"],
            ]
        )
    )
    out, _err = run(str(path))
    assert "2 contacts were created, 1 updated, 0 unchanged" in out
    ivan, petr = Contact.objects.get(first_name="Иван"), Contact.objects.get(first_name="Пётр")
    assert ivan.opted_out and ivan.opted_out_at == ivan.created_at == ivan.updated_at
    assert not petr.opted_out and petr.opted_out_at is None
    kept.refresh_from_db()
    assert kept.notes == "keep" and kept.updated_at == kept_updated_at  # only a group added
    assert sorted(kept.groups.values_list("name", flat=True)) == ["B", "VIP"]

    path.write_bytes(
        csv_bytes(
            [
                ["Телефон", "Имя", "Отказ от рассылки"],
                ["89001234212", "Иван", "нет"],
                ["89001234213", "Пётр", "да"],
                ["89001234214", "Оля", "нет"],
            ]
        )
    )
    out, _err = run(str(path))
    assert "0 contacts were created, 3 updated, 0 unchanged" in out
    ivan.refresh_from_db(), petr.refresh_from_db(), kept.refresh_from_db()
    assert not ivan.opted_out and ivan.opted_out_at is None and ivan.updated_at > ivan.created_at
    assert petr.opted_out and petr.opted_out_at == petr.updated_at > petr.created_at
    assert (kept.first_name, kept.notes, kept.opted_out_at) == ("Оля", "keep", None)
    assert ivan.groups.get().name == "A"  # not removed by a file without groups

    out, _err = run(str(path))
    assert "0 contacts were created, 0 updated, 3 unchanged" in out
