"""RedisTier on a real (throwaway, 3-master) Redis Cluster: the scripts never cross slots."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from maxage.core.clock import ManualClock
from maxage.core.types import SetOutcome
from maxage.tiers.redis import RedisTier
from tests.support.services import redis_cluster


@pytest.fixture(scope="module")
def cluster_ports() -> Iterator[list[int]]:
    with redis_cluster() as ports:
        yield ports


async def test_fill_guard_on_a_cluster(cluster_ports: list[int], clock: ManualClock) -> None:
    tier = RedisTier(
        f"redis+cluster://127.0.0.1:{cluster_ports[1]}", clock=clock, prefix="m:", timeout=1.0
    )
    try:
        assert tier.cluster
        keys = [f"c/doc-{i}" for i in range(40)]
        for key in keys:
            fill = tier.set_if_newer(key, 2, b"b2", b"m", started_at=clock.now(), ttl=60.0)
            assert await fill is SetOutcome.STORED
            assert await tier.invalidate(key, 3)
            stale = tier.set_if_newer(key, 2, b"b2", b"m", started_at=clock.now(), ttl=60.0)
            assert await stale is SetOutcome.REFUSED_TOMBSTONE
            fresh = tier.set_if_newer(key, 3, b"b3", b"m", started_at=clock.now(), ttl=60.0)
            assert await fresh is SetOutcome.STORED
            entry = await tier.get(key)
            assert entry is not None and entry.version == 3 and entry.body == b"b3"
        # The keys really are spread over the masters.
        owners = {tier._client.get_node_from_key(tier._keys(k)[0]).port for k in keys}
        assert len(owners) == len(cluster_ports)
        assert tier.stats["errors"] == tier.stats["timeouts"] == 0
    finally:
        await tier.close()
