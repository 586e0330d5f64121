"""The shared-tier contract: every SharedTier (Redis, and maxage sim's in-memory tier) must
pass these: the fill guard, tombstones, TTL from the primary read (docs/architecture.md,
"Fill guard")."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from maxage.core.clock import ManualClock
from maxage.core.types import SetOutcome
from maxage.tiers.base import SharedTier
from maxage.tiers.memory import MemoryTier
from maxage.tiers.redis import RedisTier
from tests.support.services import require_redis, unique_name


@pytest.fixture(params=["redis", "memory"])
async def shared(request: pytest.FixtureRequest, clock: ManualClock) -> AsyncIterator[SharedTier]:
    if request.param == "memory":
        yield MemoryTier(clock=clock)
        return
    url = await require_redis()
    prefix = unique_name("maxage-contract") + ":"
    tier = RedisTier(url, clock=clock, prefix=prefix, timeout=5.0)
    try:
        yield tier
    finally:
        await tier.close()
        raw = aioredis.Redis.from_url(url)
        keys = [k async for k in raw.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


def _fill(
    tier: SharedTier, clock: ManualClock, version: int, key: str = "c/a", ttl: float | None = 300.0
):  # type: ignore[no-untyped-def]
    return tier.set_if_newer(
        key, version, b"body-%d" % version, b"meta-%d" % version, started_at=clock.now(), ttl=ttl
    )


async def test_round_trip_with_fill_start_and_expiry(
    shared: SharedTier, clock: ManualClock
) -> None:
    assert shared.available
    assert await shared.get("c/a") is None
    assert await _fill(shared, clock, 3) is SetOutcome.STORED
    entry = await shared.get("c/a")
    assert entry is not None
    assert (entry.version, entry.body, entry.meta) == (3, b"body-3", b"meta-3")
    assert entry.filled_at == clock.now() and entry.expires_at == clock.now() + 300.0


async def test_older_refused_replay_unchanged_newer_stored(
    shared: SharedTier, clock: ManualClock
) -> None:
    assert await _fill(shared, clock, 5) is SetOutcome.STORED
    assert await _fill(shared, clock, 5) is SetOutcome.UNCHANGED
    assert await _fill(shared, clock, 4) is SetOutcome.REFUSED_OLDER
    assert await _fill(shared, clock, 6) is SetOutcome.STORED
    entry = await shared.get("c/a")
    assert entry is not None and entry.version == 6 and entry.body == b"body-6"


async def test_invalidation_drops_older_and_its_tombstone_refuses_a_slow_fill(
    shared: SharedTier, clock: ManualClock
) -> None:
    assert await _fill(shared, clock, 1) is SetOutcome.STORED
    assert await shared.invalidate("c/a", 3)
    assert await shared.get("c/a") is None
    assert await _fill(shared, clock, 2) is SetOutcome.REFUSED_TOMBSTONE
    assert await _fill(shared, clock, 3) is SetOutcome.STORED
    assert await shared.invalidate("c/a", 3)  # at the stored version: kept
    entry = await shared.get("c/a")
    assert entry is not None and entry.version == 3


async def test_tombstone_only_rises(shared: SharedTier, clock: ManualClock) -> None:
    assert await shared.invalidate("c/a", 5)
    assert await shared.invalidate("c/a", 3)
    assert await _fill(shared, clock, 4) is SetOutcome.REFUSED_TOMBSTONE
    assert await _fill(shared, clock, 5) is SetOutcome.STORED


async def test_expired_by_the_tier_clock_is_a_miss(shared: SharedTier, clock: ManualClock) -> None:
    started = clock.now()
    clock.advance(4)  # the primary read took 4 s: 6 s of the 10 s TTL remain
    assert (
        await shared.set_if_newer("c/t", 1, b"x", b"", started_at=started, ttl=10.0)
        is SetOutcome.STORED
    )
    entry = await shared.get("c/t")
    assert entry is not None and entry.expires_at == started + 10.0
    clock.advance(6)
    assert await shared.get("c/t") is None
    assert await _fill(shared, clock, 1, key="c/n", ttl=None) is SetOutcome.STORED
    entry = await shared.get("c/n")
    assert entry is not None and entry.expires_at is None


async def test_keys_are_independent(shared: SharedTier, clock: ManualClock) -> None:
    assert await shared.invalidate("c/a", 9)
    assert await _fill(shared, clock, 1, key="c/b") is SetOutcome.STORED
    assert await _fill(shared, clock, 1, key="d/a") is SetOutcome.STORED


async def test_concurrent_fills_and_invalidations_never_leave_an_older_version(
    shared: SharedTier, clock: ManualClock
) -> None:
    ops = [("fill", v) for v in range(1, 60)] + [("inv", v) for v in range(1, 60, 7)]
    random.Random(11).shuffle(ops)

    async def run(op: str, v: int) -> object:
        if op == "fill":
            return await _fill(shared, clock, v, key="c/mix")
        return await shared.invalidate("c/mix", v)

    await asyncio.gather(*(run(op, v) for op, v in ops))
    top = max(v for op, v in ops if op == "inv")
    entry = await shared.get("c/mix")
    assert entry is not None and entry.version == 59
    assert await _fill(shared, clock, top - 1, key="c/mix") in {
        SetOutcome.REFUSED_TOMBSTONE,
        SetOutcome.REFUSED_OLDER,
    }


async def test_unreachable_memory_tier_never_raises(clock: ManualClock) -> None:
    """The Redis tier's unavailability is covered by tests/tiers/test_redis_breaker.py."""
    tier = MemoryTier(clock=clock)
    assert await _fill(tier, clock, 1) is SetOutcome.STORED
    tier.reachable = False
    assert not tier.available
    assert await tier.get("c/a") is None
    assert await _fill(tier, clock, 2) is SetOutcome.UNAVAILABLE
    assert not await tier.invalidate("c/a", 2)
    tier.reachable = True
    entry = await tier.get("c/a")
    assert entry is not None and entry.version == 1


async def test_memory_tier_flush_keeps_tombstones(clock: ManualClock) -> None:
    tier = MemoryTier(clock=clock, tombstone_ttl=10.0)
    assert await _fill(tier, clock, 4) is SetOutcome.STORED
    assert await tier.invalidate("c/a", 3)  # below the stored version: a tombstone at 3
    assert tier.flush_entries() == 1
    assert await tier.get("c/a") is None
    assert await _fill(tier, clock, 2) is SetOutcome.REFUSED_TOMBSTONE
    clock.advance(10)  # the tombstone lives tombstone_ttl after its last raise
    assert await _fill(tier, clock, 2) is SetOutcome.STORED
