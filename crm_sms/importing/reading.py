"""Reading an import file: CSV or XLSX opened as a :class:`Table` of rows with line numbers.

- CSV in UTF-8 (with or without BOM), UTF-16 (with BOM) or Windows-1251, detected; ``,``, ``;``
  or tab, detected from the header line. XLSX: the first sheet. Explicit options override.
- A file that cannot be read as a whole (empty, old .xls, unknown encoding, a line that does not
  decode or is not CSV) raises ValidationError naming the line where it can.
- Bounded work whatever the file claims (:mod:`.limits`): its size, an XLSX's unpacked size and
  compression ratio are checked before anything is unpacked; an XLSX row is read only as wide
  as the columns used, and only the rows the sheet has (its ``<dimension>`` is ignored).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from .cleaning import cell_text
from .limits import XLSX_MAX_ROW, Limits, check_archive, check_file_size, row_beyond_sheet

CSV = "csv"
XLSX = "xlsx"
FORMATS = (CSV, XLSX)
#: The column titles are the first non-blank row among the first this many of a sheet.
HEADER_SEARCH_ROWS = 100
DELIMITERS = {
    ",": ",",
    ";": ";",
    "\t": "\t",
    "tab": "\t",
    "\\t": "\t",
    "comma": ",",
    "semicolon": ";",
}


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
    """A file opened for import: what was detected, the titles, and the rows with line numbers.

    ``rows(width)`` yields ``(line, values)`` for every row after the titles; ``width`` says how
    many columns the caller uses (an XLSX row is read no wider). ``fraction()`` is how much of
    the file has been read, 0 to 1, when the format tells (CSV), else None.
    """

    format: str
    headers: list[str]
    read_rows: Callable[[int | None], Iterator[tuple[int, Sequence[Any]]]]
    encoding: str | None = None
    delimiter: str | None = None
    close: Callable[[], None] = lambda: None
    fraction: Callable[[], float | None] = lambda: None

    def rows(self, width: int | None = None) -> Iterator[tuple[int, Sequence[Any]]]:
        return self.read_rows(width)


def open_table(
    source: bytes | str | os.PathLike | BinaryIO,
    *,
    filename: str = "",
    format: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
    limits: Limits | None = None,
) -> Table:
    """Open ``source`` (bytes, a path or a binary file) as a table, detecting what is not given.

    Raises ValidationError for an empty or unreadable file, and for one over the ``limits``
    (the settings' by default): its size, and an XLSX's unpacked size and compression ratio.
    """
    limits = limits or Limits.from_settings()
    if isinstance(source, str | os.PathLike):
        filename = filename or str(source)
        stream: BinaryIO = open(source, "rb")  # noqa: SIM115 (closed by Table.close)
    elif isinstance(source, bytes | bytearray):
        stream = io.BytesIO(source)
    else:
        stream = source
    try:
        size = stream.seek(0, io.SEEK_END)
        stream.seek(0)
        check_file_size(size, limits)
        sample = stream.read(65536)
        stream.seek(0)
        if not sample:
            raise ValidationError(_("The file is empty."), code="empty_file")
        fmt = (format or "").lower() or detect_format(sample, filename)
        if fmt not in FORMATS:
            raise ValidationError(
                _("Unknown format %(format)r: use csv or xlsx.") % {"format": format},
                code="format",
            )
    except ValidationError:
        stream.close()
        raise
    if fmt == XLSX:
        return _open_xlsx(stream, limits)
    return _open_csv(stream, sample, encoding, parse_delimiter(delimiter), size)


def _open_xlsx(stream: BinaryIO, limits: Limits) -> Table:
    import openpyxl

    try:
        check_archive(stream, limits)  # before openpyxl unpacks a byte
        book = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except ValidationError:
        stream.close()
        raise
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        stream.close()
        raise ValidationError(
            _("The file cannot be read as an Excel workbook (.xlsx): %(error)s") % {"error": exc},
            code="bad_xlsx",
        ) from exc

    def close() -> None:
        book.close()
        stream.close()

    sheet = book.worksheets[0]
    # The size a sheet claims (<dimension ref="A1:XFD1048576"/>) is not trusted: openpyxl pads
    # every row to its width and adds empty rows up to its last row. Without it, a row is as
    # wide as the caller asks and the rows are those the sheet has.
    sheet.reset_dimensions()
    try:
        headers, header_line = _xlsx_headers(sheet)
    except ValidationError:
        close()
        raise

    def data_rows(width: int | None) -> Iterator[tuple[int, Sequence[Any]]]:
        width = min(width or len(headers), len(headers))
        if not width:
            return
        rows = sheet.iter_rows(min_row=header_line + 1, max_col=width, values_only=True)
        for line, values in enumerate(rows, start=header_line + 1):
            if line > XLSX_MAX_ROW:
                raise row_beyond_sheet(line)
            yield line, values

    return Table(XLSX, headers, data_rows, close=close)


def _xlsx_headers(sheet: Any) -> tuple[list[str], int]:
    """The first non-blank row of the first HEADER_SEARCH_ROWS, as titles (trailing blank
    cells dropped), and its line; ``([], 0)`` when there is none."""
    rows = sheet.iter_rows(max_row=HEADER_SEARCH_ROWS, values_only=True)
    for line, values in enumerate(rows, start=1):
        titles = [cell_text(v) for v in values]
        while titles and not titles[-1]:
            titles.pop()
        if titles:
            return titles, line
    return [], 0


def _open_csv(
    stream: BinaryIO, sample: bytes, encoding: str | None, delimiter: str | None, size: int
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

    def data_rows(width: int | None) -> Iterator[tuple[int, list[Any]]]:
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

    def fraction() -> float:
        return min(stream.tell() / size, 1.0) if size else 1.0

    return Table(
        CSV,
        headers,
        data_rows,
        encoding=encoding,
        delimiter=delimiter,
        close=text.close,
        fraction=fraction,
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
