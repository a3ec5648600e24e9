"""Rate limits: never more than RATE_LIMIT sends in any one-second window, and >= 95% used."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from crm_sms import ratelimit


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window of ``window`` seconds (sliding)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def hammer(limiters: list, total: int, threads: int = 12) -> list[float]:
    """``threads`` threads (spread over ``limiters``, as over worker processes) take ``total``
    slots; returns the times the slots were granted."""
    times: list[float] = []
    lock = threading.Lock()
    remaining = [total]

    def run(limiter):
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            limiter.acquire()
            with lock:
                times.append(time.time())

    workers = [
        threading.Thread(target=run, args=(limiters[i % len(limiters)],)) for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return times


def test_max_in_window_helper():
    assert max_in_window([0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([]) == 0


def test_no_limit_without_rate_limit():
    assert ratelimit.get_rate_limiter("x", None) is None


def test_local_limiter_holds_across_threads_and_uses_the_limit():
    limiter = ratelimit.LocalRateLimiter(50)
    times = hammer([limiter], 100)
    assert max_in_window(times) <= 50
    mean = (len(times) - 1) / (max(times) - min(times))
    assert 47.5 <= mean <= 50


def test_the_local_limiter_is_shared_per_provider(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    a = ratelimit.get_rate_limiter("p1", 10)
    assert isinstance(a, ratelimit.LocalRateLimiter)
    assert ratelimit.get_rate_limiter("p1", 10) is a
    assert ratelimit.get_rate_limiter("p2", 10) is not a


def test_acquire_gives_up_when_stopped():
    limiter = ratelimit.LocalRateLimiter(1)
    stop = threading.Event()
    assert limiter.acquire(stop)  # the first slot is free
    stop.set()
    started = time.monotonic()
    assert not limiter.acquire(stop)
    assert time.monotonic() - started < 0.5


@pytest.fixture
def redis_cache(settings, redis_url):
    # Redis DB 1 is this area's (see tests/fixtures_outbox.py).
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/1",
            "KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",
        }
    }
    return settings


def test_redis_limiter_holds_across_workers(redis_cache):
    """Three limiter instances with their own Redis connections (three worker processes or
    machines) share one schedule in Redis."""
    alias = f"p-{uuid.uuid4().hex[:6]}"
    limiters = [ratelimit.build_rate_limiter(alias, 50) for _ in range(3)]
    assert all(isinstance(limiter, ratelimit.RedisRateLimiter) for limiter in limiters)
    times = hammer(limiters, 100, threads=15)
    assert max_in_window(times) <= 50
    mean = (len(times) - 1) / (max(times) - min(times))
    assert mean >= 47.5


def test_redis_limiter_in_two_processes(redis_cache, tmp_path):
    """Two real processes acquiring from the same Redis schedule."""
    import json
    import subprocess
    import sys

    from django.conf import settings

    from tests.fixtures_outbox import ROOT

    alias = f"p-{uuid.uuid4().hex[:6]}"
    script = f"""
import json, os, sys, time, django
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
django.setup()
from django.conf import settings
settings.CACHES = {json.dumps(settings.CACHES)}
from crm_sms.ratelimit import build_rate_limiter
limiter = build_rate_limiter({alias!r}, 40)
assert type(limiter).__name__ == "RedisRateLimiter", type(limiter)
start_at = float(sys.argv[1])
time.sleep(max(0, start_at - time.time()))
times = []
for _ in range(30):
    limiter.acquire()
    times.append(time.time())
print(json.dumps(times))
"""
    start_at = str(time.time() + 2.5)  # both start together, after Django's start-up
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, start_at],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        )
        for _ in range(2)
    ]
    times = []
    for proc in procs:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        times += json.loads(out)
    assert len(times) == 60
    assert max_in_window(times) <= 40


def test_redis_down_falls_back_to_a_local_limit(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens there
        }
    }
    limiter = ratelimit.build_rate_limiter("down", 20)
    assert isinstance(limiter, ratelimit.RedisRateLimiter)
    times = hammer([limiter], 25, threads=4)
    assert max_in_window(times) <= 20


def test_a_late_thread_cannot_bunch_up_with_the_next_ones():
    """The log step: even if slots were granted back to back (a thread woke late), no more
    than ``rate`` sends start within a window."""
    limiter = ratelimit.LocalRateLimiter(10)
    waits = [limiter.log_send() for _ in range(11)]
    assert waits[:10] == [0.0] * 10
    assert 0.9 < waits[10] <= limiter.window
    fractional = ratelimit.LocalRateLimiter(10.5)
    assert fractional.limit == 10 and fractional.window >= 1.0
