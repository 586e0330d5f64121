"""The service: every contract decision, no HTTP. One object per worker process.

It owns the holders (L1, and L2 when a shared tier is configured), the tailer
that keeps their watermarks, and the parts that decide: :attr:`reads` (the
bounded-read rule), :func:`writes.prepare` and :attr:`writes` (preconditions,
validation, after-commit), :attr:`writeback` (write-back buffers and their
flushes), :attr:`idempotency`, :attr:`listing`,
:attr:`changes`. The API translates HTTP to calls on these and their results
(and :mod:`maxage.service.errors`) back to HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from maxage.contracts import DEFAULT_BATCH_OPERATIONS, CollectionSpec, RateLimits
from maxage.core.cache import Cache
from maxage.core.types import Clock
from maxage.hooks import Hooks
from maxage.invalidation.tailer import Generations, Holder, L1Holder, Tailer
from maxage.service.access import Access
from maxage.service.batch import check_max_operations
from maxage.service.changes import ChangeFeed
from maxage.service.consumers import Consumers
from maxage.service.idempotency import Idempotency
from maxage.service.limits import Limits
from maxage.service.listing import Listing
from maxage.service.reads import Reads
from maxage.service.webhooks import Webhooks
from maxage.service.writeback import WriteBack
from maxage.service.writes import Writes
from maxage.store.base import Store

if TYPE_CHECKING:
    from maxage.invalidation.monitor import ConsistencyMonitor
    from maxage.tiers.base import SharedTier

log = logging.getLogger("maxage.service")


class TierHolder:
    """A shared tier as a tailer holder: a failed invalidation raises, so it is retried."""

    def __init__(self, tier: SharedTier, start: float) -> None:
        self.name = "l2"
        self.tier = tier
        self.watermark = start

    async def apply(self, key: str, version: int) -> None:
        if not await self.tier.invalidate(key, version):
            raise ConnectionError("the shared tier did not take the invalidation")


class Service:
    def __init__(
        self,
        collections: Mapping[str, CollectionSpec],
        store: Store,
        cache: Cache,
        clock: Clock,
        *,
        l2: SharedTier | None = None,
        monitor: ConsistencyMonitor | None = None,
        hooks: Hooks | None = None,
        poll_interval: float | None = None,
        load_timeout: float = 10.0,
        idempotency_keep: float = 24 * 3600.0,
        default_page_size: int = 20,
        max_page_size: int = 100,
        max_batch_operations: int = DEFAULT_BATCH_OPERATIONS,
        auth: bool = False,
        auth_bound: float = 1.0,
        rate_limits: RateLimits | None = None,
    ) -> None:
        self.collections = collections
        self.store = store
        self.cache = cache
        self.clock = clock
        self.l2 = l2
        self.monitor = monitor
        self.hooks = hooks
        now = clock.now()
        self.generations = Generations()
        l1_holder: Holder = L1Holder(cache, now, self.generations)
        l2_holder: Holder | None = TierHolder(l2, now) if l2 is not None else None
        if hooks is not None:
            l1_holder = hooks.holder(l1_holder)
            l2_holder = hooks.holder(l2_holder) if l2_holder is not None else None
        self.l1_holder = l1_holder
        self.l2_holder = l2_holder
        if poll_interval is None:
            bounds = [c.max_staleness for c in collections.values() if c.max_staleness > 0]
            if auth:
                bounds.append(auth_bound)  # the key cache's watermark must keep up with A
            poll_interval = min(1.0, max(0.005, min(bounds, default=1.0) / 4))
        holders = [l1_holder] if l2_holder is None else [l1_holder, l2_holder]
        self.tailer = Tailer(store, holders, clock, poll_interval=poll_interval, hooks=hooks)
        self.reads = Reads(
            store,
            cache,
            clock,
            l1_holder,
            l2=l2,
            l2_holder=l2_holder,
            monitor=monitor,
            hooks=hooks,
            load_timeout=load_timeout,
        )
        self.writes = Writes(store, self.reads, self.tailer, hooks)
        self.writeback = WriteBack(store, self.reads, self.writes, clock, collections)
        # How many operations one batch write may hold (docs/architecture.md, "Batch writes").
        self.max_batch_operations = check_max_operations(max_batch_operations)
        self.idempotency = Idempotency(store, clock, idempotency_keep)
        self.listing = Listing(
            store, clock, self.reads, self.generations, default_page_size, max_page_size
        )
        self.changes = ChangeFeed(store, poll_interval, hooks)
        self.consumers = Consumers(store, clock, collections)
        self.webhooks = Webhooks(store, clock, collections)
        self.access = Access(
            store, cache, clock, l1_holder, collections, enabled=auth, bound=auth_bound
        )
        self.limits = Limits(rate_limits or RateLimits(None), clock, l2)
        self._purger: asyncio.Future[None] | None = None

    async def start(self) -> None:
        if self.monitor is not None:
            await self.monitor.start()
        await self.listing.start()
        # The primary's query indexes follow the config: missing ones built, others dropped.
        synced = await self.store.sync_indexes(
            {name: spec.indexes for name, spec in self.collections.items()}
        )
        if synced.created or synced.dropped:
            log.info(
                "query indexes: built %s, dropped %s",
                ", ".join(synced.created) or "none",
                ", ".join(synced.dropped) or "none",
            )
        shared = [self.l2_holder] if self.l2_holder is not None else []
        replay = max((c.cache_ttl for c in self.collections.values()), default=0.0)
        await self.tailer.start(replay=replay, shared=shared)
        self.reads.l1_since = self.tailer.since
        try:
            await self.store.listen(self.tailer.wake)
        except Exception as exc:  # notifications only speed things up; polling is the truth
            log.warning("change notifications unavailable, polling only: %s", exc)
        self._purger = asyncio.ensure_future(self.idempotency.purge_forever())
        await self.writeback.start()
        await self.consumers.start()
        await self.webhooks.start()

    async def stop(self) -> None:
        # First, while the primary is open: everything write-back acknowledged is flushed.
        await self.writeback.stop()
        await self.consumers.stop()
        await self.webhooks.stop()
        if self._purger is not None:
            self._purger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purger
        await self.tailer.stop()
        if self.monitor is not None:
            await self.monitor.stop()

    def kill(self) -> None:
        """What a crash does to this process's background work (the simulator's crashes):
        every loop and background fill cancelled at once, nothing flushed or released
        (write-back's buffered writes are lost, as a crash loses them; a webhook's lease
        lapses). :meth:`stop` is the orderly way."""
        # in this order: the simulator's seeded loop runs the cancellations as queued
        self.tailer.kill()
        if self._purger is not None:
            self._purger.cancel()
        self.writeback.kill()
        self.consumers.kill()
        self.webhooks.kill()
        if self.monitor is not None:
            self.monitor.kill()
        for task in list(self.reads.tasks):
            task.cancel()

    async def ping(self) -> None:
        """Raise unless the primary answers (readiness)."""
        await self.store.ping()
