"""How many delivery reports per second the callback endpoint absorbs (gunicorn, PostgreSQL).

    .venv/bin/python bench/callbacks.py [--messages 5000] [--workers 2] [--clients 16]
        [--database-url postgres://postgres@127.0.0.1:5432/crm_sms_bench_callbacks]
        [--conn-max-age 60] [--gunicorn-threads 1] [--keep-db]

It creates (or recreates) the bench database, migrates it, inserts N ``sent`` MegaFon messages,
starts gunicorn with ``config.wsgi`` on an ephemeral loopback port (a socket bound here and handed
over as ``fd://``), posts one MegaFon-format report per message from a thread pool of keep-alive
``requests`` sessions, then posts every report a second time (the repeats a provider sends), and
checks that every message became ``delivered`` with exactly one event. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _setup import ROOT, drop_database, recreate_database  # noqa: E402  (the bench folder)

TOKEN = "bench-callback-token"


def environment(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DEBUG="0",
        SECRET_KEY="bench-secret-key-not-for-production-0123456789-abcdefghijklmnop",
        SECURE_SSL_REDIRECT="0",  # plain HTTP on the loopback
        ALLOWED_HOSTS="127.0.0.1",
        # The sandbox is not needed: the bench only receives reports.
        SMS_URL="megafon+http://bench:bench@127.0.0.1:9/?sender=Bench",
        SMS_PUBLIC_URL="http://127.0.0.1",
        SMS_CALLBACK_TOKEN=TOKEN,
        SMS_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return env


def insert_messages(n: int) -> list[str]:
    from django.utils import timezone

    from crm_sms.models import Message, MessageStatus, new_msg_id

    now = timezone.now()
    rows = [
        Message(
            phone=f"+79{i:09d}",
            text="Bench",
            provider="default",
            status=MessageStatus.SENT,
            msg_id=new_msg_id(),
            provider_message_id=f"r{i}",
            sent_at=now,
        )
        for i in range(n)
    ]
    Message.objects.bulk_create(rows, batch_size=2000)
    from django.db import connection

    with connection.cursor() as cursor:
        # Fresh statistics, as a live table has: the report lookup then uses both indexes.
        cursor.execute("ANALYZE crm_sms_message")
    return [m.msg_id for m in rows]


def report(msg_id: str, i: int) -> bytes:
    return json.dumps(
        {
            "msg_id": msg_id,
            "receipted_message_id": f"r{i}",
            "status": "delivered",
            "short_message": f"id:r{i} sub:001 dlvrd:001 submit date:2611280310 "
            "done date:2611280311 stat:DELIVRD err:000",
        }
    ).encode()


def post_all(url: str, bodies: list[bytes], clients: int) -> dict:
    import requests

    local = threading.local()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def post(body: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        started = time.perf_counter()
        status = session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=30
        ).status_code
        elapsed = time.perf_counter() - started
        with lock:
            latencies.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, bodies))
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "reports": len(bodies),
        "seconds": round(seconds, 3),
        "reports_per_s": round(len(bodies) / seconds, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def wait_until_up(url: str, timeout: float = 30) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 405:  # the view answers GET 405
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise SystemExit("gunicorn did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--gunicorn-threads", type=int, default=1, help=">1: gthread workers")
    parser.add_argument("--clients", type=int, default=16, help="posting threads")
    parser.add_argument(
        "--database-url", default="postgres://postgres@127.0.0.1:5432/crm_sms_bench_callbacks"
    )
    parser.add_argument(
        "--conn-max-age",
        type=int,
        default=60,
        help="Django CONN_MAX_AGE (0: a connection per request)",
    )
    parser.add_argument("--keep-db", action="store_true")
    args = parser.parse_args()

    database_url = args.database_url
    if args.conn_max_age:
        database_url += ("&" if "?" in database_url else "?") + f"conn_max_age={args.conn_max_age}"
    env = environment(database_url)
    recreate_database(args.database_url)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )

    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    from crm_sms.models import Message, MessageEvent, MessageStatus

    msg_ids = insert_messages(args.messages)
    bodies = [report(m, i) for i, m in enumerate(msg_ids)]
    connection.close()

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    gunicorn = [
        str(Path(sys.executable).with_name("gunicorn")),
        "config.wsgi",
        "--bind",
        f"fd://{listener.fileno()}",
        "--workers",
        str(args.workers),
        "--log-level",
        "warning",
    ]
    if args.gunicorn_threads > 1:
        gunicorn += ["--worker-class", "gthread", "--threads", str(args.gunicorn_threads)]
    server = subprocess.Popen(gunicorn, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
    try:
        url = f"http://127.0.0.1:{port}/sms/callback/default/{TOKEN}/"
        wait_until_up(url)
        first = post_all(url, bodies, args.clients)
        repeat = post_all(url, bodies, args.clients)
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        listener.close()

    delivered = Message.objects.filter(status=MessageStatus.DELIVERED).count()
    events = MessageEvent.objects.count()
    result = {
        "bench": "callbacks",
        "database": connection.vendor,
        "gunicorn_workers": args.workers,
        "gunicorn_threads": args.gunicorn_threads,
        "conn_max_age": args.conn_max_age,
        "clients": args.clients,
        "messages": args.messages,
        "first_reports": first,
        "repeated_reports": repeat,
        "verification": {
            "delivered": delivered,
            "events": events,
            "all_delivered": delivered == args.messages,
            "one_event_each": events == args.messages,
            "all_200": set(first["http_statuses"]) == {"200"}
            and set(repeat["http_statuses"]) == {"200"},
        },
    }
    connection.close()
    if not args.keep_db:
        drop_database(args.database_url)
    print(json.dumps(result, indent=2))
    if not all(result["verification"][k] for k in ("all_delivered", "one_event_each", "all_200")):
        sys.exit(1)


if __name__ == "__main__":
    main()
