"""``manage.py sms_reports``: apply queued delivery reports (``CRM_SMS["REPORTS"] = "queued"``)."""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import Counter
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, close_old_connections

from ...inbox import QUEUE_BATCH, apply_queued_reports
from ...models import QueuedReport

logger = logging.getLogger("crm_sms.inbox")

#: A running applier prints a line about what it did at most this often, seconds.
PRINT_INTERVAL = 10.0


class Command(BaseCommand):
    help = (
        "Apply the delivery reports the callback endpoint queued (CRM_SMS['REPORTS'] = "
        "'queued'), a batch per transaction, until stopped (SIGTERM or Ctrl-C finish the batch "
        "in hand). Several may run at once: a queued report is applied once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="apply what is queued, then exit")
        parser.add_argument(
            "--batch-size", type=int, default=QUEUE_BATCH, help="rows per transaction (500)"
        )
        parser.add_argument(
            "--sleep", type=float, default=0.2, help="seconds to wait when the queue is empty"
        )
        parser.add_argument(
            "--retry-broken",
            action="store_true",
            help="clear the error of rows set aside as broken first, so they are tried again",
        )
        parser.add_argument("--json", action="store_true", dest="as_json", help="counts as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["retry_broken"]:
            cleared = QueuedReport.objects.exclude(error="").update(error="")
            self.stdout.write(f"{cleared} broken row(s) will be tried again.")
        if options["once"]:
            counts = apply_queued_reports(batch_size=options["batch_size"])
            self._print(counts, options["as_json"])
            return
        stop = threading.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
        try:
            self._loop(stop, options["batch_size"], options["sleep"], options["as_json"])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _loop(self, stop: threading.Event, batch_size: int, sleep: float, as_json: bool) -> None:
        """Apply batches until ``stop``; wait ``sleep`` when the queue is empty, a second after
        a database error (logged: the rows stay queued)."""
        done: Counter = Counter()
        printed = time.monotonic()
        while not stop.is_set():
            try:
                counts = apply_queued_reports(max_seconds=PRINT_INTERVAL, batch_size=batch_size)
            except DatabaseError:
                logger.exception("Applying queued delivery reports failed; retrying in a second")
                close_old_connections()
                stop.wait(1.0)
                continue
            done.update(counts)
            if time.monotonic() - printed >= PRINT_INTERVAL and (done["rows"] or done["broken"]):
                self._print(done, as_json)
                done, printed = Counter(), time.monotonic()
            if counts["rows"] + counts["broken"] < batch_size:
                stop.wait(sleep)
        if done["rows"] or done["broken"]:
            self._print(done, as_json)

    def _print(self, counts: dict[str, int], as_json: bool) -> None:
        if as_json:
            self.stdout.write(json.dumps(dict(counts)))
            return
        self.stdout.write(
            "Applied {rows} queued request(s): {applied} report(s) changed a status, "
            "{duplicate} repeated, {stale} out of date, {unknown} unknown, {invalid} invalid; "
            "{broken} row(s) set aside as broken.".format_map(Counter(counts))
        )
