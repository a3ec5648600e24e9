"""The import's check page (issue 14, point 6): the file's own column titles and what each
becomes, the first good rows as they will be imported, an e-mail that is not one (the row is
imported without it, a warning), a dropped phone extension (a warning), a repeated phone as
the file writes it and the row it repeats; the result page counts the warnings. And every
count of the import in its plural form (point 4). Real CSV and XLSX bytes through the admin's
pages and the real reading, cleaning and writing."""

from __future__ import annotations

import io
import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.urls import reverse
from django.utils import translation

from crm_sms.admin.imports import import_summary, job_message
from crm_sms.importing import ImportResult, import_contacts, jobs
from crm_sms.management.commands.import_contacts import progress_line, summary
from crm_sms.models import Contact, ImportJob
from tests.fixtures_admin import csv_bytes, xlsx_bytes

pytestmark = pytest.mark.django_db

URL = "admin:crm_sms_contact_import"

# A 1C export: its own titles, one column the import has no field for.
ONE_C = [
    ["ФИО", "Моб. телефон", "Эл. почта", "Город рождения", "Комментарий"],
    ["Иванов Иван Иванович", "8 (900) 123-42-12", "ivan@example.ru", "Тула", "VIP"],  # 2
    ["Петрова Мария", "+7 900 123 42 13", "мария@", "Орёл", ""],  # 3: not an e-mail
    ["Сидоров Пётр", "+7 (495) 123-45-67 доб. 5", "", "", "офис"],  # 4: an extension
    ["Дубль Иван", "+7 900 123 42 12", "", "", ""],  # 5: repeats line 2
    ["Плохой", "12", "", "", ""],  # 6: no phone
]


def check(client, data: bytes, name: str = "1c.csv", **fields):
    page = client.post(reverse(URL), {"file": SimpleUploadedFile(name, data), **fields})
    assert page.status_code == 200, page.content[:500]
    return page, page.content.decode()


def cells(html: str, table_id: str) -> list[list[str]]:
    """The body rows of the table ``table_id`` as lists of cell texts (tags stripped)."""
    table = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert table, f"no table {table_id}"
    body = re.search(r"<tbody>(.*?)</tbody>", table.group(1), re.S).group(1)
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [
        [
            re.sub(r"<[^>]+>", "", cell).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def test_the_check_page_shows_the_files_own_titles_and_what_each_becomes(admin_en):
    _page, html = check(admin_en, csv_bytes(ONE_C, delimiter=";", encoding="cp1251"))
    assert cells(html, "import-columns") == [
        ["A", "ФИО", "Full name (last, first, middle)"],
        ["B", "Моб. телефон", "Phone"],
        ["C", "Эл. почта", "Email"],
        ["D", "Город рождения", "not imported"],
        ["E", "Комментарий", "Notes"],
    ]
    rows = [["Телефон", "Отдел", "", "Должность"], ["89001234212", "Продажи", "", "менеджер"]]
    _page, html = check(admin_en, xlsx_bytes(rows), "people.xlsx")
    # Columns the import has no field for are listed as such; an untitled column is not.
    assert cells(html, "import-columns") == [
        ["A", "Телефон", "Phone"],
        ["B", "Отдел", "not imported"],
        ["D", "Должность", "not imported"],
    ]
    assert 'class="quiet"' in html


def test_the_preview_shows_the_first_good_rows_as_they_will_be_imported(admin_en):
    known = Contact.objects.create(phone="+79001234213", last_name="Петрова", first_name="М.")
    _page, html = check(admin_en, csv_bytes(ONE_C, delimiter=";", encoding="cp1251"))
    head = re.search(r'<table id="import-preview">.*?<thead>(.*?)</thead>', html, re.S).group(1)
    titles = [re.sub(r"<[^>]+>", "", t) for t in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    assert titles == [
        "Line",
        "Phone in the file",
        "Phone for SMS",
        "Last name",
        "First name",
        "Middle name",
        "Email",
        "Notes",
        "Result",
    ]
    preview = cells(html, "import-preview")
    assert [row[:3] for row in preview] == [
        ["2", "8 (900) 123-42-12", "+79001234212"],
        ["3", "+7 900 123 42 13", "+79001234213"],
        ["4", "+7 (495) 123-45-67 доб. 5", "+74951234567"],
    ]
    assert preview[0][3:] == [
        "Иванов",
        "Иван",
        "Иванович",
        "ivan@example.ru",
        "VIP",
        "New contact",
    ]
    assert preview[1][6] == ""  # the e-mail that is not one is left out
    assert preview[1][-1] == "Updates Петрова М."
    change = reverse("admin:crm_sms_contact_change", args=[known.pk])
    assert f'<a href="{change}">Петрова М.</a>' in html
    # Rows whose phone is a known contact's, as the file writes it.
    assert cells(html, "import-matches") == [
        ["3", "+7 900 123 42 13", "+79001234213", "Updates Петрова М."]
    ]


def test_the_preview_stops_at_ten_rows_of_an_xlsx(admin_en):
    rows = [["Телефон", "Имя"]] + [[79001234200 + i, f"Имя{i}"] for i in range(15)]
    rows.insert(3, ["не телефон", "Плохой"])  # line 4
    page, html = check(admin_en, xlsx_bytes(rows), "book.xlsx")
    preview = cells(html, "import-preview")
    assert [row[0] for row in preview] == ["2", "3", *map(str, range(5, 13))]
    assert preview[0][:3] == ["2", "79001234200", "+79001234200"]
    assert page.context["result"].created == 15


def test_an_email_that_is_not_one_is_a_warning_and_the_row_is_imported(admin_en):
    keep = Contact.objects.create(phone="+79001234212", email="keep@example.ru")
    rows = [
        ["Телефон", "Эл. почта", "Имя"],
        ["89001234212", "keep-at-example", "Анна"],  # a known contact: its e-mail stays
        ["89001234213", "мария@", "Мария"],  # a new one: without an e-mail
        ["89001234214", "ok@example.ru", "Олег"],
    ]
    page, html = check(admin_en, csv_bytes(rows))
    assert 'id="import-warned">2<' in html and 'id="import-skipped">0<' in html
    assert cells(html, "import-warnings") == [
        [
            "2",
            "Эл. почта",
            "keep-at-example",
            "“keep-at-example” is not an email address. The row is imported without the e-mail.",
        ],
        [
            "3",
            "Эл. почта",
            "мария@",
            "“мария@” is not an email address. The row is imported without the e-mail.",
        ],
    ]
    assert "Import 3 rows" in html
    done = admin_en.post(reverse(URL), {"_confirm": "1", **page.context["confirm_form"].initial})
    assert done.status_code == 302
    keep.refresh_from_db()
    assert (keep.email, keep.first_name) == ("keep@example.ru", "Анна")
    assert Contact.objects.get(phone="+79001234213").email == ""
    assert Contact.objects.get(phone="+79001234214").email == "ok@example.ru"
    text = admin_en.get(done["Location"]).content.decode()
    assert "2 rows were imported with a warning" in text


@pytest.mark.parametrize(
    ("written", "phone", "extension"),
    [
        ("+7 (495) 123-45-67 доб. 5", "+74951234567", "5"),
        ("8 495 123-45-67 ext. 12", "+74951234567", "12"),
        ("+7 495 123 45 67 #5", "+74951234567", "5"),
        ("8 (495) 123-45-67, добавочный 123", "+74951234567", "123"),
        ("8 (900) 123-42-12 x7", "+79001234212", "7"),
        ("+7 495 1234567;ext=5", "+74951234567", "5"),
    ],
)
def test_a_dropped_extension_is_a_warning(written, phone, extension):
    result = import_contacts(csv_bytes([["Телефон"], [written]]))
    assert (result.created, result.skipped, result.warned) == (1, 0, 1)
    [warning] = result.warnings
    assert (warning.line, warning.column, warning.value, warning.code) == (
        2,
        "phone",
        written,
        "extension_dropped",
    )
    assert f"“{extension}” was dropped: an SMS goes to {phone}." in warning.message
    assert Contact.objects.get().phone == phone


def test_a_phone_without_extension_has_no_warning():
    rows = [["Телефон"], ["8 (900) 123-42-12"], ["+7.900.123.42.13"], [79001234214]]
    result = import_contacts(csv_bytes(rows))
    assert (result.created, result.warned, result.warnings) == (3, 0, [])


def test_the_extension_warning_on_the_check_page(admin_en):
    _page, html = check(admin_en, csv_bytes(ONE_C, delimiter=";", encoding="cp1251"))
    warnings = cells(html, "import-warnings")
    assert [
        "4",
        "Моб. телефон",
        "+7 (495) 123-45-67 доб. 5",
        "The extension “5” was dropped: an SMS goes to +74951234567.",
    ] in warnings
    assert 'id="import-warned">2<' in html  # line 3 (the e-mail), line 4 (the extension)


def test_a_repeated_phone_is_shown_as_the_file_writes_it_with_the_row_it_repeats(admin_en):
    _page, html = check(admin_en, csv_bytes(ONE_C, delimiter=";", encoding="cp1251"))
    errors = cells(html, "import-errors")
    assert errors[0] == [
        "5",
        "Моб. телефон",
        "+7 900 123 42 12",
        "Repeats the phone of line 2 (+79001234212); this row is skipped.",
    ]
    assert errors[1][:3] == ["6", "Моб. телефон", "12"]
    assert 'id="import-skipped">2 (1 repeated phone)<' in html


def test_the_result_page_of_a_background_import_counts_warnings(settings, tmp_path, admin_en):
    settings.CRM_SMS = {**getattr(settings, "CRM_SMS", {}), "IMPORT_DIR": str(tmp_path)}
    _token, path = jobs.save_upload([xlsx_bytes(ONE_C)])
    job = jobs.queue_job(path, filename="1c.xlsx", options={}, dry_run=False)
    assert jobs.run_import_jobs(job_id=job.pk) == 1
    job.refresh_from_db()
    assert (job.status, job.created, job.skipped) == ("done", 3, 2)
    html = admin_en.get(reverse("admin:crm_sms_contact_import_job", args=[job.pk])).content
    html = html.decode()
    assert "Rows imported with a warning" in html and 'id="import-warned">2<' in html
    assert [row[0] for row in cells(html, "import-warnings")] == ["3", "4"]
    assert [row[:3] for row in cells(html, "import-preview")][0] == [
        "2",
        "8 (900) 123-42-12",
        "+79001234212",
    ]
    assert ImportJob.objects.get(pk=job.pk).result["warned"] == 2


def test_a_resumed_job_keeps_its_warnings_and_preview(settings, tmp_path):
    """A job taken back after a batch goes on with the warnings and preview it had."""
    settings.CRM_SMS = {**getattr(settings, "CRM_SMS", {}), "IMPORT_DIR": str(tmp_path)}
    rows = [["Телефон", "Email"]] + [[f"8900123{i:04d}", "bad" if i < 3 else ""] for i in range(6)]
    saved: list[dict] = []
    from crm_sms.importing import Checkpoints

    first = import_contacts(
        csv_bytes(rows),
        batch_size=2,
        checkpoints=Checkpoints(save=lambda r, f: saved.append(r.as_dict()), stop=lambda: True),
    )
    assert (first.complete, first.warned) == (False, 2)
    result = import_contacts(
        csv_bytes(rows),
        batch_size=2,
        checkpoints=Checkpoints(save=lambda r, f: None, resume=saved[-1]),
    )
    assert (result.created, result.warned, len(result.warnings)) == (6, 3, 3)
    assert [row["line"] for row in result.preview] == [2, 3, 4, 5, 6, 7]
    assert {row["action"] for row in result.preview} == {"new"}


# --- plural forms of every count ---------------------------------------------------------------


def counts(**values) -> ImportResult:
    return ImportResult(**values)


def test_english_counts_are_singular_for_one():
    assert import_summary(counts(created=1, updated=1, unchanged=1)) == (
        "Import done: 1 new contact, 1 updated, 1 unchanged."
    )
    assert summary(counts(rows=1, created=1, skipped=1, duplicates=1, warned=1)) == (
        "1 row: 1 contact was created, 0 updated, 0 unchanged, 1 bad row skipped "
        "(1 repeated phone). 1 row with a warning (a cell left out)."
    )
    assert progress_line(counts(rows=2, created=1, skipped=1), 10) == (
        "2 rows: 1 new, 0 updated, 0 unchanged, 1 bad (10 rows/s)"
    )


@pytest.mark.parametrize(
    ("count", "contacts", "rows"),
    [
        (1, "1 новый контакт", "1 строка"),
        (2, "2 новых контакта", "2 строки"),
        (5, "5 новых контактов", "5 строк"),
        (11, "11 новых контактов", "11 строк"),
        (21, "21 новый контакт", "21 строка"),
        (0, "0 новых контактов", "0 строк"),
    ],
)
def test_russian_counts_take_russian_plural_forms(count, contacts, rows):
    with translation.override("ru"):
        assert contacts in import_summary(counts(created=count))
        assert summary(counts(rows=count, dry_run=True)).startswith(f"{rows}:")
        assert progress_line(counts(rows=count), 1).startswith(f"{rows}:")
        job = ImportJob(status="done", dry_run=True, rows=count)
        assert job_message(job, 0) == f"Проверено: {rows}."


def test_the_russian_check_page_and_command(client, admin_user, tmp_path):
    client.force_login(admin_user)
    rows = [["Телефон", "Эл. почта"]] + [[f"8900123{i:04d}", "x@"] for i in range(21)]
    rows += [["8 900 123-00-00", ""], ["12", ""]]  # a repeat, a bad phone
    page = client.post(
        reverse(URL),
        {"file": SimpleUploadedFile("r.csv", csv_bytes(rows))},
        headers={"accept-language": "ru"},
    )
    html = page.content.decode()
    assert "Импортировать 21 верную строку, пропустить ошибочные" in html
    assert "1 повтор телефона" in html
    path = tmp_path / "r.csv"
    path.write_bytes(csv_bytes(rows))
    out, err = io.StringIO(), io.StringIO()
    with translation.override("ru"):
        call_command("import_contacts", str(path), "--dry-run", stdout=out, stderr=err)
    text = out.getvalue()
    assert "23 строки: 21 контакт будет создан" in text
    assert "2 строки с ошибками пропущены (1 повтор телефона)" in text
    assert "21 строка с предупреждением" in text
