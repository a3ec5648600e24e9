"""The SMS dashboard and a campaign's charts on a big PostgreSQL database: milliseconds and
queries.

    .venv/bin/python bench/dashboard.py [--messages 1000000] [--campaign 400000]
        [--database-url postgres://postgres@127.0.0.1:5432/crm_sms_charts] [--rebuild] [--loads 5]

The worst case for the dashboard: every message in the last 30 days (``--messages`` of them,
COPY through :mod:`crm_sms.bulk`), in every status, at three providers, with a dozen failure
reasons; the newest campaign (``--campaign`` messages) is running, sent over the last hours. The
database is built once and reused by name afterwards (later runs only migrate it).

Each page is loaded in-process with Django's test client as a logged-in superuser (DEBUG off),
with the cache cleared before each load (the dashboard caches its numbers for a minute): one
warm-up load, then ``--loads`` timed ones. Prints JSON: per page the median milliseconds, the
queries of a load and the HTTP status; and each aggregate alone (median and fastest).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _setup import ROOT, _postgres_admin, recreate_database  # noqa: E402

sys.path.insert(0, str(ROOT))

DONE_TABLE = "bench_charts_built"
NOW = datetime.now(UTC).replace(second=0, microsecond=0)
PROVIDERS = (("default", 0.6), ("backup", 0.3), ("smsru", 0.1))
# (per mille bound, status, error code, error message)
OUTCOMES = (
    (860, "delivered", "", ""),
    (900, "undelivered", "1288", "Абонент недоступен"),
    (915, "undelivered", "1", "Subscriber absent"),
    (925, "undelivered", "13", "Expired"),
    (945, "failed", "3", "Неверный номер"),
    (955, "failed", "exception", "Read timed out"),
    (960, "failed", "20", "Отправитель не зарегистрирован"),
    (990, "sent", "", ""),
    (995, "cancelled", "", ""),
    (1000, "uncertain", "", ""),
)


def message_rows(plan: list[dict]) -> Iterator[tuple]:
    from crm_sms.models import new_msg_ids

    rnd = random.Random(5)
    pk = 0
    for entry in plan:
        size, start, span = entry["size"], entry["start"], entry["span"]
        ids = new_msg_ids(size)
        done_share = 0.7 if entry["status"] == "running" else 1.0
        for j in range(size):
            pk += 1
            created = start + span * (j / size) * 0.02
            provider = entry["provider"]
            if j >= size * done_share:
                status, code, text = "queued", "", ""
            else:
                h = rnd.randrange(1000)
                status, code, text = next(o[1:] for o in OUTCOMES if h < o[0])
            sent = (
                created + span * (j / size)
                if status in ("delivered", "undelivered", "sent")
                else None
            )
            delivered = (
                sent + timedelta(seconds=rnd.randint(2, 90)) if status == "delivered" else None
            )
            ended = delivered or (
                sent + timedelta(seconds=60) if sent else created + span * (j / size)
            )
            yield (
                pk, entry["id"], f"+7900{pk:07d}", "Скидка 15% на всё до воскресенья!", "SHOP",
                provider, ids[j], str(10**9 + pk) if sent else "", status, code, text,
                1 if status != "queued" else 0, created, 1, created, sent, delivered,
                min(ended, NOW),
            )  # fmt: skip


MESSAGE_FIELDS = (
    "id campaign phone text sender provider msg_id provider_message_id status error_code "
    "error_message attempts next_attempt_at segments created_at sent_at delivered_at updated_at"
).split()


def campaign_plan(messages: int, campaign: int) -> list[dict]:
    """The running campaign (the newest, ``campaign`` messages sent over 3 hours), and
    completed ones of 10,000 spread over the 30 days before it."""
    plan = []
    left, k = messages - campaign, 0
    while left > 0:
        size = min(10_000, left)
        plan.append({"size": size, "status": "completed", "span": timedelta(hours=2)})
        left -= size
    for k, entry in enumerate(plan):
        entry["start"] = (
            NOW
            - timedelta(days=30)
            + timedelta(hours=6)
            + k * timedelta(days=29) / max(1, len(plan))
        )
    plan.append(
        {"size": campaign, "status": "running", "span": timedelta(hours=3),
         "start": NOW - timedelta(hours=3)}
    )  # fmt: skip
    rnd = random.Random(4)
    for entry in plan:
        entry["provider"] = rnd.choices([p for p, _ in PROVIDERS], [w for _, w in PROVIDERS])[0]
    return plan


def build(messages: int, campaign: int) -> dict:
    from _bigdb import copy_rows, drop_secondary, restore_secondary, secondary_objects
    from django.db import connection

    from crm_sms.models import Campaign, Message

    started = time.perf_counter()
    plan = campaign_plan(messages, campaign)
    for k, entry in enumerate(plan):
        obj = Campaign.objects.create(
            name=f"Рассылка {k + 1}", text="Скидка 15%", sender="SHOP",
            provider=entry["provider"], status=entry["status"], recipients_count=entry["size"],
        )  # fmt: skip
        Campaign.objects.filter(pk=obj.pk).update(
            created_at=entry["start"], started_at=entry["start"]
        )
        entry["id"] = obj.pk
    table = Message._meta.db_table
    with connection.cursor() as cursor:
        constraints, indexes = secondary_objects(cursor, [table])
        drop_secondary(cursor, constraints, indexes)
    copy_rows(Message, MESSAGE_FIELDS, message_rows(plan), last_response=None, claimed_at=None)
    with connection.cursor() as cursor:
        restore_secondary(cursor, constraints, indexes)
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
        )
        cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute(f"CREATE TABLE {DONE_TABLE} (messages int, campaign int)")
        cursor.execute(f"INSERT INTO {DONE_TABLE} VALUES (%s, %s)", [messages, campaign])
    return {"built_seconds": round(time.perf_counter() - started, 1)}


def built_sizes(url: str) -> list[int] | None:
    """[messages, campaign] the database at ``url`` was built with, or None."""
    import psycopg

    conn, name = _postgres_admin(url)
    with conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return None
    with psycopg.connect(url) as db:
        if not db.execute("SELECT to_regclass(%s)", [DONE_TABLE]).fetchone()[0]:
            return None
        return list(db.execute(f"SELECT messages, campaign FROM {DONE_TABLE}").fetchone())


def setup_django(url: str, syncdb: bool) -> None:
    """Django on ``url`` as production runs it (DEBUG off), migrated; with ``syncdb`` crm_sms's
    tables are made from the models as they are now (models ahead of their migrations)."""
    import os
    import secrets

    os.environ.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        SECURE_SSL_REDIRECT="0",
        SESSION_COOKIE_SECURE="0",
        CSRF_COOKIE_SECURE="0",
        SECURE_HSTS_SECONDS="0",
        SMS_URL="console://",
        SMS_LOG_LEVEL="WARNING",
    )
    if syncdb:
        import config.settings

        config.settings.MIGRATION_MODULES = {"crm_sms": None}
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    if syncdb:  # after auth's tables, which crm_sms's refer to
        call_command("migrate", run_syncdb=True, verbosity=0, interactive=False)


def ensure_database(args: argparse.Namespace) -> dict:
    built = None if args.rebuild else built_sizes(args.database_url)
    if built == [args.messages, args.campaign]:
        setup_django(args.database_url, args.syncdb)
        return {"reused": True}
    recreate_database(args.database_url)
    setup_django(args.database_url, args.syncdb)
    return build(args.messages, args.campaign)


def load(client, path: str) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get(path)
        ms = (time.perf_counter() - started) * 1000
    return ms, len(queries), response.status_code


def measure(loads: int) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.test import Client

    from crm_sms.models import Campaign

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    running = Campaign.objects.filter(status="running").order_by("-pk")[0].pk
    pages = {
        "dashboard": "/admin/crm_sms/dashboard/",
        "campaign_charts": f"/admin/crm_sms/dashboard/campaign/{running}/charts/",
        "campaign_page": f"/admin/crm_sms/campaign/{running}/change/",
    }
    results = {}
    for name, path in pages.items():
        cache.clear()
        load(client, path)
        timings = []
        for _ in range(loads):
            cache.clear()  # the worst case: nothing cached
            timings.append(load(client, path))
        results[name] = {
            "ms": round(statistics.median(t[0] for t in timings), 1),
            "queries": timings[-1][1],
            "status": timings[-1][2],
        }
    return results


def measure_queries(loads: int) -> dict:
    """The aggregates alone (no page around them): median and fastest milliseconds of each."""
    from crm_sms import stats
    from crm_sms.admin.campaigns import status_counts
    from crm_sms.models import Campaign

    running = Campaign.objects.filter(status="running").order_by("-pk")[0].pk
    since = stats.period_start()
    jobs = {
        "last_days (per day, provider, status)": lambda: stats.last_days(),
        "failure_reasons": lambda: stats.failure_reasons(since),
        "campaign status counts": lambda: status_counts([running]),
        "campaign timeline flows": lambda: stats._flows(running),
    }
    results = {}
    for name, job in jobs.items():
        job()
        timings = []
        for _ in range(loads):
            started = time.perf_counter()
            job()
            timings.append((time.perf_counter() - started) * 1000)
        results[name] = {
            "median_ms": round(statistics.median(timings), 1),
            "fastest_ms": round(min(timings), 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--campaign", type=int, default=400_000)
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/crm_sms_charts"
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument(
        "--syncdb", action="store_true", help="tables from the models, not the migrations"
    )
    args = parser.parse_args()
    state = ensure_database(args)
    pages = measure(args.loads)
    queries = measure_queries(args.loads)
    print(json.dumps({"database": state, "pages": pages, "queries": queries}, indent=1))


if __name__ == "__main__":
    main()
