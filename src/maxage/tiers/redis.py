"""Redis as the shared (L2) tier, with the fill guard in one Lua script per operation.

Layout (per cache key ``k``, both keys share the hash tag ``{k}``, so they live
on one slot and the scripts run unchanged on Redis Cluster; docs/redis-cluster.md)::

    <prefix>{k}:e   hash  v=version b=body m=meta f=filled_at x=expires_at|""   PEXPIRE = ttl
    <prefix>{k}:t   str   tombstone version                                   PEXPIRE = tombstone_ttl

**The Lua guard.** ``FILL`` runs atomically on the server: it refuses a fill
whose version is below the key's tombstone (REFUSED_TOMBSTONE), equal to the
stored version (UNCHANGED: a replay) or below it (REFUSED_OLDER); otherwise it
writes all fields and the expiry in one step. ``INVALIDATE`` drops a stored
entry whose version is below ``v`` and raises the tombstone to ``v`` (it only
rises; the TTL is set when it rises and refreshed when it is re-asserted).
Because both run inside Redis, no interleaving of concurrent fills and
invalidations from any number of processes can let an older version replace a
newer one or land after an invalidation that announced a newer one, as long
as the tombstone lives longer than the slowest allowed fill (the service
refuses fills older than its ``max_fill_age``; keep ``tombstone_ttl`` above it).

**Derived, never authoritative.** Every call has a short deadline (``timeout``,
default 0.1 s: a healthy Redis answers in well under a millisecond, and a sick
one may cost a read at most that much before it falls back to the primary).
``failure_threshold`` consecutive failures open a circuit breaker: calls are
then refused without I/O until ``cooldown`` seconds (on the injected clock)
have passed; then one probe call is let through (half-open), and its success
closes the breaker. redis-py reconnects a dropped connection on its next use,
so a restarted Redis heals by itself. No call raises: ``get`` → None,
``set_if_newer`` → not stored, ``invalidate`` → False. When unavailable,
``set_if_newer`` returns ``SetOutcome.UNAVAILABLE`` (never stored: "do not count on
this fill"); ``stats["refused_unavailable"]`` counts them.

Caveat (documented in docs/redis-cluster.md): a ``FLUSHALL`` or an eviction of
a tombstone removes the guard for that key; use ``maxmemory-policy noeviction``
(when full, scripts fail, so fills are refused and invalidations return False:
the watermark stops instead of the guard breaking).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from maxage import tracing
from maxage.core.types import Clock, SetOutcome
from maxage.tiers.base import TierEntry

T = TypeVar("T")

UNAVAILABLE: Final[SetOutcome] = SetOutcome.UNAVAILABLE

# KEYS: entry, tombstone. ARGV: version, body, meta, filled_at, expires_at|"", ttl_ms (0: none)
_FILL = """
local v = tonumber(ARGV[1])
local t = redis.call('GET', KEYS[2])
if t and v < tonumber(t) then return 3 end
local cur = redis.call('HGET', KEYS[1], 'v')
if cur then
  cur = tonumber(cur)
  if v == cur then return 1 end
  if v < cur then return 2 end
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'm', ARGV[3], 'f', ARGV[4], 'x', ARGV[5])
local ttl = tonumber(ARGV[6])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return 0
"""

# KEYS: entry, tombstone. ARGV: version, tombstone_ttl_ms
_INVALIDATE = """
local v = tonumber(ARGV[1])
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) < v then redis.call('DEL', KEYS[1]) end
local t = redis.call('GET', KEYS[2])
if (not t) or tonumber(t) < v then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
elseif tonumber(t) == v then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""

# GCRA on the server's clock (hosts' clocks never meet). KEYS: bucket.
# ARGV: emission interval and burst capacity, in microseconds.
# Returns {allowed (0/1), microseconds until a retry may pass, microseconds the bucket is ahead}.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat + interval - now
if ahead > capacity then return {0, ahead - capacity, tat - now} end
redis.call('SET', KEYS[1], string.format('%.0f', tat + interval), 'PX', math.ceil(ahead / 1000) + 1)
return {1, 0, ahead}
"""

_FILL_OUTCOMES = (
    SetOutcome.STORED,
    SetOutcome.UNCHANGED,
    SetOutcome.REFUSED_OLDER,
    SetOutcome.REFUSED_TOMBSTONE,
)

_STAT_NAMES = (
    "hits",
    "misses",
    "errors",
    "timeouts",
    "circuit_open",  # calls refused without I/O while the breaker was open
    "circuit_opened",  # transitions to open
    "circuit_closed",  # transitions back to closed (healed)
    "stored",
    "unchanged",
    "refused_older",
    "refused_tombstone",
    "refused_unavailable",
    "invalidations",
    "invalidations_failed",
)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class _Failed(enum.Enum):
    FAILED = "failed"


_FAILED: Final = _Failed.FAILED


class CircuitBreaker:
    """Consecutive-failure breaker on an injected clock; one probe while half-open."""

    def __init__(self, clock: Clock, failure_threshold: int, cooldown: float) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        self.clock = clock
        self.failure_threshold = failure_threshold
        self.cooldown = cooldown
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if self.clock.now() - self.opened_at < self.cooldown:
                return False
            self.state = BreakerState.HALF_OPEN
        if self._probing:
            return False
        self._probing = True
        return True

    def succeeded(self) -> bool:
        """Record a success; True if this closed an open breaker."""
        healed = self.state is not BreakerState.CLOSED
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._probing = False
        return healed

    def failed(self) -> bool:
        """Record a failure; True if this opened the breaker."""
        self._probing = False
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or (
            self.state is BreakerState.CLOSED and self.failures >= self.failure_threshold
        ):
            self.state = BreakerState.OPEN
            self.opened_at = self.clock.now()
            return True
        return False

    def abandoned(self) -> None:
        """A call was cancelled by its caller: neither success nor failure."""
        self._probing = False

    def trip(self) -> bool:
        """Open now, whatever the count (a failed start-up check); True if this opened it."""
        self._probing = False
        if self.state is BreakerState.OPEN:
            return False
        self.state = BreakerState.OPEN
        self.opened_at = self.clock.now()
        return True


def _cluster_url(url: str) -> str | None:
    """``redis+cluster://h:p`` → ``redis://h:p`` (``rediss+cluster`` → ``rediss``), else None."""
    for scheme, plain in (("redis+cluster://", "redis://"), ("rediss+cluster://", "rediss://")):
        if url.startswith(scheme):
            return plain + url[len(scheme) :]
    return None


class RedisTier:
    """The Redis L2. ``url``: ``redis://``, ``rediss://``, ``unix://`` for one node;
    ``redis+cluster://host:port`` (or ``rediss+cluster://``) for a Redis Cluster,
    given any one node as the seed.

    ``prefix`` namespaces every key (no ``{`` or ``}``); ``timeout`` is the deadline
    of each call in seconds; ``failure_threshold`` consecutive failures open the
    breaker for ``cooldown`` seconds; ``tombstone_ttl`` is how long an invalidation
    guards its key (keep it above the service's maximum fill age).
    """

    fill_script = _FILL  # the fill guard (a test-only mutant replaces it)

    def __init__(
        self,
        url: str,
        *,
        clock: Clock,
        prefix: str = "maxage:",
        timeout: float = 0.1,
        failure_threshold: int = 5,
        cooldown: float = 1.0,
        tombstone_ttl: float = 60.0,
        max_connections: int = 64,
    ) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("prefix must not contain '{' or '}' (they would change the hash slot)")
        if tombstone_ttl <= 0:
            raise ValueError("tombstone_ttl must be > 0")
        self.url = url
        self.clock = clock
        self.prefix = prefix
        self.timeout = timeout
        self.tombstone_ttl = tombstone_ttl
        self.breaker = CircuitBreaker(clock, failure_threshold, cooldown)
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            # No client-side retries: the deadline is ours, and the breaker decides.
            "retry": Retry(NoBackoff(), 0),
            "max_connections": max_connections,
        }
        cluster = _cluster_url(url)
        self.cluster = cluster is not None
        self._client: Any
        if cluster is not None:
            self._client = RedisCluster.from_url(cluster, **options)
        else:
            # Callers beyond max_connections wait for a connection (within the call's
            # deadline) instead of failing, so a burst does not open the breaker.
            pool = BlockingConnectionPool.from_url(url, timeout=timeout, **options)
            self._client = Redis(connection_pool=pool)
        self._fill = self._client.register_script(self.fill_script)
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._gcra = self._client.register_script(_GCRA)

    @property
    def available(self) -> bool:
        return self.breaker.state is BreakerState.CLOSED

    def _keys(self, key: str) -> list[str]:
        tagged = f"{self.prefix}{{{key}}}"
        return [tagged + ":e", tagged + ":t"]

    async def _call(self, fn: Callable[[], Awaitable[T]], op: str = "call") -> T | _Failed:
        if tracing.TRACER is not None:
            with tracing.span(
                f"redis {op}", **{"db.system.name": "redis", "db.operation.name": op}
            ):
                return await self._guarded(fn)
        return await self._guarded(fn)

    async def _guarded(self, fn: Callable[[], Awaitable[T]]) -> T | _Failed:
        if not self.breaker.allow():
            self.stats["circuit_open"] += 1
            return _FAILED
        try:
            async with asyncio.timeout(self.timeout):
                result = await fn()
        except (TimeoutError, RedisTimeoutError):
            self.stats["timeouts"] += 1
        except (RedisError, RedisClusterException, OSError):
            # RedisClusterException: e.g. no seed node of a cluster answers (not a RedisError)
            self.stats["errors"] += 1
        except asyncio.CancelledError:
            self.breaker.abandoned()
            raise
        else:
            if self.breaker.succeeded():
                self.stats["circuit_closed"] += 1
            return result
        if self.breaker.failed():
            self.stats["circuit_opened"] += 1
        return _FAILED

    async def get(self, key: str) -> TierEntry | None:
        if not key:
            return None
        entry_key = self._keys(key)[0]
        raw = await self._call(
            lambda: self._client.hmget(entry_key, "v", "b", "m", "f", "x"), "get"
        )
        if raw is _FAILED:
            return None
        version, body, meta, filled_at, expires_at = raw
        if version is None or body is None:
            self.stats["misses"] += 1
            return None
        expires = float(expires_at) if expires_at else None
        if expires is not None and expires <= self.clock.now():
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return TierEntry(int(version), bytes(body), bytes(meta or b""), float(filled_at), expires)

    async def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        meta: bytes,
        *,
        started_at: float,
        ttl: float | None,
    ) -> SetOutcome:
        if not key:  # never stored (an empty hash tag would split the two keys' slots)
            return SetOutcome.REFUSED_TOMBSTONE
        if ttl is None:
            expires_at = ""
            ttl_ms = 0
        else:
            expires = started_at + ttl
            expires_at = repr(expires)
            # Redis expires the key by its own clock; ``get`` also checks ours.
            ttl_ms = max(1, int((expires - self.clock.now()) * 1000))
        args = [str(version), body, meta, repr(started_at), expires_at, str(ttl_ms)]
        keys = self._keys(key)
        code = await self._call(lambda: self._fill(keys=keys, args=args), "fill")
        if code is _FAILED:
            self.stats["refused_unavailable"] += 1
            return UNAVAILABLE
        outcome = _FILL_OUTCOMES[int(code)]
        self.stats[outcome.value] += 1
        return outcome

    async def invalidate(self, key: str, version: int) -> bool:
        if not key:
            return True
        keys = self._keys(key)
        args = [str(version), str(max(1, int(self.tombstone_ttl * 1000)))]
        done = await self._call(lambda: self._invalidate(keys=keys, args=args), "invalidate")
        if done is _FAILED:
            self.stats["invalidations_failed"] += 1
            return False
        self.stats["invalidations"] += 1
        return True

    async def rate_limit(
        self, bucket: str, interval: float, capacity: float
    ) -> tuple[bool, float, float] | None:
        """One GCRA step for ``bucket`` shared by every process: ``(allowed, retry_after,
        ahead)`` in seconds (``ahead``: how far the bucket's theoretical arrival time is
        past now), or None when the tier is unavailable (the caller falls back)."""
        keys = [f"{self.prefix}rl:{{{bucket}}}"]
        args = [str(max(1, round(interval * 1e6))), str(max(1, round(capacity * 1e6)))]
        raw = await self._call(lambda: self._gcra(keys=keys, args=args), "rate_limit")
        if raw is _FAILED:
            return None
        allowed, retry_us, ahead_us = raw
        return bool(int(allowed)), int(retry_us) / 1e6, int(ahead_us) / 1e6

    async def ping(self) -> bool:
        """A health probe through the breaker (for readiness and tests)."""
        return await self._call(lambda: self._client.ping()) is not _FAILED

    async def check_at_start(self) -> bool:
        """One ping at start-up; when it fails (Redis down, a wrong password or database)
        the breaker opens at once rather than after ``failure_threshold`` calls, so the tier
        is reported unavailable (``available``: the metric, /readyz) from the first request
        and reads go to the primary without waiting on Redis. As always, a probe after
        ``cooldown`` that succeeds closes it again."""
        if await self.ping():
            return True
        if self.breaker.trip():
            self.stats["circuit_opened"] += 1
        return False

    async def close(self) -> None:
        try:
            async with asyncio.timeout(max(self.timeout, 1.0)):
                await self._client.aclose()
        except (TimeoutError, RedisError, OSError):
            pass
