"""``wait_woken``: a wake-up or a timeout ends the wait, a cancel is never lost, and a
waiter that leaves (timed out or cancelled) does not stay registered."""

from __future__ import annotations

import asyncio
import time

import pytest

from maxage.core.wake import Wake, wait_woken


def test_a_set_wakes_the_waiter_before_its_timeout() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        wake = Wake()
        loop.call_later(0.01, wake.set)
        start = loop.time()
        await wait_woken(wake, 30.0)
        return loop.time() - start

    assert asyncio.run(main()) < 5.0


def test_a_set_flag_returns_at_once_and_clear_rearms_it() -> None:
    async def main() -> bool:
        wake = Wake()
        wake.set()
        await wait_woken(wake, None)  # would hang if the flag were ignored
        wake.clear()
        assert not wake.is_set()
        await wait_woken(wake, 0.001)  # returns by its timeout
        return wake.is_set()

    assert asyncio.run(main()) is False


def test_timed_out_and_cancelled_waiters_leave_no_registration() -> None:
    async def main() -> int:
        wake = Wake()
        for _ in range(50):
            await wait_woken(wake, 0)
        task = asyncio.ensure_future(wait_woken(wake, None))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(wake._waiters)

    assert asyncio.run(main()) == 0


def test_a_cancel_arriving_as_the_timeout_expires_is_not_lost() -> None:
    """The timer and the cancel run in the same loop iteration: the wait must end in
    ``CancelledError`` (a background loop that took it for a timeout never stopped)."""

    async def main() -> str:
        loop = asyncio.get_running_loop()
        wake = Wake()
        task = asyncio.ensure_future(wait_woken(wake, 0.01))
        await asyncio.sleep(0)  # the waiter and its timer are registered
        time.sleep(0.02)  # the loop is blocked past the timer's deadline
        loop.call_later(0, task.cancel)  # due too: runs right after the timer, same pass
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "returned"

    for _ in range(5):
        assert asyncio.run(main()) == "cancelled"
