"""Shared start-up of the benchmarks: a Django environment on a temporary SQLite file (or
``DATABASE_URL``), migrated, with the MegaFon sandbox as the default provider."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent


def setup_django(sms_url: str, **env: str) -> None:
    """Point Django at ``DATABASE_URL`` (a PostgreSQL database is created when missing; a
    fresh SQLite file without it) and at ``sms_url``; migrate quietly."""
    sys.path.insert(0, str(ROOT))
    if not os.environ.get("DATABASE_URL"):
        directory = tempfile.mkdtemp(prefix="crm-sms-bench-")
        os.environ["DATABASE_URL"] = f"sqlite:///{directory}/bench.sqlite3"
    elif os.environ["DATABASE_URL"].startswith("postgres"):
        create_missing_database(os.environ["DATABASE_URL"])
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["SMS_URL"] = sms_url
    os.environ.setdefault("SMS_LOG_LEVEL", "WARNING")
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def queue_messages(count: int, text: str = "Bench message {{ first_name }}") -> int:
    """Create ``count`` contacts and queue a campaign to them; returns the campaign id."""
    from django.utils import timezone

    from crm_sms.bulk import RowInserter
    from crm_sms.models import Contact
    from crm_sms.outbox import send_campaign

    now = timezone.now()
    start = Contact.objects.count()
    constants = {
        "last_name": "",
        "middle_name": "",
        "email": "",
        "opted_out": False,
        "notes": "",
        "external_id": "",
        "created_at": now,
        "updated_at": now,
    }
    inserter = RowInserter(Contact, constants, ["phone", "first_name"])
    inserter.insert((f"+7900{start + i:07d}", f"N{start + i}") for i in range(count))
    contacts = Contact.objects.filter(pk__gt=Contact.objects.order_by("pk")[start].pk - 1)
    # At any hour: a benchmark measures sending, not quiet hours (SEND_WINDOW).
    return send_campaign(contacts, text, window=None).pk


def window_stats(times: list[float]) -> dict[str, float]:
    """Rate over the span of ``times`` (arrival times, seconds) and the most in any 1 s."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    return {
        "count": len(times),
        "seconds": round(span, 3),
        "rate": round((len(times) - 1) / span, 1) if span else 0.0,
        "max_in_1s": best,
    }


def _postgres_admin(url: str):
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit(parts._replace(path="/postgres", query=""))
    return psycopg.connect(admin_url, autocommit=True), parts.path.lstrip("/")


def drop_database(url: str) -> None:
    """Drop the bench database of ``url`` (PostgreSQL) or delete its file (SQLite)."""
    if url.startswith("postgres"):
        conn, name = _postgres_admin(url)
        with conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    elif url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)


def create_missing_database(url: str) -> None:
    """Create the PostgreSQL database of ``url`` unless it exists."""
    conn, name = _postgres_admin(url)
    with conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def recreate_database(url: str) -> None:
    """An empty bench database at ``url``."""
    drop_database(url)
    if url.startswith("postgres"):
        conn, name = _postgres_admin(url)
        with conn:
            conn.execute(f'CREATE DATABASE "{name}"')
