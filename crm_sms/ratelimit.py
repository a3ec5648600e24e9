"""Per-provider rate limits: at most ``RATE_LIMIT`` messages in any one-second window.

The algorithm: a sliding-window log with a queue of turns, each decision one atomic step.

- The log holds, for each recent send, the latest time its request can reach the provider: the
  grant time plus ``MARGIN`` seconds for ``acquire``/``take``; for ``hold``, "not answered yet"
  until the request is answered, then the time of the answer (which is after the request
  arrived). A send is granted, and logged, only while fewer than ``limit`` logged sends can still
  be within the last second. The next request cannot arrive before its grant, so the provider
  never sees more than ``limit`` in any second: with ``hold`` however late a request reaches it
  (a stalled process, a slow network), with ``acquire`` as long as it is not ``MARGIN`` later
  than the request ``limit`` sends after it.
- Turns spread the callers out: a caller's first ask gives it the next free turn (``n`` turns
  for a request of ``n`` messages), turns being ``(1 + MARGIN) / limit`` seconds apart (a rate
  below 1/s: proportionally more). Before its turn a caller is told to sleep until it; at
  its turn (or later) the log decides, and a refused caller is told when the oldest logged send
  stops counting (asking again at least every tenth of a second while it only waits for answers).
  A caller never polls: it sleeps as long as the answer says, then asks again. With enough work
  ``1 / (1 + MARGIN)`` (96%) of the limit is used, evenly paced; with ``hold`` somewhat less when
  answers take longer than ``MARGIN``.

Where Django's cache ``CRM_SMS["RATE_LIMIT_CACHE"]`` (default ``"default"``) is Redis (Django's
``django.core.cache.backends.redis.RedisCache`` or django-redis's ``django_redis.cache.RedisCache``)
the log and the turns live in Redis and each decision is one Lua script run on Redis's clock (one
round trip, no read-then-write race): the limit holds across all threads, worker processes and
machines sharing that Redis. With any other cache they live in the process and hold across its
threads. The first use in a process logs which of the two is in use.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from . import conf

logger = logging.getLogger("crm_sms.ratelimit")

#: Seconds (as a share of the window) a request may take to reach the provider after an
#: ``acquire`` grant; also the spacing of turns beyond ``1 / rate``.
MARGIN = 0.04
#: Seconds a ``hold`` grant counts as "not answered yet" at most: a worker that died holding it
#: frees the place after this (longer than any sane request timeout).
HOLD_MAX = 120.0
#: Seconds a Redis limiter limits within its process after a Redis error before it tries again.
REDIS_RETRY_AFTER = 5.0
#: The shortest sleep between two asks (the answers are in microseconds).
_MIN_SLEEP = 0.0005

# KEYS[1]: the log (a sorted set: member -> the latest arrival time, µs); KEYS[2]: the next
# free turn (µs). ARGV: limit; span (the provider's window, µs); turn interval (µs); the caller's
# turn (µs; 0: none yet); a unique name; the messages it sends (its members are name:1..n);
# their count-until offset from now (µs); MARGIN (µs); the longest wait to tell while only
# unanswered sends block (µs).
# Returns {1, now, 0}: granted and logged; or {0, wait, turn}: ask again with ``turn`` after
# ``wait`` µs.
_ASK_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local span = tonumber(ARGV[2])
local interval = tonumber(ARGV[3])
local turn = tonumber(ARGV[4])
local count = tonumber(ARGV[6])
local offset = tonumber(ARGV[7])
if turn == 0 then
  turn = math.max(tonumber(redis.call('GET', KEYS[2]) or '0'), now)
  local next_turn = turn + count * interval
  redis.call('SET', KEYS[2], string.format('%.0f', next_turn), 'PX',
    math.ceil((next_turn - now) / 1000) + 60000)
end
if turn > now then
  return {0, turn - now, turn}
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - span))
local logged = redis.call('ZCARD', KEYS[1])
local places = math.min(count, limit)
if logged + places <= limit then
  for i = 1, places do
    redis.call('ZADD', KEYS[1], string.format('%.0f', now + offset), ARGV[5] .. ':' .. i)
  end
  local ttl = math.ceil((offset + span) / 1000) + 1000
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  return {1, now, 0}
end
-- the send that must stop counting first: the (logged + places - limit)-th oldest
local index = logged + places - limit - 1
local first = tonumber(redis.call('ZRANGE', KEYS[1], index, index, 'WITHSCORES')[2])
local wait = first + span - now
if first > now + tonumber(ARGV[8]) then  -- it waits for answers: ask again soon
  wait = math.min(wait, tonumber(ARGV[9]))
end
return {0, wait, turn}
"""

# KEYS[1]: the log; ARGV: members whose requests have been answered. They count from now on.
_DONE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for _, member in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], member)
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], string.format('%.0f', now), member)
  end
end
return 0
"""


class Answer(NamedTuple):
    """One ask's answer: ``granted_at`` (the limiter's clock, seconds) when the send may go now,
    else None, ``wait`` seconds to sleep and the ``turn`` to ask with again."""

    granted_at: float | None
    wait: float = 0.0
    turn: Any = None


class RateLimiter:
    """At most ``limit`` sends reach the provider in any ``span`` seconds (1 s; longer for a
    rate below 1/s). ``hold`` (or ``take``/``acquire``) blocks until a send may go."""

    #: How the limit is kept, for the start-up log line.
    description = "per process"

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.limit = max(1, int(rate))  # sends within one span
        # At least a second (a fractional rate such as 10.5/s allows 10 in any second).
        self.span = max(1.0, self.limit / self.rate)
        self.window = (1.0 + MARGIN) * self.span  # between acquire grants limit places apart
        self.interval = self.window / self.limit  # between turns
        self._span_us = round(self.span * 1_000_000)
        self._margin_us = round((self.window - self.span) * 1_000_000)
        self._interval_us = max(1, round(self.interval * 1_000_000))
        self._hold_us = round(HOLD_MAX * 1_000_000)
        # How long a caller blocked only by unanswered sends sleeps before asking again.
        self._max_wait_us = max(self._interval_us, self._span_us // 10)

    def ask(
        self, turn: Any = None, member: str | None = None, held: bool = False, count: int = 1
    ) -> Answer:
        """One atomic decision: grant (and log) ``count`` sends now, or say how long to sleep.
        Pass the ``turn`` of the previous answer back (None on the first ask); ``member`` names
        the grant (its sends are ``members(member, count)``). A ``held`` grant counts until
        ``done`` is called for its sends (at most ``HOLD_MAX`` seconds)."""
        raise NotImplementedError

    def members(self, member: str, count: int = 1) -> list[str]:
        """The names of the sends of grant ``member`` (a request carrying more messages than
        the limit takes all its places, no more)."""
        return [f"{member}:{i}" for i in range(1, min(count, self.limit) + 1)]

    def done(self, members: list[str]) -> None:
        """The request of these ``held`` sends has been answered: they count from now on."""
        raise NotImplementedError

    def _take(
        self, stop: threading.Event | None, member: str, held: bool, count: int = 1
    ) -> float | None:
        turn = None
        while stop is None or not stop.is_set():
            answer = self.ask(turn, member, held, count)
            if answer.granted_at is not None:
                return answer.granted_at
            turn = answer.turn
            wait = max(answer.wait, _MIN_SLEEP)
            if stop is None:
                time.sleep(wait)
            elif stop.wait(wait):
                break
        return None

    def take(self, stop: threading.Event | None = None) -> float | None:
        """Block until this caller may send; return when its send was logged (the limiter's
        clock: Redis TIME or ``time.monotonic()``, seconds), or None without taking anything
        when ``stop`` is set first. The send must reach the provider within ``MARGIN``."""
        return self._take(stop, uuid.uuid4().hex, held=False)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until this thread may send: True, or False (send nothing) when ``stop`` is set."""
        return self.take(stop) is not None

    @contextmanager
    def hold(self, count: int = 1, stop: threading.Event | None = None) -> Iterator[bool]:
        """``with limiter.hold(n, stop) as granted:`` around one request carrying ``n``
        messages: waits until all ``n`` may go (taken at once, and ``n`` turns long), and
        ``granted`` is False when ``stop`` came first (send nothing then). The sends count until
        the block ends, i.e. until the request has been answered, so the provider sees at most
        ``limit`` in any second however late the request reaches it."""
        member = uuid.uuid4().hex
        granted = self._take(stop, member, held=True, count=count) is not None
        try:
            yield granted
        finally:
            if granted:
                self.done(self.members(member, count))


class LocalRateLimiter(RateLimiter):
    """The log and the turns in this process: shared by its threads only. Times are whole
    microseconds of ``clock`` (seconds), as in the Redis script."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic):
        super().__init__(rate)
        self.clock = clock
        self._lock = threading.Lock()
        self._next_turn = 0
        self._log: dict[str, int] = {}  # member -> the latest arrival time (µs)

    def _now(self) -> int:
        return round(self.clock() * 1_000_000)

    def ask(
        self, turn: int | None = None, member: str | None = None, held: bool = False, count: int = 1
    ) -> Answer:
        with self._lock:
            now = self._now()
            if turn is None:
                turn = max(self._next_turn, now)
                self._next_turn = turn + count * self._interval_us
            if turn > now:
                return Answer(None, (turn - now) / 1_000_000, turn)
            log = self._log
            places = min(count, self.limit)
            if len(log) + places > self.limit:  # drop what no longer counts (at most limit kept)
                for old in [m for m, until in log.items() if until <= now - self._span_us]:
                    del log[old]
            if len(log) + places <= self.limit:
                until = now + (self._hold_us if held else self._margin_us)
                log.update(dict.fromkeys(self.members(member or uuid.uuid4().hex, count), until))
                return Answer(now / 1_000_000)
            # The send that must stop counting first: the (len + places - limit)-th oldest.
            first = sorted(log.values())[len(log) + places - self.limit - 1]
            wait = first + self._span_us - now
            if first > now + self._margin_us:  # it waits for answers: ask again soon
                wait = min(wait, self._max_wait_us)
            return Answer(None, wait / 1_000_000, turn)

    def done(self, members: list[str]) -> None:
        with self._lock:
            now = self._now()
            for member in members:
                if self._log.get(member, 0) > now:
                    self._log[member] = now


class RedisRateLimiter(RateLimiter):
    """The log and the turns in Redis, shared by every process and machine using ``key``."""

    def __init__(self, rate: float, client: Any, key: str, location: str = ""):
        super().__init__(rate)
        self.client = client
        self.key = key
        self.description = f"shared through Redis {location}".rstrip()
        self._keys = [key + ":log", key + ":turn"]
        self._script = client.register_script(_ASK_LUA)
        self._done_script = client.register_script(_DONE_LUA)
        # While Redis fails: a limit within this process, and when to try Redis again.
        self._fallback = LocalRateLimiter(rate)
        self._failed_until = 0.0
        self._failing = False
        self._state_lock = threading.Lock()

    def ask(
        self,
        turn: tuple[str, int] | None = None,
        member: str | None = None,
        held: bool = False,
        count: int = 1,
    ) -> Answer:
        # A turn is ("redis", µs of Redis TIME) or ("local", µs of the fallback's clock).
        source, value = turn or ("", 0)
        member = member or uuid.uuid4().hex
        if self._failing and time.monotonic() < self._failed_until:
            return self._local(value if source == "local" else None, member, held, count)
        args = [self.limit, self._span_us, self._interval_us, value if source == "redis" else 0]
        offset = self._hold_us if held else self._margin_us
        args += [member, count, offset, self._margin_us, self._max_wait_us]
        try:
            granted, value, next_turn = self._script(keys=self._keys, args=args)
        except Exception as exc:  # Redis down: keep sending, limited within this process
            self._redis_failed(exc)
            return self._local(None, member, held, count)
        if self._failing:
            self._redis_back()
        if granted:
            return Answer(int(value) / 1_000_000)
        return Answer(None, int(value) / 1_000_000, ("redis", int(next_turn)))

    def _local(self, turn: int | None, member: str, held: bool, count: int) -> Answer:
        answer = self._fallback.ask(turn, member, held, count)
        return answer if answer.turn is None else answer._replace(turn=("local", answer.turn))

    def done(self, members: list[str]) -> None:
        self._fallback.done(members)  # those granted while Redis was down (others: no-op)
        if self._failing and time.monotonic() < self._failed_until:
            return  # Redis's grants among them stop counting after HOLD_MAX
        try:
            self._done_script(keys=self._keys[:1], args=members)
        except Exception as exc:
            self._redis_failed(exc)

    def _redis_failed(self, exc: Exception) -> None:
        with self._state_lock:
            if not self._failing:
                logger.warning(
                    "Rate limit %s: Redis unavailable (%s: %s); limiting within this process",
                    self.key,
                    type(exc).__name__,
                    exc,
                )
            self._failing = True
            self._failed_until = time.monotonic() + REDIS_RETRY_AFTER

    def _redis_back(self) -> None:
        with self._state_lock:
            if self._failing:
                self._failing = False
                logger.warning("Rate limit %s: Redis is back; the limit is shared again", self.key)


def _redis_client(cache: Any, key: str) -> Any | None:
    """The redis-py client under Django's or django-redis's RedisCache, or None for other caches."""
    try:
        from django.core.cache.backends.redis import RedisCache
    except ImportError:  # pragma: no cover - Django < 4.0
        pass
    else:
        if isinstance(cache, RedisCache):
            return cache._cache.get_client(key, write=True)
    try:
        from django_redis.cache import RedisCache as DjangoRedisCache
    except ImportError:
        return None
    if not isinstance(cache, DjangoRedisCache):
        return None
    client = cache.client
    try:
        return client.get_client(write=True)
    except NotImplementedError:  # django-redis's ShardClient: the shard holding ``key``
        return client.get_server(key)


def _safe_location(location: Any) -> str:
    """A cache LOCATION (a URL, several, or a list) for a log line, without passwords."""
    if isinstance(location, list | tuple):
        location = ",".join(map(str, location))
    text = re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(location or ""))
    return re.sub(r"(password=)[^&;,]*", r"\1***", text, flags=re.IGNORECASE)


def build_rate_limiter(alias: str, rate: float) -> RateLimiter:
    """A new limiter of ``rate`` messages/second for provider ``alias``: Redis-backed when the
    rate-limit cache is a RedisCache (Django's or django-redis's), else in-process."""
    from django.conf import settings
    from django.core.cache import caches

    cache_alias = conf.get_setting("RATE_LIMIT_CACHE")
    try:
        cache = caches[cache_alias]
    except Exception:  # no such cache configured: an in-process limit is still a limit
        limiter = LocalRateLimiter(rate)
        limiter.description = f"per process (cache {cache_alias!r} is not configured)"
        return limiter
    # Braces: a Redis Cluster hash tag, so that the script's two keys share a slot.
    key = cache.make_and_validate_key(f"crm_sms:ratelimit:{{{alias}}}")
    client = _redis_client(cache, key)
    if client is None:
        limiter = LocalRateLimiter(rate)
        backend = f"{type(cache).__module__}.{type(cache).__qualname__}"
        limiter.description = f"per process (cache {cache_alias!r} is not Redis: {backend})"
        return limiter
    location = _safe_location(settings.CACHES.get(cache_alias, {}).get("LOCATION"))
    return RedisRateLimiter(rate, client, key, location)


_limiters: dict[tuple[str, float], RateLimiter] = {}
_announced: set[tuple[str, float, str]] = set()
_lock = threading.Lock()


def get_rate_limiter(alias: str, rate: float | None) -> RateLimiter | None:
    """The shared limiter for provider ``alias`` (None when it has no ``RATE_LIMIT``). Its first
    use in a process logs at INFO which limiter is in use."""
    if not rate:
        return None
    key = (alias, float(rate))
    limiter = _limiters.get(key)
    if limiter is None:
        with _lock:
            limiter = _limiters.get(key)
            if limiter is None:
                limiter = _limiters[key] = build_rate_limiter(alias, rate)
                if (*key, limiter.description) not in _announced:
                    _announced.add((*key, limiter.description))
                    logger.info(
                        "Rate limit of provider %r, %g/s: %s", alias, key[1], limiter.description
                    )
    return limiter


def reset_rate_limiters() -> None:
    """Forget the limiters (the settings or caches changed)."""
    with _lock:
        _limiters.clear()


def _after_fork_in_child() -> None:
    # A forked worker (Celery prefork) builds and announces its own limiters; the parent's lock
    # may have been held by another thread at the fork.
    global _lock
    _lock = threading.Lock()
    _limiters.clear()
    _announced.clear()


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("CRM_SMS", "CACHES"):
        reset_rate_limiters()


def _connect() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="crm_sms_reset_rate_limiters")
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


_connect()
