"""``manage.py import_contacts FILE``: the admin's contact import, for files too big to upload."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from crm_sms.importing import ImportResult, import_contacts


class Command(BaseCommand):
    help = (
        "Import contacts from a CSV or XLSX file (format, encoding and delimiter are detected: "
        "a 1C or Excel export needs no options). Bad rows are listed and skipped; known phones "
        "update their contacts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="a .csv or .xlsx file")
        parser.add_argument("--format", choices=["csv", "xlsx"], help="default: detected")
        parser.add_argument("--encoding", help="CSV encoding, e.g. utf-8 or cp1251 (detected)")
        parser.add_argument("--delimiter", help="CSV delimiter: ',', ';' or 'tab' (detected)")
        parser.add_argument("--group", help="add every imported contact to this group")
        parser.add_argument(
            "--dry-run", action="store_true", help="check the file and report; write nothing"
        )
        parser.add_argument("--batch-size", type=int, default=2000)
        parser.add_argument("--json", action="store_true", help="print the result as JSON")
        parser.add_argument(
            "--max-errors", type=int, default=50, help="how many bad rows to list (default 50)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        quiet = options["json"] or options["verbosity"] == 0

        def progress(result: ImportResult) -> None:
            if quiet:
                return
            rate = result.rows / max(time.monotonic() - started, 1e-6)
            self.stderr.write(
                f"\r{result.rows} rows: {result.created} new, {result.updated} updated, "
                f"{result.unchanged} unchanged, {result.skipped} bad ({rate:.0f} rows/s)",
                ending="",
            )
            self.stderr.flush()

        try:
            result = import_contacts(
                options["file"],
                format=options["format"],
                encoding=options["encoding"],
                delimiter=options["delimiter"],
                group=options["group"],
                dry_run=options["dry_run"],
                batch_size=options["batch_size"],
                progress=progress,
            )
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        except OSError as exc:
            raise CommandError(f"{options['file']}: {exc.strerror or exc}") from exc
        if not quiet:
            self.stderr.write("")
        if options["json"]:
            self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
            return
        self.report(result, options["max_errors"])

    def report(self, result: ImportResult, max_errors: int) -> None:
        detected = result.format.upper()
        if result.encoding:
            delimiter = {"\t": "tab"}.get(result.delimiter or "", result.delimiter)
            detected += f", {result.encoding}, delimiter {delimiter!r}"
        self.stdout.write(f"File: {detected}; columns: {', '.join(result.columns)}")
        if result.ignored_columns:
            self.stdout.write(f"Ignored columns: {', '.join(result.ignored_columns)}")
        for error in result.errors[:max_errors]:
            where = f" [{error.column}]" if error.column else ""
            self.stdout.write(f"line {error.line}{where}: {error.message}")
        if result.skipped > max_errors:
            self.stdout.write(f"… and more: {result.skipped} bad rows in all")
        verb = "would be" if result.dry_run else "were"
        summary = (
            f"{result.rows} rows: {result.created} contacts {verb} created, {result.updated} "
            f"updated, {result.unchanged} unchanged, {result.skipped} bad rows skipped "
            f"({result.duplicates} repeated phones)."
        )
        if result.groups_created:
            summary += f" New groups: {', '.join(result.groups_created)}."
        if result.dry_run:
            summary += " Dry run: nothing was written."
        style = self.style.WARNING if result.skipped else self.style.SUCCESS
        self.stdout.write(style(summary))
