"""Queueing a big campaign: seconds, recipients/s and peak memory of ``send_campaign`` per size.

For each N (100k, 300k, 1M by default) a database of N contacts is built once with the fast
path (COPY through ``crm_sms.bulk``; reused by name on later runs), then a fresh process queues a
campaign to all of them with a per-contact template, and reports its peak RSS
(``ru_maxrss``, so peaks never carry over between sizes). The campaign is rolled back, so the
database stays as built. Memory is flat when ``growth_per_100k_mb`` stays near zero.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/crm_sms_queue1m \\
        .venv/bin/python bench/queue_campaign.py --sizes 100000,300000,1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _setup import ROOT, recreate_database, setup_django  # noqa: E402

TEXT = "Здравствуйте, {{ first_name }}! Скидка 10% до конца недели."


def _db_url(base: str, n: int) -> str:
    """The database of size ``n``: the base name with ``_<n>`` (a file next to it on SQLite)."""
    parts = urlsplit(base)
    if base.startswith("sqlite:///"):
        path = Path(base.removeprefix("sqlite:///"))
        return f"sqlite:///{path.with_name(f'{path.stem}_{n}{path.suffix}')}"
    return urlunsplit(parts._replace(path=f"{parts.path}_{n}"))


def _env() -> dict[str, str]:
    from secrets import token_urlsafe

    return {"DEBUG": "0", "SECRET_KEY": token_urlsafe(50), "SMS_LOG_LEVEL": "WARNING"}


def _rss_mb() -> float:
    """Peak RSS of this process so far, MB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _built(n: int) -> bool:
    from crm_sms.models import Contact, Message

    return Contact.objects.count() == n and not Message.objects.exists()


def _phone(phone_of, i: int) -> str:
    """``_bigdb.phone_of``, and every 1000th contact has the previous one's number in another
    notation (a duplicate once normalized)."""
    if i % 1000 != 500:
        return phone_of(i)
    digits = phone_of(i - 1).removeprefix("+7")
    return f"8 ({digits[:3]}) {digits[3:6]}-{digits[6:8]}-{digits[8:]}"


def build_child(n: int) -> None:
    """Make the database of ``n`` contacts unless it is already there."""
    try:
        setup_django("console://", **_env())
        if _built(n):
            print(json.dumps({"built": False}))
            return
    except Exception:  # noqa: BLE001 - no such database yet: make it
        pass
    from django.db import connections

    connections.close_all()
    recreate_database(os.environ["DATABASE_URL"])
    setup_django("console://", **_env())
    from _bigdb import copy_rows, phone_of

    from crm_sms.models import Contact

    start = time.perf_counter()
    rows = ((i, f"Имя{i % 977}", _phone(phone_of, i), i % 37 == 0) for i in range(1, n + 1))
    from django.utils import timezone

    now = timezone.now()
    varying = ["id", "first_name", "phone", "opted_out"]
    copy_rows(Contact, varying, rows, created_at=now, updated_at=now)
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT setval(pg_get_serial_sequence('crm_sms_contact', 'id'), %s)", [n]
            )
            cursor.execute("VACUUM ANALYZE crm_sms_contact")
    print(json.dumps({"built": True, "seconds": round(time.perf_counter() - start, 1)}))


def queue_child(n: int) -> None:
    """Queue a campaign to all ``n`` contacts, roll it back; print time and peak RSS."""
    setup_django("console://", **_env())
    from django.db import connection, transaction

    from crm_sms.models import Contact
    from crm_sms.outbox import send_campaign

    Contact.objects.exists()  # connect before the baseline
    baseline = _rss_mb()
    start = time.perf_counter()
    with transaction.atomic():
        campaign = send_campaign(Contact.objects.all(), TEXT, name="bench", window=None)
        seconds = time.perf_counter() - start
        transaction.set_rollback(True)
    out = {
        "n": n,
        "database": connection.vendor,
        "seconds": round(seconds, 2),
        "recipients": campaign.recipients_count,
        "excluded": campaign.excluded,
        "recipients_per_s": round(campaign.recipients_count / seconds),
        "baseline_rss_mb": round(baseline, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
    }
    out["rss_growth_mb"] = round(out["peak_rss_mb"] - baseline, 1)
    print(json.dumps(out))


def _run(mode: str, n: int, url: str) -> dict:
    env = dict(os.environ, DATABASE_URL=url)
    out = subprocess.run(
        [sys.executable, __file__, mode, str(n)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode:
        raise RuntimeError(f"{mode} {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] in (["--build-child"], ["--queue-child"]):
        (build_child if sys.argv[1] == "--build-child" else queue_child)(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,300000,1000000", help="contacts per run")
    parser.add_argument("--label", default="", help="a note for the output (before / after)")
    args = parser.parse_args()
    base = os.environ.get("DATABASE_URL") or f"sqlite:///{ROOT / 'bench-queue.sqlite3'}"
    runs = []
    for n in [int(s) for s in args.sizes.split(",")]:
        url = _db_url(base, n)
        build = _run("--build-child", n, url)
        load_before = [round(x, 2) for x in os.getloadavg()]
        run = _run("--queue-child", n, url)
        run["build"] = build
        run["loadavg"] = load_before
        runs.append(run)
    for prev, run in zip(runs, runs[1:], strict=False):
        run["growth_per_100k_mb"] = round(
            (run["peak_rss_mb"] - prev["peak_rss_mb"]) / ((run["n"] - prev["n"]) / 100_000), 2
        )
    for run in runs:
        run["growth_per_100k_mb_vs_baseline"] = round(run["rss_growth_mb"] / (run["n"] / 1e5), 2)
    out = {"label": args.label, "cpus": os.cpu_count(), "runs": runs}
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
