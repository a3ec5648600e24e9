"""Throughput of the outbox worker against a plain keep-alive client, measured at the sandbox,
and how the rate grows with worker processes on one database.

    .venv/bin/python bench/throughput.py [-n 3000] [--latency-ms 20] [--concurrency 32]
        [--rounds 5] [--processes 1,2,4] [--debug]

The ratio: both push the same number of messages with the same payloads at the same
concurrency to one MegaFon sandbox (answering after ``latency_ms``), alternating round by
round, so each ratio is measured side by side. The worker (``manage.py sms_worker --once``)
also claims rows, writes results and events to the database (a temporary SQLite file, or
DATABASE_URL); the plain client (threads sharing one keep-alive ``requests.Session``) only
posts. Each runs in its own process, as a worker does in production, while the sandbox runs in
this one; ``--in-process`` runs both in this process instead (then they share its GIL with the
sandbox). The worker runs with DEBUG off, as in production (``--debug``: Django's DEBUG on,
which logs every query); the load average is printed with each round.

The scaling (``--processes 1,2,4``, PostgreSQL): that many worker processes (each the Outbox
in a child of this script, started together once all are ready) share one queue on one
database; the sandbox answers after ``--scale-latency-ms`` so that each worker's concurrency,
not the provider, bounds its rate. Prints msgs/s per process count against N times the rate
of one (``vs_n_times_first``).

Each round also gives the CPU each side spent per message (``cpu_ms_per_message``): the worker's
or the plain client's process (start-up included), PostgreSQL (every ``postgres`` process of
the machine, background work included) and this process (the sandbox). On a shared machine
these are steadier than the rates.

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _setup import ROOT, queue_messages, setup_django, window_stats


def plain_client(sandbox, payloads: list[bytes], concurrency: int) -> float:
    """Post ``payloads`` from ``concurrency`` threads sharing one keep-alive Session."""
    import requests

    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.auth = (sandbox.login, sandbox.password)
    session.headers["Content-Type"] = "application/json; charset=utf-8"
    url = sandbox.base_url + "/sms/v1/sms"
    lock = threading.Lock()
    queue = iter(payloads)

    def run() -> None:
        while True:
            with lock:
                body = next(queue, None)
            if body is None:
                return
            response = session.post(url, data=body, timeout=(5, 30))
            response.raise_for_status()

    started = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(run) for _ in range(concurrency)]:
            future.result()
    return time.monotonic() - started


def plain_client_process(sandbox, payloads: list[bytes], concurrency: int) -> float:
    """``plain_client`` in a child process (this script with ``--plain-client``)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        f.write(b"\n".join(payloads))
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            __file__,
            "--plain-client",
            sandbox.base_url,
            sandbox.login,
            sandbox.password,
            str(concurrency),
            f.name,
        ],
        check=True,
    )
    os.unlink(f.name)
    return time.monotonic() - started


def run_plain_client_child(argv: list[str]) -> None:
    base_url, login, password, concurrency, path = argv
    with open(path, "rb") as f:
        payloads = f.read().split(b"\n")

    class Target:
        pass

    target = Target()
    target.base_url, target.login, target.password = base_url, login, password
    plain_client(target, payloads, int(concurrency))


def worker_process(concurrency: int, batch_size: int) -> dict:
    """``manage.py sms_worker --once`` in a child process; returns its last line."""
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "manage.py"),
            "sms_worker",
            "--once",
            "--concurrency",
            str(concurrency),
            "--batch-size",
            str(batch_size),
        ],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "wall_seconds": round(time.monotonic() - started, 3),
        "output": proc.stdout.strip().splitlines()[-1],
    }


def run_worker_child(argv: list[str]) -> None:
    """A scaling child: set up Django, say ``ready``, wait for ``go``, run the Outbox until
    nothing is due and print its summary as JSON."""
    concurrency, batch_size = int(argv[0]), int(argv[1])
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    from crm_sms.outbox import run_worker

    print("ready", flush=True)
    sys.stdin.readline()
    summary = run_worker(once=True, concurrency=concurrency, batch_size=batch_size)
    print(json.dumps(summary.as_dict()), flush=True)


def production_env(debug: bool) -> dict[str, str]:
    """DEBUG off (with a key of this run) unless ``debug``: the settings a worker runs with."""
    if debug:
        return {"DEBUG": "1"}
    from secrets import token_urlsafe

    return {"DEBUG": "0", "SECRET_KEY": token_urlsafe(50)}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by this process (the sandbox), by its finished children (the
    worker or the plain client, start-up included) and by the machine's PostgreSQL processes
    (those that exited count through the postmaster, which reaped them)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    postgres = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        if text[text.index("(") + 1 : text.rindex(")")].startswith("postgres"):
            ticks = text.rsplit(")", 1)[1].split()[11:15]  # utime stime cutime cstime
            postgres += sum(int(t) for t in ticks) / os.sysconf("SC_CLK_TCK")
    return {
        "sandbox": own.ru_utime + own.ru_stime,
        "process": children.ru_utime + children.ru_stime,
        "postgres": postgres,
    }


def cpu_ms_per_message(before: dict[str, float], count: int) -> dict[str, float]:
    after = cpu_seconds()
    return {k: round((after[k] - before[k]) * 1000 / max(count, 1), 3) for k in after}


def measure_ratio(args, sandbox) -> dict:
    """Worker and plain client, alternating ``args.rounds`` times."""
    from django.db import connections

    from crm_sms.models import Message, MessageStatus
    from crm_sms.outbox import run_worker

    rounds = []
    for _ in range(args.rounds):
        Message.objects.all().delete()
        queue_messages(args.n)
        sandbox.reset()
        load_before = load()
        if args.in_process:
            started = time.monotonic()
            summary = run_worker(
                once=True, concurrency=args.concurrency, batch_size=args.batch_size
            )
            details = {"wall_seconds": round(time.monotonic() - started, 3)}
            details["output"] = summary.as_dict()
        else:
            connections.close_all()  # the worker process writes; hold nothing open
            cpu = cpu_seconds()
            details = worker_process(args.concurrency, args.batch_size)
            details["cpu_ms_per_message"] = cpu_ms_per_message(cpu, args.n)
        worker = window_stats([r.received_at for r in sandbox.requests])
        worker.update(sent=Message.objects.filter(status=MessageStatus.SENT).count(), **details)
        plain = measure_plain(args, sandbox)
        rounds.append((worker, plain, load_before))
    return summarize_ratio(rounds)


def measure_plain(args, sandbox) -> dict:
    """The plain client on the worker's payloads (text, sender, number), fresh msg_ids."""
    from crm_sms.backends import get_backend
    from crm_sms.backends.base import OutgoingSMS
    from crm_sms.models import Message, new_msg_ids

    backend = get_backend()
    payloads = []
    rows = Message.objects.values_list("phone", "text", "sender")
    for (phone, text, sender), msg_id in zip(rows, new_msg_ids(args.n), strict=False):
        sms = OutgoingSMS(to=phone, text=text, sender=sender, msg_id=msg_id)
        payloads.append(backend.encode_payload(backend.build_payload(sms)))
    sandbox.reset()
    cpu = cpu_seconds()
    if args.in_process:
        seconds = plain_client(sandbox, payloads, args.concurrency)
    else:
        seconds = plain_client_process(sandbox, payloads, args.concurrency)
    plain = window_stats([r.received_at for r in sandbox.requests])
    plain.update(wall_seconds=round(seconds, 3))
    if not args.in_process:
        plain["cpu_ms_per_message"] = cpu_ms_per_message(cpu, args.n)
    return plain


def summarize_ratio(rounds: list[tuple[dict, dict, list[float]]]) -> dict:
    """Medians, and each round's ratio (worker and client measured side by side) with the
    1-minute load average when it started."""
    ratios = [round(worker["rate"] / plain["rate"], 3) for worker, plain, _ in rounds]
    return {
        "worker_rate_at_sandbox": statistics.median(worker["rate"] for worker, _, _ in rounds),
        "plain_client_rate_at_sandbox": statistics.median(plain["rate"] for _, plain, _ in rounds),
        "ratio": round(statistics.median(ratios), 3),
        "ratio_per_round": ratios,
        "load_per_round": [load_before[0] for _, _, load_before in rounds],
        "cpu_ms_per_message": {
            side: {
                part: statistics.median(run[i]["cpu_ms_per_message"][part] for run in rounds)
                for part in ("process", "postgres", "sandbox")
            }
            for side, i in (("worker", 0), ("plain_client", 1))
            if "cpu_ms_per_message" in rounds[0][i]
        },
        "worker_runs": [worker for worker, _, _ in rounds],
        "plain_client_runs": [plain for _, plain, _ in rounds],
    }


def measure_scaling(args, sandbox, counts: list[int]) -> list[dict]:
    """For each process count N: N workers started together on one queue of N x ``-n``."""
    from django.db import connections

    from crm_sms.models import Message, MessageStatus

    sandbox.configure(latency_ms=args.scale_latency_ms)
    results, first = [], None
    for count in counts:
        Message.objects.all().delete()
        queue_messages(args.scale_n * count)
        connections.close_all()
        sandbox.reset()
        load_before = load()
        summaries = run_children(count, args.scale_concurrency, args.scale_batch_size)
        stats = window_stats([r.received_at for r in sandbox.requests])
        first = first or stats["rate"]
        results.append(
            {
                "processes": count,
                "msgs_per_s": stats["rate"],
                "per_process": round(stats["rate"] / count, 1),
                "vs_n_times_first": round(stats["rate"] / (first * count / counts[0]), 3),
                "ideal": round(count * args.scale_concurrency / args.scale_latency_ms * 1000, 1),
                "sent": Message.objects.filter(status=MessageStatus.SENT).count(),
                "sent_by_each": [s["sent"] for s in summaries],
                "seconds": stats["seconds"],
                "load_before": load_before,
            }
        )
    sandbox.configure(latency_ms=args.latency_ms)
    return results


def run_children(count: int, concurrency: int, batch_size: int) -> list[dict]:
    """Start ``count`` worker children, wait until all are ready, start them together."""
    command = [sys.executable, __file__, "--worker-child", str(concurrency), str(batch_size)]
    children = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env=dict(os.environ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("a worker child did not start")
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    summaries = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        if child.returncode:
            raise RuntimeError(f"a worker child failed ({child.returncode})")
        summaries.append(json.loads(out.strip().splitlines()[-1]))
    return summaries


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("-n", type=int, default=3000, help="messages per ratio round (3000)")
    add("--latency-ms", type=float, default=20, help="sandbox latency (20)")
    add("--concurrency", type=int, default=32, help="parallel requests (32)")
    add("--batch-size", type=int, default=500, help="worker claim size (500)")
    add("--rounds", type=int, default=3, help="worker/plain rounds; medians reported (3)")
    add("--in-process", action="store_true", help="run worker and client in this process")
    add("--debug", action="store_true", help="the worker with Django's DEBUG on")
    add("--processes", default="", help="scaling: process counts, e.g. 1,2,4 (PostgreSQL)")
    add("--scale-n", type=int, default=1500, help="scaling: messages per process (1500)")
    add("--scale-latency-ms", type=float, default=100, help="scaling: sandbox latency (100)")
    add("--scale-concurrency", type=int, default=16, help="scaling: per process (16)")
    add("--scale-batch-size", type=int, default=100, help="scaling: claim size (100)")
    add("--no-ratio", action="store_true", help="scaling only")
    return parser.parse_args()


def main() -> None:
    if sys.argv[1:2] == ["--plain-client"]:
        run_plain_client_child(sys.argv[2:])
        return
    if sys.argv[1:2] == ["--worker-child"]:
        run_worker_child(sys.argv[2:])
        return
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    from crm_sms.sandbox import SandboxServer

    sandbox = SandboxServer(latency_ms=args.latency_ms, callbacks=False).start()
    pool_size = max(args.concurrency, args.scale_concurrency)
    setup_django(sandbox.sms_url() + f"&pool_size={pool_size}", **production_env(args.debug))
    from django.db import connection

    out = {
        "database": connection.vendor,
        "debug": args.debug,
        "messages": args.n,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "batch_size": args.batch_size,
        "mode": "in-process" if args.in_process else "separate processes",
        "ideal_rate": round(args.concurrency / (args.latency_ms / 1000), 1),
        "cpus": os.cpu_count(),
    }
    if not args.no_ratio:
        out.update(measure_ratio(args, sandbox))
    if args.processes and connection.vendor == "sqlite":
        out["scaling"] = {"skipped": "several worker processes need PostgreSQL (DATABASE_URL)"}
    elif args.processes:
        counts = [int(n) for n in args.processes.split(",")]
        out["scaling"] = {
            "latency_ms": args.scale_latency_ms,
            "concurrency_per_process": args.scale_concurrency,
            "messages_per_process": args.scale_n,
            "batch_size": args.scale_batch_size,
            "runs": measure_scaling(args, sandbox, counts),
        }
    sandbox.stop()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
