"""Waiting for a wake-up or a timeout, whichever comes first, without losing a cancel."""

from __future__ import annotations

import asyncio


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
