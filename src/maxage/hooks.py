"""The one seam for test hooks: every place where a test or the fault injector may
change what the server does is a method of :class:`Hooks`.

Invariant: production passes ``None`` wherever a ``hooks`` parameter is taken,
and every call site is guarded by ``if hooks is not None`` (or runs the hook
only off the hot path), so a server without ``--fault-injection`` executes none
of this. A hook may make things late, slow, duplicated, reordered or failed;
it never makes the change log lie: every fault keeps the change log the source
of truth, so the real code must keep the contract under any mix of them.

Implementations: :class:`maxage.faults.FaultHooks` (the checker's faults and the
mutants) and :class:`SlowStoreHooks` (the API tests' slowed primary).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Hooks:
    """No-op defaults; subclasses override what they need."""

    # -- store -------------------------------------------------------------------------

    #: PostgreSQL mutant: tail the change log by ``seq > cursor`` only (skips late commits).
    seq_tailer: bool = False

    async def before_store_call(self, op: str) -> None:
        """Before a primary call ``op`` (``get``, ``list``, ``write``, ``changes``, ...)
        reaches the primary: a delay here happens before any effect."""

    def commit_delay(self) -> float:
        """Seconds a PostgreSQL write sleeps between its change row and COMMIT."""
        return 0.0

    # -- tailer and holders --------------------------------------------------------------

    def tailer_stalled(self) -> bool:
        """True: the tailer skips its polls (its watermark freezes)."""
        return False

    def drop_failed_delivery(self) -> bool:
        """Mutant: a delivery that failed is forgotten instead of retried."""
        return False

    def change_batch(self, cursor: int, batch: T) -> T:
        """A batch of the change log read after ``cursor``, as the tailer receives it
        (cut short, reordered)."""
        return batch

    def holder(self, holder: T) -> T:
        """Wraps each tailer holder once, at start-up (delayed, failed, duplicated
        deliveries; a watermark that lies)."""
        return holder

    # -- service -----------------------------------------------------------------------

    def deliver_after_commit(self, key: str, deliver: Callable[[], None]) -> None:
        """The direct post-commit cache update of the write of ``key`` (an optimisation;
        the tailer is the truth): run it now, later, twice, or not at all."""
        deliver()

    # -- change feed -------------------------------------------------------------------

    def feed_resume(self, after: int) -> int:
        """Mutants: the cursor a change-feed request reads after, given the client's
        resume cursor ``after`` (off by one: a change replayed, or one skipped)."""
        return after

    def before_fill(self, key: str, version: int) -> Awaitable[None] | None:
        """Between a primary read of ``key`` (which returned ``version``, 0 if absent) and
        its cache fill (a pause makes the fill stale)."""
        return None

    def joining(self, key: str) -> None:
        """A read of ``key`` is about to join the load already in flight for it (fault
        injection reports joins to held loads, so a checker waits for one instead of
        sleeping)."""

    def join_any_flight(self) -> bool:
        """Mutant (``early-flight``): a read uses any joined load, even one that started
        before its session's write or more than the bound before the read."""
        return False


class SlowStoreHooks(Hooks):
    """TEST ONLY: stall every document read and write by ``delay`` seconds before it
    reaches the primary, so a cancelled or timed-out request writes nothing.
    Idempotency claims, pings and the tailer are not stalled."""

    STALLED = frozenset({"get", "list", "write"})

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def before_store_call(self, op: str) -> None:
        if op in self.STALLED:
            await asyncio.sleep(self.delay)
