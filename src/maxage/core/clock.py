"""Clocks: the real one and a manual one for exact, fast TTL and staleness tests."""

from __future__ import annotations

import threading
import time


class SystemClock:
    """Wall-clock seconds since the epoch (``time.time``)."""

    __slots__ = ()

    # ``time.time`` itself rather than a method calling it: no Python frame per read
    # (the cache and the cache server read the clock on every hit and write).
    now = staticmethod(time.time)


class ManualClock:
    """A clock that only moves when told to. Thread-safe."""

    __slots__ = ("_lock", "_now")

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        with self._lock:
            self._now += seconds

    def set(self, now: float) -> None:
        with self._lock:
            self._now = now


class OffsetClock:
    """Wall clock plus an offset that only grows. TEST-ONLY (``--debug-clock``)."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
