"""Hostile import files (issue 10, point 4): an XLSX whose ``<dimension>`` claims every cell of
the sheet, a zip bomb, forged row numbers, and files over the size and row limits. Each is
built here, and the work is counted (cells openpyxl hands over, bytes unpacked), not timed:
before the fix the same calls ran for minutes."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse

from crm_sms.importing import import_contacts
from crm_sms.models import Contact
from tests.fixtures_admin import csv_bytes, xlsx_bytes

pytestmark = pytest.mark.django_db

SHEET = "xl/worksheets/sheet1.xml"
ROWS = [
    ["Фамилия", "Телефон", "Группы"],
    ["Иванов", "8 (900) 123-42-12", "VIP"],
    ["Петрова", "+7 900 123 42 13", ""],
    ["Сидоров", "89001234214", "Опт"],
]


class WorkBudgetExceeded(Exception):
    pass


@pytest.fixture
def cells_read(monkeypatch):
    """Counts the cells openpyxl's read-only sheet hands over (padding included); more than
    ``budget`` raises, so a regression fails at once instead of running for minutes."""
    from openpyxl.worksheet._read_only import ReadOnlyWorksheet

    counter = {"cells": 0, "rows": 0, "budget": 200_000}
    original = ReadOnlyWorksheet._cells_by_row

    def counting(self, *args, **kwargs):
        for row in original(self, *args, **kwargs):
            counter["rows"] += 1
            counter["cells"] += len(row)
            if counter["cells"] > counter["budget"]:
                raise WorkBudgetExceeded(f"{counter['cells']} cells read")
            yield row

    monkeypatch.setattr(ReadOnlyWorksheet, "_cells_by_row", counting)
    return counter


@pytest.fixture
def bytes_unpacked(monkeypatch):
    """Counts the bytes unpacked from any ZIP archive; more than ``budget`` raises."""
    counter = {"bytes": 0, "budget": 20 * 1024 * 1024}

    def counting(method):
        def read(self, *args, **kwargs):
            data = method(self, *args, **kwargs)
            counter["bytes"] += len(data)
            if counter["bytes"] > counter["budget"]:
                raise WorkBudgetExceeded(f"{counter['bytes']} bytes unpacked")
            return data

        return read

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting(zipfile.ZipExtFile.read))
    monkeypatch.setattr(zipfile.ZipExtFile, "read1", counting(zipfile.ZipExtFile.read1))
    return counter


def rewrite_sheet(data: bytes, edit) -> bytes:
    """The workbook ``data`` with its first sheet's XML passed through ``edit``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename == SHEET:
                content = edit(content.decode()).encode()
            target.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def dimension_bomb(rows=ROWS) -> bytes:
    """A few KB: a small sheet that claims to span A1:XFD1048576, with an empty formatted cell
    in the sheet's last row (as Excel writes for a row that was formatted)."""

    def claim_everything(xml: str) -> str:
        xml, count = re.subn(
            r'<dimension ref="[^"]*"\s*/>', '<dimension ref="A1:XFD1048576"/>', xml
        )
        assert count == 1
        last = '<row r="1048576"><c r="A1048576" s="0"/></row>'
        return xml.replace("</sheetData>", last + "</sheetData>")

    return rewrite_sheet(xlsx_bytes(rows), claim_everything)


def zip_bomb(unpacked_mb: int = 150) -> bytes:
    """A valid workbook whose sheet unpacks to ``unpacked_mb`` MB of identical rows (its
    ``<dimension>`` removed, as some writers do, so that every row is read)."""
    small = xlsx_bytes(ROWS[:2])
    row = '<row><c t="inlineStr"><is><t>Иванов</t></is></c><c><v>79001234212</v></c></row>'
    chunk = (row * 10_000).encode()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(small)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != SHEET:
                target.writestr(info, source.read(info), compress_type=zipfile.ZIP_DEFLATED)
                continue
            xml = re.sub(r"<dimension [^>]*/>", "", source.read(info).decode())
            head, tail = xml.split("</sheetData>")
            part = zipfile.ZipInfo(SHEET, date_time=info.date_time)
            part.compress_type = zipfile.ZIP_DEFLATED
            with target.open(part, "w", force_zip64=True) as sheet:
                sheet.write(head.encode())
                for _ in range(unpacked_mb * 1024 * 1024 // len(chunk)):
                    sheet.write(chunk)
                sheet.write(("</sheetData>" + tail).encode())
    return out.getvalue()


# --- the dimension bomb -------------------------------------------------------------------


def test_a_sheet_claiming_a1_xfd1048576_is_read_as_the_rows_it_has(cells_read):
    data = dimension_bomb()
    assert len(data) < 10_000
    cells_read["budget"] = 4_000_000
    result = import_contacts(data, filename="bomb.xlsx")
    assert (result.rows, result.created, result.skipped) == (3, 3, 0)
    assert Contact.objects.get(phone="+79001234214").groups.get().name == "Опт"
    # Every row is read as wide as the columns used (3), not as the claimed 16,384: before, the
    # million rows up to the last one (empty, filled in by openpyxl) were 16,384 cells each,
    # 17 billion cells, minutes of work.
    assert cells_read["rows"] <= 1_048_576
    assert cells_read["cells"] <= 3 * 1_048_576


def test_a_stray_cell_in_the_last_column_does_not_widen_the_rows(cells_read):
    cells_read["budget"] = 4_000_000

    def stray_cells(xml: str) -> str:
        # Every row gets a last cell in column XFD (16,384), the header row too.
        return re.sub(
            r'(<row r="(\d+)"[^>]*>.*?)</row>',
            lambda m: (
                f'{m.group(1)}<c r="XFD{m.group(2)}" t="inlineStr"><is><t>x</t></is></c></row>'
            ),
            xml,
        )

    data = rewrite_sheet(dimension_bomb(), stray_cells)
    result = import_contacts(data, filename="wide.xlsx")
    assert (result.rows, result.created) == (3, 3)
    assert "x" in result.ignored_columns
    # The header row is 16,384 cells once; data rows stop at the last column used (Группы).
    assert cells_read["cells"] <= 16_384 + 3 * 1_048_576


def test_a_row_numbered_beyond_excels_last_row_is_refused(cells_read):
    def far_row(xml: str) -> str:
        extra = '<row r="2000000"><c r="B2000000"><v>79001234299</v></c></row>'
        return xml.replace("</sheetData>", extra + "</sheetData>")

    cells_read["budget"] = 5_000_000  # openpyxl fills the gap with empty rows of 2 cells
    with pytest.raises(ValidationError) as caught:
        import_contacts(rewrite_sheet(xlsx_bytes(ROWS[:2]), far_row), filename="far.xlsx")
    assert caught.value.code == "row_beyond_sheet"
    assert "1,048,576" in caught.value.messages[0] or "1048576" in caught.value.messages[0]
    assert not Contact.objects.exists()  # one transaction: nothing of it stays


def test_import_contacts_command_reads_the_dimension_bomb_at_once(tmp_path, cells_read):
    path = tmp_path / "bomb.xlsx"
    path.write_bytes(dimension_bomb())
    out, err = io.StringIO(), io.StringIO()
    cells_read["budget"] = 4_000_000
    call_command("import_contacts", str(path), stdout=out, stderr=err)
    assert "3 contacts were created" in out.getvalue()
    assert cells_read["cells"] <= 3 * 1_048_576
    assert "rows/s" in err.getvalue()  # the progress line


# --- the zip bomb and the size limits -----------------------------------------------------


def test_a_zip_bomb_is_refused_before_anything_is_unpacked(bytes_unpacked):
    data = zip_bomb(150)
    assert len(data) < 1024 * 1024  # 150 MB packed into a few hundred KB
    bytes_unpacked["bytes"] = 0
    with pytest.raises(ValidationError) as caught:
        import_contacts(data, filename="bomb.xlsx")
    assert caught.value.code == "compression_ratio"
    message = caught.value.messages[0]
    assert SHEET in message and 'CRM_SMS["IMPORT_MAX_COMPRESSION_RATIO"]' in message
    assert bytes_unpacked["bytes"] == 0


def test_unpacked_size_limit(settings, bytes_unpacked):
    rows = [["Phone", "Name"]] + [[79001000000 + i, f"Name {i}"] for i in range(5000)]
    data = xlsx_bytes(rows)  # ~600 KB of sheet XML, packed ~10 times: an honest file
    bytes_unpacked["bytes"] = 0
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_MAX_UNPACKED_BYTES": 256 * 1024}
    with pytest.raises(ValidationError) as caught:
        import_contacts(data, filename="big.xlsx")
    assert caught.value.code == "unpacked_too_big"
    assert 'CRM_SMS["IMPORT_MAX_UNPACKED_BYTES"]' in caught.value.messages[0]
    assert bytes_unpacked["bytes"] == 0
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_MAX_UNPACKED_BYTES": 10 * 1024 * 1024}
    assert import_contacts(data, filename="big.xlsx").created == 5000


def test_file_size_limit_applies_to_csv(settings):
    data = csv_bytes([["Phone"]] + [[f"+7900100{i:04d}"] for i in range(200)])
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_MAX_FILE_BYTES": 1000}
    with pytest.raises(ValidationError) as caught:
        import_contacts(data)
    assert caught.value.code == "file_too_big"
    assert 'CRM_SMS["IMPORT_MAX_FILE_BYTES"]' in caught.value.messages[0]
    assert "1000" in caught.value.messages[0].replace("\xa0", "").replace(",", "")


@pytest.mark.parametrize("make", [csv_bytes, xlsx_bytes], ids=["csv", "xlsx"])
def test_row_limit_refuses_the_file_and_writes_nothing(settings, make):
    rows = [["Phone"]] + [[f"+7900100{i:04d}"] for i in range(150)]
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_MAX_ROWS": 100}
    with pytest.raises(ValidationError) as caught:
        import_contacts(make(rows), filename="f.xlsx" if make is xlsx_bytes else "f.csv")
    assert caught.value.code == "too_many_rows"
    assert 'CRM_SMS["IMPORT_MAX_ROWS"]' in caught.value.messages[0]
    assert not Contact.objects.exists()
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_MAX_ROWS": 150}
    assert (
        import_contacts(make(rows), filename="f.xlsx" if make is xlsx_bytes else "f.csv").created
        == 150
    )


def test_the_limits_defaults():
    from crm_sms.importing.limits import Limits

    limits = Limits.from_settings()
    assert limits.max_rows == 1_000_000
    assert limits.max_file_bytes == 100 * 1024 * 1024
    assert limits.max_unpacked_bytes == 300 * 1024 * 1024
    assert limits.max_compression_ratio == 100


# --- the admin ----------------------------------------------------------------------------


def test_admin_refuses_the_zip_bomb_with_the_limit_on_the_form(
    admin_en, bytes_unpacked, settings, tmp_path
):
    settings.CRM_SMS = {**settings.CRM_SMS, "IMPORT_DIR": str(tmp_path)}
    upload = SimpleUploadedFile("bomb.xlsx", zip_bomb(150))
    bytes_unpacked["bytes"] = 0
    page = admin_en.post(reverse("admin:crm_sms_contact_import"), {"file": upload})
    assert page.status_code == 200
    assert "IMPORT_MAX_COMPRESSION_RATIO" in page.content.decode()
    assert bytes_unpacked["bytes"] == 0
    from crm_sms.models import ImportJob

    assert not ImportJob.objects.exists()
    assert list(tmp_path.iterdir()) == []  # the upload is not kept


def test_admin_refuses_an_upload_over_the_limit_before_reading_it(admin_en, settings, tmp_path):
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "IMPORT_MAX_FILE_BYTES": 10_000,
        "IMPORT_DIR": str(tmp_path),
    }
    data = csv_bytes([["Phone"]] + [[f"+7900100{i:04d}"] for i in range(20_000)])
    page = admin_en.post(
        reverse("admin:crm_sms_contact_import"),
        {"file": SimpleUploadedFile("big.csv", data)},
        follow=True,
    )
    text = page.content.decode()
    assert "IMPORT_MAX_FILE_BYTES" in text
    assert page.redirect_chain[-1][0] == reverse("admin:crm_sms_contact_import")
    assert list(tmp_path.iterdir()) == []
    from crm_sms.models import ImportJob

    assert not Contact.objects.exists() and not ImportJob.objects.exists()
