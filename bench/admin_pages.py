"""Every admin page and action page on a big PostgreSQL database: median milliseconds and queries.

    .venv/bin/python bench/admin_pages.py [--contacts 1000000 --messages 1000000 --events 3000000]
        [--database-url postgres://postgres@127.0.0.1:5432/NAME] [--rebuild] [--loads 5]
        [--pages contacts_search_ivanov,events_list]

The database (by default ``crm_sms_bench_admin_<contacts>_<messages>_<events>`` on the local
server) is built once with the project's fast path (COPY, indexes made after the load, see
``bench/_bigdb.py``; about 5 minutes for 1M/1M/3M on 2 cores) and reused by name afterwards:
later runs only migrate it (new indexes get built then). A quick run:
``--contacts 100000 --messages 100000 --events 300000``.

Each page is loaded in-process with Django's test client as a logged-in superuser (DEBUG off,
as in production): one warm-up load, then ``--loads`` timed ones. Prints JSON: per page the
median milliseconds, the queries of a load and the HTTP status.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _setup import ROOT, _postgres_admin, recreate_database  # noqa: E402

sys.path.insert(0, str(ROOT))

ADMIN = "/admin/crm_sms"
DONE_TABLE = "bench_admin_built"


def database_state(url: str) -> dict | None:
    """The sizes the database at ``url`` was built with, or None (missing or unfinished)."""
    import psycopg

    conn, name = _postgres_admin(url)
    with conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    if not exists:
        return None
    with psycopg.connect(url.split("?")[0]) as db:
        found = db.execute("SELECT to_regclass(%s)", [DONE_TABLE]).fetchone()[0]
        if not found:
            return None
        row = db.execute(f"SELECT contacts, messages, events, steps FROM {DONE_TABLE}").fetchone()
    return dict(zip(["contacts", "messages", "events", "steps"], row, strict=True))


def setup_django(url: str) -> None:
    """Django on ``url`` as production runs it (DEBUG off), migrated."""
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
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def ensure_database(args: argparse.Namespace) -> dict:
    """Reuse the database when it was built with these sizes, else build it."""
    sizes = {"contacts": args.contacts, "messages": args.messages, "events": args.events}
    state = None if args.rebuild else database_state(args.database_url)
    if state is not None and all(state[k] == v for k, v in sizes.items()):
        setup_django(args.database_url)
        return {"reused": True, **state}
    recreate_database(args.database_url)
    setup_django(args.database_url)
    from _bigdb import build
    from django.db import connection

    started = time.perf_counter()
    steps = build(**sizes)
    steps["total"] = round(time.perf_counter() - started, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE {DONE_TABLE} (contacts int, messages int, events int, steps jsonb)"
        )
        cursor.execute(
            f"INSERT INTO {DONE_TABLE} VALUES (%s, %s, %s, %s)",
            [args.contacts, args.messages, args.events, json.dumps(steps)],
        )
    return {"reused": False, **sizes, "steps": steps}


# --- the pages --------------------------------------------------------------------------------


def facts() -> dict:
    """Ids and values the pages need (a VIP group, the smallest and biggest campaigns…)."""
    from django.db.models import Count

    from crm_sms.models import Campaign, Contact, ContactGroup, Message, MessageEvent

    sent = Campaign.objects.exclude(status="draft").order_by("recipients_count", "pk")
    middle = Contact.objects.order_by("pk").values_list("pk", flat=True)[0]
    middle += Contact.objects.order_by("-pk").values_list("pk", flat=True)[0] // 2
    message = Message.objects.filter(pk__gte=Message.objects.order_by("-pk")[0].pk // 2)
    return {
        "vip": ContactGroup.objects.get(name="VIP").pk,
        "smallest": sent.first().pk,
        "biggest": sent.last().pk,
        "email": Contact.objects.filter(pk__gte=middle)
        .exclude(email="")
        .order_by("pk")
        .values_list("email", flat=True)[0],
        "contact": middle,
        "message": message.annotate(n=Count("events")).filter(n__gt=0).order_by("pk")[0].pk,
        "event_count": MessageEvent.objects.count(),
    }


def page_list(f: dict) -> list[tuple[str, str, str, dict | None]]:
    """(name, method, path, POST data) of every page measured."""
    select_all = {
        "action": "send_sms_action",
        "select_across": "1",
        "index": "0",
        "_selected_action": [str(f["contact"])],
    }
    with_text = {**select_all, "_sms_step": "preview", "text": "Скидка 15% до воскресенья!"}
    with_text.update(name="", sender="", provider="default", scheduled_at="")
    templated = {**with_text, "text": "{{ first_name }}, скидка 15% до воскресенья!"}
    # The usual Russian address: name and patronymic (two variables, many more groups).
    name_patronymic = {**with_text, "text": "{{ first_name }} {{ middle_name }}, скидка 15%!"}
    full_name = {**with_text, "text": "{{ last_name }} {{ first_name }}, скидка 15%!"}
    # The live counter's question while a template is typed (issue 14.5): its longest text.
    counter = {**templated, "_sms_step": "1", "_sms_counter": "1"}
    return [
        ("admin_index", "get", "/admin/", None),
        ("contacts_first_page", "get", f"{ADMIN}/contact/", None),
        ("contacts_search_ivanov", "get", f"{ADMIN}/contact/?q=Иванов", None),
        ("contacts_search_rare_prefix", "get", f"{ADMIN}/contact/?q=Щюк", None),
        ("contacts_search_email", "get", f"{ADMIN}/contact/?q={f['email']}", None),
        ("contacts_search_phone", "get", f"{ADMIN}/contact/?q=8 900 000-00-00", None),
        ("contacts_opted_out", "get", f"{ADMIN}/contact/?opted_out__exact=1", None),
        ("contacts_group_vip", "get", f"{ADMIN}/contact/?groups__id__exact={f['vip']}", None),
        ("contacts_last_page", "get", f"{ADMIN}/contact/?p={{last}}", None),
        ("contact_page", "get", f"{ADMIN}/contact/{f['contact']}/change/", None),
        ("groups_list", "get", f"{ADMIN}/contactgroup/", None),
        ("send_sms_select_all", "post", f"{ADMIN}/contact/", select_all),
        ("send_sms_select_all_with_text", "post", f"{ADMIN}/contact/", with_text),
        ("send_sms_select_all_templated", "post", f"{ADMIN}/contact/", templated),
        ("send_sms_select_all_counter", "post", f"{ADMIN}/contact/", counter),
        ("send_sms_select_all_name_patronymic", "post", f"{ADMIN}/contact/", name_patronymic),
        ("send_sms_select_all_full_name", "post", f"{ADMIN}/contact/", full_name),
        ("campaigns_list", "get", f"{ADMIN}/campaign/", None),
        ("campaign_page", "get", f"{ADMIN}/campaign/{f['biggest']}/change/", None),
        ("campaign_progress", "get", f"{ADMIN}/campaign/{f['biggest']}/progress/", None),
        ("messages_list", "get", f"{ADMIN}/message/", None),
        (
            "messages_smallest_campaign",
            "get",
            f"{ADMIN}/message/?campaign__id__exact={f['smallest']}",
            None,
        ),
        ("message_page", "get", f"{ADMIN}/message/{f['message']}/change/", None),
        ("events_list", "get", f"{ADMIN}/messageevent/", None),
        ("events_last_page", "get", f"{ADMIN}/messageevent/?p={{last}}", None),
    ]


def last_page(client, path: str) -> int:
    """The highest page number the list's paginator links to."""
    html = client.get(path).content.decode()
    return max([int(n) for n in re.findall(r"[?&;]p=(\d+)", html)] or [1])


def load(client, method: str, path: str, data: dict | None) -> tuple[float, int, int]:
    """One load: (milliseconds, queries, status)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.post(path, data) if method == "post" else client.get(path)
        ms = (time.perf_counter() - started) * 1000
    return ms, len(queries), response.status_code


def measure(loads: int, only: set[str]) -> dict:
    from django.contrib.auth import get_user_model
    from django.test import Client

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True}
    )
    client = Client()
    client.force_login(user)
    results = {}
    for name, method, path, data in page_list(facts()):
        if only and name not in only:
            continue
        if "{last}" in path:
            path = path.replace("{last}", str(last_page(client, path.split("?")[0])))
        load(client, method, path, data)  # warm-up
        runs = [load(client, method, path, data) for _ in range(loads)]
        results[name] = {
            "ms": round(statistics.median(r[0] for r in runs), 1),
            "queries": runs[-1][1],
            "status": runs[-1][2],
        }
        print(name, results[name], file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--rebuild", action="store_true", help="build even if it exists")
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--pages", default="", help="comma-separated page names (default all)")
    args = parser.parse_args()
    if args.database_url is None:
        name = f"crm_sms_bench_admin_{args.contacts}_{args.messages}_{args.events}"
        args.database_url = f"postgres://postgres@127.0.0.1:5432/{name}"
    if not args.database_url.startswith("postgres"):
        parser.error("the benchmark needs PostgreSQL (--database-url postgres://…)")
    database = ensure_database(args)
    only = {p for p in args.pages.split(",") if p}
    pages = measure(args.loads, only)
    print(json.dumps({"database": database, "loads": args.loads, "pages": pages}, indent=2))


if __name__ == "__main__":
    main()
