"""The shedder's queue: a slot handed to a waiter is reserved for it, so a new arrival
cannot take it (the limit holds exactly), and a waiter whose deadline passes leaves the
queue (it does not count towards the queue's length)."""

from __future__ import annotations

import asyncio
import time

from maxage.api.shedding import Shedder


async def test_a_freed_slot_goes_to_the_waiter_not_to_a_newcomer() -> None:
    s = Shedder(max_concurrency=1, queue_deadline=5.0, max_lag=0)
    waiting = asyncio.ensure_future(s.admit(1))  # the one slot is busy: it queues
    await asyncio.sleep(0)
    assert not waiting.done() and s.full(1)
    s.release()  # the busy request finished: its slot is handed over
    assert s.reserved == 1 and s.full(0)  # a newcomer now would have to queue
    assert await waiting is True
    assert s.reserved == 0 and not s.full(0)


async def test_a_waiter_past_its_deadline_leaves_the_queue() -> None:
    s = Shedder(max_concurrency=1, queue_deadline=0.01, max_lag=0)
    assert await s.admit(1) is False
    assert s.shed == 1 and not s.busy and s.reserved == 0
    s.release()  # nobody waits: nothing is reserved
    assert s.reserved == 0


async def test_a_blocked_loop_is_measured_as_lag_and_sheds() -> None:
    """The probe fires late by as long as the loop was blocked: new requests are shed
    until a later sample finds the loop on time again."""
    s = Shedder(max_concurrency=100, queue_deadline=1.0, max_lag=0.05)
    s.start()
    try:
        loop = asyncio.get_running_loop()
        ticked = loop.create_future()
        await asyncio.sleep(0)
        time.sleep(0.12)  # the loop is blocked (a slow synchronous piece of a request)
        loop.call_later(0, ticked.set_result, None)  # runs after the late probe (due earlier)
        await ticked
        assert s.lag >= 0.1 and s.full(0) and await s.admit(0) is False
        while s.lag > s.max_lag:  # the next samples are on time again
            await asyncio.sleep(0.01)
        assert not s.full(0) and await s.admit(0) is True
    finally:
        await s.stop()
    assert s._probe is None
