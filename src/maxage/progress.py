"""One progress line for long-running commands (``maxage check``, ``maxage sim``): elapsed
time, how much is done and at what rate, and what is left (the remaining time budget, or
an ETA from the rate when the total is a count).

Written to a terminal only: when the stream is not a TTY (a pipe, a file, CI) nothing is
printed, so logs and captured output stay clean. The line is redrawn in place (``\\r``
and erase-to-end) at most every ``every`` seconds and ended with a newline by
:meth:`Progress.close`. Standard library only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "duration_text"]


def duration_text(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    """``Progress("check", budget=30.0, unit="ops")``; ``update(done, detail)``; ``close()``.

    With ``budget`` (seconds) the line says how much of it is left; with ``total`` (a
    count) it says the ETA at the current rate."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "ops",
        budget: float | None = None,
        total: int | None = None,
        stream: TextIO | None = None,
        every: float = 0.5,
        enabled: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.unit = unit
        self.budget = budget
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.clock = clock
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled if enabled is not None else bool(isatty and isatty())
        self.started = clock()
        self._last = -float("inf")
        self._drawn = False

    def line(self, done: int, detail: str = "") -> str:
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [
            f"{self.label}: {duration_text(elapsed)} elapsed",
            f"{done:,} {self.unit} ({rate:,.0f}/s)",
        ]
        if self.budget is not None:
            parts.append(f"{duration_text(max(0.0, self.budget - elapsed))} left")
        elif self.total:
            left = (self.total - done) / rate if rate > 0 else float("inf")
            pct = 100.0 * done / self.total
            eta = duration_text(left) if left != float("inf") else "?"
            parts.append(f"{pct:.0f} %, ETA {eta}")
        if detail:
            parts.append(detail)
        return ", ".join(parts)

    def update(self, done: int, detail: str = "", *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last < self.every:
            return
        self._last = now
        self.stream.write("\r" + self.line(done, detail) + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self, done: int | None = None, detail: str = "") -> None:
        """The final line (when ``done`` is given), then a newline."""
        if not self.enabled:
            return
        if done is not None:
            self.update(done, detail, force=True)
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
