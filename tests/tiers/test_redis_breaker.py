"""RedisTier when Redis is down, slow or restarted: no call raises, the breaker opens and heals."""

from __future__ import annotations

import socket
import time

from maxage.core.clock import ManualClock
from maxage.core.types import SetOutcome
from maxage.tiers.redis import UNAVAILABLE, BreakerState, RedisTier
from tests.support.services import free_port, redis_server


async def test_dead_port_opens_the_breaker_and_fails_fast(clock: ManualClock) -> None:
    tier = RedisTier(
        f"redis://127.0.0.1:{free_port()}/0",
        clock=clock,
        timeout=0.1,
        failure_threshold=3,
        cooldown=5.0,
    )
    try:
        for _ in range(3):
            assert await tier.get("c/a") is None
        assert tier.breaker.state is BreakerState.OPEN and not tier.available
        assert tier.stats["errors"] + tier.stats["timeouts"] == 3
        assert tier.stats["circuit_opened"] == 1
        started = time.perf_counter()
        for _ in range(100):
            assert await tier.get("c/a") is None
            assert (
                await tier.set_if_newer("c/a", 1, b"x", b"", started_at=clock.now(), ttl=1.0)
                is UNAVAILABLE
            )
            assert await tier.invalidate("c/a", 2) is False
        assert time.perf_counter() - started < 0.1  # refused without I/O
        assert tier.stats["circuit_open"] == 300
        assert tier.stats["refused_unavailable"] == 100
        assert tier.stats["invalidations_failed"] == 100
        # Half-open after the cool-down: one probe, still failing -> open again.
        clock.advance(5)
        assert await tier.get("c/a") is None
        assert tier.breaker.state is BreakerState.OPEN
        assert tier.stats["circuit_opened"] == 2
    finally:
        await tier.close()


async def test_unresponsive_server_times_out_quickly(clock: ManualClock) -> None:
    # A socket that accepts connections but never answers: a hung Redis.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        port = hung.getsockname()[1]
        tier = RedisTier(
            f"redis://127.0.0.1:{port}/0", clock=clock, timeout=0.05, failure_threshold=2
        )
        try:
            started = time.perf_counter()
            assert await tier.get("c/a") is None
            assert await tier.invalidate("c/a", 1) is False
            assert time.perf_counter() - started < 1.0
            assert tier.stats["timeouts"] == 2 and not tier.available
        finally:
            await tier.close()


async def test_breaker_heals_when_redis_comes_back(clock: ManualClock) -> None:
    with redis_server() as server:
        tier = RedisTier(server.url, clock=clock, timeout=0.2, failure_threshold=2, cooldown=1.0)
        try:

            async def fill(v: int) -> SetOutcome:
                return await tier.set_if_newer(
                    "c/a", v, b"v%d" % v, b"", started_at=clock.now(), ttl=60.0
                )

            assert await fill(1) is SetOutcome.STORED
            server.stop()  # Redis dies
            assert await tier.get("c/a") is None
            assert await fill(2) is UNAVAILABLE
            assert not tier.available
            server.start()  # back, empty (no persistence)
            assert await tier.get("c/a") is None  # still within the cool-down: no I/O
            assert tier.stats["circuit_open"] >= 1
            clock.advance(1.0)
            # The probe reconnects (the pooled connections died with the server).
            assert await tier.ping()
            assert tier.available and tier.stats["circuit_closed"] == 1
            assert await fill(3) is SetOutcome.STORED  # the script is reloaded (NOSCRIPT)
            entry = await tier.get("c/a")
            assert entry is not None and entry.version == 3
            assert await tier.invalidate("c/a", 4)
            assert await tier.get("c/a") is None
        finally:
            await tier.close()
