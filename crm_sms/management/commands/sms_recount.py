"""``manage.py sms_recount [--campaign ID ...]``: rebuild the messages per (campaign, status)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from ...campaign_counts import counts_for, recount
from ...models import Campaign

#: Campaigns per transaction: each locks the counts table briefly, not for the whole run.
CHUNK = 200


class Command(BaseCommand):
    help = (
        "Recompute the message counts per campaign and status (shown by the admin's campaign "
        "list) from the messages: needed only after messages were changed by hand in the "
        "database. Safe while workers run."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--campaign", type=int, action="append", dest="campaigns", help="Only this campaign id."
        )

    def handle(self, *args, campaigns: list[int] | None = None, **options) -> None:
        ids = list(
            Campaign.objects.filter(**({"pk__in": campaigns} if campaigns else {}))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        fixed = 0
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            before = counts_for(chunk)
            recount(chunk)
            after = counts_for(chunk)
            fixed += sum(before[pk] != after[pk] for pk in chunk)
            done = start + len(chunk)
            self.stdout.write(f"Recounted {done}/{len(ids)} campaigns, {fixed} corrected.")
        if not ids:
            self.stdout.write("No campaigns to recount.")
