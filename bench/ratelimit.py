"""The rate limit as the provider sees it: the most messages in any one-second window and the
mean rate, with the worker sending through the MegaFon sandbox.

    .venv/bin/python bench/ratelimit.py [--limit 50] [-n 500] [--concurrency 16] [--redis URL]

Prints JSON; the limit holds when ``max_in_any_1s`` <= limit, and the limit is used when
``mean_rate`` >= 95% of it. ``--redis redis://127.0.0.1:6379/3`` shares the limit through
Redis, as several workers on several machines would: two Outbox instances run, and every
sending thread gets a limiter object of its own (as if each were a separate process); they
share only the schedule in Redis.
"""

from __future__ import annotations

import argparse
import json
import threading

from _setup import queue_messages, setup_django, window_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=50, help="RATE_LIMIT, messages/s (50)")
    parser.add_argument("-n", type=int, default=500, help="messages (500: ten seconds)")
    parser.add_argument("--concurrency", type=int, default=16, help="worker threads (16)")
    parser.add_argument("--latency-ms", type=float, default=20, help="sandbox latency (20)")
    parser.add_argument("--redis", help="a Redis URL: share the limit through Redis")
    args = parser.parse_args()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from crm_sms.sandbox import SandboxServer

    sandbox = SandboxServer(latency_ms=args.latency_ms, callbacks=False).start()
    setup_django(sandbox.sms_url() + f"&rate_limit={args.limit}")
    from django.conf import settings

    if args.redis:
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": args.redis,
                "KEY_PREFIX": f"bench-{threading.get_ident()}",
            }
        }

    from crm_sms import ratelimit
    from crm_sms.models import Message, MessageStatus
    from crm_sms.sending import Outbox

    queue_messages(args.n)
    sandbox.reset()
    workers = 2 if args.redis else 1
    outboxes = [Outbox(concurrency=args.concurrency, batch_size=100) for _ in range(workers)]
    limiter_kind = type(ratelimit.get_rate_limiter("default", args.limit)).__name__
    if args.redis:
        # A limiter object per sending thread, as in separate processes; one Redis schedule.
        originals = ratelimit.get_rate_limiter
        per_thread = threading.local()

        def limiter_of_this_worker(alias, rate):
            if not hasattr(per_thread, "limiter"):
                per_thread.limiter = ratelimit.build_rate_limiter(alias, rate)
            return per_thread.limiter

        import crm_sms.sending as sending_module

        sending_module.get_rate_limiter = limiter_of_this_worker
    threads = [threading.Thread(target=o.run, kwargs={"once": True}) for o in outboxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outboxes:
        o.close()
    if args.redis:
        sending_module.get_rate_limiter = originals
    stats = window_stats([r.received_at for r in sandbox.requests])
    sandbox.stop()
    print(
        json.dumps(
            {
                "limit": args.limit,
                "messages": args.n,
                "limiter": limiter_kind,
                "workers": workers,
                "concurrency": args.concurrency,
                "sent": Message.objects.filter(status=MessageStatus.SENT).count(),
                "requests": stats["count"],
                "max_in_any_1s": stats["max_in_1s"],
                "mean_rate": stats["rate"],
                "used_share": round(stats["rate"] / args.limit, 3),
                "seconds": stats["seconds"],
                "holds": stats["max_in_1s"] <= args.limit and stats["rate"] >= 0.95 * args.limit,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
