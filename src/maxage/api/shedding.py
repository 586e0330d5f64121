"""Load shedding: refuse a few requests fast instead of slowing every one.

Two signals, either sheds (``/livez``, ``/readyz`` and ``/metrics`` never are):

* **concurrency**: at ``max_concurrency`` requests in progress a new one waits up to
  ``queue_deadline`` for a slot (FIFO), then is shed;
* **event-loop lag**: a timer due every ``LAG_PROBE`` measures how late it fires. When
  the loop runs late by more than ``max_lag``, requests are queuing *before* the app can
  count them (in the server's buffers and the loop's ready queue), so new ones are shed
  until the lag falls back: a shed costs a fraction of a served request, which drains
  the backlog.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

# seconds between lag samples: a plain timer callback (no task, no future: an idle worker
# spent ~1 % of a core on a coroutine sleeping 5 ms), 5x finer than the default max lag
LAG_PROBE = 0.01


class Shedder:
    def __init__(self, max_concurrency: int, queue_deadline: float, max_lag: float) -> None:
        self.max_concurrency = max_concurrency
        self.queue_deadline = queue_deadline
        self.max_lag = max_lag
        self.lag = 0.0  # the last sample
        self.shed = 0
        self.queued = 0
        self.queue_seconds = 0.0
        # Slots handed to woken waiters that have not yet counted themselves in: a new
        # arrival must not take them (the limit would be exceeded by the wakers).
        self.reserved = 0
        # full(n) is n >= full_at: one compare the callers inline on every request, kept
        # by _limit whenever reserved or lag moves (-1: lagging, everything is full).
        self.full_at = max_concurrency
        # The queued requests' wake-ups, oldest first (App.finished hands a freed slot on).
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._probe: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        if self.max_lag > 0:
            self._arm(asyncio.get_running_loop(), time.perf_counter())

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            self._probe = None

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        self._due = now + LAG_PROBE
        self._probe = loop.call_later(LAG_PROBE, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = time.perf_counter()
        self.lag = max(0.0, now - self._due)
        self._limit()
        self._arm(loop, now)

    async def admit(self, in_flight: int) -> bool:
        """False: shed this request (counted)."""
        if self.lag > self.max_lag > 0:
            self.shed += 1
            return False
        if in_flight + self.reserved < self.max_concurrency:
            return True
        # A queue as long as the limit will not drain within the deadline: refuse at once.
        if len(self.waiting) < self.max_concurrency and await self._queue():
            return True
        self.shed += 1
        return False

    async def _queue(self) -> bool:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(waiter)
        self.queued += 1
        t0 = time.perf_counter()
        admitted = False
        try:
            async with asyncio.timeout(self.queue_deadline):
                await waiter
            admitted = True
        except TimeoutError:
            pass
        finally:
            self.queue_seconds += time.perf_counter() - t0
            if waiter.done() and not waiter.cancelled():
                # We were handed a slot: it is ours now (the caller counts itself in), or,
                # if the deadline struck at the same moment, the next waiter's.
                self.reserved -= 1
                self._limit()
                if not admitted:
                    self.release()
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):  # gone already if release() passed it
                    self.waiting.remove(waiter)
        return admitted

    def release(self) -> None:
        """A request finished: hand its slot to the oldest waiter."""
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.reserved += 1
                self._limit()
                return

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or self.lag > self.max_lag > 0

    def full(self, in_flight: int) -> bool:
        """Whether a new request must go through :meth:`admit` (the fast test)."""
        return in_flight >= self.full_at

    def _limit(self) -> None:
        lagging = self.lag > self.max_lag > 0
        self.full_at = -1 if lagging else self.max_concurrency - self.reserved
