"""Contact import from CSV and XLSX: the one code path of the admin and ``import_contacts``.

What it promises:

- CSV in UTF-8 (with or without BOM), UTF-16 (with BOM) or Windows-1251, detected; ``,``, ``;``
  or tab, detected from the header line; XLSX (the first sheet). Explicit options override.
- Columns by field name or by their Russian or English titles (``Телефон``, ``Phone``, ``ФИО``…).
- Phones normalized with :func:`crm_sms.phones.normalize_phone` (Excel's numeric phones too).
- Every bad row is reported with its line number and the reason, and skipped; the good rows are
  imported. A phone repeated in the file is reported on every repeat (the first row wins).
- Contacts are matched by phone: a known phone updates the contact (the columns present in the
  file overwrite; absent columns are kept; groups are added, never removed), a new one creates it.
- It is bulk: per batch of rows one query fetches the existing contacts, one ``bulk_create``,
  one ``bulk_update`` and one ``bulk_create`` of group memberships; the whole import is one
  transaction.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import pgettext_lazy

from .models import Contact, ContactGroup
from .phones import normalize_phone

CSV = "csv"
XLSX = "xlsx"
FORMATS = (CSV, XLSX)
DELIMITERS = {
    ",": ",",
    ";": ";",
    "\t": "\t",
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
}

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
}

_TRUE = {"1", "true", "yes", "y", "да", "д", "x", "+", "истина", "v", "✓"}
_FALSE = {"", "0", "false", "no", "n", "нет", "н", "-", "ложь"}

# The model's limits, so a long value is a row error instead of a database error.
MAX_LENGTHS = {
    name: Contact._meta.get_field(name).max_length
    for name in ("last_name", "first_name", "middle_name", "external_id", "email")
}
GROUP_NAME_MAX_LENGTH = ContactGroup._meta.get_field("name").max_length

#: How many error rows a result keeps (all are counted).
MAX_KEPT_ERRORS = 10_000


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


# --- reading files --------------------------------------------------------------------------


def detect_format(sample: bytes, filename: str = "") -> str:
    """``xlsx`` for a ZIP (Office Open XML) file or an .xlsx name, else ``csv``."""
    if sample.startswith(b"PK\x03\x04") or filename.lower().endswith((".xlsx", ".xlsm")):
        return XLSX
    if sample.startswith(b"\xd0\xcf\x11\xe0") or filename.lower().endswith(".xls"):
        raise ValidationError(
            _("Old Excel files (.xls) are not supported: save the file as .xlsx or CSV."),
            code="xls",
        )
    return CSV


def detect_encoding(sample: bytes) -> str:
    """``utf-8-sig`` with a BOM, ``utf-16`` with its BOM, ``utf-8`` when it decodes, else
    ``cp1251`` (what 1C and Russian Excel write)."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        # final=False: the sample may end inside a multi-byte character.
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return "cp1251"
    return "utf-8"


def detect_delimiter(first_line: str) -> str:
    """The most frequent of ``;``, tab and ``,`` in the header line, outside quotes."""
    unquoted = re.sub(r'"[^"]*"', "", first_line)
    counts = {d: unquoted.count(d) for d in (";", "\t", ",")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_delimiter(value: str | None) -> str | None:
    """``;``, ``,``, a tab, or their names (``tab``, ``\\t``, ``semicolon``, ``comma``)."""
    if not value:
        return None
    if value in DELIMITERS:
        return DELIMITERS[value]
    if len(value) == 1:
        return value
    raise ValidationError(
        _("Unknown delimiter %(value)r: use “,”, “;” or “tab”.") % {"value": value},
        code="delimiter",
    )


@dataclass
class Table:
    """A file opened for import: what was detected, the titles, and the rows with line numbers."""

    format: str
    headers: list[str]
    rows: Iterator[tuple[int, list[Any]]]
    encoding: str | None = None
    delimiter: str | None = None
    close: Callable[[], None] = lambda: None


def open_table(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str = "",
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Table:
    """Open ``source`` (bytes, a path or a binary file) as a table, detecting what is not given.

    Raises ValidationError for an empty or unreadable file.
    """
    if isinstance(source, str | os.PathLike):
        filename = filename or str(source)
        stream: BinaryIO = open(source, "rb")  # noqa: SIM115 (closed by Table.close)
    elif isinstance(source, bytes | bytearray):
        stream = io.BytesIO(source)
    else:
        stream = source
    sample = stream.read(65536)
    stream.seek(0)
    if not sample:
        stream.close()
        raise ValidationError(_("The file is empty."), code="empty_file")
    fmt = (format or "").lower() or detect_format(sample, filename)
    if fmt not in FORMATS:
        stream.close()
        raise ValidationError(
            _("Unknown format %(format)r: use csv or xlsx.") % {"format": format}, code="format"
        )
    if fmt == XLSX:
        return _open_xlsx(stream)
    return _open_csv(stream, sample, encoding, parse_delimiter(delimiter))


def _open_xlsx(stream: BinaryIO) -> Table:
    import zipfile

    import openpyxl

    try:
        book = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        stream.close()
        raise ValidationError(
            _("The file cannot be read as an Excel workbook (.xlsx): %(error)s") % {"error": exc},
            code="bad_xlsx",
        ) from exc
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    headers: list[str] = []
    header_line = 0
    for header_line, values in enumerate(rows, start=1):  # noqa: B007 (used below)
        if any(v not in (None, "") for v in values):
            headers = [_cell_text(v) for v in values]
            break

    def data_rows() -> Iterator[tuple[int, list[Any]]]:
        for line, values in enumerate(rows, start=header_line + 1):
            yield line, list(values)

    def close() -> None:
        book.close()
        stream.close()

    return Table(XLSX, headers, data_rows(), close=close)


def _open_csv(
    stream: BinaryIO, sample: bytes, encoding: str | None, delimiter: str | None
) -> Table:
    encoding = encoding or detect_encoding(sample)
    try:
        codecs.lookup(encoding)
    except LookupError as exc:
        stream.close()
        raise ValidationError(
            _("Unknown encoding %(encoding)r.") % {"encoding": encoding}, code="encoding"
        ) from exc
    text = io.TextIOWrapper(stream, encoding=encoding, newline="")
    if delimiter is None:
        first = sample.decode(encoding, errors="ignore").lstrip("\ufeff").splitlines()
        delimiter = detect_delimiter(first[0] if first else "")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        headers = next(reader, [])
    except (UnicodeDecodeError, csv.Error) as exc:
        text.close()
        raise _read_error(exc, 1, encoding) from exc
    if headers and headers[0].startswith("\ufeff"):
        headers[0] = headers[0].lstrip("\ufeff")

    def data_rows() -> Iterator[tuple[int, list[Any]]]:
        line = reader.line_num
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, csv.Error) as exc:
                raise _read_error(exc, line + 1, encoding) from exc
            # A quoted value may span lines: a row starts after the previous one ended.
            yield line + 1, values
            line = reader.line_num

    return Table(
        CSV, headers, data_rows(), encoding=encoding, delimiter=delimiter, close=text.close
    )


def _read_error(exc: Exception, line: int, encoding: str) -> ValidationError:
    if isinstance(exc, UnicodeDecodeError):
        return ValidationError(
            _("Line %(line)d cannot be read as %(encoding)s; choose the file's encoding.")
            % {"line": line, "encoding": encoding},
            code="encoding",
        )
    return ValidationError(
        _("Line %(line)d is not valid CSV: %(error)s") % {"line": line, "error": exc},
        code="csv",
    )


def _cell_text(value: Any) -> str:
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


# --- results --------------------------------------------------------------------------------


@dataclass
class RowError:
    line: int
    message: str
    column: str = ""
    value: str = ""
    code: str = "invalid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "message": self.message,
            "code": self.code,
        }


@dataclass
class ImportResult:
    """What an import did (or, with ``dry_run``, would do)."""

    format: str = ""
    encoding: str | None = None
    delimiter: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # title in the file -> field
    ignored_columns: list[str] = field(default_factory=list)
    dry_run: bool = False
    rows: int = 0  # data rows read (blank rows are not counted)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # bad rows, not imported
    duplicates: int = 0  # rows whose phone repeats an earlier row (counted in skipped too)
    errors: list[RowError] = field(default_factory=list)
    groups_created: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def has_errors(self) -> bool:
        return self.skipped > 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "encoding": self.encoding,
            "delimiter": self.delimiter,
            "columns": self.columns,
            "ignored_columns": self.ignored_columns,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "groups_created": self.groups_created,
            "errors": [e.as_dict() for e in self.errors],
        }


# --- cleaning one row -----------------------------------------------------------------------


def parse_bool(value: Any) -> bool:
    """Yes/no the way spreadsheets write it (1/0, true/false, да/нет, x); ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = _cell_text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(text)


def split_groups(value: Any) -> list[str]:
    """Group names from one cell, separated by ``,`` or ``;``; blanks and repeats dropped."""
    names: list[str] = []
    for part in re.split(r"[,;]", _cell_text(value)):
        name = " ".join(part.split())
        if name and name not in names:
            names.append(name)
    return names


def clean_row(
    line: int, values: list[Any], columns: dict[int, str]
) -> tuple[dict[str, Any], list[RowError]]:
    """Turn one row into contact values (phone in E.164), or the reasons it is bad."""
    data: dict[str, Any] = {}
    errors: list[RowError] = []
    for position, name in columns.items():
        raw = values[position] if position < len(values) else None
        if name == "phone":
            try:
                data["phone"] = normalize_phone(raw)
            except ValidationError as exc:
                errors.append(
                    RowError(line, exc.messages[0], "phone", _cell_text(raw), exc.code or "phone")
                )
            continue
        text = _cell_text(raw)
        if name == FULL_NAME:
            parts = text.split()
            data.setdefault("last_name", parts[0] if parts else "")
            data.setdefault("first_name", parts[1] if len(parts) > 1 else "")
            data.setdefault("middle_name", " ".join(parts[2:]))
            continue
        if name == "groups":
            data["groups"] = split_groups(raw)
            too_long = [g for g in data["groups"] if len(g) > GROUP_NAME_MAX_LENGTH]
            if too_long:
                errors.append(
                    RowError(
                        line,
                        _("A group name is longer than %(limit)d characters.")
                        % {"limit": GROUP_NAME_MAX_LENGTH},
                        name,
                        text,
                    )
                )
            continue
        if name == "opted_out":
            try:
                data["opted_out"] = parse_bool(raw)
            except ValueError:
                errors.append(
                    RowError(
                        line,
                        _("“%(value)s” is not yes or no (use 1/0, yes/no, да/нет).")
                        % {"value": text},
                        name,
                        text,
                    )
                )
            continue
        if name == "email" and text:
            try:
                validate_email(text)
            except ValidationError:
                errors.append(
                    RowError(
                        line,
                        _("“%(value)s” is not an email address.") % {"value": text},
                        name,
                        text,
                    )
                )
                continue
        limit = MAX_LENGTHS.get(name)
        if limit and len(text) > limit:
            errors.append(
                RowError(
                    line,
                    _("Longer than %(limit)d characters (%(length)d).")
                    % {"limit": limit, "length": len(text)},
                    name,
                    text[:50],
                )
            )
            continue
        data[name] = text
    # Explicit name columns win over a split "ФИО" (setdefault above ran in column order).
    return data, errors


# --- the import -----------------------------------------------------------------------------


ProgressCallback = Callable[[ImportResult], None]

#: Contact fields compared and written on update (groups are handled apart).
_SCALAR_FIELDS = tuple(f for f in IMPORT_FIELDS if f != "groups")


def import_contacts(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str = "",
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    group: str | None = None,
    dry_run: bool = False,
    batch_size: int = 2000,
    progress: ProgressCallback | None = None,
) -> ImportResult:
    """Import contacts from a CSV or XLSX ``source``; see the module docstring for the rules.

    ``group`` adds every imported contact to that group (created when missing). With
    ``dry_run`` nothing is written and the result says what would happen. ``progress`` is called
    with the running result after each batch. Raises ValidationError when the file as a whole
    cannot be read (no phone column, wrong encoding…); bad rows never raise, they are reported.
    """
    table = open_table(
        source, filename=filename, format=format, encoding=encoding, delimiter=delimiter
    )
    try:
        columns, ignored = match_columns(table.headers)
        result = ImportResult(
            format=table.format,
            encoding=table.encoding,
            delimiter=table.delimiter,
            columns={table.headers[p]: name for p, name in columns.items()},
            ignored_columns=ignored,
            dry_run=dry_run,
        )
        group_name = " ".join((group or "").split())
        importer = _Importer(result, columns, group_name, dry_run)
        with transaction.atomic():
            batch: list[tuple[int, dict[str, Any]]] = []
            for line, values in table.rows:
                if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                    continue
                row = importer.clean(line, values)
                if row is not None:
                    batch.append(row)
                if len(batch) >= batch_size:
                    importer.flush(batch)
                    batch = []
                    if progress:
                        progress(result)
            importer.flush(batch)
        if progress:
            progress(result)
        return result
    finally:
        table.close()


class _Importer:
    """The running state of one import: phones seen, groups known, the result so far."""

    def __init__(self, result: ImportResult, columns: dict[int, str], group: str, dry_run: bool):
        self.result = result
        self.columns = columns
        self.group = group
        self.dry_run = dry_run
        self.seen: dict[str, int] = {}  # phone -> line of its first row
        self.group_ids: dict[str, int | None] = {}  # name -> id (None: would be created)
        self.fields_in_file = tuple(
            f
            for f in _SCALAR_FIELDS
            if f in columns.values()
            or (FULL_NAME in columns.values() and f in ("last_name", "first_name", "middle_name"))
        )

    def add_error(self, error: RowError) -> None:
        if len(self.result.errors) < MAX_KEPT_ERRORS:
            self.result.errors.append(error)

    def clean(self, line: int, values: list[Any]) -> tuple[int, dict[str, Any]] | None:
        self.result.rows += 1
        data, errors = clean_row(line, values, self.columns)
        phone = data.get("phone")
        if phone and not errors and phone in self.seen:
            errors.append(
                RowError(
                    line,
                    _("The phone %(phone)s repeats line %(first)d; this row is skipped.")
                    % {"phone": phone, "first": self.seen[phone]},
                    "phone",
                    phone,
                    "duplicate",
                )
            )
            self.result.duplicates += 1
        if errors:
            self.result.skipped += 1
            for error in errors:
                self.add_error(error)
            return None
        self.seen[phone] = line
        if self.group:
            groups = data.setdefault("groups", [])
            if self.group not in groups:
                groups.append(self.group)
        return line, data

    def resolve_groups(self, names: set[str]) -> None:
        missing = [n for n in names if n not in self.group_ids]
        if not missing:
            return
        found = dict(ContactGroup.objects.filter(name__in=missing).values_list("name", "id"))
        new = [n for n in missing if n not in found]
        if new:
            self.result.groups_created.extend(sorted(new))
            if not self.dry_run:
                ContactGroup.objects.bulk_create(
                    [ContactGroup(name=n) for n in new], ignore_conflicts=True
                )
                found.update(ContactGroup.objects.filter(name__in=new).values_list("name", "id"))
        for name in missing:
            self.group_ids[name] = found.get(name)

    def flush(self, batch: list[tuple[int, dict[str, Any]]]) -> None:
        if not batch:
            return
        result = self.result
        now = timezone.now()
        phones = [data["phone"] for _line, data in batch]
        existing = {
            c.phone: c
            for c in Contact.objects.filter(phone__in=phones).only(
                "id", "phone", "opted_out_at", *self.fields_in_file
            )
        }
        group_names = {g for _line, data in batch for g in data.get("groups", ())}
        self.resolve_groups(group_names)
        memberships: set[tuple[int, int]] = set()
        if group_names and existing:
            through = Contact.groups.through
            memberships = set(
                through.objects.filter(
                    contact_id__in=[c.pk for c in existing.values()]
                ).values_list("contact_id", "contactgroup_id")
            )
        to_create: list[Contact] = []
        to_update: list[Contact] = []
        wanted_groups: list[tuple[Contact, list[str]]] = []
        for _line, data in batch:
            contact = existing.get(data["phone"])
            groups = data.get("groups", [])
            if contact is None:
                contact = Contact(**{f: data[f] for f in self.fields_in_file if f in data})
                contact.phone = data["phone"]
                if contact.opted_out:
                    contact.opted_out_at = now
                to_create.append(contact)
                result.created += 1
            else:
                changed = False
                for name in self.fields_in_file:
                    if name in data and getattr(contact, name) != data[name]:
                        setattr(contact, name, data[name])
                        changed = True
                        if name == "opted_out":
                            contact.opted_out_at = now if data[name] else None
                new_groups = [
                    g
                    for g in groups
                    if self.group_ids.get(g) is None
                    or (contact.pk, self.group_ids[g]) not in memberships
                ]
                if changed:
                    contact.updated_at = now
                    to_update.append(contact)
                if changed or new_groups:
                    result.updated += 1
                else:
                    result.unchanged += 1
            if groups:
                wanted_groups.append((contact, groups))
        if self.dry_run:
            return
        if to_create:
            insert_contacts(to_create, now)
            if wanted_groups:
                ids = dict(
                    Contact.objects.filter(phone__in=[c.phone for c in to_create]).values_list(
                        "phone", "id"
                    )
                )
                for contact in to_create:
                    contact.pk = ids[contact.phone]
        if to_update:
            update_fields = [*self.fields_in_file, "updated_at"]
            if "opted_out" in update_fields:
                update_fields.append("opted_out_at")
            Contact.objects.bulk_update(to_update, update_fields, batch_size=500)
        if wanted_groups:
            through = Contact.groups.through
            Contact.groups.through.objects.bulk_create(
                [
                    through(contact_id=contact.pk, contactgroup_id=self.group_ids[name])
                    for contact, names in wanted_groups
                    for name in names
                    if (contact.pk, self.group_ids[name]) not in memberships
                ],
                batch_size=1000,
                ignore_conflicts=True,
            )


def insert_contacts(contacts: list[Contact], now: Any, chunk_size: int = 1000) -> None:
    """INSERT new contacts through ``bulk.insert_rows``: the import's hot path.

    Timestamps are set here (no ``save()`` runs), datetimes are prepared once, and the ids are
    not read back (callers look them up by phone when they need them).
    """
    from django.db import connection
    from django.db.models import DateTimeField

    from .bulk import insert_rows

    fields = [f for f in Contact._meta.concrete_fields if not f.primary_key]
    for contact in contacts:
        contact.created_at = contact.updated_at = now
    prepared_now = DateTimeField().get_db_prep_save(now, connection)

    def value(field: Any, contact: Contact) -> Any:
        raw = getattr(contact, field.attname)
        if isinstance(field, DateTimeField):
            if raw is None:
                return None
            return prepared_now if raw is now else field.get_db_prep_save(raw, connection)
        return raw

    columns = [f.column for f in fields]
    for start in range(0, len(contacts), chunk_size):
        rows = [
            tuple(value(field, contact) for field in fields)
            for contact in contacts[start : start + chunk_size]
        ]
        insert_rows(Contact._meta.db_table, columns, rows)
