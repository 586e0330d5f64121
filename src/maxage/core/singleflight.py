"""Single-flight loading for asyncio: one load per key, however many callers wait.

N concurrent callers of :meth:`SingleFlight.do` on one key cause exactly one
call of ``fn``. The load runs in its own task; every caller (the first one
included) awaits ``asyncio.shield(task)``, so a caller that is cancelled (a
client disconnect, a per-request timeout) never cancels the load for the
others. An exception from ``fn`` reaches every waiter and is *not* remembered:
the flight is forgotten as soon as the task finishes, so the next call loads
again. With ``timeout`` the load itself has a deadline: when it passes, the
load task is cancelled and every waiter gets :class:`TimeoutError`.

Threading: one event loop. The in-flight table is touched only from the loop's
thread (no locks needed); use one ``SingleFlight`` per loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["SingleFlight"]


class SingleFlight(Generic[T]):
    """Deduplicate concurrent loads of the same key."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[T]] = {}

    def in_flight(self, key: str) -> bool:
        """True while a load for ``key`` is running."""
        return key in self._flights

    def __len__(self) -> int:
        return len(self._flights)

    async def do(
        self, key: str, fn: Callable[[], Awaitable[T]], *, timeout: float | None = None
    ) -> T:
        """Return the result of one shared call of ``fn`` for ``key``.

        ``timeout`` (seconds) is the load deadline; it is fixed by the caller that
        starts the flight (later joiners share that flight and its deadline).
        """
        if timeout is not None and timeout < 0:
            raise ValueError("timeout must be >= 0")
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(self._run(fn, timeout))
            self._flights[key] = task
            task.add_done_callback(functools.partial(self._forget, key))
        return await asyncio.shield(task)

    def _forget(self, key: str, task: asyncio.Task[T]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception retrieved: every waiter may have gone away.
            task.exception()

    @staticmethod
    async def _run(fn: Callable[[], Awaitable[T]], timeout: float | None) -> T:
        if timeout is None:
            return await fn()
        try:
            async with asyncio.timeout(timeout):
                return await fn()
        except TimeoutError:
            raise TimeoutError(f"load did not finish within {timeout}s") from None
