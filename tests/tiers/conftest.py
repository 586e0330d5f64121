"""Redis tier fixtures: the real Redis, a unique key prefix per test, only that prefix flushed."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from maxage.core.clock import ManualClock
from maxage.tiers.redis import RedisTier
from tests.support.services import require_redis, unique_name


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(await require_redis())
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def tier(clock: ManualClock, raw: aioredis.Redis) -> AsyncIterator[RedisTier]:
    prefix = unique_name("maxage-test") + ":"
    t = RedisTier(
        await require_redis(), clock=clock, prefix=prefix, timeout=5.0
    )  # generous: these tests are about the guard, not latency
    try:
        yield t
    finally:
        await t.close()
        keys = [k async for k in raw.scan_iter(match=prefix + "*", count=500)]
        if keys:
            await raw.delete(*keys)
