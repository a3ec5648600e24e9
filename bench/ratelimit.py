"""The rate limit as the provider sees it, with 1, 2 and 4 worker processes sharing it: the most
requests in any one-second window and the total rate, the workers sending through the MegaFon
sandbox.

    .venv/bin/python bench/ratelimit.py --redis redis://127.0.0.1:6379/1 [--processes 1,2,4]
        [--runs 3] [--limit 50] [-n 500] [--concurrency 16] [--cache django|django-redis]
        [--hold] [--busy N]

Each run queues ``n`` messages and starts that many worker processes on one database (each runs
``run_worker(once=True)``, as ``manage.py sms_worker --once`` does); they start sending together
and stop when nothing is due. With ``--redis`` they share the limit through Redis (Django's
RedisCache, or django-redis's with ``--cache django-redis``); without it each process limits
itself, and only 1 process runs unless ``--processes`` says otherwise. The worker waits with
``limiter.acquire`` before each request (a grant counts as if the request reached the provider
within ``ratelimit.MARGIN``, 40 ms); ``--hold`` makes each grant count until its request is
answered, as ``with limiter.hold(...)`` around the request does. ``--busy N`` runs N CPU-bound
processes alongside, for a busy machine on demand.

Prints JSON. Per run: ``max_in_any_1s`` (requests as they reached the sandbox: what the provider
sees), ``max_granted_in_any_1s`` (the grant times the limiter returned, Redis TIME when shared),
``rate`` (requests/s from the first to the last), ``sent`` and ``after_grant_ms`` (how long
after their grants requests reached the sandbox). ``by_processes`` lists these over
the runs of each process count. At the top, the worst of all runs: ``max_in_any_1s``,
``max_granted_in_any_1s``, ``sent`` and ``min_rate``; ``holds`` when no run let more than the
limit into any second, ``uses_95_percent`` when every run used at least 95% of it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from _setup import ROOT, queue_messages, setup_django, window_stats

GRANT_HEADER = "X-Bench-Granted-At"
BACKENDS = {
    "django": "django.core.cache.backends.redis.RedisCache",
    "django-redis": "django_redis.cache.RedisCache",
}


def instrument(limiter, hold: bool) -> tuple[list[float], set[str]]:
    """Record the limiter's grant times and how they were taken ("hold", "acquire"), and send
    each grant's time in a request header. With ``hold``, the worker's ``acquire`` holds its
    grant until the request is answered, as ``with limiter.hold(...)`` around the request does."""
    import requests

    grants: list[float] = []
    kinds: set[str] = set()
    local = threading.local()
    take = limiter._take

    def recording_take(stop, member, held, count=1):
        granted_at = take(stop, member, held, count)
        if granted_at is not None:
            grants.extend([granted_at] * count)
            kinds.add("hold" if held else "acquire")
            local.granted_at = granted_at
        return granted_at

    limiter._take = recording_take

    def holding_acquire(stop=None):
        context = limiter.hold(1, stop)
        if context.__enter__():
            local.__dict__.setdefault("held", []).append(context)
            return True
        context.__exit__(None, None, None)
        return False

    if hold:
        limiter.acquire = holding_acquire
    send = requests.Session.send

    def send_with_grant(session, request, **kwargs):
        request.headers[GRANT_HEADER] = repr(getattr(local, "granted_at", 0.0))
        try:
            return send(session, request, **kwargs)
        finally:  # answered (or failed): held grants count from now
            for context in local.__dict__.pop("held", []):
                context.__exit__(None, None, None)

    requests.Session.send = send_with_grant
    return grants, kinds


def worker(args: argparse.Namespace) -> None:
    """One worker process: records the limiter's grants, sends when told, prints JSON."""
    sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    if os.environ.get("BENCH_CACHES"):
        from django.test.utils import override_settings

        override_settings(CACHES=json.loads(os.environ["BENCH_CACHES"])).enable()
    from crm_sms import ratelimit
    from crm_sms.outbox import run_worker

    # The limiter the worker's threads will get (one per process and provider).
    limiter = ratelimit.get_rate_limiter("default", args.limit)
    grants, kinds = instrument(limiter, args.hold)
    print("ready", flush=True)
    sys.stdin.readline()  # "go": every process is ready
    summary = run_worker(once=True, concurrency=args.concurrency, batch_size=args.batch_size)
    out = {"sent": summary.sent, "grants": grants, "kinds": sorted(kinds)}
    print(json.dumps({**out, "limiter": limiter.description}))


def run_once(args: argparse.Namespace, sandbox, processes: int) -> dict:
    """Queue ``args.n`` messages, send them with ``processes`` worker processes; the figures."""
    queue_messages(args.n)
    sandbox.reset()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    if args.redis:
        caches = {
            "default": {
                "BACKEND": BACKENDS[args.cache],
                "LOCATION": args.redis,
                "KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",  # a fresh schedule per run
            }
        }
        env["BENCH_CACHES"] = json.dumps(caches)
    command = [sys.executable, __file__, "--worker", "--limit", str(args.limit)]
    command += ["--concurrency", str(args.concurrency), "--batch-size", str(args.batch_size)]
    command += ["--hold"] if args.hold else []
    procs = [
        subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    try:
        for proc in procs:
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker process failed to start")
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = [
            json.loads(proc.communicate(timeout=args.n / args.limit * 5 + 60)[0]) for proc in procs
        ]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    arrived = window_stats([r.received_at for r in sandbox.requests])
    # How long after its grant each request reached the sandbox (where the grant times are
    # Redis TIME, this machine's clock; a local limiter's are ``time.monotonic``).
    late_ms = sorted(
        (r.received_at - float(r.headers.get(GRANT_HEADER, "nan"))) * 1000
        for r in sandbox.requests
        if args.redis
    )
    granted = window_stats([t for out in outputs for t in out["grants"]])
    return {
        "processes": processes,
        "limiter": outputs[0]["limiter"],
        "worker_waits_with": "+".join(sorted({k for out in outputs for k in out["kinds"]})),
        "sent": sum(out["sent"] for out in outputs),
        "requests": arrived["count"],
        "max_in_any_1s": arrived["max_in_1s"],
        "max_granted_in_any_1s": granted["max_in_1s"],
        "rate": arrived["rate"],
        "seconds": arrived["seconds"],
        "after_grant_ms": {
            "median": round(late_ms[len(late_ms) // 2], 1) if late_ms else None,
            "p99": round(late_ms[int(len(late_ms) * 0.99)], 1) if late_ms else None,
            "max": round(late_ms[-1], 1) if late_ms else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=50, help="RATE_LIMIT, messages/s (50)")
    parser.add_argument("-n", type=int, default=500, help="messages per run (500: ten seconds)")
    parser.add_argument("--processes", help="worker process counts (1,2,4 with --redis, else 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per process count (3)")
    parser.add_argument("--concurrency", type=int, default=16, help="threads per process (16)")
    parser.add_argument("--batch-size", type=int, default=100, help="claimed at a time (100)")
    parser.add_argument("--latency-ms", type=float, default=20, help="sandbox latency (20)")
    parser.add_argument("--redis", help="a Redis URL: share the limit through Redis")
    parser.add_argument("--cache", choices=sorted(BACKENDS), default="django", help="(django)")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="grants count until the request is answered (RateLimiter.hold), as the worker will",
    )
    parser.add_argument("--busy", type=int, default=0, help="CPU-bound processes alongside (0)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    counts = [int(p) for p in (args.processes or ("1,2,4" if args.redis else "1")).split(",")]

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from crm_sms.sandbox import SandboxServer

    sandbox = SandboxServer(latency_ms=args.latency_ms, callbacks=False).start()
    setup_django(sandbox.sms_url() + f"&rate_limit={args.limit}")
    runs = []
    # A busy machine on demand: processes that only burn CPU while the runs go on.
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        for processes in counts:
            for _ in range(args.runs):
                runs.append(run_once(args, sandbox, processes))
                time.sleep(1.1)  # the next run's first second is its own
    finally:
        for hog in hogs:
            hog.kill()
        sandbox.stop()
    keys = ("max_in_any_1s", "max_granted_in_any_1s", "rate", "sent")
    by_processes = {
        str(p): {key: [run[key] for run in runs if run["processes"] == p] for key in keys}
        for p in counts
    }
    result = {
        "limit": args.limit,
        "messages": args.n,
        "runs_per_count": args.runs,
        "concurrency": args.concurrency,
        "cache": BACKENDS[args.cache] if args.redis else "per process",
        "worker_waits_with": "+".join(sorted({run["worker_waits_with"] for run in runs}))
        + (" (--hold)" if args.hold else ""),
        "busy_processes": args.busy,
        "by_processes": by_processes,
        "max_in_any_1s": max(run["max_in_any_1s"] for run in runs),
        "max_granted_in_any_1s": max(run["max_granted_in_any_1s"] for run in runs),
        "sent": min(run["sent"] for run in runs),
        "min_rate": min(run["rate"] for run in runs),
        "holds": all(run["max_in_any_1s"] <= args.limit for run in runs),
        "uses_95_percent": all(run["rate"] >= 0.95 * args.limit for run in runs),
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    # Lists of numbers on one line each: the runs side by side.
    print(
        re.sub(r"\[\s+([-\d.,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m[1]) + "]", text)
    )


if __name__ == "__main__":
    main()
