"""Per-provider rate limits: at most ``RATE_LIMIT`` messages per second.

The limiter spaces sends evenly (GCRA, the "generic cell rate algorithm", without burst): each
send reserves the next free slot, and slots are ``(1 + MARGIN) / rate`` seconds apart. So no
one-second window ever holds more than ``rate`` sends, even when a request reaches the provider a
few milliseconds later than planned (up to ``MARGIN`` seconds of such jitter are absorbed), and
with enough work ``1 / (1 + MARGIN)`` (97%) of the limit is used.

Where Django's cache (``CRM_SMS["RATE_LIMIT_CACHE"]``, default ``"default"``) is Redis
(``django.core.cache.backends.redis.RedisCache``), the schedule lives in Redis and is advanced by
an atomic Lua script on Redis's own clock: the limit then holds across all threads, worker
processes and machines sharing that Redis. With any other cache it holds across the threads of
one process.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from . import conf

logger = logging.getLogger("crm_sms.ratelimit")

#: Extra spacing between slots, as a share of 1/rate; absorbs scheduling and network jitter.
MARGIN = 0.03

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


class RateLimiter:
    """Reserve send slots; ``acquire`` blocks until the caller's slot comes."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.interval = (1.0 + MARGIN) / self.rate

    def reserve(self) -> float:
        """Reserve the next slot; return the seconds to wait before using it."""
        raise NotImplementedError

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot. Returns False (without sending) when ``stop`` is set meanwhile."""
        delay = self.reserve()
        if delay > 0:
            if stop is not None:
                if stop.wait(delay):
                    return False
            else:
                time.sleep(delay)
        return not (stop is not None and stop.is_set())


class LocalRateLimiter(RateLimiter):
    """The schedule in this process: shared by its threads only."""

    def __init__(self, rate: float):
        super().__init__(rate)
        self._lock = threading.Lock()
        self._next = 0.0  # monotonic time of the next free slot

    def reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        return slot - now


class RedisRateLimiter(RateLimiter):
    """The schedule in Redis, shared by every process and machine using the same key."""

    def __init__(self, rate: float, client: Any, key: str):
        super().__init__(rate)
        self.client = client
        self.key = key
        self._script = client.register_script(_GCRA_LUA)
        self._interval_us = max(1, round(self.interval * 1_000_000))
        self._fallback: LocalRateLimiter | None = None

    def reserve(self) -> float:
        # The key lives a little longer than the furthest reserved slot could be away.
        ttl_ms = 60_000
        try:
            delay_us = self._script(keys=[self.key], args=[self._interval_us, ttl_ms])
        except Exception as exc:  # Redis down: keep sending, limited within this process
            if self._fallback is None:
                logger.warning(
                    "Rate limit %s: Redis unavailable (%s); limiting within this process only",
                    self.key,
                    exc,
                )
                self._fallback = LocalRateLimiter(self.rate)
            return self._fallback.reserve()
        return int(delay_us) / 1_000_000


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

    cache_alias = conf.sms_settings().get("RATE_LIMIT_CACHE", "default")
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
