"""The tailer: applies the change log to every holder and keeps each holder's watermark.

The change log in the primary is the source of truth. Notifications (an
in-process signal after a local commit, PostgreSQL ``LISTEN/NOTIFY``) only wake
the tailer early; it also polls, so a lost notification only makes a change
late, never lost.

Watermark. ``Holder.watermark`` is a time ``w`` such that every change committed
before ``w`` has been applied to that holder. After a *complete* poll (the store
returned everything up to its snapshot) a holder with no pending failures moves
its watermark to the poll's ``snapshot_at``. A holder that failed to apply a
change keeps it in a retry set (key -> highest version) and its watermark stays
where it was until every retry succeeds: a failed invalidation is never dropped
(dropping it and moving on is the bug the ``error-path-drop`` mutant plants).
The read path serves from a holder only while ``now - watermark <= S``, so a
stalled tailer turns into bypasses, never into stale reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from maxage import tracing
from maxage.core.cache import Cache
from maxage.core.types import Clock
from maxage.core.wake import wait_woken
from maxage.hooks import Hooks
from maxage.store.base import Change, Store

log = logging.getLogger("maxage.tailer")


def doc_key(collection: str, id: str) -> str:
    """The cache key of a document; the collection is a prefix so drop-all is a prefix drop."""
    return f"{collection}/{id}"


class Holder(Protocol):
    name: str
    watermark: float

    async def apply(self, key: str, version: int) -> None:
        """Drop entries of ``key`` older than ``version`` and leave a tombstone. Raise on failure."""
        ...


class Generations:
    """Per collection, a counter raised each time a change of it reaches the in-process
    cache: cached list pages are keyed by it, so any applied change retires every cached
    page of its collection (``service/listing.py`` states why that keeps the bound)."""

    __slots__ = ("_of",)

    def __init__(self) -> None:
        self._of: dict[str, int] = {}

    def of(self, collection: str) -> int:
        return self._of.get(collection, 0)

    def bump(self, collection: str) -> None:
        self._of[collection] = self._of.get(collection, 0) + 1


class L1Holder:
    """The in-process cache as a holder; an applied change also raises its collection's
    generation (before the watermark can move past it).

    A change at version 1 (a document's first version: a re-create after a delete
    continues the chain) changes nothing in the cache, so it is not applied to it:
    versions start at 1 (``Cache.set_if_newer`` takes nothing below it), so the
    invalidation would drop no entry (none is below 1) and its tombstone at 1 would
    refuse no fill (none is below 1) -- it would only cost a tombstone kept for
    ``tombstone_ttl`` in every process, for every create anywhere. The generation still
    rises: a new document changes the collection's list pages.
    """

    def __init__(self, cache: Cache, start: float, generations: Generations | None = None) -> None:
        self.name = "l1"
        self.cache = cache
        self.watermark = start
        self.generations = generations if generations is not None else Generations()

    async def apply(self, key: str, version: int) -> None:
        if version > 1:  # see the class docstring
            self.cache.invalidate(key, version)
        self.generations.bump(key.partition("/")[0])


class HolderState:
    __slots__ = ("applied", "failures", "holder", "pending")

    def __init__(self, holder: Holder) -> None:
        self.holder = holder
        self.pending: dict[str, int] = {}
        self.applied = 0
        self.failures = 0


class Tailer:
    """Polls ``store.changes_after`` and applies every change to every holder."""

    def __init__(
        self,
        store: Store,
        holders: Sequence[Holder],
        clock: Clock,
        *,
        poll_interval: float = 0.1,
        batch_size: int = 1000,
        hooks: Hooks | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.states = [HolderState(h) for h in holders]
        self.cursor = 0
        self.polls = 0
        self.poll_errors = 0
        self.last_poll_at = 0.0
        self.since = float("inf")  # set by start(): see there
        # Test hooks: a stalled tailer (watermark freezes), a cut or reordered batch, and
        # the ``error-path-drop`` mutant (forget failed invalidations, move on).
        self.hooks = hooks
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._caught_up = asyncio.Event()

    async def start(self, replay: float = 0.0, shared: Sequence[Holder] = ()) -> None:
        """Start from the current end of the log: in-process holders are empty at start-up.

        ``shared`` holders (a Redis tier other processes filled) may hold entries that a
        crashed process never invalidated: the log of the last ``replay`` seconds (the
        longest TTL such entries can have) is applied to them first, and until that
        replay completes their watermark claims nothing.
        """
        start = self.clock.now()
        self.cursor = await self.store.last_seq()
        # Every change committed after this moment is above the cursor, so it will reach
        # every holder: an in-process holder, empty at start-up, knows nothing older.
        self.since = self.clock.now()
        for st in self.states:
            st.holder.watermark = start
        if shared and replay > 0:
            self.cursor = min(self.cursor, await self.store.cursor_at(start - replay))
            for holder in shared:
                holder.watermark = float("-inf")
        self._task = asyncio.create_task(self._run(), name="maxage-tailer")

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

    def wake(self) -> None:
        self._wake.set()

    def lag(self) -> float:
        """Seconds since the oldest holder watermark (exported as a metric)."""
        if not self.states:
            return 0.0
        return max(0.0, self.clock.now() - min(s.holder.watermark for s in self.states))

    async def _run(self) -> None:
        while True:
            # Cleared before the poll, not after it: a wake-up during the poll (a write of
            # this process, another's NOTIFY) then brings the next poll at once.
            self._wake.clear()
            if self.hooks is None or not self.hooks.tailer_stalled():
                try:
                    complete = await self.poll_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is down: the watermark just stops
                    self.poll_errors += 1
                    log.warning("tailer poll failed: %s", exc)
                    complete = True
                if not complete:
                    continue
            await wait_woken(self._wake, self.poll_interval)

    async def poll_once(self) -> bool:
        """One poll: apply what is new, retry failures, move watermarks. True if complete."""
        batch = await self.store.changes_after(self.cursor, self.batch_size)
        if self.hooks is not None:
            batch = self.hooks.change_batch(self.cursor, batch)
        self.polls += 1
        self.last_poll_at = batch.snapshot_at
        # (untraced, straight to the holders: one coroutine frame fewer per change)
        apply = self._apply if tracing.TRACER is not None else self._apply_to_holders
        for change in batch.changes:
            await apply(change)
        self.cursor = batch.cursor
        for st in self.states:
            if st.pending:
                await self._retry(st)
            if batch.complete and not st.pending:
                st.holder.watermark = max(st.holder.watermark, batch.snapshot_at)
        return batch.complete

    async def _apply(self, change: Change) -> None:
        """:meth:`_apply_to_holders` in a span (tracing on)."""
        key = doc_key(change.collection, change.id)
        attributes = {"maxage.key": key, "maxage.version": change.version}
        with tracing.span("maxage invalidate", **attributes):
            await self._apply_to_holders(change)

    async def _apply_to_holders(self, change: Change) -> None:
        key = doc_key(change.collection, change.id)
        for st in self.states:
            if st.pending:
                # keep per-key order simple: a key already pending just raises its version
                prior = st.pending.get(key)
                if prior is not None:
                    st.pending[key] = max(prior, change.version)
                    continue
            try:
                await st.holder.apply(key, change.version)
                st.applied += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                st.failures += 1
                if self.hooks is not None and self.hooks.drop_failed_delivery():
                    continue
                st.pending[key] = max(st.pending.get(key, 0), change.version)
                log.warning(
                    "applying %s v%d to %s failed: %s", key, change.version, st.holder.name, exc
                )

    async def _retry(self, st: HolderState) -> None:
        for key, version in list(st.pending.items()):
            try:
                await st.holder.apply(key, version)
            except asyncio.CancelledError:
                raise
            except Exception:
                st.failures += 1
                return
            if st.pending.get(key) == version:
                del st.pending[key]
            st.applied += 1
