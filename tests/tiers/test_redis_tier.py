"""RedisTier against the real Redis: the Lua fill guard, tombstones, concurrency."""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from maxage.core.clock import ManualClock
from maxage.core.types import SetOutcome
from maxage.tiers.base import SharedTier
from maxage.tiers.redis import RedisTier
from tests.support.services import require_redis


def _fill(tier: RedisTier, clock: ManualClock, version: int, key: str = "c/a", **kw: object):  # type: ignore[no-untyped-def]
    return tier.set_if_newer(
        key,
        version,
        b"body-%d" % version,
        b"meta-%d" % version,
        started_at=clock.now(),
        ttl=kw.get("ttl", 300.0),  # type: ignore[arg-type]
    )


def test_redis_tier_is_a_shared_tier(tier: RedisTier) -> None:
    shared: SharedTier = tier
    assert shared.available


async def test_fill_and_get_round_trip(tier: RedisTier, clock: ManualClock) -> None:
    assert await tier.get("c/a") is None
    assert await _fill(tier, clock, 3) is SetOutcome.STORED
    entry = await tier.get("c/a")
    assert entry is not None
    assert (entry.version, entry.body, entry.meta) == (3, b"body-3", b"meta-3")
    assert entry.filled_at == clock.now() and entry.expires_at == clock.now() + 300.0
    assert tier.stats["hits"] == 1 and tier.stats["misses"] == 1 and tier.stats["stored"] == 1


async def test_fill_guard_refuses_older_and_replays_are_unchanged(
    tier: RedisTier, clock: ManualClock
) -> None:
    assert await _fill(tier, clock, 5) is SetOutcome.STORED
    assert await _fill(tier, clock, 5) is SetOutcome.UNCHANGED
    assert await _fill(tier, clock, 4) is SetOutcome.REFUSED_OLDER
    assert await _fill(tier, clock, 6) is SetOutcome.STORED
    entry = await tier.get("c/a")
    assert entry is not None and entry.version == 6 and entry.body == b"body-6"
    assert tier.stats["unchanged"] == 1 and tier.stats["refused_older"] == 1


async def test_invalidate_drops_older_and_tombstone_refuses_slow_fill(
    tier: RedisTier, clock: ManualClock
) -> None:
    assert await _fill(tier, clock, 1) is SetOutcome.STORED
    assert await tier.invalidate("c/a", 3)
    assert await tier.get("c/a") is None
    # A slow fill that read version 2 before the invalidation arrives late: refused.
    assert await _fill(tier, clock, 2) is SetOutcome.REFUSED_TOMBSTONE
    assert await tier.get("c/a") is None
    # The version the invalidation announced (or newer) may be filled.
    assert await _fill(tier, clock, 3) is SetOutcome.STORED
    # An invalidation at or below the stored version keeps it.
    assert await tier.invalidate("c/a", 3)
    entry = await tier.get("c/a")
    assert entry is not None and entry.version == 3


async def test_tombstone_only_rises_and_has_a_ttl(
    tier: RedisTier, clock: ManualClock, raw: aioredis.Redis
) -> None:
    assert await tier.invalidate("c/a", 5)
    assert await tier.invalidate("c/a", 3)  # lower: the tombstone stays at 5
    tomb_key = f"{tier.prefix}{{c/a}}:t"
    assert await raw.get(tomb_key) == b"5"
    pttl = await raw.pttl(tomb_key)
    assert 0 < pttl <= tier.tombstone_ttl * 1000
    assert await _fill(tier, clock, 4) is SetOutcome.REFUSED_TOMBSTONE


async def test_tombstone_expires_after_its_ttl(raw: aioredis.Redis, clock: ManualClock) -> None:
    prefix = "maxage-test-ttl:" + str(random.getrandbits(48)) + ":"
    # Redis expires the tombstone by its own (wall) clock: long enough that the refused
    # fill below comes before it on a loaded machine (20 ms did not, once).
    short = RedisTier(await require_redis(), clock=clock, prefix=prefix, tombstone_ttl=1.0)
    try:
        assert await short.invalidate("k", 9)
        assert await _fill(short, clock, 8, key="k") is SetOutcome.REFUSED_TOMBSTONE
        tomb_key = f"{prefix}{{k}}:t"
        # Wait for Redis's own expiry of the tombstone (a TTL, not a race).
        for _ in range(1000):
            if not await raw.exists(tomb_key):
                break
            await asyncio.sleep(0.01)
        assert not await raw.exists(tomb_key)
        assert await _fill(short, clock, 8, key="k") is SetOutcome.STORED
    finally:
        await short.close()
        await raw.delete(f"{prefix}{{k}}:e", f"{prefix}{{k}}:t")


async def test_entry_ttl_from_fill_start(
    tier: RedisTier, clock: ManualClock, raw: aioredis.Redis
) -> None:
    started = clock.now()
    clock.advance(4)  # the primary read took 4 s: only 6 s of the 10 s TTL remain
    outcome = await tier.set_if_newer("c/t", 1, b"x", b"", started_at=started, ttl=10.0)
    assert outcome is SetOutcome.STORED
    pttl = await raw.pttl(f"{tier.prefix}{{c/t}}:e")
    assert 5000 < pttl <= 6000
    entry = await tier.get("c/t")
    assert entry is not None and entry.expires_at == started + 10.0
    clock.advance(6)  # expired by our clock even if Redis has not expired it yet
    assert await tier.get("c/t") is None
    assert (
        await tier.set_if_newer("c/n", 1, b"x", b"", started_at=started, ttl=None)
        is SetOutcome.STORED
    )
    assert await raw.pttl(f"{tier.prefix}{{c/n}}:e") == -1
    entry = await tier.get("c/n")
    assert entry is not None and entry.expires_at is None


async def test_concurrent_fills_the_max_version_wins(tier: RedisTier, clock: ManualClock) -> None:
    versions = list(range(1, 101)) * 2
    random.Random(7).shuffle(versions)
    outcomes = await asyncio.gather(*(_fill(tier, clock, v, key="c/hot") for v in versions))
    entry = await tier.get("c/hot")
    assert entry is not None and entry.version == 100 and entry.body == b"body-100"
    assert SetOutcome.STORED in outcomes
    assert set(outcomes) <= {SetOutcome.STORED, SetOutcome.UNCHANGED, SetOutcome.REFUSED_OLDER}


async def test_concurrent_fills_and_invalidations_never_leave_an_older_version(
    tier: RedisTier, clock: ManualClock
) -> None:
    ops = [("fill", v) for v in range(1, 60)] + [("inv", v) for v in range(1, 60, 7)]
    random.Random(11).shuffle(ops)

    async def run(op: str, v: int) -> object:
        if op == "fill":
            return await _fill(tier, clock, v, key="c/mix")
        return await tier.invalidate("c/mix", v)

    await asyncio.gather(*(run(op, v) for op, v in ops))
    top_tomb = max(v for op, v in ops if op == "inv")
    entry = await tier.get("c/mix")
    assert entry is None or entry.version >= top_tomb
    # Whatever happened, no fill below the highest tombstone can land now.
    assert await _fill(tier, clock, top_tomb - 1, key="c/mix") in {
        SetOutcome.REFUSED_TOMBSTONE,
        SetOutcome.REFUSED_OLDER,
    }


async def test_keys_of_one_document_share_a_hash_slot(tier: RedisTier) -> None:
    from redis.crc import key_slot

    for key in ("c/a", "c/{x}", "orders/ü-1", "c/}", "c/{"):
        entry_key, tomb_key = tier._keys(key)
        assert key_slot(entry_key.encode()) == key_slot(tomb_key.encode())


def test_prefix_with_braces_is_rejected(clock: ManualClock) -> None:
    with pytest.raises(ValueError):
        RedisTier("redis://127.0.0.1:6379/0", clock=clock, prefix="a{b}:")
