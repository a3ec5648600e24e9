"""Per-provider rate limits: at most ``RATE_LIMIT`` messages per second.

Two steps per send:
1. Pacing: the limiter spaces sends evenly (GCRA, the "generic cell rate algorithm", without
   burst): each send reserves the next free slot, slots ``(1 + MARGIN) / rate`` seconds apart.
2. A sliding-window log, checked when the thread actually goes to send: at most ``rate`` sends
   may start within any ``1 + MARGIN`` seconds. A thread that woke late from step 1 (a busy
   machine) therefore cannot bunch up with the threads after it.
So no one-second window at the provider holds more than ``rate`` requests, as long as a request
takes less than ``MARGIN`` seconds longer than another to get there; with enough work
``1 / (1 + MARGIN)`` (96%) of the limit is used.

Where Django's cache (``CRM_SMS["RATE_LIMIT_CACHE"]``, default ``"default"``) is Redis
(``django.core.cache.backends.redis.RedisCache``), the schedule lives in Redis and is advanced by
an atomic Lua script on Redis's own clock: the limit then holds across all threads, worker
processes and machines sharing that Redis. With any other cache it holds across the threads of
one process.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Any

from . import conf

logger = logging.getLogger("crm_sms.ratelimit")

#: Extra spacing between slots, as a share of 1/rate; absorbs scheduling and network jitter.
MARGIN = 0.04

# KEYS[1]: the schedule key; ARGV[1]: the slot interval in microseconds; ARGV[2]: key TTL, ms.
# Returns the delay (microseconds) until the slot reserved for the caller.
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
redis.call('SET', KEYS[1], string.format('%.0f', tat + tonumber(ARGV[1])), 'PX', ARGV[2])
return tat - now
"""

# KEYS[1]: the log (a sorted set of send times); ARGV[1]: the limit; ARGV[2]: the window in
# microseconds; ARGV[3]: a unique member. Returns 0 (logged: go) or microseconds to wait.
_LOG_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now - window))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
"""


class RateLimiter:
    """Reserve send slots; ``acquire`` blocks until the caller's slot comes."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.limit = max(1, int(rate))  # sends allowed within one window of the log
        self.interval = (1.0 + MARGIN) / self.rate
        # At least a second (a fractional rate such as 10.5/s allows 10 in any second).
        self.window = (1.0 + MARGIN) * max(1.0, self.limit / self.rate)

    def reserve(self) -> float:
        """Reserve the next slot; return the seconds to wait before using it."""
        raise NotImplementedError

    def log_send(self) -> float:
        """Log a send now and return 0, or return the seconds to wait (nothing logged)."""
        raise NotImplementedError

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait until this thread may send. False (send nothing) when ``stop`` is set."""

        def pause(seconds: float) -> bool:
            if stop is None:
                time.sleep(seconds)
                return True
            return not stop.wait(seconds)

        delay = self.reserve()
        if delay > 0 and not pause(delay):
            return False
        while (delay := self.log_send()) > 0:
            if not pause(delay):
                return False
        return not (stop is not None and stop.is_set())


class LocalRateLimiter(RateLimiter):
    """The schedule in this process: shared by its threads only."""

    def __init__(self, rate: float):
        super().__init__(rate)
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic time of the next free slot
        self._log: collections.deque[float] = collections.deque()

    def reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        return slot - now

    def log_send(self) -> float:
        with self._lock:
            now = time.monotonic()
            log = self._log
            while log and log[0] <= now - self.window:
                log.popleft()
            if len(log) < self.limit:
                log.append(now)
                return 0.0
            return log[0] + self.window - now + 1e-6


class RedisRateLimiter(RateLimiter):
    """The schedule in Redis, shared by every process and machine using the same key."""

    def __init__(self, rate: float, client: Any, key: str):
        super().__init__(rate)
        self.client = client
        self.key = key
        self.log_key = key + ":log"
        self._script = client.register_script(_GCRA_LUA)
        self._log_script = client.register_script(_LOG_LUA)
        self._interval_us = max(1, round(self.interval * 1_000_000))
        self._window_us = max(1, round(self.window * 1_000_000))
        self._fallback: LocalRateLimiter | None = None
        self._fallback_lock = threading.Lock()

    def reserve(self) -> float:
        # The key lives a little longer than the furthest reserved slot could be away.
        ttl_ms = 60_000
        try:
            delay_us = self._script(keys=[self.key], args=[self._interval_us, ttl_ms])
        except Exception as exc:  # Redis down: keep sending, limited within this process
            with self._fallback_lock:
                if self._fallback is None:
                    logger.warning(
                        "Rate limit %s: Redis unavailable (%s); limiting within this process",
                        self.key,
                        exc,
                    )
                    self._fallback = LocalRateLimiter(self.rate)
            return self._fallback.reserve()
        return int(delay_us) / 1_000_000

    def log_send(self) -> float:
        if self._fallback is not None:
            return self._fallback.log_send()
        member = f"{time.time_ns()}:{uuid.uuid4().hex[:8]}"
        try:
            wait_us = self._log_script(
                keys=[self.log_key], args=[self.limit, self._window_us, member]
            )
        except Exception:  # Redis went away between the two steps: pacing alone then
            return 0.0
        return int(wait_us) / 1_000_000


_limiters: dict[tuple[str, float], RateLimiter] = {}
_lock = threading.Lock()


def _redis_client(cache: Any) -> Any | None:
    """The redis-py client under a Django RedisCache, or None for other caches."""
    try:
        from django.core.cache.backends.redis import RedisCache
    except ImportError:  # pragma: no cover - Django < 4.0
        return None
    if not isinstance(cache, RedisCache):
        return None
    return cache._cache.get_client(write=True)


def build_rate_limiter(alias: str, rate: float) -> RateLimiter:
    """A new limiter of ``rate`` messages/second for provider ``alias``: Redis-backed when the
    rate-limit cache is a RedisCache, else in-process."""
    from django.core.cache import caches

    cache_alias = conf.get_setting("RATE_LIMIT_CACHE")
    try:
        cache = caches[cache_alias]
    except Exception:  # no such cache configured: an in-process limit is still a limit
        logger.warning("CRM_SMS RATE_LIMIT_CACHE %r is not a configured cache", cache_alias)
        return LocalRateLimiter(rate)
    client = _redis_client(cache)
    if client is None:
        return LocalRateLimiter(rate)
    key = cache.make_and_validate_key(f"crm_sms:ratelimit:{alias}")
    return RedisRateLimiter(rate, client, key)


def get_rate_limiter(alias: str, rate: float | None) -> RateLimiter | None:
    """The shared limiter for provider ``alias`` (None when it has no ``RATE_LIMIT``)."""
    if not rate:
        return None
    key = (alias, float(rate))
    limiter = _limiters.get(key)
    if limiter is None:
        with _lock:
            limiter = _limiters.get(key)
            if limiter is None:
                limiter = _limiters[key] = build_rate_limiter(alias, rate)
    return limiter


def reset_rate_limiters() -> None:
    """Forget the limiters (the settings or caches changed)."""
    with _lock:
        _limiters.clear()


def _on_setting_changed(setting: str, **kwargs: Any) -> None:
    if setting in ("CRM_SMS", "CACHES"):
        reset_rate_limiters()


def _connect() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="crm_sms_reset_rate_limiters")


_connect()
