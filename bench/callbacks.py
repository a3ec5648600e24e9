"""Delivery reports per second through the callback endpoint, direct vs queued, side by side.

    .venv/bin/python bench/callbacks.py [--messages 20000] [--direct-messages 3000]
        [--backlog 10000] [--workers 2] [--gunicorn-threads 8] [--clients 32]
        [--modes direct,queued-full-single,queued]
        [--database-url $DATABASE_URL or postgres://postgres@127.0.0.1:5432/crm_sms_bench_callbacks]
        [--conn-max-age 60] [--keep-db]

It creates (or recreates) the bench database and migrates it. For each mode it inserts its own
``sent`` MegaFon messages, starts gunicorn (``config.wsgi``, ``SMS_REPORTS=<mode>``) on an
ephemeral loopback port (a socket bound here and handed over as ``fd://``), posts one
MegaFon-format report per message over keep-alive connections from one selector loop (cheap,
so the client is not what is measured), then posts every report a second time (the repeats a
provider sends).
In "queued" mode ``manage.py sms_reports`` applies the queue while the reports arrive, and the
bench also measures how long until every message is ``delivered``; then it posts ``--backlog``
more reports with the applier stopped (SIGSTOP) and times the applier alone (SIGCONT). It checks
that every message became ``delivered`` with exactly one event and prints JSON, with the CPU
each side spent per report and ``os.getloadavg()`` (the machine may be shared).

A mode may carry ``-asgi``: the site's ASGI application (``crm_sms.asgi``: reports taken in
the event loop) under gunicorn's uvicorn workers instead of ``config.wsgi`` under gthread
workers; ``--modes queued,queued-asgi`` compares the two in one run. Other suffixes turn
speed-ups of the WSGI path off, to compare in one run:
``-full`` (``SMS_CALLBACK_LEAN=0``: the callbacks through the full middleware -- sessions,
locale, CSRF, auth, messages -- instead of ``crm_sms.handler``'s lean path) and ``-single``
(``SMS_REPORT_GROUP_COMMIT=0``: each queued callback its own INSERT and commit).
``--modes queued-full-single,queued`` puts before and after side by side (``after_vs_before``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _setup import ROOT, drop_database, recreate_database  # noqa: E402  (the bench folder)

TOKEN = "bench-callback-token"
PATH = f"/sms/callback/default/{TOKEN}/"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/crm_sms_bench_callbacks"


def environment(database_url: str, mode: str = "direct") -> dict[str, str]:
    """The site's environment for ``mode`` ("direct", "queued", "…-full": the full middleware)."""
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
        SMS_REPORTS=mode.split("-")[0],
        SMS_CALLBACK_LEAN="0" if "-full" in mode else "1",
        SMS_REPORT_GROUP_COMMIT="0" if "-single" in mode else "1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    return env


def loadavg() -> list[float]:  # the machine may be shared: figures come with its load
    return [round(x, 2) for x in os.getloadavg()]


def insert_messages(n: int, start: int = 0) -> list:
    """``n`` sent MegaFon messages (provider ids ``r<start>``…), with their ids."""
    from django.db import connection
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
        for i in range(start, start + n)
    ]
    Message.objects.bulk_create(rows, batch_size=2000)
    with connection.cursor() as cursor:
        # Fresh statistics, as a live table has: the report lookup then uses both indexes.
        cursor.execute("ANALYZE crm_sms_message")
    return rows


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


def http_request(body: bytes) -> bytes:
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Connection:
    """A keep-alive HTTP/1.1 client on a raw socket: a few microseconds per request, so the
    bench measures the server. Reconnects when the server closes (gunicorn's sync workers
    close after every answer)."""

    def __init__(self, port: int):
        self.port, self.sock, self.buffer = port, None, b""

    def post(self, request: bytes) -> int:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buffer = b""
        try:
            self.sock.sendall(request)
            status, close = self._answer()
        except OSError:
            self.close()
            raise
        if close:
            self.close()
        return status

    def _answer(self) -> tuple[int, bool]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in lines[1:])
        headers = {k.strip().lower(): v.strip().lower() for k, v in headers.items()}
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        self.buffer = self.buffer[length:]
        return int(lines[0].split()[1]), headers.get("connection") == "close"

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None


def post_all(port: int, bodies: list[bytes], clients: int) -> dict:
    """Post every body over ``clients`` keep-alive connections, one request in flight on each,
    from one thread (a selector loop: tens of microseconds of CPU per request, where a thread
    per connection spent ten times that on the same two cores); rate, latency."""
    requests = iter(http_request(body) for body in bodies)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    selector = selectors.DefaultSelector()
    sent_at: dict[socket.socket, float] = {}
    buffers: dict[socket.socket, bytes] = {}

    def send_next(sock: socket.socket) -> bool:
        request = next(requests, None)
        if request is None:
            selector.unregister(sock)
            sock.close()
            return False
        buffers[sock] = b""
        sent_at[sock] = time.perf_counter()
        sock.sendall(request)
        return True

    def answered(sock: socket.socket, status: int) -> bool:
        latencies.append(time.perf_counter() - sent_at[sock])
        statuses[status] = statuses.get(status, 0) + 1
        return send_next(sock)

    started = time.perf_counter()
    active = 0
    for _ in range(min(clients, len(bodies))):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        selector.register(sock, selectors.EVENT_READ)
        active += send_next(sock)
    while active:
        for key, _ in selector.select(timeout=60):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:  # no answer: counted, never retried (the provider would retry)
                selector.unregister(sock)
                sock.close()
                active -= 1
                statuses[0] = statuses.get(0, 0) + 1
                continue
            buffers[sock] += chunk
            answer = parse_answer(buffers[sock])
            if answer is not None and not answered(sock, answer):
                active -= 1
    seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "reports": len(bodies),
        "seconds": round(seconds, 3),
        "reports_per_s": round(len(bodies) / seconds, 1),
        "latency_ms_p50": round(statistics.median(latencies) * 1000, 2),
        "latency_ms_p99": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
        "http_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "loadavg": loadavg(),
    }


def parse_answer(data: bytes) -> int | None:
    """The status of a complete answer in ``data`` (None while it is incomplete)."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    if not separator:
        return None
    at = head.lower().find(b"\r\ncontent-length:")
    length = int(head[at + 17 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
    if len(rest) < length:
        return None
    return int(head[9:12])


def wait_until_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    probe = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if Connection(port).post(probe) == 405:  # the view answers GET 405
                return
        time.sleep(0.1)
    raise SystemExit("gunicorn did not come up")


def start_gunicorn(
    args: argparse.Namespace, env: dict[str, str], asgi: bool = False
) -> tuple[subprocess.Popen, int]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "config.asgi" if asgi else "config.wsgi",
        "--bind",
        f"fd://{listener.fileno()}",
        "--workers",
        str(args.workers),
        "--log-level",
        "warning",
    ]
    if asgi:
        command += ["--worker-class", "uvicorn_worker.UvicornWorker"]
    elif args.gunicorn_threads > 1:
        command += ["--worker-class", "gthread", "--threads", str(args.gunicorn_threads)]
    server = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
    listener.close()  # gunicorn has its own copy
    wait_until_up(port)
    return server, port


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class QueueWatch:
    """Samples the report queue's length and the delivered count of a mode's messages every
    0.1 s (one short query each), from the moment the first report is posted."""

    def __init__(self, first_pk: int, last_pk: int, expected: int):
        self.first_pk, self.last_pk, self.expected = first_pk, last_pk, expected
        self.started = time.perf_counter()
        self.max_rows = 0
        self.all_delivered_s: float | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from django.db import connection

        from crm_sms.models import Message, MessageStatus, QueuedReport

        mine = Message.objects.filter(pk__gte=self.first_pk, pk__lte=self.last_pk)
        while not self.done.is_set():
            self.max_rows = max(self.max_rows, QueuedReport.objects.count())
            if self.all_delivered_s is None:
                if mine.filter(status=MessageStatus.DELIVERED).count() == self.expected:
                    self.all_delivered_s = time.perf_counter() - self.started
            self.done.wait(0.1)
        connection.close()

    def wait_empty(self, timeout: float = 600) -> float:
        """Seconds from the first post until the queue is empty and every message delivered."""
        from crm_sms.models import QueuedReport

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.all_delivered_s is not None and not QueuedReport.objects.exists():
                return time.perf_counter() - self.started
            time.sleep(0.05)
        raise SystemExit("the queue was not applied in time")

    def close(self) -> None:
        self.done.set()
        self.thread.join()


def process_cpu(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds used) of process ``pid`` from /proc; (0, 0.0) when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0.0
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent, by side: gunicorn (master and workers), PostgreSQL (the backends of
    the bench database), the applier, and this process (the posting clients, the watch). On a
    shared machine rates depend on the load; CPU per report does much less."""

    def __init__(self, server: subprocess.Popen, applier: subprocess.Popen | None):
        self.server, self.applier = server, applier
        self.before = self.sample()

    def sample(self) -> dict[str, float]:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            backends = [pid for (pid,) in cursor.fetchall()]
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        gunicorn = [self.server.pid] + [p for p in pids if process_cpu(p)[0] == self.server.pid]
        return {
            "gunicorn": sum(process_cpu(p)[1] for p in gunicorn),
            "postgres": sum(process_cpu(p)[1] for p in backends),
            "applier": process_cpu(self.applier.pid)[1] if self.applier else 0.0,
            "bench_client": time.process_time(),
        }

    def ms_per_report(self, reports: int) -> dict[str, float]:
        after = self.sample()
        return {k: round((after[k] - self.before[k]) * 1000 / reports, 3) for k in after}


def start_applier(env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "manage.py", "sms_reports", "--json", "--sleep", "0.05"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)


def post_and_apply(port: int, bodies: list[bytes], clients: int, watch, meter) -> dict:
    """Post the first reports, then their repeats; with a queue, wait for it to be applied."""
    n = len(bodies)
    result = {"first_reports": post_all(port, bodies, clients)}
    if watch is not None:
        result["all_applied_s"] = round(watch.wait_empty(), 3)
        result["applied_reports_per_s"] = round(n / result["all_applied_s"], 1)
        result["applied_after_last_answer_s"] = round(
            result["all_applied_s"] - result["first_reports"]["seconds"], 3
        )
    result["cpu_ms_per_report"] = meter.ms_per_report(n)
    result["repeated_reports"] = post_all(port, bodies, clients)
    if watch is not None:
        watch.started = time.perf_counter()
        result["repeats_applied_after_last_answer_s"] = round(watch.wait_empty(), 3)
        result["queue_max_rows"] = watch.max_rows
    return result


def backlog(port: int, bodies: list[bytes], clients: int, applier: subprocess.Popen) -> dict:
    """The applier alone: reports posted while it is stopped (SIGSTOP), then the time it takes
    to apply them once it goes on (SIGCONT) -- what it can sustain, whatever the web side does."""
    from crm_sms.models import QueuedReport

    applier.send_signal(signal.SIGSTOP)
    try:
        posted = post_all(port, bodies, clients)
    finally:
        applier.send_signal(signal.SIGCONT)
    started = time.perf_counter()
    while QueuedReport.objects.exists():
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    return {
        "reports": len(bodies),
        "answered_reports_per_s": posted["reports_per_s"],
        "applied_seconds": round(seconds, 3),
        "applied_reports_per_s": round(len(bodies) / seconds, 1),
        "http_statuses": posted["http_statuses"],
        "loadavg": loadavg(),
    }


def run_mode(mode: str, n: int, start: int, args, database_url: str) -> dict:
    """One mode: its messages, gunicorn (and the applier), first reports and repeats, checks."""
    from django.db import connection

    queued = mode.startswith("queued")
    extra = args.backlog if queued else 0
    rows = insert_messages(n + extra, start)
    bodies = [report(m.msg_id, start + i) for i, m in enumerate(rows)]
    first_pk, last_pk = min(m.pk for m in rows), max(m.pk for m in rows)
    env = environment(database_url, mode)
    result: dict = {"messages": n, "loadavg_before": loadavg()}
    server, port = start_gunicorn(args, env, asgi="-asgi" in mode)
    applier = start_applier(env) if queued else None
    watch = QueueWatch(first_pk, rows[n - 1].pk, n) if applier else None
    try:
        meter = CpuMeter(server, applier)
        result.update(post_and_apply(port, bodies[:n], args.clients, watch, meter))
        if extra:
            result["applier_alone"] = backlog(port, bodies[n:], args.clients, applier)
    finally:
        if watch is not None:
            watch.close()
        if applier is not None:
            stop(applier)
            result["applier_output"] = [json.loads(line) for line in applier.stdout if line.strip()]
        stop(server)
    result["verification"] = verify(first_pk, last_pk, n + extra, result)
    connection.close()
    return result


def verify(first_pk: int, last_pk: int, n: int, result: dict) -> dict:
    """Every message of the mode delivered, with exactly one event; every answer 200."""
    from crm_sms.models import Message, MessageEvent, MessageStatus

    mine = Message.objects.filter(pk__gte=first_pk, pk__lte=last_pk)
    delivered = mine.filter(status=MessageStatus.DELIVERED).count()
    events = MessageEvent.objects.filter(message__in=mine).count()
    answers = set(result["first_reports"]["http_statuses"])
    answers |= set(result["repeated_reports"]["http_statuses"])
    answers |= set(result.get("applier_alone", {}).get("http_statuses", {}))
    return {
        "delivered": delivered,
        "events": events,
        "all_delivered": delivered == n,
        "one_event_each": events == n,
        "all_200": answers == {"200"},
    }


def server_cpu(result: dict) -> float:
    """CPU ms per report of gunicorn, PostgreSQL and the applier together."""
    return sum(v for k, v in result["cpu_ms_per_report"].items() if k != "bench_client")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="reports in queued mode")
    parser.add_argument("--direct-messages", type=int, default=3000, help="in direct mode")
    parser.add_argument("--modes", default="direct,queued")
    parser.add_argument(
        "--backlog", type=int, default=10000, help="queued: reports for the applier alone (0: none)"
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument(
        "--gunicorn-threads", type=int, default=8, help="gthread threads per worker (1: sync)"
    )
    parser.add_argument("--clients", type=int, default=32, help="posting connections")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL", DEFAULT_URL))
    parser.add_argument(
        "--conn-max-age", type=int, default=60, help="Django CONN_MAX_AGE (0: one per request)"
    )
    parser.add_argument("--keep-db", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    database_url = args.database_url
    if args.conn_max_age:
        database_url += ("&" if "?" in database_url else "?") + f"conn_max_age={args.conn_max_age}"
    env = environment(database_url)
    recreate_database(args.database_url)
    migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.db import connection

    result = {
        "bench": "callbacks",
        "database": connection.vendor,
        "gunicorn_workers": args.workers,
        "gunicorn_threads": args.gunicorn_threads,
        "conn_max_age": args.conn_max_age,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "loadavg_start": loadavg(),
    }
    start = 0
    for mode in args.modes.split(","):
        n = args.direct_messages if mode.startswith("direct") else args.messages
        result[mode] = run_mode(mode, n, start, args, database_url)
        start += n + args.backlog  # the next mode's phone numbers and provider ids follow
    if "direct" in result and "queued" in result:
        direct, queued = result["direct"], result["queued"]
        base = direct["first_reports"]["reports_per_s"]
        result["queued_vs_direct"] = {
            "answered_x": round(queued["first_reports"]["reports_per_s"] / base, 1),
            "applied_x": round(queued["applied_reports_per_s"] / base, 1),
            "server_cpu_per_report_x": round(server_cpu(direct) / server_cpu(queued), 1),
        }
    queued = [m for m in args.modes.split(",") if m.startswith("queued")]
    if len(queued) >= 2:  # the first against the last: before and after
        before, after = result[queued[0]], result[queued[-1]]
        result["after_vs_before"] = {
            "modes": [queued[0], queued[-1]],
            "answered_x": round(
                after["first_reports"]["reports_per_s"] / before["first_reports"]["reports_per_s"],
                2,
            ),
            "gunicorn_cpu_ms_per_report": [
                before["cpu_ms_per_report"]["gunicorn"],
                after["cpu_ms_per_report"]["gunicorn"],
            ],
            "postgres_cpu_ms_per_report": [
                before["cpu_ms_per_report"]["postgres"],
                after["cpu_ms_per_report"]["postgres"],
            ],
            "server_cpu_ms_per_report": [round(server_cpu(before), 3), round(server_cpu(after), 3)],
        }
    result["loadavg_end"] = loadavg()
    connection.close()
    if not args.keep_db:
        drop_database(args.database_url)
    print(json.dumps(result, indent=2))
    checks = ("all_delivered", "one_event_each", "all_200")
    if not all(result[m]["verification"][k] for m in args.modes.split(",") for k in checks):
        sys.exit(1)


if __name__ == "__main__":
    main()
