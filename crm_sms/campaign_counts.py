"""Messages per (campaign, status), kept up to date instead of counted per page.

``CampaignStatusCount`` holds one row per status a campaign's messages are in. Every write that
changes those numbers adds to it in its own transaction: inserting a campaign's messages
(``outbox.inserting``) and every status move (``transitions.move_messages``), one UPSERT per
batch. A deleted campaign takes its rows along (the foreign key cascades); messages are never
deleted otherwise (erasure anonymises them). ``recount`` rebuilds the table from the messages,
for a database changed by hand (``manage.py sms_recount``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from django.db import connection, transaction

from .models import CampaignStatusCount, Message

#: Rows per UPSERT (3 parameters each: well under every database's limit).
_CHUNK = 300


def _table() -> str:
    return connection.ops.quote_name(CampaignStatusCount._meta.db_table)


def add_counts(deltas: Mapping[tuple[int, str], int]) -> None:
    """Add ``deltas`` ``{(campaign id, status): n}`` (n may be negative) to the counts, in the
    caller's transaction: one ``INSERT … ON CONFLICT DO UPDATE`` (PostgreSQL, SQLite ≥ 3.24)
    per few hundred keys. Keys in sorted order, so concurrent writers lock the rows alike."""
    rows = sorted((key, n) for key, n in deltas.items() if n and key[0] is not None)
    if not rows:
        return
    head = f"INSERT INTO {_table()} (campaign_id, status, count) VALUES "  # noqa: S608 (a name)
    tail = " ON CONFLICT (campaign_id, status) DO UPDATE SET count = {t}.count + excluded.count"
    tail = tail.format(t=_table())
    with connection.cursor() as cursor:
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            values = ", ".join(["(%s, %s, %s)"] * len(chunk))
            params = [
                value for (campaign_id, status), n in chunk for value in (campaign_id, status, n)
            ]
            cursor.execute(head + values + tail, params)


def counts_for(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """Messages per status for each of ``campaign_ids`` (each present, ``{}`` if it has none);
    statuses with no message left are omitted."""
    ids = list(campaign_ids)
    counts: dict[int, dict[str, int]] = {pk: {} for pk in ids}
    if not ids:
        return counts
    rows = CampaignStatusCount.objects.filter(campaign_id__in=ids, count__gt=0).values_list(
        "campaign_id", "status", "count"
    )
    for campaign_id, status, n in rows:
        counts[campaign_id][status] = n
    return counts


def recount(campaign_ids: Iterable[int] | None = None) -> int:
    """Rebuild the counts of ``campaign_ids`` (None: all campaigns) from the messages, in one
    transaction; returns the rows written."""
    table = _table()
    message = connection.ops.quote_name(Message._meta.db_table)
    where, params = "", []
    ids = None if campaign_ids is None else list(campaign_ids)
    if ids is not None:
        if not ids:
            return 0
        where = f" AND campaign_id IN ({', '.join(['%s'] * len(ids))})"
        params = ids
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Writers wait from here to our commit: one that moved messages before it is in
            # the count below, one after adds its delta to it (SQLite locks the whole file).
            cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        if ids is None:
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (names, not input)
        else:
            cursor.execute(f"DELETE FROM {table} WHERE 1 = 1{where}", params)  # noqa: S608
        cursor.execute(
            f"INSERT INTO {table} (campaign_id, status, count) "  # noqa: S608
            f"SELECT campaign_id, status, COUNT(*) FROM {message} "
            f"WHERE campaign_id IS NOT NULL{where} GROUP BY campaign_id, status",
            params,
        )
        return cursor.rowcount
