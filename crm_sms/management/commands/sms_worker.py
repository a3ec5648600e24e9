"""``manage.py sms_worker``: run the outbox on this machine (claim, send, record, retry)."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from crm_sms.outbox import run_worker


class Command(BaseCommand):
    help = (
        "Send queued SMS: claims due messages in batches, sends them concurrently within the "
        "providers' rate limits, records results and retries. SIGTERM or Ctrl-C finish the "
        "requests in flight and give unsent messages back to the queue."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--once", action="store_true", help="send everything due now, then exit"
        )
        parser.add_argument("--concurrency", type=int, help="parallel requests (default 16)")
        parser.add_argument("--batch-size", type=int, help="messages claimed at a time (200)")
        parser.add_argument("--provider", help="only messages of this provider alias")

    def handle(self, *args: Any, **options: Any) -> None:
        stop = threading.Event()
        interrupted = []

        def request_stop(signum: int, frame: Any) -> None:
            if interrupted:  # a second Ctrl-C: stop waiting for the requests in flight
                raise KeyboardInterrupt
            interrupted.append(signum)
            self.stderr.write("Stopping: finishing requests in flight, giving back the rest…")
            stop.set()

        signals = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, request_stop) for sig in signals}
        try:
            summary = run_worker(
                once=options["once"],
                concurrency=options.get("concurrency"),
                batch_size=options.get("batch_size"),
                provider=options.get("provider"),
                stdout=self.stdout,
                stop=stop,
            )
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write(
            f"Done: sent {summary.sent}, failed {summary.failed}, retried {summary.retried}, "
            f"given back {summary.given_back} in {summary.seconds:.1f} s "
            f"({summary.rate:.1f} msg/s)"
        )
