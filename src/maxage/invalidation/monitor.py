"""In-service consistency monitor: a sampled, after-the-fact check of cache hits (P2).

For one in ``sample_every`` cache hits the read path calls :meth:`ConsistencyMonitor.hit`
(the non-sampled cost is one decrement and one compare of :attr:`countdown`). The hit
``(collection, id, version, served_at, bound)`` goes into a bounded queue; a background
task, ``delay`` seconds later (so the change log holds every commit that could matter),
asks the primary when the first version newer than the served one was committed
(:meth:`Store.committed_at`) and classifies the hit:

* *staleness* = ``served_at - c`` when a newer version was committed at ``c`` before the
  hit, else 0 (the served version was the latest at the time of the hit);
* a *violation* iff ``c < served_at - bound``: the hit returned a version older than one
  committed more than the bound before it (DESIGN.md P2).

``committed_at`` is the time the primary stamps into the change row inside the write's
transaction, which is at or before the real commit (and the acknowledgement P2 speaks
of), so the check errs on the side of flagging: a write whose transaction took ``d``
seconds can be counted as a violation by a hit within ``d`` of the bound's edge.

Everything here is counters and a fixed-bucket histogram (:class:`maxage.core.metrics.Histogram`);
the API exports them as ``maxage_consistency_*`` families.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import NamedTuple

from maxage.core.metrics import Histogram
from maxage.core.types import Clock
from maxage.store.base import Store

log = logging.getLogger("maxage.monitor")

# Staleness buckets (seconds): 0 = the latest version was served; then sub-second to
# minutes, so both a tight (0.5 s) and a loose (30 s) bound fall on a bucket edge.
STALENESS_BUCKETS: tuple[float, ...] = (
    0.0,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)


LOG_EVERY = 10.0  # seconds between two violation log lines (the counters count them all)


class SampledHit(NamedTuple):
    collection: str
    id: str
    version: int
    served_at: float
    bound: float


class CollectionTally(Histogram):
    """Per-collection counters; the tally itself is the staleness histogram (seconds,
    :data:`STALENESS_BUCKETS`), cumulative over the process."""

    __slots__ = ("checked", "violations")

    def __init__(self) -> None:
        super().__init__(STALENESS_BUCKETS)
        self.checked = 0
        self.violations = 0


class ConsistencyMonitor:
    __slots__ = (
        "_last_log",
        "_task",
        "_wake",
        "clock",
        "countdown",
        "delay",
        "dropped",
        "errors",
        "max_pending",
        "pass_interval",
        "pending",
        "recorded",
        "sample_every",
        "store",
        "tallies",
        "timeout",
    )

    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        sample_every: int = 100,
        delay: float = 1.0,
        max_pending: int = 1000,
        timeout: float = 10.0,
        pass_interval: float = 0.1,
    ) -> None:
        if sample_every < 1:
            raise ValueError("sample_every must be >= 1 (leave the monitor out to turn it off)")
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.store = store
        self.clock = clock
        self.sample_every = sample_every
        self.delay = delay
        self.max_pending = max_pending
        self.timeout = timeout
        self.pass_interval = pass_interval  # seconds between two checking passes (at least)
        # The read paths decrement this on every hit and call ``hit`` when it reaches 0.
        self.countdown = sample_every
        self.pending: deque[SampledHit] = deque()
        self.recorded = 0
        self.dropped = 0
        self.errors = 0
        self.tallies: dict[str, CollectionTally] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_log = float("-inf")

    # -- the read path -----------------------------------------------------------------

    def hit(self, key: str, version: int, served_at: float, bound: float) -> None:
        """A sampled hit of cache key ``collection/id`` (the countdown reached 0)."""
        collection, _, id = key.partition("/")
        self.record_hit(collection, id, version, served_at, bound)

    def record_hit(
        self, collection: str, id: str, version: int, served_at: float, bound: float
    ) -> None:
        """Queue one hit for a check ``delay`` seconds from now; drop it when the queue is full."""
        self.countdown = self.sample_every
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending.append(SampledHit(collection, id, version, served_at, bound))
        self.recorded += 1
        if len(self.pending) == 1:
            self._wake.set()

    # -- totals (exported) -------------------------------------------------------------

    @property
    def checked(self) -> int:
        return sum(t.checked for t in self.tallies.values())

    @property
    def violations(self) -> int:
        return sum(t.violations for t in self.tallies.values())

    # -- checking ----------------------------------------------------------------------

    async def check(
        self, h: SampledHit, known: dict[tuple[str, str, int], float | None] | None = None
    ) -> bool:
        """Ask the primary about one hit and count it; True when it was a violation.
        ``known``: answers already fetched in this pass, by (collection, id, version)."""
        which = (h.collection, h.id, h.version)
        if known is not None and which in known:
            c = known[which]
        else:
            async with asyncio.timeout(self.timeout):
                c = await self.store.committed_at(h.collection, h.id, h.version)
            if known is not None:
                known[which] = c
        staleness = 0.0 if c is None or c >= h.served_at else h.served_at - c
        violation = c is not None and c < h.served_at - h.bound
        tally = self.tallies.get(h.collection)
        if tally is None:
            tally = self.tallies[h.collection] = CollectionTally()
        tally.checked += 1
        tally.observe(staleness)
        if violation:
            tally.violations += 1
            now = self.clock.now()
            if now - self._last_log < LOG_EVERY:
                return True
            self._last_log = now
            log.warning(
                "consistency monitor: %s/%s served v%d at %.3f, a newer version was committed"
                " at %.3f (%.3fs before the hit, bound %.3fs)",
                h.collection, h.id, h.version, h.served_at, c, staleness, h.bound,
            )  # fmt: skip
        return violation

    async def check_due(self, *, everything: bool = False) -> int:
        """Check every queued hit whose delay has passed (or all of them); returns how many.

        Hits of the same version checked in one pass share one look-up: the first version
        newer than it is fixed once committed, and every hit here is ``delay`` old, so the
        answer is the one a look-up per hit would get (a hot key's samples cost one query
        per pass, not one each)."""
        done = 0
        known: dict[tuple[str, str, int], float | None] = {}
        while self.pending:
            h = self.pending[0]
            if not everything and h.served_at + self.delay > self.clock.now():
                break
            self.pending.popleft()
            done += 1
            try:
                await self.check(h, known)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed check is counted, never retried
                self.errors += 1
                log.debug("consistency check of %s/%s failed: %s", h.collection, h.id, exc)
        return done

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self.pending[0].served_at + self.delay - self.clock.now()
            if wait > 0:
                # Bounded so a clock that jumps (or a test clock) cannot park the task.
                await asyncio.sleep(min(wait, self.delay, 1.0))
            await self.check_due()
            # Let the next due hits gather, so a pass checks them together (see check_due).
            await asyncio.sleep(self.pass_interval)

    async def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()  # bound to the running loop
            if self.pending:
                self._wake.set()
            self._task = asyncio.create_task(self._run(), name="maxage-consistency-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def kill(self) -> None:
        """What a crash does to it: its loop cancelled, not awaited (:meth:`stop` is the
        orderly way)."""
        if self._task is not None:
            self._task.cancel()


__all__ = ["STALENESS_BUCKETS", "CollectionTally", "ConsistencyMonitor", "SampledHit"]
