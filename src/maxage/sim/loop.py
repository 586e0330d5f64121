"""A seeded, deterministic asyncio event loop on virtual time.

Invariant: given its seed and the same program, a :class:`SimLoop` runs every
callback in the same order at the same virtual time, run after run, on any
machine, however loaded. Nothing waits on the wall clock:

* ``time()`` is virtual. When no callback is ready, time jumps to the earliest
  timer (``asyncio.sleep``, ``asyncio.timeout`` and ``call_later`` all run on
  it); a loop with nothing ready and no timer is a deadlock and raises.
* Every iteration runs the callbacks that are ready in an order drawn from the
  seed (a shuffle), so which ready task runs next is chosen by the seed, not by
  the order in which they became ready.
* Every timer fires up to ``jitter`` seconds late, drawn from the seed, so
  timers set for nearly the same moment fire in a seeded order too.

There is no I/O: the simulated primary and shared tier are in memory, and
their latency is a timer. Only the thread that runs the loop may use it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import itertools
import operator
import random
from collections.abc import Callable
from heapq import heappop, heappush
from typing import Any


class SimDeadlock(RuntimeError):
    """Nothing is ready and no timer is set: the simulated program cannot progress."""


class SimHandle:
    """A callback the loop will run (asyncio's ``Handle``, without its debug bookkeeping)."""

    __slots__ = ("_args", "_callback", "_cancelled", "_context", "_loop", "_when")

    def __init__(
        self,
        loop: SimLoop,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        context: contextvars.Context | None,
    ) -> None:
        self._loop = loop
        self._when = when
        self._callback: Callable[..., object] | None = callback
        self._args: tuple[Any, ...] | None = args
        self._context = context if context is not None else contextvars.copy_context()
        self._cancelled = False

    def cancel(self) -> None:
        if not self._cancelled:
            self._cancelled = True
            self._callback = None
            self._args = None

    def cancelled(self) -> bool:
        return self._cancelled

    def when(self) -> float:
        return self._when

    def get_context(self) -> contextvars.Context:
        return self._context

    def _run(self) -> None:
        try:
            self._context.run(self._callback, *self._args)  # type: ignore[arg-type, misc]
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler(
                {"message": f"Exception in callback {self._callback!r}", "exception": exc}
            )


class SimLoop(asyncio.BaseEventLoop):
    """The event loop of one simulation (see the module docstring).

    Timers live in a heap of ``(when, seq, handle)`` tuples (compared in C, and in
    creation order at equal times) instead of asyncio's heap of handles.
    """

    def __init__(self, seed: int, *, jitter: float = 0.0) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.random = self.rng.random
        self.jitter = jitter
        self.now = 0.0
        self.iterations = 0
        self._timers: list[tuple[float, int, SimHandle]] = []
        self._timer_seq = 0
        # Called on every future and task the program makes (asyncio's C futures ask the
        # loop for both): C callables, so no Python frame each time.
        self.create_future = functools.partial(_Future, loop=self)  # type: ignore[method-assign]
        if not self._debug:  # type: ignore[attr-defined]
            self.get_debug = _FALSE  # type: ignore[method-assign]
        self.time = functools.partial(_now_of, self)  # type: ignore[method-assign]

    def time(self) -> float:
        return self.now

    # The handles are made without calling SimHandle.__init__ (a Python frame on the path
    # of every callback: a future's wake-up of its task is a call_soon).

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> SimHandle:
        handle = _new_handle(SimHandle)
        handle._loop = self
        handle._when = 0.0
        handle._callback = callback
        handle._args = args
        handle._context = context if context is not None else contextvars.copy_context()
        handle._cancelled = False
        self._ready.append(handle)  # type: ignore[attr-defined]
        return handle

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> SimHandle:
        return self.call_at(self.now + delay, callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> SimHandle:
        return self._push_timer(
            when, callback, args, context if context is not None else contextvars.copy_context()
        )

    def _push_timer(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...], context: Any
    ) -> SimHandle:
        """A timer at ``when`` plus the loop's jitter (drawn from its seed), in the heap."""
        if self.jitter:
            when += self.random() * self.jitter
        timer = _new_handle(SimHandle)
        timer._loop = self
        timer._when = when
        timer._callback = callback
        timer._args = args
        timer._context = context
        timer._cancelled = False
        self._timer_seq += 1
        heappush(self._timers, (when, self._timer_seq, timer))
        return timer

    def sleep(self, delay: float) -> asyncio.Future[None]:
        """``await loop.sleep(delay)`` is ``await asyncio.sleep(delay)`` (the same timer,
        jitter included) without a coroutine of its own: a future the timer resolves.
        (A cancelled waiter leaves the timer to fire on a cancelled future: harmless.)"""
        future: asyncio.Future[None] = _Future(loop=self)
        self._push_timer(self.now + delay, _wake, (future,), _NO_CONTEXT)
        return future

    def _process_events(self, event_list: Any) -> None:
        return None

    def _write_to_self(self) -> None:
        return None

    def _run_once(self) -> None:
        """Iterations until the loop is stopped (``run_forever`` calls this once)."""
        ready = self._ready  # type: ignore[attr-defined]
        timers = self._timers
        random_ = self.random
        popleft = ready.popleft
        while True:
            if not ready:
                while timers and timers[0][2]._cancelled:
                    heappop(timers)
                if not timers:
                    if self._stopping:  # type: ignore[attr-defined]
                        return
                    raise SimDeadlock("nothing is ready and no timer is set")
                when = timers[0][0]
                if when > self.now:
                    self.now = when
            now = self.now
            while timers and timers[0][0] <= now:
                handle = heappop(timers)[2]
                if not handle._cancelled:
                    ready.append(handle)
            self.iterations += 1
            if len(ready) == 1:
                handle = popleft()
                if not handle._cancelled:
                    handle._run()
            else:
                handles = list(ready)
                ready.clear()
                for i in range(len(handles) - 1, 0, -1):  # Fisher-Yates on random(): cheaper
                    j = int(random_() * (i + 1))
                    handles[i], handles[j] = handles[j], handles[i]
                for handle in handles:
                    if not handle._cancelled:
                        handle._run()
            if self._stopping:  # type: ignore[attr-defined]
                return


_NO_CONTEXT = contextvars.Context()  # resolving a future reads no context variable
_Future = asyncio.Future
_FALSE = itertools.repeat(False).__next__  # get_debug() without a Python frame
_new_handle = object.__new__
_now_of = operator.attrgetter("now")  # time() without a Python frame


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class VirtualClock:
    """A node's wall clock: ``base`` + the loop's virtual time + a skew of its own."""

    __slots__ = ("base", "loop", "skew")

    def __init__(self, loop: SimLoop, base: float, skew: float = 0.0) -> None:
        self.loop = loop
        self.base = base
        self.skew = skew

    def now(self) -> float:
        return self.base + self.loop.now + self.skew
