"""Waiting for a wake-up or a timeout, whichever comes first, without losing a cancel."""

from __future__ import annotations

import asyncio


class Wake:
    """A wake-up flag a background loop sleeps on (``asyncio.Event``'s ``set``, ``clear``
    and ``is_set``), waited on by :func:`wait_woken` with one timer and one future.

    Why not ``asyncio.Event`` under ``asyncio.timeout``: a wait that expires (most of a
    polling loop's waits do) costs a Timeout object, a cancellation of the task and its
    conversion to ``TimeoutError``, about three times the instructions (``maxage sim``
    runs the loops of three nodes and spent ~0.9 such waits per operation)."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if not self._is_set:
            self._is_set = True
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def wait_woken(wake: Wake, timeout: float | None) -> None:
    """Return when ``wake`` is set or after ``timeout`` seconds (None: no timeout).

    Invariant: a cancel is never lost. The timeout resolves the wait like a wake-up
    does (no exception is converted), so a cancel of the waiting task always comes out
    as ``CancelledError`` (on Python 3.11, ``asyncio.timeout`` turned a cancel arriving
    as it expired into ``TimeoutError``: a loop that suppressed it never stopped)."""
    if wake._is_set:
        return
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()
    wake._waiters.append(waiter)
    timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
    try:
        await waiter
    finally:
        if timer is not None:
            timer.cancel()
        # a timed-out or cancelled waiter leaves the list (set() empties it otherwise)
        if waiter in wake._waiters:
            wake._waiters.remove(waiter)
