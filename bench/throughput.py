"""Throughput of the outbox worker against a plain keep-alive client, measured at the sandbox.

    .venv/bin/python bench/throughput.py [-n 3000] [--latency-ms 20] [--concurrency 32]

Both push the same number of messages with the same payloads at the same concurrency to one
MegaFon sandbox (answering after ``latency_ms``) in the same run. The worker
(``manage.py sms_worker --once``) also claims rows, writes results and events to the database
(a temporary SQLite file, or DATABASE_URL); the plain client (threads sharing one keep-alive
``requests.Session``) only posts. Each runs in its own process, as a worker does in
production, while the sandbox runs in this one; ``--in-process`` runs both in this process
instead (then they share its GIL with the sandbox). Prints JSON with both rates (requests per
second as the sandbox received them) and their ratio; with ``--rounds`` the two alternate and
the medians are reported (a busy machine varies a lot).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

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


def main() -> None:
    if sys.argv[1:2] == ["--plain-client"]:
        run_plain_client_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="messages (3000)")
    parser.add_argument("--latency-ms", type=float, default=20, help="sandbox latency (20)")
    parser.add_argument("--concurrency", type=int, default=32, help="parallel requests (32)")
    parser.add_argument("--batch-size", type=int, default=500, help="worker claim size (500)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="worker/plain rounds; medians reported (3)"
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run worker and client in this process"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from crm_sms.sandbox import SandboxServer

    sandbox = SandboxServer(latency_ms=args.latency_ms, callbacks=False).start()
    setup_django(sandbox.sms_url() + f"&pool_size={args.concurrency}")

    from django.db import connections

    from crm_sms.backends import get_backend
    from crm_sms.backends.base import OutgoingSMS
    from crm_sms.models import Message, MessageStatus, new_msg_ids
    from crm_sms.outbox import run_worker

    backend = get_backend()
    worker_runs, plain_runs = [], []
    for _ in range(args.rounds):
        # The worker: queue a campaign, then send everything due.
        Message.objects.all().delete()
        queue_messages(args.n)
        sandbox.reset()
        if args.in_process:
            started = time.monotonic()
            summary = run_worker(
                once=True, concurrency=args.concurrency, batch_size=args.batch_size
            )
            details = {
                "wall_seconds": round(time.monotonic() - started, 3),
                "output": summary.as_dict(),
            }
        else:
            connections.close_all()  # the worker process writes; hold nothing open
            details = worker_process(args.concurrency, args.batch_size)
        worker = window_stats([r.received_at for r in sandbox.requests])
        worker.update(sent=Message.objects.filter(status=MessageStatus.SENT).count(), **details)
        worker_runs.append(worker)

        # The plain client: the same payloads (text, sender, number), fresh msg_ids.
        payloads = []
        rows = Message.objects.values_list("phone", "text", "sender")
        for (phone, text, sender), msg_id in zip(rows, new_msg_ids(args.n), strict=False):
            sms = OutgoingSMS(to=phone, text=text, sender=sender, msg_id=msg_id)
            payloads.append(backend.encode_payload(backend.build_payload(sms)))
        sandbox.reset()
        if args.in_process:
            plain_seconds = plain_client(sandbox, payloads, args.concurrency)
        else:
            plain_seconds = plain_client_process(sandbox, payloads, args.concurrency)
        plain = window_stats([r.received_at for r in sandbox.requests])
        plain.update(wall_seconds=round(plain_seconds, 3))
        plain_runs.append(plain)
    sandbox.stop()

    ratios = [w["rate"] / p["rate"] for w, p in zip(worker_runs, plain_runs, strict=True)]
    worker_rate = statistics.median(w["rate"] for w in worker_runs)
    plain_rate = statistics.median(p["rate"] for p in plain_runs)
    print(
        json.dumps(
            {
                "messages": args.n,
                "latency_ms": args.latency_ms,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "mode": "in-process" if args.in_process else "separate processes",
                "worker_rate_at_sandbox": worker_rate,
                "plain_client_rate_at_sandbox": plain_rate,
                "ratio": round(worker_rate / plain_rate, 3),
                "ratio_per_round": [round(r, 3) for r in ratios],
                "ideal_rate": round(args.concurrency / (args.latency_ms / 1000), 1),
                "worker_runs": worker_runs,
                "plain_client_runs": plain_runs,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
