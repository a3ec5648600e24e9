"""Rate limits: never more than RATE_LIMIT sends in any one-second window, within a process and
across processes sharing Redis (Django's RedisCache or django-redis's).

The assertions count, in sliding windows, the grant times the limiter returns (Redis TIME for the
shared limiter) or the arrival times recorded while a send is held, or run on a fake clock; none
depends on how fast this machine happens to be."""

from __future__ import annotations

import heapq
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from crm_sms import ratelimit
from crm_sms.backends import build_backend
from crm_sms.backends.locmem import LocmemBackend

DJANGO_REDIS = "django.core.cache.backends.redis.RedisCache"
DJANGO_REDIS_PACKAGE = "django_redis.cache.RedisCache"
# Redis DB 1 is this area's (see tests/fixtures_outbox.py); every test has its own key prefix.
LOCATION = "redis://127.0.0.1:6379/1"


def max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most events in any half-open window of ``window`` seconds (sliding), counted in whole
    microseconds as the limiters count."""
    times = sorted(round(t * 1_000_000) for t in times)
    window_us = round(window * 1_000_000)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window_us:
            start += 1
        best = max(best, end - start + 1)
    return best


def hammer(limiters: list, total: int, threads: int = 12) -> list[float]:
    """``threads`` threads (spread over ``limiters``, as over worker processes) take ``total``
    grants; returns the grant times the limiters returned."""
    times: list[float] = []
    lock = threading.Lock()
    remaining = [total]

    def run(limiter):
        while True:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            granted_at = limiter.take()
            with lock:
                times.append(granted_at)

    workers = [
        threading.Thread(target=run, args=(limiters[i % len(limiters)],)) for i in range(threads)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    return times


class FakeClock:
    def __init__(self, now: float = 100.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def simulate(limiter, clock: FakeClock, callers: int, grants: int, late=lambda i: 0.0):
    """Callers that ask, sleep exactly what they are told (plus ``late(i)`` on their i-th sleep)
    and ask again, on the fake clock. Returns (grant times, asks)."""
    queue = [(clock.now, n, None) for n in range(callers)]  # (when, caller, turn)
    granted: list[float] = []
    asks = sleeps = 0
    while len(granted) < grants:
        clock.now, caller, turn = heapq.heappop(queue)
        answer = limiter.ask(turn)
        asks += 1
        if answer.granted_at is not None:
            granted.append(answer.granted_at)
            heapq.heappush(queue, (clock.now, caller, None))  # straight back for the next one
        else:
            sleeps += 1
            heapq.heappush(queue, (clock.now + answer.wait + late(sleeps), caller, answer.turn))
    return granted, asks


def test_max_in_window_helper():
    assert max_in_window([0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_window([]) == 0


def test_no_limit_without_rate_limit():
    assert ratelimit.get_rate_limiter("x", None) is None


class PacedBackend(LocmemBackend):
    """A provider whose contract allows 5 SMS a second unless the URL says more."""

    default_rate_limit = 5.0


def test_a_backends_default_rate_limit_holds_where_the_url_gives_none(settings):
    paced = f"{__name__}.PacedBackend"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PROVIDERS": {
            "paced": {"BACKEND": paced},
            "contracted": {"BACKEND": paced, "RATE_LIMIT": 40},
            "plain": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
        },
    }
    rates = {alias: build_backend(alias).rate_limit for alias in ("paced", "contracted", "plain")}
    assert rates == {"paced": 5.0, "contracted": 40.0, "plain": None}
    limiter = ratelimit.get_rate_limiter("paced", rates["paced"])
    assert limiter is not None and limiter.rate == 5.0
    assert ratelimit.get_rate_limiter("plain", rates["plain"]) is None


def test_local_limiter_is_exact_across_threads():
    limiter = ratelimit.LocalRateLimiter(50)
    times = hammer([limiter], 120, threads=12)
    assert len(times) == 120
    assert max_in_window(times) <= 50
    assert max_in_window(times, limiter.window) <= 50


def test_prompt_callers_get_evenly_paced_turns_and_use_96_percent():
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(50, clock=clock)
    granted, asks = simulate(limiter, clock, callers=16, grants=300)
    gaps = {round(b - a, 9) for a, b in zip(granted, granted[1:], strict=False)}
    assert gaps == {round(limiter.interval, 9)}  # one grant per turn, 20.8 ms apart
    assert max_in_window(granted, limiter.window) == 50
    rate = (len(granted) - 1) / (granted[-1] - granted[0])
    assert rate == pytest.approx(50 / (1 + ratelimit.MARGIN))
    assert asks <= 2 * len(granted) + 16  # one "wait until" per grant (and per caller): no polling


def test_late_callers_cannot_exceed_the_limit_in_any_window():
    """Callers that wake up to 300 ms late (a busy machine) still get at most ``limit`` grants in
    any window: the log is checked at the moment of the grant."""
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(20, clock=clock)
    granted, _ = simulate(
        limiter, clock, callers=12, grants=200, late=lambda i: (i * 7919 % 31) / 100
    )
    assert max_in_window(granted, limiter.window) <= 20
    assert max_in_window(granted) <= 20


def test_a_full_log_says_when_its_oldest_send_leaves_the_window():
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(10, clock=clock)
    turns = [limiter.ask().turn for _ in range(12)]  # one grant now, 11 turns queued
    clock.now += 5.0  # every caller wakes very late, at the same moment
    answers = [limiter.ask(turn) for turn in turns[1:]]
    assert sum(a.granted_at is not None for a in answers) == 10  # the first one has left
    (refused,) = [a for a in answers if a.granted_at is None]
    assert refused.wait == pytest.approx(limiter.window, abs=1e-6)
    assert refused.turn == turns[-1]  # it keeps its turn


def test_take_sleeps_what_it_is_told(monkeypatch):
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(10, clock=clock)
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        clock.now += seconds

    monkeypatch.setattr(ratelimit.time, "sleep", fake_sleep)
    granted = [limiter.take() for _ in range(3)]
    assert granted == pytest.approx([100.0, 100.0 + limiter.interval, 100.0 + 2 * limiter.interval])
    assert sleeps == pytest.approx([limiter.interval] * 2)


def test_held_sends_count_until_answered():
    """``hold``: a send counts until its request is answered (then for a second), so however
    late it reaches the provider the next ``limit`` cannot bunch up with it."""
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(2, clock=clock)
    first, second = limiter.ask(member="a", held=True), limiter.ask(member="b", held=True)
    assert first.granted_at == 100.0 and second.granted_at is None  # b: its turn comes
    clock.now += limiter.interval
    assert limiter.ask(second.turn, member="b", held=True).granted_at is not None
    clock.now += 5.0  # both requests still unanswered: their places stay taken
    blocked = limiter.ask()
    assert blocked.granted_at is None
    assert blocked.wait == pytest.approx(limiter.interval)  # asks again soon, not in 2 minutes
    limiter.done(limiter.members("a"))  # answered now: counts for one more second
    assert limiter.ask(blocked.turn).granted_at is None
    clock.now += 1.0
    assert limiter.ask(blocked.turn).granted_at is not None
    clock.now += ratelimit.HOLD_MAX  # a worker that died holding "b" frees it at last
    assert limiter.ask().granted_at is not None


def test_hold_counts_each_message_and_frees_on_errors():
    limiter = ratelimit.LocalRateLimiter(5)
    with pytest.raises(RuntimeError), limiter.hold(3) as granted:
        assert granted and len(limiter._log) == 3
        assert all(until > limiter._now() + 60_000_000 for until in limiter._log.values())
        raise RuntimeError("the backend failed")
    assert all(until <= limiter._now() for until in limiter._log.values())  # answered
    stop = threading.Event()
    stop.set()
    with limiter.hold(1, stop) as granted:
        assert not granted


def test_a_request_for_several_messages_takes_their_places_at_once():
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(10, clock=clock)
    assert limiter.ask(member="g", count=3).granted_at == 100.0
    assert sorted(limiter._log) == ["g:1", "g:2", "g:3"]
    assert limiter.ask().wait == pytest.approx(3 * limiter.interval)  # its three turns first
    big = ratelimit.LocalRateLimiter(10, clock=clock)
    assert big.ask(member="b", count=25).granted_at is not None  # more than the limit: all of it
    assert len(big._log) == 10
    assert big.ask().wait == pytest.approx(25 * big.interval)  # paced as 25 messages


def test_a_group_waits_until_enough_places_are_free():
    clock = FakeClock()
    limiter = ratelimit.LocalRateLimiter(10, clock=clock)
    for now, member, count in [(100.0, "a", 1), (100.2, "b", 6), (100.9, "c", 2)]:
        clock.now = now
        assert limiter.ask(member=member, count=count).granted_at == now
    clock.now = 101.2  # "a" no longer counts; 8 do
    refused = limiter.ask(member="d", count=9)  # needs 7 of them gone: the 7th oldest is c's
    assert refused.granted_at is None
    assert refused.wait == pytest.approx(100.9 + limiter.window - 101.2)
    clock.now += refused.wait
    assert limiter.ask(refused.turn, member="d", count=9).granted_at is not None


def test_groups_cannot_deadlock_each_other():
    """Two requests of 7 messages under a limit of 10: taken whole, one after the other (a
    group holding part of its places while waiting for the rest could wait forever)."""
    limiter = ratelimit.LocalRateLimiter(10)
    done = []

    def send():
        with limiter.hold(7) as granted:
            assert granted
            time.sleep(0.05)
        done.append(True)

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert done == [True, True]


def test_held_sends_reach_the_provider_exactly_however_late():
    """Twelve threads hold a 20/s limit and reach a "provider" up to 150 ms after the grant:
    the provider's arrival times (``time.monotonic``, the local limiter's clock) never hold
    more than 20 in any second."""
    limiter = ratelimit.LocalRateLimiter(20)
    arrivals: list[float] = []
    lock = threading.Lock()

    def run(n):
        for i in range(5):
            with limiter.hold(1) as granted:
                assert granted
                time.sleep((n * 7 + i * 13) % 16 / 100)  # 0-150 ms on the way
                with lock:
                    arrivals.append(time.monotonic())

    threads = [threading.Thread(target=run, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(arrivals) == 60
    assert max_in_window(arrivals) <= 20


def test_fractional_rates():
    limiter = ratelimit.LocalRateLimiter(10.5)
    assert limiter.limit == 10 and limiter.window >= 1.0
    slow = ratelimit.LocalRateLimiter(0.5)
    assert slow.limit == 1 and slow.window == pytest.approx(2 * (1 + ratelimit.MARGIN))


def test_acquire_gives_up_when_stopped():
    limiter = ratelimit.LocalRateLimiter(1)
    stop = threading.Event()
    assert limiter.acquire(stop)  # the first grant is free
    waiting = threading.Thread(target=lambda: results.append(limiter.acquire(stop)))
    results: list[bool] = []
    waiting.start()
    stop.set()
    waiting.join(timeout=5)
    assert results == [False]
    assert limiter.take(stop) is None  # stopped: nothing taken


@pytest.fixture
def fresh_announcements(monkeypatch):
    """The start-up line is logged once per process: tests start with none logged yet."""
    monkeypatch.setattr(ratelimit, "_announced", set())


def test_the_local_limiter_is_shared_per_provider_and_announced(
    settings, caplog, fresh_announcements
):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with caplog.at_level(logging.INFO, logger="crm_sms.ratelimit"):
        a = ratelimit.get_rate_limiter("p1", 10)
        assert ratelimit.get_rate_limiter("p1", 10) is a
        ratelimit.reset_rate_limiters()
        assert ratelimit.get_rate_limiter("p1", 10) is not a
    assert isinstance(a, ratelimit.LocalRateLimiter)
    assert ratelimit.get_rate_limiter("p2", 10) is not a
    lines = [r for r in caplog.records if r.name == "crm_sms.ratelimit"]
    kind = (
        "per process (cache 'default' is not Redis: django.core.cache.backends.locmem.LocMemCache)"
    )
    assert [(r.levelno, r.getMessage()) for r in lines] == [
        (logging.INFO, f"Rate limit of provider 'p1', 10/s: {kind}"),  # once, though rebuilt
        (logging.INFO, f"Rate limit of provider 'p2', 10/s: {kind}"),
    ]


def test_a_missing_rate_limit_cache_is_announced(settings, caplog, fresh_announcements):
    settings.CRM_SMS = {**settings.CRM_SMS, "RATE_LIMIT_CACHE": "nope"}
    with caplog.at_level(logging.INFO, logger="crm_sms.ratelimit"):
        limiter = ratelimit.get_rate_limiter("p", 5)
    assert isinstance(limiter, ratelimit.LocalRateLimiter)
    assert "per process (cache 'nope' is not configured)" in caplog.text


@pytest.mark.django_db
def test_the_worker_announces_its_limiter_on_first_use(
    locmem_provider, settings, caplog, fresh_announcements
):
    from crm_sms.outbox import dispatch_due, send_sms

    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {**crm["PROVIDERS"]}
    crm["PROVIDERS"]["default"] = {**crm["PROVIDERS"]["default"], "RATE_LIMIT": 500}
    settings.CRM_SMS = crm
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    for phone in ("+79001234501", "+79001234502", "+79001234503"):
        send_sms(phone, "Hi")
    with caplog.at_level(logging.INFO, logger="crm_sms.ratelimit"):
        dispatch_due(concurrency=3)
        send_sms("+79001234504", "Hi")
        dispatch_due(concurrency=3)
    assert len(locmem_provider) == 4
    lines = [r.getMessage() for r in caplog.records if r.name == "crm_sms.ratelimit"]
    assert lines == [
        "Rate limit of provider 'default', 500/s: per process "
        "(cache 'default' is not Redis: django.core.cache.backends.locmem.LocMemCache)"
    ]


# -- Redis -----------------------------------------------------------------------------------


def redis_caches(backend: str, prefix: str, location: str = LOCATION) -> dict:
    return {"default": {"BACKEND": backend, "LOCATION": location, "KEY_PREFIX": prefix}}


@pytest.fixture(params=[DJANGO_REDIS, DJANGO_REDIS_PACKAGE], ids=["django", "django-redis"])
def redis_cache(request, settings, redis_url):
    """The rate-limit cache is Redis, through Django's RedisCache or django-redis's, with a key
    prefix of this test's own. ``redis_url`` fails the test under CI=true without Redis."""
    settings.CACHES = redis_caches(request.param, f"test-{uuid.uuid4().hex[:8]}")
    return settings


@pytest.mark.redis
def test_both_redis_backends_are_recognised_and_announced(redis_cache, caplog, fresh_announcements):
    with caplog.at_level(logging.INFO, logger="crm_sms.ratelimit"):
        limiter = ratelimit.get_rate_limiter("p", 5)
        ratelimit.get_rate_limiter("p", 5)
    assert isinstance(limiter, ratelimit.RedisRateLimiter)
    assert limiter.take() is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "crm_sms.ratelimit"]
    assert lines == [f"Rate limit of provider 'p', 5/s: shared through Redis {LOCATION}"]


@pytest.mark.redis
def test_both_backends_share_one_schedule(settings, redis_url):
    """A site moving from Django's RedisCache to django-redis (or running both) keeps one limit:
    the same key, the same schedule."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    limiters = []
    for backend in (DJANGO_REDIS, DJANGO_REDIS_PACKAGE):
        settings.CACHES = redis_caches(backend, prefix)
        limiters.append(ratelimit.build_rate_limiter("p", 2))
    django_one, package_one = limiters
    assert django_one.key == package_one.key
    assert django_one.ask().granted_at is not None
    assert package_one.ask().granted_at is None  # the next turn is half a second away


def test_the_password_never_reaches_the_log(settings, caplog, fresh_announcements):
    location = "redis://user:s3cret@127.0.0.1:6379/1?password=s3cret"
    settings.CACHES = redis_caches(DJANGO_REDIS_PACKAGE, "x", location)
    with caplog.at_level(logging.INFO, logger="crm_sms.ratelimit"):
        limiter = ratelimit.get_rate_limiter("p", 5)  # nothing connects before the first send
    assert isinstance(limiter, ratelimit.RedisRateLimiter)
    assert "shared through Redis redis://user:***@127.0.0.1:6379/1?password=***" in caplog.text
    assert "s3cret" not in caplog.text


@pytest.mark.redis
def test_redis_answers_are_turns_and_waits(redis_cache):
    limiter = ratelimit.build_rate_limiter(f"p-{uuid.uuid4().hex[:6]}", 5)
    first = limiter.ask()
    assert first.granted_at is not None
    second = limiter.ask()
    assert second.granted_at is None and 0 < second.wait <= limiter.interval
    again = limiter.ask(second.turn)  # asking early again keeps the turn, takes no new one
    assert again.granted_at is None and again.turn == second.turn
    third = limiter.ask()
    assert third.turn == ("redis", second.turn[1] + round(limiter.interval * 1_000_000))


@pytest.mark.redis
def test_redis_holds_a_send_until_it_is_answered(redis_cache):
    limiter = ratelimit.build_rate_limiter(f"p-{uuid.uuid4().hex[:6]}", 5)
    log = limiter.key + ":log"
    granted_at = limiter.ask(member="m", held=True, count=2).granted_at
    members = limiter.members("m", 2)
    assert members == ["m:1", "m:2"]
    for member in members:
        until = limiter.client.zscore(log, member) / 1e6
        assert until - granted_at == pytest.approx(ratelimit.HOLD_MAX)
    limiter.done(members)
    answered_at = limiter.client.zscore(log, "m:1") / 1e6
    assert granted_at <= answered_at < granted_at + 10
    assert limiter.client.zscore(log, "m:2") / 1e6 == answered_at
    limiter.done(members)  # twice: no change
    assert limiter.client.zscore(log, "m:1") / 1e6 == answered_at
    assert limiter.client.zcard(log) == 2


@pytest.mark.redis
def test_redis_takes_a_group_at_once_and_paces_it(redis_cache):
    limiter = ratelimit.build_rate_limiter(f"p-{uuid.uuid4().hex[:6]}", 10)
    log = limiter.key + ":log"
    granted_at = limiter.ask(member="g", count=3).granted_at
    assert sorted(limiter.client.zrange(log, 0, -1)) == [b"g:1", b"g:2", b"g:3"]
    after = limiter.ask()
    assert after.turn == ("redis", round(granted_at * 1e6) + 3 * limiter._interval_us)
    big = ratelimit.build_rate_limiter(f"p-{uuid.uuid4().hex[:6]}", 10)
    assert big.ask(member="b", count=25).granted_at is not None
    assert big.client.zcard(big.key + ":log") == 10  # all of the limit, no more


@pytest.mark.redis
def test_redis_limiter_is_exact_across_limiter_instances(redis_cache):
    """Three limiter instances with their own Redis connections (three worker processes or
    machines) share one schedule in Redis."""
    alias = f"p-{uuid.uuid4().hex[:6]}"
    limiters = [ratelimit.build_rate_limiter(alias, 50) for _ in range(3)]
    assert all(isinstance(limiter, ratelimit.RedisRateLimiter) for limiter in limiters)
    times = hammer(limiters, 110, threads=15)
    assert len(times) == 110
    assert max_in_window(times) <= 50
    assert max_in_window(times, limiters[0].window) <= 50


# A worker process of the test below: a limiter built from the given CACHES (Django's or
# django-redis's RedisCache); two threads take grants (and record the Redis times they return),
# two hold them and reach a "provider" 0-150 ms later (and record when, on the same clock). It
# starts when told on stdin, after every process is ready, and prints JSON.
PROCESS = """
import json, logging, random, sys, threading, time
import django
from django.conf import settings
settings.configure(CACHES=json.loads(sys.argv[1]), CRM_SMS={}, USE_TZ=True)
django.setup()
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
from crm_sms import ratelimit
limiter = ratelimit.get_rate_limiter(sys.argv[2], float(sys.argv[3]))
ask, waits, grants, arrivals = limiter.ask, [], [], []
def counting_ask(*args, **kwargs):
    answer = ask(*args, **kwargs)
    if answer.granted_at is None:
        waits.append(answer.wait)
    return answer
limiter.ask = counting_ask
def taking():
    for _ in range(int(sys.argv[4]) // 4):
        grants.append(limiter.take())
def holding():
    for _ in range(int(sys.argv[4]) // 4):
        with limiter.hold(1) as granted:
            time.sleep(random.uniform(0, 0.15))
            arrivals.append(time.time())
print("ready", flush=True)
sys.stdin.readline()
threads = [threading.Thread(target=f) for f in (taking, taking, holding, holding)]
for t in threads: t.start()
for t in threads: t.join()
out = {"grants": grants, "arrivals": arrivals, "waits": waits, "limiter": limiter.description}
print(json.dumps(out))
"""


@pytest.mark.redis
@pytest.mark.slow
def test_the_limit_is_exact_across_worker_processes(redis_url):
    """Four real processes, two through Django's RedisCache and two through django-redis, share
    a 20/s limit. Counted in the Redis times of the grants and in the arrival times at the
    "provider" of the held sends (up to 150 ms after their grants), no second holds more than
    20 sends."""
    from tests.fixtures_outbox import ROOT

    prefix, alias, rate, per_process = f"test-{uuid.uuid4().hex[:8]}", "shared", 20, 16
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS, json.dumps(redis_caches(backend, prefix))]
            + [alias, str(rate), str(per_process)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend in (DJANGO_REDIS, DJANGO_REDIS_PACKAGE, DJANGO_REDIS, DJANGO_REDIS_PACKAGE)
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=30)
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err
            results.append((json.loads(out), err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    grants = [t for result, _ in results for t in result["grants"]]
    arrivals = [t for result, _ in results for t in result["arrivals"]]
    assert len(grants) == len(arrivals) == 2 * per_process
    assert max_in_window(grants) <= rate
    assert max_in_window(grants, ratelimit.LocalRateLimiter(rate).window) <= rate
    assert max_in_window(grants + arrivals) <= rate  # what the provider sees
    assert sum(len(result["waits"]) for result, _ in results) > 0  # the limit was contended
    assert all(0 < wait <= 1.1 for result, _ in results for wait in result["waits"])
    line = (
        f"crm_sms.ratelimit: Rate limit of provider 'shared', 20/s: shared through Redis {LOCATION}"
    )
    for result, err in results:
        assert result["limiter"] == f"shared through Redis {LOCATION}"
        assert err.count(line) == 1, err  # the start-up line, once per process


def test_redis_down_falls_back_to_a_local_limit(settings, caplog):
    settings.CACHES = redis_caches(DJANGO_REDIS, "down", "redis://127.0.0.1:1/0")  # nobody there
    limiter = ratelimit.build_rate_limiter("down", 20)
    assert isinstance(limiter, ratelimit.RedisRateLimiter)
    with caplog.at_level(logging.WARNING, logger="crm_sms.ratelimit"):
        times = hammer([limiter], 25, threads=4)
    assert len(times) == 25
    assert max_in_window(times) <= 20
    warnings = [r for r in caplog.records if r.name == "crm_sms.ratelimit"]
    assert len(warnings) == 1 and "Redis unavailable" in warnings[0].getMessage()


@pytest.mark.redis
def test_the_shared_limit_comes_back_with_redis(redis_cache, caplog, monkeypatch):
    limiter = ratelimit.build_rate_limiter(f"p-{uuid.uuid4().hex[:6]}", 5)
    script, calls = limiter._script, []

    def failing_once(**kwargs):
        calls.append(kwargs)
        if len(calls) == 1:
            raise ConnectionError("Redis restarting")
        return script(**kwargs)

    monkeypatch.setattr(limiter, "_script", failing_once)
    monkeypatch.setattr(ratelimit, "REDIS_RETRY_AFTER", 0.0)
    with caplog.at_level(logging.WARNING, logger="crm_sms.ratelimit"):
        assert limiter.ask().granted_at is not None  # the local limit, meanwhile
        assert limiter.ask().granted_at is not None  # Redis again: its own schedule
    assert len(calls) == 2
    assert "Redis unavailable" in caplog.text and "Redis is back" in caplog.text
