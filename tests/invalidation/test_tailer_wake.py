"""A wake-up that arrives while the tailer polls (a write of this process, another
process's NOTIFY) is not lost: the next poll follows at once, not a poll interval later
(the tailer clears its wake-up before it polls, not after)."""

from __future__ import annotations

import asyncio

from maxage.core.clock import ManualClock
from maxage.invalidation.tailer import Tailer
from maxage.store.base import ChangeBatch
from maxage.store.memory import MemoryStore


class GatedStore(MemoryStore):
    """Holds the first poll until the test lets it go; counts the polls."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock=clock)
        self.polls = 0
        self.in_first_poll = asyncio.Event()
        self.release_first_poll = asyncio.Event()
        self.second_poll = asyncio.Event()

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch:
        self.polls += 1
        if self.polls == 1:
            self.in_first_poll.set()
            await self.release_first_poll.wait()
        elif self.polls == 2:
            self.second_poll.set()
        return await super().changes_after(cursor, limit)


async def test_a_wake_up_during_a_poll_brings_the_next_poll_at_once() -> None:
    clock = ManualClock(1_000.0)
    store = GatedStore(clock)
    await store.open()
    tailer = Tailer(store, [], clock, poll_interval=3600.0)  # only a wake-up can bring a poll
    await tailer.start()
    try:
        await asyncio.wait_for(store.in_first_poll.wait(), 5)
        tailer.wake()  # while the poll is in progress
        store.release_first_poll.set()
        await asyncio.wait_for(store.second_poll.wait(), 5)
    finally:
        await tailer.stop()
        await store.close()
