"""``manage.py sms_status [--provider NAME] [--batch-size N]``: poll delivery statuses once."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import conf
from ...inbox import drain_spool
from ...polling import poll_statuses


class Command(BaseCommand):
    help = (
        "Apply the delivery reports spooled while the database was unavailable, ask providers "
        "that can be polled (e.g. SMS.RU) about messages still 'sent', apply the answers, and "
        "mark messages past the provider's report window undelivered. Prints counts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--provider", help="Poll only this provider alias.")
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Messages per query (default 500)."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print the counts as JSON."
        )

    def handle(self, *args, provider=None, batch_size=500, as_json=False, **options) -> None:
        if provider and provider not in conf.provider_aliases():
            known = ", ".join(conf.provider_aliases()) or "none"
            raise CommandError(f"No provider {provider!r} is configured (configured: {known}).")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        spooled = drain_spool()
        counts = poll_statuses(provider=provider, batch_size=batch_size)
        if as_json:
            self.stdout.write(json.dumps({**counts, "spooled": spooled}))
            return
        if spooled["files"] or spooled["broken"] or spooled["left"]:
            self.stdout.write(
                "Applied {files} spooled report file(s) (kept while the database was "
                "unavailable): {applied} report(s) changed a status; {broken} file(s) set "
                "aside as broken.".format(**{"applied": 0, **spooled})
            )
        if not counts["providers"]:
            self.stdout.write("No configured provider can be polled (status is push-only).")
            return
        self.stdout.write(
            "Polled {providers} provider(s): {checked} message(s) checked, {changed} changed, "
            "{unchanged} unchanged, {expired} past the report window marked undelivered, "
            "{errors} error(s).".format(**counts)
        )
        if counts["errors"]:
            raise CommandError(f"{counts['errors']} provider query(ies) failed; see the log.")
