"""Messages per second over one connection: SMPP (window 1 and 10) vs MegaFon's HTTPS API, both
answering after the same injected latency.

    .venv/bin/python bench/smpp.py [-n 200] [--latency-ms 20] [--max-seconds 15]

- ``https``: ``MegafonBackend`` with one keep-alive connection (``pool_size=1``), sending one
  message after another, against the MegaFon sandbox (``SandboxServer(latency_ms=...)``, plain
  HTTP on loopback: the per-request round trip is what is measured, not TLS);
- ``smpp_window_1``: ``SMPPBackend`` with ``window=1``: one submit_sm at a time;
- ``smpp_window_10``: ``window=10``, ``send_many`` of 10 from one thread (each batch is one
  round trip);
- ``smpp_window_10_threads_4``: ``window=10`` shared by 4 sending threads, as the outbox
  worker does (the window stays full between batches).

Each SMPP run is against the SMPP sandbox (``SMPPSandbox(latency_ms=...)``), one bound
connection, receipts off. Everything runs in this process on loopback; each run sends ``n``
messages (``n`` x 5 for window 10) or stops after ``max_seconds``. Prints JSON: per run the
messages, seconds, rate and the connections and most outstanding requests the server saw; and
``window_10_vs_https`` (the ratio of rates) with ``target_met`` (at least 5).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_django() -> None:
    """Django settings for the backends (no database is used)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault(
        "DATABASE_URL", f"sqlite:///{tempfile.gettempdir()}/crm-sms-bench-smpp.sqlite3"
    )
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.setdefault("SMS_LOG_LEVEL", "WARNING")
    import django

    django.setup()


def messages(count: int, prefix: str) -> list:
    from crm_sms.backends.base import OutgoingSMS

    return [
        OutgoingSMS(
            to=f"+7900{i:07d}", text=f"Bench message {i}", sender="Bench", msg_id=f"{prefix}{i}"
        )
        for i in range(count)
    ]


def timed(send: Callable[[list], list], batches: list[list], max_seconds: float) -> dict:
    """Send ``batches`` one after another (stopping after ``max_seconds``); the rate."""
    sent = accepted = 0
    started = time.monotonic()
    for batch in batches:
        results = send(batch)
        sent += len(batch)
        accepted += sum(1 for result in results if result.status == "accepted")
        if time.monotonic() - started > max_seconds:
            break
    seconds = time.monotonic() - started
    return {
        "messages": sent,
        "accepted": accepted,
        "seconds": round(seconds, 3),
        "rate": round(sent / seconds, 1),
    }


def bench_https(count: int, latency_ms: float, max_seconds: float) -> dict:
    from crm_sms.backends.megafon import MegafonBackend
    from crm_sms.sandbox import SandboxServer

    with SandboxServer(latency_ms=latency_ms, callbacks=False) as sandbox:
        backend = MegafonBackend(
            alias="https",
            options={
                "login": sandbox.login,
                "password": sandbox.password,
                "base_url": sandbox.base_url,
                "sender": "Bench",
                "pool_size": 1,
            },
        )
        try:
            backend.send(messages(1, "warm")[0])  # connect outside the measurement
            result = timed(
                lambda batch: [backend.send(sms) for sms in batch],
                [[sms] for sms in messages(count, "h")],
                max_seconds,
            )
        finally:
            backend.close()
        result["connections"] = sandbox.connections_opened
        result["transport"] = "MegafonBackend, plain HTTP to the loopback sandbox"
    return result


def bench_smpp(
    count: int, latency_ms: float, max_seconds: float, window: int, threads: int = 1
) -> dict:
    from crm_sms.backends.smpp import SMPPBackend
    from crm_sms.sandbox.smpp import SMPPSandbox

    with SMPPSandbox(latency_ms=latency_ms, receipts=False) as sandbox:
        backend = SMPPBackend(
            alias=f"smpp{window}",
            options={
                "host": sandbox.host,
                "port": sandbox.port,
                "system_id": sandbox.system_id,
                "password": sandbox.password,
                "sender": "Bench",
                "window": window,
                "registered_delivery": False,
            },
        )
        try:
            backend.open()
            batches = [
                batch[i : i + window]
                for batch in [messages(count, f"w{window}")]
                for i in range(0, count, window)
            ]
            if threads == 1:
                result = timed(backend.send_many, batches, max_seconds)
            else:
                result = _threaded(backend.send_many, batches, threads, max_seconds)
        finally:
            backend.close()
        result.update(
            window=window,
            threads=threads,
            connections=sandbox.counters["connections"],
            max_outstanding=sandbox.counters["max_outstanding"],
        )
    return result


def _threaded(send: Callable, batches: list[list], threads: int, max_seconds: float) -> dict:
    """``threads`` threads take batches from one queue (as the outbox's pool does)."""
    lock = threading.Lock()
    queue = iter(batches)
    started = time.monotonic()
    totals = {"sent": 0, "accepted": 0}

    def run() -> None:
        while time.monotonic() - started <= max_seconds:
            with lock:
                batch = next(queue, None)
            if batch is None:
                return
            results = send(batch)
            with lock:
                totals["sent"] += len(batch)
                totals["accepted"] += sum(1 for r in results if r.status == "accepted")

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    seconds = time.monotonic() - started
    return {
        "messages": totals["sent"],
        "accepted": totals["accepted"],
        "seconds": round(seconds, 3),
        "rate": round(totals["sent"] / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="messages per one-at-a-time run")
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--max-seconds", type=float, default=15.0, help="bound of each run")
    args = parser.parse_args()
    setup_django()
    n, latency, bound = args.n, args.latency_ms, args.max_seconds
    report = {
        "latency_ms": latency,
        "https": bench_https(n, latency, bound),
        "smpp_window_1": bench_smpp(n, latency, bound, window=1),
        "smpp_window_10": bench_smpp(n * 5, latency, bound, window=10),
        "smpp_window_10_threads_4": bench_smpp(n * 5, latency, bound, window=10, threads=4),
    }
    ratio = report["smpp_window_10"]["rate"] / report["https"]["rate"]
    report["window_10_vs_https"] = round(ratio, 1)
    report["window_10_threads_4_vs_https"] = round(
        report["smpp_window_10_threads_4"]["rate"] / report["https"]["rate"], 1
    )
    report["target_met"] = ratio >= 5
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
