"""Throughput of the outbox worker against a plain keep-alive client, measured at the sandbox.

    .venv/bin/python bench/throughput.py [-n 3000] [--latency-ms 20] [--concurrency 32]

Both push the same number of messages with the same payloads at the same concurrency to one
MegaFon sandbox (answering after ``latency_ms``) in the same run. The worker
(``run_worker(once=True)``) also claims rows, writes results and events to the database
(a temporary SQLite file, or DATABASE_URL); the plain client only posts. Prints JSON with
both rates (requests per second as the sandbox received them) and their ratio; with
``--rounds`` the two alternate and the medians are reported (a busy machine varies a lot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from _setup import queue_messages, setup_django, window_stats


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="messages (3000)")
    parser.add_argument("--latency-ms", type=float, default=20, help="sandbox latency (20)")
    parser.add_argument("--concurrency", type=int, default=32, help="parallel requests (32)")
    parser.add_argument("--batch-size", type=int, default=500, help="worker claim size (500)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="worker/plain rounds; medians reported (3)"
    )
    args = parser.parse_args()

    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    from crm_sms.sandbox import SandboxServer

    sandbox = SandboxServer(latency_ms=args.latency_ms, callbacks=False).start()
    setup_django(sandbox.sms_url() + f"&pool_size={args.concurrency}")

    from crm_sms.backends import get_backend
    from crm_sms.backends.base import OutgoingSMS
    from crm_sms.models import Message, MessageStatus
    from crm_sms.sending import new_msg_ids, run_worker

    backend = get_backend()
    worker_runs, plain_runs = [], []
    for _ in range(args.rounds):
        # The worker: queue a campaign, then send everything due.
        Message.objects.all().delete()
        queue_messages(args.n)
        sandbox.reset()
        started = time.monotonic()
        summary = run_worker(once=True, concurrency=args.concurrency, batch_size=args.batch_size)
        worker = window_stats([r.received_at for r in sandbox.requests])
        worker.update(
            wall_seconds=round(time.monotonic() - started, 3),
            sent=Message.objects.filter(status=MessageStatus.SENT).count(),
            summary=summary.as_dict(),
        )
        worker_runs.append(worker)

        # The plain client: the same payloads (text, sender, number), fresh msg_ids.
        payloads = []
        rows = Message.objects.values_list("phone", "text", "sender")
        for (phone, text, sender), msg_id in zip(rows, new_msg_ids(args.n), strict=False):
            sms = OutgoingSMS(to=phone, text=text, sender=sender, msg_id=msg_id)
            payloads.append(backend.encode_payload(backend.build_payload(sms)))
        sandbox.reset()
        plain_seconds = plain_client(sandbox, payloads, args.concurrency)
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
