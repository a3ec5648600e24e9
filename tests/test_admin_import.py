"""Contact import: detection of format, encoding and delimiter; headers; phones; bad rows with
line numbers; updates by phone; groups; and the admin's upload → check → import pages."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from crm_sms.importing import detect_delimiter, detect_encoding, import_contacts, match_columns
from crm_sms.models import Contact, ContactGroup
from tests.fixtures_admin import csv_bytes, xlsx_bytes

pytestmark = pytest.mark.django_db

ONE_C_ROWS = [
    ["Фамилия", "Имя", "Отчество", "Телефон", "Эл. почта", "Группы", "Примечание", "Код"],
    ["Иванов", "Иван", "Иванович", "8 (900) 123-42-12", "ivan@example.ru", "VIP; Опт", "", "0001"],
    ["Петрова", "Мария", "", "+7 900 123 42 13", "", "Опт", "звонить после 18", "0002"],
]


def test_1c_export_cp1251_semicolon_needs_no_options():
    result = import_contacts(csv_bytes(ONE_C_ROWS, delimiter=";", encoding="cp1251"))
    assert (result.format, result.encoding, result.delimiter) == ("csv", "cp1251", ";")
    assert (result.created, result.skipped) == (2, 0)
    ivanov = Contact.objects.get(phone="+79001234212")
    assert (ivanov.last_name, ivanov.first_name, ivanov.middle_name) == (
        "Иванов",
        "Иван",
        "Иванович",
    )
    assert ivanov.external_id == "0001"
    assert sorted(ivanov.groups.values_list("name", flat=True)) == ["VIP", "Опт"]
    assert Contact.objects.get(phone="+79001234213").notes == "звонить после 18"
    assert sorted(result.groups_created) == ["VIP", "Опт"]


@pytest.mark.parametrize(
    ("delimiter", "encoding", "bom", "expected_encoding"),
    [
        (",", "utf-8", True, "utf-8-sig"),
        (",", "utf-8", False, "utf-8"),
        ("\t", "utf-8", False, "utf-8"),
        (";", "utf-8", True, "utf-8-sig"),
        ("\t", "cp1251", False, "cp1251"),
    ],
)
def test_encodings_and_delimiters_are_detected(delimiter, encoding, bom, expected_encoding):
    data = csv_bytes(ONE_C_ROWS, delimiter=delimiter, encoding=encoding, bom=bom)
    result = import_contacts(data)
    assert (result.encoding, result.delimiter) == (expected_encoding, delimiter)
    assert result.created == 2
    assert Contact.objects.get(phone="+79001234212").last_name == "Иванов"


def test_detectors():
    assert detect_encoding("Телефон".encode()) == "utf-8"
    assert detect_encoding("Телефон".encode("cp1251")) == "cp1251"
    assert detect_encoding(b"\xef\xbb\xbfPhone") == "utf-8-sig"
    assert detect_delimiter('"Last, first";Phone;Email') == ";"
    assert detect_delimiter("Phone") == ","


def test_xlsx_with_english_headers_and_numeric_phones():
    rows = [
        ["Last name", "First name", "Phone", "Email", "External ID", "Opted out"],
        ["Smith", "John", 79001234212, "john@example.com", 1001, "no"],
        ["Doe", "Jane", 79001234213.0, "", 1002.0, "yes"],
    ]
    result = import_contacts(xlsx_bytes(rows), filename="contacts.xlsx")
    assert result.format == "xlsx"
    assert (result.created, result.skipped) == (2, 0)
    jane = Contact.objects.get(phone="+79001234213")
    assert (jane.first_name, jane.external_id, jane.opted_out) == ("Jane", "1002", True)
    assert jane.opted_out_at is not None
    assert Contact.objects.get(phone="+79001234212").external_id == "1001"


def test_field_names_and_full_name_column():
    rows = [["ФИО", "phone", "notes"], ["Сидоров Пётр Ильич", "9001234214", "x"]]
    result = import_contacts(csv_bytes(rows))
    assert result.created == 1
    contact = Contact.objects.get(phone="+79001234214")
    assert (contact.last_name, contact.first_name, contact.middle_name) == (
        "Сидоров",
        "Пётр",
        "Ильич",
    )


def test_bad_rows_are_listed_with_line_and_reason_and_good_rows_imported():
    rows = [
        ["Фамилия", "Телефон", "Email"],
        ["Good", "8 900 123-42-12", ""],  # line 2
        ["NoPhone", "", ""],  # line 3
        ["Letters", "call 900 me", ""],  # line 4
        ["Short", "123", ""],  # line 5
        ["Repeat", "+79001234212", ""],  # line 6: the phone of line 2
        ["BadMail", "+79001234215", "not-an-email"],  # line 7: imported without the e-mail
        [],  # blank line: ignored
        ["Good2", "+79001234216", "a@b.ru"],  # line 9
    ]
    result = import_contacts(csv_bytes(rows))
    assert (result.rows, result.created, result.skipped, result.duplicates) == (7, 3, 4, 1)
    by_line = {e.line: e for e in result.errors}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert by_line[3].column == "phone" and "empty" in by_line[3].message
    assert "letters" in by_line[4].message
    assert "too short" in by_line[5].message
    assert by_line[6].code == "duplicate" and "line 2" in by_line[6].message
    assert by_line[6].value == "+79001234212"  # as the file writes it
    assert result.warned == 1
    [warning] = result.warnings
    assert (warning.line, warning.column, warning.code) == (7, "email", "email_dropped")
    assert set(Contact.objects.values_list("phone", flat=True)) == {
        "+79001234212",
        "+79001234215",
        "+79001234216",
    }
    assert Contact.objects.get(phone="+79001234215").email == ""


def test_line_numbers_count_multiline_quoted_values():
    data = b'Phone,Notes\r\n+79001234212,"two\r\nlines"\r\nbad,x\r\n'
    result = import_contacts(data)
    assert [e.line for e in result.errors] == [4]


def test_reimport_updates_by_phone_adds_groups_and_counts_unchanged():
    import_contacts(csv_bytes(ONE_C_ROWS, delimiter=";"))
    changed = [row[:] for row in ONE_C_ROWS]
    changed[1][1] = "Иоанн"  # a new first name
    changed[2][5] = "Новые"  # another group
    result = import_contacts(csv_bytes(changed, delimiter=";"), group="Весна")
    assert (result.created, result.updated, result.unchanged) == (0, 2, 0)
    assert Contact.objects.count() == 2
    assert Contact.objects.get(phone="+79001234212").first_name == "Иоанн"
    petrova = Contact.objects.get(phone="+79001234213")
    assert sorted(petrova.groups.values_list("name", flat=True)) == ["Весна", "Новые", "Опт"]
    again = import_contacts(csv_bytes(changed, delimiter=";"), group="Весна")
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_absent_columns_are_kept_on_update():
    Contact.objects.create(phone="+79001234212", first_name="Keep", email="keep@example.ru")
    result = import_contacts(csv_bytes([["Телефон", "Фамилия"], ["89001234212", "New"]]))
    assert result.updated == 1
    contact = Contact.objects.get(phone="+79001234212")
    assert (contact.first_name, contact.last_name, contact.email) == (
        "Keep",
        "New",
        "keep@example.ru",
    )


def test_dry_run_writes_nothing():
    result = import_contacts(csv_bytes(ONE_C_ROWS), dry_run=True, group="G")
    assert result.created == 2 and result.dry_run
    assert sorted(result.groups_created) == ["G", "VIP", "Опт"]
    assert not Contact.objects.exists() and not ContactGroup.objects.exists()


def test_file_level_problems_raise_a_readable_error():
    with pytest.raises(ValidationError, match="no phone column"):
        import_contacts(csv_bytes([["Name", "Email"], ["x", "y"]]))
    with pytest.raises(ValidationError, match="empty"):
        import_contacts(b"")
    with pytest.raises(ValidationError, match="xlsx"):
        import_contacts(b"\xd0\xcf\x11\xe0rest", filename="old.xls")
    with pytest.raises(ValidationError, match="both mean"):
        match_columns(["Phone", "Телефон"])


def test_batches_use_bulk_queries(django_assert_max_num_queries):
    rows = [["Phone", "Groups"]] + [[f"+7900{1000000 + i}", "A"] for i in range(300)]
    # Per batch: existing contacts, memberships, insert, inserts of memberships; not per row.
    with django_assert_max_num_queries(40):
        result = import_contacts(csv_bytes(rows), batch_size=100)
    assert result.created == 300
    assert ContactGroup.objects.get(name="A").contacts.count() == 300


# --- the admin pages ---------------------------------------------------------------------------


def test_admin_import_check_then_import_good_rows(admin_en):
    url = reverse("admin:crm_sms_contact_import")
    changelist = admin_en.get(reverse("admin:crm_sms_contact_changelist"))
    assert url in changelist.content.decode()
    rows = ONE_C_ROWS + [["Плохой", "", "", "12", "", "", "", ""]]
    upload = csv_bytes(rows, delimiter=";", encoding="cp1251")
    from django.core.files.uploadedfile import SimpleUploadedFile

    page = admin_en.post(url, {"file": SimpleUploadedFile("1c.csv", upload), "group": "Импорт"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="import-created">2<' in html
    assert 'id="import-skipped">1<' in html
    assert "<td>4</td><td>Телефон</td><td>12</td>" in html  # line 4, the file's column, the value
    assert not Contact.objects.exists()  # the check wrote nothing
    token = page.context["confirm_form"].initial["token"]
    done = admin_en.post(
        url,
        {
            "_confirm": "1",
            "token": token,
            "filename": "1c.csv",
            "format": "csv",
            "encoding": "cp1251",
            "delimiter": ";",
            "group": "Импорт",
        },
        follow=True,
    )
    assert done.redirect_chain[-1][0] == reverse("admin:crm_sms_contact_changelist")
    assert Contact.objects.count() == 2
    assert ContactGroup.objects.get(name="Импорт").contacts.count() == 2
    text = done.content.decode()
    assert "2 new contacts" in text and "1 bad row was skipped" in text


def test_admin_import_shows_file_errors_on_the_form(admin_en):
    from django.core.files.uploadedfile import SimpleUploadedFile

    page = admin_en.post(
        reverse("admin:crm_sms_contact_import"),
        {"file": SimpleUploadedFile("x.csv", b"Name,Email\nx,y\n")},
    )
    assert page.status_code == 200
    assert "no phone column" in page.content.decode()


def test_admin_import_needs_add_permission(client, viewer_user):
    client.force_login(viewer_user)
    assert client.get(reverse("admin:crm_sms_contact_import")).status_code == 403


def test_admin_import_page_in_russian(client, admin_user):
    client.force_login(admin_user)
    page = client.get(reverse("admin:crm_sms_contact_import"), headers={"accept-language": "ru"})
    assert page.status_code == 200
    assert "Импорт" in page.content.decode()


def test_admin_import_tab_delimited_xlsx_and_confirm(admin_en):
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = reverse("admin:crm_sms_contact_import")
    tsv = csv_bytes([["Phone", "First name"], ["89001234212", "Tab"]], delimiter="\t")
    page = admin_en.post(url, {"file": SimpleUploadedFile("x.txt", tsv)})
    initial = page.context["confirm_form"].initial
    assert initial["delimiter"] == "tab"
    admin_en.post(url, {"_confirm": "1", **initial})
    assert Contact.objects.get(phone="+79001234212").first_name == "Tab"
    xlsx = xlsx_bytes([["Телефон", "Имя"], [79001234213, "Excel"]])
    page = admin_en.post(url, {"file": SimpleUploadedFile("book.xlsx", xlsx)})
    initial = page.context["confirm_form"].initial
    assert initial["format"] == "xlsx"
    admin_en.post(url, {"_confirm": "1", **initial})
    assert Contact.objects.get(phone="+79001234213").first_name == "Excel"
