"""The simulator's event loop: virtual time, seeded order, no wall clock."""

from __future__ import annotations

import asyncio
import time

import pytest

from maxage.sim.loop import SimDeadlock, SimLoop


def _trace(seed: int) -> list[tuple[int, float]]:
    loop = SimLoop(seed, jitter=0.001)
    order: list[tuple[int, float]] = []

    async def worker(i: int) -> None:
        for _ in range(3):
            await asyncio.sleep(0.5)
            order.append((i, loop.time()))

    async def main() -> None:
        await asyncio.gather(*(worker(i) for i in range(5)))

    loop.run_until_complete(main())
    loop.close()
    return order


def test_virtual_time_passes_without_waiting() -> None:
    started = time.perf_counter()
    trace = _trace(1)
    assert time.perf_counter() - started < 1.0
    assert len(trace) == 15 and 1.5 <= trace[-1][1] < 1.6


def test_same_seed_same_order_other_seed_other_order() -> None:
    assert _trace(1) == _trace(1)
    assert [i for i, _ in _trace(1)] != [i for i, _ in _trace(2)]


def test_ready_callbacks_run_in_a_seeded_order() -> None:
    def order(seed: int) -> list[int]:
        loop = SimLoop(seed)
        seen: list[int] = []
        for i in range(8):
            loop.call_soon(seen.append, i)
        loop.call_soon(loop.stop)
        loop.run_forever()
        loop.close()
        return seen

    assert order(3) == order(3)
    assert sorted(order(3)) == list(range(8)) and order(3) != order(4)


def test_timeouts_and_cancelled_timers_use_virtual_time() -> None:
    loop = SimLoop(0)

    async def main() -> float:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2.0):
                await asyncio.sleep(60)
        handle = loop.call_later(1.0, lambda: None)
        handle.cancel()
        return loop.time()

    assert loop.run_until_complete(main()) == 2.0
    loop.close()


def test_a_program_that_cannot_progress_is_a_deadlock() -> None:
    loop = SimLoop(0)

    async def stuck() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimDeadlock):
        loop.run_until_complete(stuck())
    loop.close()
