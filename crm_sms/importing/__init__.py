"""Contact import from CSV and XLSX: the one code path of the admin and ``import_contacts``.

What it promises:

- CSV in UTF-8 (with or without BOM), UTF-16 (with BOM) or Windows-1251, detected; ``,``, ``;``
  or tab, detected from the header line; XLSX (the first sheet). Explicit options override.
- Columns by field name or by their Russian or English titles (``Телефон``, ``Phone``, ``ФИО``…).
- Phones normalized with :func:`crm_sms.phones.normalize_phone` (Excel's numeric phones too).
- Every bad row is reported with its line number and the reason, and skipped; the good rows are
  imported. A phone repeated in the file is reported on every repeat, as written there (the
  first row wins). A row that only loses a cell is imported with a warning: an e-mail that is
  not one (left out), a phone's extension (``доб. 5``, dropped).
- A check (``dry_run``) says what each column of the file is taken for, and shows the first
  good rows as they will be imported and the first rows whose phone is a known contact's.
- Contacts are matched by phone: a known phone updates the contact (the columns present in the
  file overwrite; absent columns are kept; groups are added, never removed), a new one creates it.
- It is bulk: a few queries per batch of rows; the whole import is one transaction (a
  background job, :mod:`.jobs`, commits batch by batch and goes on where it stopped).
- Its work is bounded whatever the file claims: size, unpacked size, rows (:mod:`.limits`).

The steps live in :mod:`.reading` (the file as a table), :mod:`.cleaning` (columns and cells)
and :mod:`.writing` (contacts and groups).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from django.db import transaction

from .cleaning import (
    COLUMN_TITLES,
    FIELD_LABELS,
    FULL_NAME,
    IMPORT_FIELDS,
    RowError,
    clean_row,
    match_columns,
    normalize_header,
    parse_bool,
    split_groups,
)
from .limits import Limits, too_many_rows
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
from .writing import MATCHES_SHOWN, MAX_KEPT_ERRORS, PREVIEW_ROWS, ContactWriter

#: A result keeps the titles of the file's first this many columns (a sheet may have 16 384).
MAX_HEADERS = 200

__all__ = [
    "COLUMN_TITLES",
    "CSV",
    "FORMATS",
    "Checkpoints",
    "FIELD_LABELS",
    "FULL_NAME",
    "IMPORT_FIELDS",
    "Limits",
    "MATCHES_SHOWN",
    "MAX_KEPT_ERRORS",
    "MAX_HEADERS",
    "PREVIEW_ROWS",
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
    # Every titled column in the file's order: [position, title as written, field or ""].
    headers: list[list[Any]] = field(default_factory=list)
    dry_run: bool = False
    rows: int = 0  # data rows read (blank rows are not counted)
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # bad rows, not imported
    duplicates: int = 0  # rows whose phone repeats an earlier row (counted in skipped too)
    errors: list[RowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS
    warned: int = 0  # rows imported with a warning (a cell left out)
    warnings: list[RowError] = field(default_factory=list)  # the first MAX_KEPT_ERRORS
    # The first PREVIEW_ROWS good rows as they will be imported, and the first MATCHES_SHOWN
    # rows whose phone is a known contact's (see ContactWriter.add_preview and note_fate).
    preview: list[dict[str, Any]] = field(default_factory=list)
    matches: list[dict[str, Any]] = field(default_factory=list)
    groups_created: list[str] = field(default_factory=list)
    # False when the import stopped before the end of the file: a preview reached its rows,
    # or a background job was asked to stop (it goes on from ``line`` later).
    complete: bool = True
    line: int = 0  # the last line read: every row up to it is done

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
            "headers": self.headers,
            "dry_run": self.dry_run,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "groups_created": self.groups_created,
            "complete": self.complete,
            "line": self.line,
            "errors": [e.as_dict() for e in self.errors],
            "warned": self.warned,
            "warnings": [w.as_dict() for w in self.warnings],
            "preview": self.preview,
            "matches": self.matches,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImportResult:
        """The result ``as_dict`` gave (a background job keeps it as JSON)."""
        names = {f for f in cls.__dataclass_fields__ if f not in ("errors", "warnings")}
        result = cls(**{k: v for k, v in data.items() if k in names})
        result.errors = [RowError(**e) for e in data.get("errors", ())]
        result.warnings = [RowError(**w) for w in data.get("warnings", ())]
        return result


ProgressCallback = Callable[[ImportResult], None]


@dataclass
class Checkpoints:
    """How a background job runs an import (:mod:`.jobs`): every batch is its own transaction,
    committed with ``save(result, fraction)`` (the job's progress: what is committed is what
    the job says). ``resume``, a result saved before (``as_dict``), says the rows up to its
    ``line`` are done: they are read again only to learn their phones. ``stop()`` is asked
    after each batch; True ends the import there with ``complete`` False."""

    save: Callable[[ImportResult, float | None], None]
    resume: dict[str, Any] | None = None
    stop: Callable[[], bool] = lambda: False


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
    limits: Limits | None = None,
    preview_rows: int | None = None,
    checkpoints: Checkpoints | None = None,
) -> ImportResult:
    """Import contacts from a CSV or XLSX ``source``; see the module docstring for the rules.

    ``group`` adds every imported contact to that group (created when missing). With
    ``dry_run`` nothing is written and the result says what would happen. ``progress`` is called
    with the running result after each batch. ``limits`` (the settings by default) bound the
    file; ``preview_rows`` stops a dry run after that many rows (``complete`` is False when
    more follow). ``checkpoints``: commit batch by batch for a background job (else the import
    is one transaction). Raises ValidationError when the file as a whole cannot be read (no
    phone column, wrong encoding, over a limit…); bad rows never raise, they are reported.
    """
    limits = limits or Limits.from_settings()
    table = open_table(
        source,
        filename=filename,
        format=format,
        encoding=encoding,
        delimiter=delimiter,
        limits=limits,
    )
    try:
        columns, ignored = match_columns(table.headers)
        result = ImportResult(
            format=table.format,
            encoding=table.encoding,
            delimiter=table.delimiter,
            columns={table.headers[p]: name for p, name in columns.items()},
            ignored_columns=ignored,
            headers=[
                [position, str(title).strip(), columns.get(position, "")]
                for position, title in enumerate(table.headers[:MAX_HEADERS])
                if str(title or "").strip()
            ],
            dry_run=dry_run,
        )
        writer = ContactWriter(result, columns, " ".join((group or "").split()), dry_run)
        loop = _RowLoop(table, writer, limits, batch_size, progress, checkpoints)
        loop.preview_rows = preview_rows
        if checkpoints is None:
            with transaction.atomic():
                loop.run()
        else:
            loop.resume(checkpoints.resume)
            loop.run()
        return result
    finally:
        table.close()


class _RowLoop:
    """Reads the rows of one import and hands them to the writer a batch at a time."""

    preview_rows: int | None = None

    def __init__(
        self,
        table: Table,
        writer: ContactWriter,
        limits: Limits,
        batch_size: int,
        progress: ProgressCallback | None,
        checkpoints: Checkpoints | None,
    ):
        self.table, self.writer, self.limits = table, writer, limits
        self.result = writer.result
        self.batch_size = batch_size
        self.progress, self.checkpoints = progress, checkpoints
        self.positions = sorted(writer.columns)
        self.done_line = 0  # rows up to this line were done by an earlier run

    def resume(self, saved: dict[str, Any] | None) -> None:
        """Go on from a result saved by an earlier run of the same job."""
        if not saved:
            return
        old = ImportResult.from_dict(saved)
        result = self.result
        for name in ("rows", "created", "updated", "unchanged", "skipped", "duplicates", "warned"):
            setattr(result, name, getattr(old, name))
        result.errors, result.groups_created = old.errors, old.groups_created
        result.warnings, result.preview, result.matches = old.warnings, old.preview, old.matches
        if result.dry_run:  # groups it would create are not in the database
            self.writer.group_ids.update(dict.fromkeys(old.groups_created))
        self.done_line = result.line = old.line

    def run(self) -> None:
        result, writer = self.result, self.writer
        batch: list = []
        read = line = 0  # rows read since the last batch (blank and bad ones too), the line
        for count, (line, values) in enumerate(self.table.rows(self.positions[-1] + 1), 1):
            read += 1
            if self.preview_ends(count):
                break
            if line <= self.done_line:
                self.remember_phone(line, values)
            elif not self.is_blank(values):
                if self.preview_rows is not None and result.rows >= self.preview_rows:
                    result.complete = False  # more rows follow: the preview ends before them
                    break
                if result.rows >= self.limits.max_rows:
                    raise too_many_rows(self.limits)
                row = writer.accept_row(line, values)
                if row is not None:
                    batch.append(row)
            if len(batch) >= self.batch_size or read >= self.batch_size:
                if not self.flush(batch, line):
                    return
                batch, read = [], 0
        self.flush(batch, line)

    def preview_ends(self, count: int) -> bool:
        """A preview reads at most ten times its rows in all, blank ones included."""
        if self.preview_rows is None or count <= 10 * self.preview_rows:
            return False
        self.result.complete = False
        return True

    def is_blank(self, values: Sequence[Any]) -> bool:
        """No value in any column the import uses."""
        for position in self.positions:
            value = values[position] if position < len(values) else None
            if not (value is None or (isinstance(value, str) and not value.strip())):
                return False
        return True

    def remember_phone(self, line: int, values: Sequence[Any]) -> None:
        """A row done by an earlier run: its phone counts for the repeats that follow."""
        data, problems = clean_row(line, list(values), self.writer.columns)
        if data.get("phone") and all(p.warning for p in problems):
            self.writer.seen.setdefault(data["phone"], line)

    def flush(self, batch: list, line: int) -> bool:
        """Write ``batch`` (rows up to ``line``); False when the job asks to stop here."""
        result = self.result
        result.line = max(result.line, line)
        if self.checkpoints is None:
            self.writer.write_batch(batch)
        else:
            with transaction.atomic():
                self.writer.write_batch(batch)
                self.checkpoints.save(result, self.table.fraction())
        if self.progress:
            self.progress(result)
        if self.checkpoints is not None and self.checkpoints.stop():
            result.complete = False
            return False
        return True
