"""The import's limits, read from ``CRM_SMS`` with safe defaults, and the checks that apply them.

A hostile or careless file must not keep a worker (or a web request) busy for minutes or fill
its memory:

- ``IMPORT_MAX_FILE_BYTES``: the size of the file as uploaded (CSV or XLSX).
- ``IMPORT_MAX_UNPACKED_BYTES`` and ``IMPORT_MAX_COMPRESSION_RATIO``: an XLSX is a ZIP archive;
  its central directory is read (no byte is unpacked) and refused when its parts add up to more
  than the limit, or when a part is packed more tightly than real spreadsheets are (a zip bomb).
  Python's ``zipfile`` never unpacks more than a part's declared size (the CRC check fails),
  so the declared sizes are a real bound on the work.
- ``IMPORT_MAX_ROWS``: data rows (blank rows are not counted); more is an error, not a cut.
- ``IMPORT_IN_REQUEST_ROWS`` and ``IMPORT_IN_REQUEST_BYTES``: what the admin reads inside a web
  request; a bigger file is checked and imported by a background job (:mod:`.jobs`).

Every refusal is a ValidationError that names the limit and the setting that raises it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.core.exceptions import ValidationError
from django.template.defaultfilters import filesizeformat
from django.utils.formats import number_format
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import conf

MB = 1024 * 1024

#: The defaults of the import settings (``CRM_SMS[...]`` overrides each).
DEFAULTS = {
    "IMPORT_MAX_FILE_BYTES": 100 * MB,
    "IMPORT_MAX_UNPACKED_BYTES": 300 * MB,
    "IMPORT_MAX_COMPRESSION_RATIO": 100,
    "IMPORT_MAX_ROWS": 1_000_000,
    "IMPORT_IN_REQUEST_ROWS": 5_000,
    "IMPORT_IN_REQUEST_BYTES": 5 * MB,
    "IMPORT_JOB_TIMEOUT": 300,
    "IMPORT_DIR": None,
    "IMPORT_CELERY": False,
}

#: Parts smaller than this are not judged by their compression ratio (a tiny part of repeated
#: text may pack very tightly and costs nothing to unpack).
RATIO_MIN_PART_BYTES = MB

#: Excel's last row. No spreadsheet program writes a row beyond it: a file that does is forged,
#: and openpyxl would fill the gap up to it with empty rows.
XLSX_MAX_ROW = 1_048_576


def import_setting(name: str):
    """``CRM_SMS[name]``, or the import default."""
    return conf.sms_settings().get(name, DEFAULTS[name])


@dataclass(frozen=True)
class Limits:
    """The limits one import runs under (the settings unless a caller passes its own)."""

    max_file_bytes: int
    max_unpacked_bytes: int
    max_compression_ratio: float
    max_rows: int

    @classmethod
    def from_settings(cls) -> Limits:
        return cls(
            max_file_bytes=int(import_setting("IMPORT_MAX_FILE_BYTES")),
            max_unpacked_bytes=int(import_setting("IMPORT_MAX_UNPACKED_BYTES")),
            max_compression_ratio=float(import_setting("IMPORT_MAX_COMPRESSION_RATIO")),
            max_rows=int(import_setting("IMPORT_MAX_ROWS")),
        )


def _setting(name: str) -> str:
    return f'CRM_SMS["{name}"]'


def _number(value: float) -> str:
    """``1 000 000`` / ``1,000,000``: a number in the active language, whole when it is."""
    if float(value).is_integer():
        value = int(value)
    return number_format(value, force_grouping=True)


def check_file_size(size: int, limits: Limits) -> None:
    """Refuse a file bigger than ``IMPORT_MAX_FILE_BYTES``."""
    if size > limits.max_file_bytes:
        raise ValidationError(
            _(
                "The file is %(size)s, more than the import limit of %(limit)s "
                "(the setting %(setting)s). Split the file or ask the administrator to raise "
                "the limit."
            )
            % {
                "size": filesizeformat(size),
                "limit": filesizeformat(limits.max_file_bytes),
                "setting": _setting("IMPORT_MAX_FILE_BYTES"),
            },
            code="file_too_big",
        )


def check_archive(stream: BinaryIO, limits: Limits) -> int:
    """Refuse an XLSX (ZIP) whose parts unpack to more than ``IMPORT_MAX_UNPACKED_BYTES`` or
    are packed more tightly than ``IMPORT_MAX_COMPRESSION_RATIO``; returns the unpacked size.

    Reads only the archive's directory. Leaves ``stream`` at its start. A file that is not a
    ZIP raises ``zipfile.BadZipFile`` (the caller words it).
    """
    try:
        with zipfile.ZipFile(stream) as archive:
            parts = archive.infolist()
    finally:
        stream.seek(0)
    total = sum(part.file_size for part in parts)
    if total > limits.max_unpacked_bytes:
        raise ValidationError(
            _(
                "The workbook unpacks to %(size)s, more than the import limit of %(limit)s "
                "(the setting %(setting)s). Save it as CSV, or split it."
            )
            % {
                "size": filesizeformat(total),
                "limit": filesizeformat(limits.max_unpacked_bytes),
                "setting": _setting("IMPORT_MAX_UNPACKED_BYTES"),
            },
            code="unpacked_too_big",
        )
    for part in parts:
        if part.file_size < RATIO_MIN_PART_BYTES:
            continue
        ratio = part.file_size / max(part.compress_size, 1)
        if ratio > limits.max_compression_ratio:
            raise ValidationError(
                ngettext(
                    "The workbook's part %(part)s unpacks %(ratio)s time bigger than it is "
                    "stored, more than the limit of %(limit)s (the setting %(setting)s): real "
                    "spreadsheets do not compress that well, so it is refused as a possible "
                    "zip bomb.",
                    "The workbook's part %(part)s unpacks %(ratio)s times bigger than it is "
                    "stored, more than the limit of %(limit)s (the setting %(setting)s): real "
                    "spreadsheets do not compress that well, so it is refused as a possible "
                    "zip bomb.",
                    int(ratio),
                )
                % {
                    "part": part.filename,
                    "ratio": _number(int(ratio)),
                    "limit": _number(limits.max_compression_ratio),
                    "setting": _setting("IMPORT_MAX_COMPRESSION_RATIO"),
                },
                code="compression_ratio",
            )
    return total


def check_stored_file(path: Path, limits: Limits) -> int:
    """Check a stored upload against the size limits (an XLSX: its archive's directory only)
    and return the bytes an import reads: the file's, or the XLSX's parts unpacked."""
    size = path.stat().st_size
    check_file_size(size, limits)
    with open(path, "rb") as stream:
        if stream.read(4) != b"PK\x03\x04":
            return size
        stream.seek(0)
        try:
            return check_archive(stream, limits)
        except zipfile.BadZipFile:
            return size  # the import says what is wrong with it


def too_many_rows(limits: Limits) -> ValidationError:
    """The error for a file with more than ``IMPORT_MAX_ROWS`` data rows."""
    return ValidationError(
        ngettext(
            "The file has more than %(limit)s row, the import limit (the setting %(setting)s). "
            "Split the file or ask the administrator to raise the limit.",
            "The file has more than %(limit)s rows, the import limit (the setting %(setting)s). "
            "Split the file or ask the administrator to raise the limit.",
            limits.max_rows,
        )
        % {"limit": _number(limits.max_rows), "setting": _setting("IMPORT_MAX_ROWS")},
        code="too_many_rows",
    )


def row_beyond_sheet(line: int) -> ValidationError:
    """The error for an XLSX row numbered beyond Excel's last row (a forged file)."""
    return ValidationError(
        _(
            "The workbook has a row numbered %(line)s, beyond Excel's last row %(last)s: the "
            "file is damaged or forged. Save it again from Excel, or as CSV."
        )
        % {"line": _number(line), "last": _number(XLSX_MAX_ROW)},
        code="row_beyond_sheet",
    )
