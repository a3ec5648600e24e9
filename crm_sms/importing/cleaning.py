"""Cleaning a row of an imported file: which column is which field, and each cell's value.

Columns are matched by field name or by their Russian or English titles (``Телефон``, ``Phone``,
``ФИО``…). A row becomes contact values (the phone in E.164, groups as a list, ``opted_out`` as a
bool) or the reasons it is bad, one :class:`RowError` per bad cell. Some problems only take
a cell out and keep the row, as warnings: an e-mail that is not one (the contact is imported
without it), a phone extension (``доб. 5``: an SMS cannot dial it, so it is dropped).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext as _
from django.utils.translation import ngettext, pgettext_lazy

from .. import conf
from ..models import Contact, ContactGroup
from ..phones import normalize_phone

#: Contact fields an import fills, in the order exports write them.
IMPORT_FIELDS = (
    "last_name",
    "first_name",
    "middle_name",
    "phone",
    "email",
    "groups",
    "opted_out",
    "notes",
    "external_id",
)
FULL_NAME = "full_name"  # "ФИО" split into last, first and middle name
#: Consent to advertising: yes / no / the date it was given (``crm_sms.consent``), not a field.
CONSENT = "consent"
#: The contact's time zone: an IANA name, "МСК+4", a city or a region (``crm_sms.quiet_hours``).
TIME_ZONE = "time_zone"

#: Column titles an export writes, by language (the import reads both, and the field names).
COLUMN_TITLES = {
    "last_name": (pgettext_lazy("column title", "Last name"), "Last name", "Фамилия"),
    "first_name": (pgettext_lazy("column title", "First name"), "First name", "Имя"),
    "middle_name": (pgettext_lazy("column title", "Middle name"), "Middle name", "Отчество"),
    "phone": (pgettext_lazy("column title", "Phone"), "Phone", "Телефон"),
    "email": (pgettext_lazy("column title", "Email"), "Email", "Эл. почта"),
    "groups": (pgettext_lazy("column title", "Groups"), "Groups", "Группы"),
    "opted_out": (pgettext_lazy("column title", "Opted out"), "Opted out", "Отказ от рассылки"),
    "notes": (pgettext_lazy("column title", "Notes"), "Notes", "Примечание"),
    "external_id": (pgettext_lazy("column title", "External ID"), "External ID", "Внешний код"),
}

#: What each field is called on the check page (the file's own titles are shown next to it).
FIELD_LABELS = {
    **{name: titles[0] for name, titles in COLUMN_TITLES.items()},
    FULL_NAME: pgettext_lazy("column title", "Full name (last, first, middle)"),
    CONSENT: pgettext_lazy("column title", "Consent to advertising"),
    TIME_ZONE: pgettext_lazy("column title", "Time zone"),
}

#: Codes of the warnings: the row is imported without that cell.
EMAIL_DROPPED = "email_dropped"
EXTENSION_DROPPED = "extension_dropped"

# A phone followed by an extension: "+7 (495) 123-45-67 доб. 5", "ext. 12", "#5", "x7".
_EXTENSION = re.compile(
    r"^(?P<number>.*\d)[\s,;]*"
    r"(?:доб(?:авочный)?|вн(?:утр(?:енний)?)?|ext(?:ension)?|x|#)\.?\s*[:=]?\s*"
    r"(?P<extension>\d{1,10})\s*$",
    re.IGNORECASE,
)
# Only a phone written with other characters than these may hide an extension.
_PLAIN_PHONE = re.compile(r"^[\d\s()+\-.]*$")

_ALIASES: dict[str, tuple[str, ...]] = {
    "last_name": ("surname", "family name", "lastname", "фамилия"),
    "first_name": ("firstname", "given name", "name", "имя"),
    "middle_name": ("middlename", "patronymic", "second name", "отчество"),
    "phone": (
        "phone number",
        "mobile",
        "mobile phone",
        "cell",
        "tel",
        "telephone",
        "msisdn",
        "телефон",
        "номер телефона",
        "мобильный",
        "мобильный телефон",
        "моб телефон",
        "моб. телефон",
        "телефон мобильный",
        "сотовый",
        "сотовый телефон",
        "номер",
    ),
    "email": (
        "e-mail",
        "e mail",
        "mail",
        "email address",
        "эл. почта",
        "эл почта",
        "электронная почта",
        "почта",
        "емейл",
        "e-mail адрес",
    ),
    "groups": ("group", "groups", "группа", "группы", "категория"),
    "opted_out": (
        "opted out",
        "opt out",
        "unsubscribed",
        "отказ",
        "отказ от рассылки",
        "отписан",
        "не отправлять",
    ),
    "notes": ("note", "notes", "comment", "comments", "примечание", "комментарий", "заметки"),
    "external_id": (
        "external id",
        "externalid",
        "id",
        "code",
        "внешний код",
        "код",
        "код 1с",
        "идентификатор",
    ),
    FULL_NAME: ("full name", "fullname", "фио", "ф.и.о.", "наименование", "контакт"),
    CONSENT: (
        "consent",
        "consent to advertising",
        "согласие",
        "согласие на рекламу",
        "согласие на рассылку",
        "дата согласия",
    ),
    TIME_ZONE: (
        "time zone",
        "timezone",
        "tz",
        "часовой пояс",
        "регион",
        "region",
        "город",
        "city",
    ),
}


_TRUE = {"1", "true", "yes", "y", "да", "д", "x", "+", "истина", "v", "✓"}
_FALSE = {"", "0", "false", "no", "n", "нет", "н", "-", "ложь"}

# The model's limits, so a long value is a row error instead of a database error.
MAX_LENGTHS = {
    name: Contact._meta.get_field(name).max_length
    for name in ("last_name", "first_name", "middle_name", "external_id", "email")
}
GROUP_NAME_MAX_LENGTH = ContactGroup._meta.get_field("name").max_length


@dataclass
class RowError:
    """Why one row of the file was skipped (or, a ``warning``, what was left out of a row that
    is imported): its line, the column and the value as written, a message."""

    line: int
    message: str
    column: str = ""
    value: str = ""
    code: str = "invalid"
    warning: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "message": self.message,
            "code": self.code,
            "warning": self.warning,
        }


# --- columns --------------------------------------------------------------------------------


def normalize_header(value: object) -> str:
    """A column title reduced for matching: case, BOM, ``ё``, spacing, ``_`` and ``*:`` ignored."""
    text = str(value or "").replace("\ufeff", "").strip().lower().replace("ё", "е")
    text = re.sub(r"[*:]+$", "", text).strip()
    return re.sub(r"[\s_]+", " ", text)


def _build_header_table() -> dict[str, str]:
    table: dict[str, str] = {}
    for name, aliases in _ALIASES.items():
        for alias in (name, *aliases):
            table[normalize_header(alias)] = name
    for name, (_lazy, english, russian) in COLUMN_TITLES.items():
        table[normalize_header(english)] = name
        table[normalize_header(russian)] = name
    return table


HEADER_TABLE = _build_header_table()


def match_columns(headers: Iterable[object]) -> tuple[dict[int, str], list[str]]:
    """Map column positions to contact fields; returns (position -> field, ignored titles).

    Raises ValidationError when no column holds phones, or when two columns mean one field.
    """
    columns: dict[int, str] = {}
    ignored: list[str] = []
    seen: dict[str, str] = {}
    titles = [str(h if h is not None else "").strip() for h in headers]
    for position, title in enumerate(titles):
        name = HEADER_TABLE.get(normalize_header(title))
        if name is None:
            if title:
                ignored.append(title)
            continue
        if name in seen:
            raise ValidationError(
                _("The columns “%(first)s” and “%(second)s” both mean %(field)s; keep one.")
                % {"first": seen[name], "second": title, "field": name},
                code="duplicate_column",
            )
        seen[name] = title
        columns[position] = name
    if "phone" not in columns.values():
        raise ValidationError(
            _(
                "The file has no phone column. Its first line should hold the column titles, "
                "one of them “Phone” or “Телефон”. Found: %(found)s."
            )
            % {"found": ", ".join(f"“{t}”" for t in titles if t) or _("nothing")},
            code="no_phone_column",
        )
    return columns, ignored


# --- cells ----------------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """A cell as text: Excel's 123.0 is "123", dates are ISO, None is ""."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value).strip()


def parse_bool(value: Any) -> bool:
    """Yes/no the way spreadsheets write it (1/0, true/false, да/нет, x); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = cell_text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def split_groups(value: Any) -> list[str]:
    """Group names from one cell, separated by ``,`` or ``;``; blanks and repeats dropped."""
    names: list[str] = []
    for part in re.split(r"[,;]", cell_text(value)):
        name = " ".join(part.split())
        if name and name not in names:
            names.append(name)
    return names


class _Invalid(Exception):
    """A cell a cleaner refused: the message, the value to show, the error code."""

    def __init__(self, message: str, value: str, code: str = "invalid"):
        super().__init__(message)
        self.message, self.value, self.code = message, value, code


def clean_phone(raw: Any) -> tuple[str, str]:
    """A phone cell in E.164 and the extension it had ("" when none): an SMS goes to the
    number, the extension is dropped (the caller warns). Raises ``_Invalid``."""
    extension = ""
    text = raw
    if isinstance(raw, str):
        text = raw.strip().replace("\u00a0", " ")
        found = _EXTENSION.match(text)
        if found:
            text, extension = found["number"], found["extension"]
    try:
        phone = normalize_phone(text)
    except ValidationError as exc:
        raise _Invalid(exc.messages[0], cell_text(raw), exc.code or "phone") from exc
    if not extension and isinstance(text, str) and not _PLAIN_PHONE.match(text):
        extension = _extension_by_phonenumbers(text)
    return phone, extension


def _extension_by_phonenumbers(text: str) -> str:
    """The extension ``phonenumbers`` finds in ``text`` (its markers are more than ours)."""
    import phonenumbers

    try:
        return phonenumbers.parse(text, conf.get_setting("DEFAULT_REGION")).extension or ""
    except phonenumbers.NumberParseException:
        return ""


def _clean_phone(raw: Any, name: str) -> str:
    return clean_phone(raw)[0]


def _clean_groups(raw: Any, name: str) -> list[str]:
    groups = split_groups(raw)
    if any(len(g) > GROUP_NAME_MAX_LENGTH for g in groups):
        raise _Invalid(
            ngettext(
                "A group name is longer than %(limit)d character.",
                "A group name is longer than %(limit)d characters.",
                GROUP_NAME_MAX_LENGTH,
            )
            % {"limit": GROUP_NAME_MAX_LENGTH},
            cell_text(raw),
        )
    return groups


def _clean_opted_out(raw: Any, name: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError:
        text = cell_text(raw)
        raise _Invalid(
            _("“%(value)s” is not yes or no (use 1/0, yes/no, да/нет).") % {"value": text}, text
        ) from None


def _clean_text(raw: Any, name: str) -> str:
    text = cell_text(raw)
    if name == "email" and text:
        try:
            validate_email(text)
        except ValidationError:
            raise _Invalid(
                _("“%(value)s” is not an email address.") % {"value": text}, text
            ) from None
    limit = MAX_LENGTHS.get(name)
    if limit and len(text) > limit:
        raise _Invalid(
            ngettext(
                "Longer than %(limit)d character (%(length)d).",
                "Longer than %(limit)d characters (%(length)d).",
                limit,
            )
            % {"limit": limit, "length": len(text)},
            text[:50],
        )
    return text


def _clean_consent(raw: Any, name: str) -> tuple[bool | None, Any]:
    from ..consent import parse_consent

    try:
        return parse_consent(raw)
    except ValidationError as exc:
        raise _Invalid(exc.messages[0], cell_text(raw)[:50], exc.code or "consent") from exc


def _clean_time_zone(raw: Any, name: str) -> str:
    """The zone of a time-zone or region cell; "" when it names none we know (the zone is then
    guessed from the phone, else the site's): a region column is no reason to refuse a row."""
    from ..quiet_hours import zone_for_region

    return zone_for_region(cell_text(raw))


_CLEANERS: dict[str, Callable[[Any, str], Any]] = {
    "phone": _clean_phone,
    "groups": _clean_groups,
    "opted_out": _clean_opted_out,
    CONSENT: _clean_consent,
    TIME_ZONE: _clean_time_zone,
}


def clean_row(
    line: int, values: list[Any], columns: dict[int, str]
) -> tuple[dict[str, Any], list[RowError]]:
    """Turn one row into contact values (phone in E.164), or the reasons it is bad (one
    :class:`RowError` per bad cell). A problem marked ``warning`` keeps the row: the cell is
    left out of the values (an e-mail that is not one) or cut (a phone's extension)."""
    data: dict[str, Any] = {}
    errors: list[RowError] = []
    for position, name in columns.items():
        raw = values[position] if position < len(values) else None
        if name == FULL_NAME:
            # "ФИО": last, first, middle. An explicit name column wins: setdefault here, and a
            # later name column overwrites.
            parts = cell_text(raw).split()
            data.setdefault("last_name", parts[0] if parts else "")
            data.setdefault("first_name", parts[1] if len(parts) > 1 else "")
            data.setdefault("middle_name", " ".join(parts[2:]))
            continue
        try:
            if name == "phone":
                data[name], extension = clean_phone(raw)
                if extension:
                    errors.append(_extension_warning(line, raw, data[name], extension))
            else:
                data[name] = _CLEANERS.get(name, _clean_text)(raw, name)
        except _Invalid as bad:
            if name == "email":  # the contact is imported without it
                message = _("%(problem)s The row is imported without the e-mail.") % {
                    "problem": bad.message
                }
                errors.append(RowError(line, message, name, bad.value, EMAIL_DROPPED, True))
            else:
                errors.append(RowError(line, bad.message, name, bad.value, bad.code))
    return data, errors


def _extension_warning(line: int, raw: Any, phone: str, extension: str) -> RowError:
    message = _("The extension “%(extension)s” was dropped: an SMS goes to %(phone)s.") % {
        "extension": extension,
        "phone": phone,
    }
    return RowError(line, message, "phone", cell_text(raw), EXTENSION_DROPPED, True)


def preview_value(name: str, value: Any) -> Any:
    """A cleaned value as JSON (a check's result is kept as JSON): groups joined, a consent
    as [given, ISO date or None]."""
    if name == "groups":
        return ", ".join(value)
    if name == CONSENT:
        given, at = value or (None, None)
        return None if given is None else [given, at.isoformat() if at else None]
    return value
