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
- It is bulk: a few queries per batch of rows; the whole import is one transaction.

The steps live in :mod:`.reading` (the file as a table), :mod:`.cleaning` (columns and cells)
and :mod:`.writing` (contacts and groups).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.db import transaction

from .cleaning import (
    COLUMN_TITLES,
    FULL_NAME,
    IMPORT_FIELDS,
    RowError,
    clean_row,
    match_columns,
    normalize_header,
    parse_bool,
    split_groups,
)
from .reading import (
    CSV,
    FORMATS,
    XLSX,
    Table,
    detect_delimiter,
    detect_encoding,
    detect_format,
    open_table,
    parse_delimiter,
)
from .writing import MAX_KEPT_ERRORS, ContactWriter

__all__ = [
    "COLUMN_TITLES",
    "CSV",
    "FORMATS",
    "FULL_NAME",
    "IMPORT_FIELDS",
    "MAX_KEPT_ERRORS",
    "XLSX",
    "ImportResult",
    "ProgressCallback",
    "RowError",
    "Table",
    "clean_row",
    "detect_delimiter",
    "detect_encoding",
    "detect_format",
    "import_contacts",
    "match_columns",
    "normalize_header",
    "open_table",
    "parse_bool",
    "parse_delimiter",
    "split_groups",
]


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
    errors: list[RowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS
    groups_created: list[str] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated + self.unchanged

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


ProgressCallback = Callable[[ImportResult], None]


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
        writer = ContactWriter(result, columns, " ".join((group or "").split()), dry_run)
        with transaction.atomic():
            batch = []
            for line, values in table.rows:
                if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
                    continue
                row = writer.accept_row(line, values)
                if row is not None:
                    batch.append(row)
                if len(batch) >= batch_size:
                    writer.write_batch(batch)
                    batch = []
                    if progress:
                        progress(result)
            writer.write_batch(batch)
        if progress:
            progress(result)
        return result
    finally:
        table.close()
