"""Mutants: deliberately broken variants of one guard each, so the checker and the
tests can show they catch the bug the guard prevents (TEST ONLY).

* ``no-version-guard`` — a fill is a plain overwrite; versions and tombstones ignored
* ``no-tombstone`` — an invalidation drops older entries but leaves no tombstone
* ``no-watermark`` — holders always claim to be caught up (reads ignore the watermark)
* ``error-path-drop`` — a failed invalidation is forgotten instead of retried
* ``seq-tailer`` — PostgreSQL: tail the log by ``seq > cursor`` (skips late commits)
* ``feed-replay`` — the change feed resumes *at* the client's cursor instead of after
  it: every reconnect delivers the last change again (P7)
* ``feed-skip`` — the change feed resumes one past the client's cursor: a reconnect
  loses the change right after it (P7)

Models of real cache bugs (``maxage serve --mutant`` and ``maxage sim --mutant`` plant
each through the same function of this module):

* ``ttl-from-set`` — an entry's age and TTL run from the set, not from the primary read
* ``cancel-leader`` — a single-flight whose leader, when cancelled, cancels the shared load
* ``early-flight`` — a read uses any joined load, even one that started before its
  session's write (or more than the bound before the read)
* ``early-watermark`` — a holder reports an invalidation applied before it is, so the
  watermark moves past it
* ``unguarded-l2-fill`` — the shared tier's fill is a plain overwrite (no version, no
  tombstone)
* ``no-list-invalidation`` — an applied change does not raise its collection's list
  generation, so cached list pages outlive the changes they omit
* ``key-cache-no-invalidation`` — the key cache is not reached by invalidations: a
  revoked (or re-scoped) key's cached grant outlives its change on every process but
  the one that made it, while the watermark moves on (P8)

Each is planted through a public seam: the cache class the composition root
constructs (:func:`cache_class`), a hook of :class:`maxage.hooks.Hooks`, a holder
wrapper, the single-flight the reads use, or the shared tier class.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from maxage.core.cache import Cache
from maxage.core.singleflight import SingleFlight
from maxage.core.types import Clock, EvictionReason, SetOutcome
from maxage.invalidation.tailer import Generations, Holder, L1Holder
from maxage.tiers.memory import MemoryTier
from maxage.tiers.redis import RedisTier

T = TypeVar("T")
KEY_RECORDS = "_keys/"  # the cache keys of API key records (service/access.py's KEYS)

MUTANTS = (
    "no-version-guard",
    "no-tombstone",
    "no-watermark",
    "error-path-drop",
    "seq-tailer",
    "feed-replay",
    "feed-skip",
    "ttl-from-set",
    "cancel-leader",
    "early-flight",
    "early-watermark",
    "unguarded-l2-fill",
    "no-list-invalidation",
    "key-cache-no-invalidation",
)
FEED_SHIFT = {"feed-replay": -1, "feed-skip": 1}  # how the feed mutants move a resume cursor
# maxage sim runs every mutant but the feed's (it reads no change feed)
SIM_MUTANTS = tuple(m for m in MUTANTS if m not in FEED_SHIFT)


class NoVersionGuardCache(Cache):
    """Mutant: a fill is a plain overwrite; versions and tombstones are ignored."""

    __slots__ = ()

    def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Any = (),
    ) -> SetOutcome:
        with self._lock:
            old = self._data.get(key)
            if old is not None:
                self._drop(key, old, EvictionReason.INVALIDATION)
            if key in self._tombs:  # forget the guard, with its byte charge
                del self._tombs[key]
                self._forget_guard(self._tombs, key)
        return super().set_if_newer(
            key, version, body, started_at=started_at, ttl=ttl, meta=meta, tags=tags
        )


class NoTombstoneCache(Cache):
    """Mutant: an invalidation drops older entries but leaves no tombstone."""

    __slots__ = ()

    def invalidate(self, key: str, version: int) -> bool:
        with self._lock:
            e = self._data.get(key)
            if e is not None and e.version < version:
                self._drop(key, e, EvictionReason.INVALIDATION)
                return True
            return False


class TtlFromSetCache(Cache):
    """Mutant: an entry is stamped with the time of the set instead of the start of the
    primary read that produced it, so its age (and TTL) is understated by the fill's delay."""

    __slots__ = ()

    def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Any = (),
    ) -> SetOutcome:
        return super().set_if_newer(
            key, version, body, started_at=self._now(), ttl=ttl, meta=meta, tags=tags
        )


def cache_class(mutant: str | None) -> type[Cache]:
    """The in-process cache class to construct for ``mutant`` (the real one otherwise)."""
    if mutant == "no-version-guard":
        return NoVersionGuardCache
    if mutant == "no-tombstone":
        return NoTombstoneCache
    if mutant == "ttl-from-set":
        return TtlFromSetCache
    return Cache


class LeaderCancelsFlight(SingleFlight[T]):
    """Mutant: the caller that starts a load awaits it unshielded, so cancelling that
    caller (a client that went away) cancels the load every other waiter shares."""

    __slots__ = ()

    async def do(
        self, key: str, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        if key in self._flights:
            return await super().do(key, fn, timeout=timeout)
        task = asyncio.ensure_future(self._run(fn, timeout))
        self._flights[key] = task
        task.add_done_callback(functools.partial(self._forget, key))
        return await task


class HolderWrapper:
    """A tailer holder around another one: the same name and watermark; subclasses change
    ``apply`` (the fault injectors' and the mutants' wrappers)."""

    def __init__(self, inner: Holder) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def watermark(self) -> float:
        return self.inner.watermark

    @watermark.setter
    def watermark(self, value: float) -> None:
        self.inner.watermark = value

    async def apply(self, key: str, version: int) -> None:
        await self.inner.apply(key, version)


class ApplyLaterHolder(HolderWrapper):
    """Mutant wrapper: ``apply`` starts the invalidation and returns at once, so the
    tailer moves the watermark past a change that has not been applied yet (and a
    failure of it is never retried)."""

    def __init__(self, inner: Holder) -> None:
        super().__init__(inner)
        self.tasks: set[asyncio.Future[None]] = set()

    async def apply(self, key: str, version: int) -> None:
        task = asyncio.ensure_future(self.inner.apply(key, version))
        self.tasks.add(task)
        task.add_done_callback(_forget_task(self.tasks))


def _forget_task(tasks: set[asyncio.Future[None]]) -> Callable[[asyncio.Future[None]], None]:
    def done(task: asyncio.Future[None]) -> None:
        tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: the mutant forgets failures

    return done


class UnguardedMemoryTier(MemoryTier):
    """Mutant shared tier: a fill is a plain overwrite; versions and tombstones ignored."""

    def _judge(self, key: str, version: int, now: float) -> SetOutcome:
        return SetOutcome.STORED


# The Redis tier's fill without its guard: ARGV as the real FILL script's.
_UNGUARDED_REDIS_FILL = """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'b', ARGV[2], 'm', ARGV[3], 'f', ARGV[4], 'x', ARGV[5])
local ttl = tonumber(ARGV[6])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) else redis.call('PERSIST', KEYS[1]) end
return 0
"""


def redis_tier_class(mutant: str | None) -> type[RedisTier]:
    """The Redis tier class to construct for ``mutant`` (the real one otherwise)."""
    if mutant != "unguarded-l2-fill":
        return RedisTier
    return type("UnguardedRedisTier", (RedisTier,), {"fill_script": _UNGUARDED_REDIS_FILL})


class CaughtUpHolder:
    """Mutant wrapper: the watermark always reads as now; the tailer's writes are kept
    (and ignored by reads)."""

    def __init__(self, inner: Holder, clock: Clock | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._now = time.time if clock is None else clock.now

    @property
    def watermark(self) -> float:
        return self._now()

    @watermark.setter
    def watermark(self, value: float) -> None:
        self.inner.watermark = value

    async def apply(self, key: str, version: int) -> None:
        await self.inner.apply(key, version)


class KeyBlindHolder(HolderWrapper):
    """Mutant wrapper (``key-cache-no-invalidation``): invalidations of API key records
    are skipped (an auth cache the change feed does not reach); everything else, the
    watermark included, goes on as usual."""

    async def apply(self, key: str, version: int) -> None:
        if not key.startswith(KEY_RECORDS):
            await self.inner.apply(key, version)


def plant_holder(
    holder: Holder, mutant: str | None, clock: Clock | None, faulty: Callable[[Holder], Holder]
) -> Holder:
    """A tailer holder as ``mutant`` breaks it, around ``faulty`` (the fault injector's
    wrapper of delayed, failed and repeated deliveries): the one place both ``maxage
    serve --fault-injection`` and ``maxage sim`` plant the holder mutants."""
    inner = holder
    if mutant == "no-list-invalidation":
        inner = detach_generations(inner)
    if mutant == "no-watermark":
        inner = CaughtUpHolder(inner, clock)
    if mutant == "key-cache-no-invalidation" and isinstance(holder, L1Holder):
        inner = KeyBlindHolder(inner)
    out = faulty(inner)
    if mutant == "early-watermark":
        out = ApplyLaterHolder(out)
    return out


class PlantedReads(Protocol):
    flights: SingleFlight[Any]


class PlantedService(Protocol):
    """What :func:`plant_service` changes of a ``maxage.service.Service``."""

    @property
    def reads(self) -> PlantedReads: ...


def plant_service(service: PlantedService, mutant: str | None) -> None:
    """The mutants planted in a built :class:`Service` (``maxage serve`` and ``maxage
    sim`` both call this once per process, before it starts)."""
    if mutant == "cancel-leader":
        service.reads.flights = LeaderCancelsFlight()


def check(mutant: str | None, known: tuple[str, ...] = MUTANTS) -> None:
    if mutant is not None and mutant not in known:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(known)}")


def detach_generations(holder: Holder) -> Holder:
    """Mutant ``no-list-invalidation``: the in-process holder raises a generation counter
    nobody reads, so list pages stay cached under the generation they were filled at."""
    if isinstance(holder, L1Holder):
        holder.generations = Generations()
    return holder
