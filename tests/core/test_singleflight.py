"""Single-flight: interleavings forced with asyncio.Event, no sleeps."""

from __future__ import annotations

import asyncio

import pytest

from maxage.core import SingleFlight


async def test_one_load_for_100_waiters() -> None:
    sf: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    started = asyncio.Event()
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "v"

    tasks = [asyncio.create_task(sf.do("k", load)) for _ in range(100)]
    await started.wait()  # every caller has joined by now (they were scheduled first)
    assert sf.in_flight("k") and calls == 1
    release.set()
    assert await asyncio.gather(*tasks) == ["v"] * 100
    assert calls == 1
    assert not sf.in_flight("k") and len(sf) == 0


async def test_different_keys_load_separately() -> None:
    sf: SingleFlight[str] = SingleFlight()

    async def load_a() -> str:
        return "a"

    async def load_b() -> str:
        return "b"

    assert await asyncio.gather(sf.do("a", load_a), sf.do("b", load_b)) == ["a", "b"]


async def test_cancelled_waiter_does_not_cancel_load() -> None:
    sf: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    started = asyncio.Event()
    calls = 0

    async def load() -> str:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return "v"

    first = asyncio.create_task(sf.do("k", load))  # the one that started the load
    others = [asyncio.create_task(sf.do("k", load)) for _ in range(5)]
    await started.wait()
    first.cancel()
    others[0].cancel()
    await asyncio.sleep(0)
    assert first.cancelled() and others[0].cancelled()
    assert sf.in_flight("k")
    release.set()
    assert await asyncio.gather(*others[1:]) == ["v"] * 4
    assert calls == 1


async def test_exception_reaches_all_and_is_not_remembered() -> None:
    sf: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def failing() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        raise RuntimeError("boom")

    tasks = [asyncio.create_task(sf.do("k", failing)) for _ in range(10)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)
    assert calls == 1 and not sf.in_flight("k")

    async def ok() -> str:
        nonlocal calls
        calls += 1
        return "fresh"

    assert await sf.do("k", ok) == "fresh"
    assert calls == 2


async def test_deadline_cancels_load_and_all_get_timeout() -> None:
    sf: SingleFlight[str] = SingleFlight()
    never = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    tasks = [asyncio.create_task(sf.do("k", slow, timeout=0.01)) for _ in range(3)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert cancelled.is_set()
    assert not sf.in_flight("k")


async def test_negative_timeout_rejected() -> None:
    sf: SingleFlight[int] = SingleFlight()

    async def one() -> int:
        return 1

    with pytest.raises(ValueError, match="timeout"):
        await sf.do("k", one, timeout=-1)
