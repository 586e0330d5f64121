"""Waiting for a wake-up or a timeout, whichever comes first, without losing a cancel;
and the deadline timers' callback the store and the API share (:func:`expire_task`)."""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_woken(wake: asyncio.Event, timeout: float | None) -> None:
    """Return when ``wake`` is set or after ``timeout`` seconds (None: no timeout).

    Invariant: a cancel is never lost. On Python 3.11 a cancel that arrives just as the
    timeout expires comes out of ``asyncio.timeout`` as ``TimeoutError``; a background
    loop that suppressed it would then never stop (seen as a server that outlived its
    SIGTERM: the tailer's task stuck "cancelling" in its next wait). The task's pending
    cancel is re-raised instead."""
    try:
        async with asyncio.timeout(timeout):
            await wake.wait()
    except TimeoutError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise asyncio.CancelledError from None


def expire_task(deadline: list[Any]) -> None:
    """A deadline timer's callback: ``deadline`` is ``[task, task.cancelling() when the
    timer was armed, expired]``; mark it expired and cancel the task. The waiter then
    treats a CancelledError as its own timeout only if ``deadline[2]`` and
    ``task.uncancel() <= deadline[1]`` (no one else cancelled the task meanwhile), and
    uncancels once if the timer fired as the work ended: what ``asyncio.timeout`` does,
    without its Timeout object (~18,000 instructions a use, callgrind)."""
    deadline[2] = True
    deadline[0].cancel()
