"""``manage.py import_contacts FILE``: the admin's contact import, for files too big to upload."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from crm_sms.importing import FIELD_LABELS, ImportResult, RowError, import_contacts


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
            self.stderr.write(f"\r{progress_line(result, rate)}", ending="")
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
            detected += ", " + _("%(encoding)s, delimiter %(delimiter)r") % {
                "encoding": result.encoding,
                "delimiter": delimiter,
            }
        columns = ", ".join(
            f"{title} → {FIELD_LABELS[name]}" for _pos, title, name in result.headers if name
        )
        self.stdout.write(
            _("File: %(detected)s; columns: %(columns)s")
            % {"detected": detected, "columns": columns}
        )
        if result.ignored_columns:
            ignored = ", ".join(result.ignored_columns)
            self.stdout.write(_("Ignored columns: %(ignored)s") % {"ignored": ignored})
        titles = {name: title for _pos, title, name in result.headers if name}
        self.write_problems(
            [problem_line(error, titles) for error in result.errors[:max_errors]],
            result.skipped,
            lambda n: ngettext(
                "… and more: %(count)d bad row in all", "… and more: %(count)d bad rows in all", n
            ),
        )
        self.write_problems(
            [
                _("warning: %(problem)s") % {"problem": problem_line(warning, titles)}
                for warning in result.warnings[:max_errors]
            ],
            len(result.warnings),
            lambda n: ngettext(
                "… and more: %(count)d warning in all", "… and more: %(count)d warnings in all", n
            ),
        )
        style = self.style.WARNING if result.skipped or result.warned else self.style.SUCCESS
        self.stdout.write(style(summary(result)))

    def write_problems(self, lines: list[str], total: int, more: Callable[[int], str]) -> None:
        """The first problems, one per line, and "… and more" when there were ``total``."""
        for line in lines:
            self.stdout.write(line)
        if total > len(lines):
            self.stdout.write(counted(more(total), total))


def progress_line(result: ImportResult, rate: float) -> str:
    """The line the command rewrites while it reads: counts so far, every one in its plural
    form, and the speed."""
    return _("%(rows)s: %(created)s, %(updated)s, %(unchanged)s, %(bad)s (%(rate)s)") % {
        "rows": counted(ngettext("%(count)d row", "%(count)d rows", result.rows), result.rows),
        "created": counted(
            ngettext("%(count)d new", "%(count)d new", result.created), result.created
        ),
        "updated": counted(
            ngettext("%(count)d updated", "%(count)d updated", result.updated),
            result.updated,
        ),
        "unchanged": counted(
            ngettext("%(count)d unchanged", "%(count)d unchanged", result.unchanged),
            result.unchanged,
        ),
        "bad": counted(ngettext("%(count)d bad", "%(count)d bad", result.skipped), result.skipped),
        "rate": _("%(rate)d rows/s") % {"rate": rate},
    }


def counted(text: str, count: int) -> str:
    """A phrase from ``ngettext`` whose only placeholder is ``%(count)d``, filled. (The call
    sites keep ``ngettext`` themselves: makemessages finds the phrases there.)"""
    return text % {"count": count}


def problem_line(problem: RowError, titles: dict[str, str]) -> str:
    """``line 4 [Телефон] “+7 900 123-42-12”: …``: the column as the file titles it, and the
    value when the message does not quote it."""
    values = {"line": problem.line, "message": problem.message, "value": problem.value}
    if not problem.column:
        return _("line %(line)d: %(message)s") % values
    values["column"] = titles.get(problem.column, problem.column)
    if problem.value and problem.value not in problem.message:
        return _("line %(line)d [%(column)s] “%(value)s”: %(message)s") % values
    return _("line %(line)d [%(column)s]: %(message)s") % values


def summary(result: ImportResult) -> str:
    """The last line: what was (or would be) done, every count in its plural form."""
    if result.dry_run:
        created = counted(
            ngettext(
                "%(count)d contact would be created",
                "%(count)d contacts would be created",
                result.created,
            ),
            result.created,
        )
    else:
        created = counted(
            ngettext(
                "%(count)d contact was created", "%(count)d contacts were created", result.created
            ),
            result.created,
        )
    text = _("%(rows)s: %(created)s, %(updated)s, %(unchanged)s, %(skipped)s (%(repeats)s).") % {
        "rows": counted(ngettext("%(count)d row", "%(count)d rows", result.rows), result.rows),
        "created": created,
        "updated": counted(
            ngettext("%(count)d updated", "%(count)d updated", result.updated), result.updated
        ),
        "unchanged": counted(
            ngettext("%(count)d unchanged", "%(count)d unchanged", result.unchanged),
            result.unchanged,
        ),
        "skipped": counted(
            ngettext("%(count)d bad row skipped", "%(count)d bad rows skipped", result.skipped),
            result.skipped,
        ),
        "repeats": counted(
            ngettext("%(count)d repeated phone", "%(count)d repeated phones", result.duplicates),
            result.duplicates,
        ),
    }
    if result.warned:
        text += " " + counted(
            ngettext(
                "%(count)d row with a warning (a cell left out).",
                "%(count)d rows with a warning (a cell left out).",
                result.warned,
            ),
            result.warned,
        )
    if result.groups_created:
        text += " " + _("New groups: %(groups)s.") % {"groups": ", ".join(result.groups_created)}
    if result.dry_run:
        text += " " + _("Dry run: nothing was written.")
    return text
