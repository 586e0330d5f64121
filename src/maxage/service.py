"""Read/write orchestration of the contract (DESIGN.md "Protocols"); no HTTP here.

Bounded read (mode ``bounded``/``session``): serve from a holder only if the
holder is caught up (``now - watermark <= S``), the entry is not expired, and
``entry.version >= min_version``; otherwise load from the primary through
single-flight and fill with ``set_if_newer`` stamped with the *start* of the
primary read. A joined flight whose read started more than ``S`` before this
read, or that returns a version below ``min_version``, is not used: the read
goes to the primary itself.

Strong read: always the primary (never a shared flight that may have started
before this read), then fill.

Write: one primary transaction (``Store.write``); after commit, write-through
collections ``set_if_newer`` the new body into the holders, write-around ones
invalidate; the tailer is woken and applies the change log as well.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec

from maxage.contracts import CollectionSpec, ReadMode, SchemaErrors, WritePolicy
from maxage.core.cache import Cache
from maxage.core.singleflight import SingleFlight
from maxage.core.types import MISSING, Clock, SetOutcome
from maxage.invalidation.tailer import Holder, L1Holder, Tailer, doc_key
from maxage.store.base import (
    Document,
    IdempotencyCompletion,
    Store,
    WriteRequest,
    WriteResult,
)

if TYPE_CHECKING:
    from maxage.invalidation.monitor import ConsistencyMonitor
    from maxage.tiers.base import SharedTier

log = logging.getLogger("maxage.service")

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class Source(enum.Enum):
    L1 = "l1"
    L2 = "l2"
    PRIMARY = "primary"


# -- domain errors (the API maps them to problem details) ------------------------------


class DomainError(Exception):
    code = "error"


class NotFound(DomainError):
    code = "not_found"


class PreconditionFailed(DomainError):
    code = "precondition_failed"

    def __init__(self, message: str, current_version: int | None) -> None:
        super().__init__(message)
        self.current_version = current_version


class ValidationFailed(DomainError):
    code = "validation_failed"

    def __init__(self, errors: SchemaErrors) -> None:
        super().__init__("the document does not match the collection's schema")
        self.errors = errors


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_document(doc: Document) -> bytes:
    """The document part of a response (no meta): ``{"id","version","createdAt","updatedAt","data"``."""
    return b'{"id":%s,"version":%d,"createdAt":"%s","updatedAt":"%s","data":%s' % (
        _encode(doc.id),
        doc.version,
        iso(doc.created_at).encode(),
        iso(doc.updated_at).encode(),
        doc.data,
    )


def render_prefix(doc: Document, known_at: float) -> bytes:
    """Everything of a read response up to the per-request part of ``meta``."""
    return render_document(doc) + b',"meta":{"version":%d,"cachedAt":"%s",' % (
        doc.version,
        iso(known_at).encode(),
    )


@dataclass(slots=True)
class ReadResult:
    prefix: bytes
    version: int
    known_at: float  # the data was current at this time (start of the primary read)
    source: Source
    mode: ReadMode
    detail: str  # RFC 9211 detail: "hit", "miss", "lagging", "strong", "session"


@dataclass(slots=True)
class Loaded:
    doc: Document | None
    started_at: float


class TierHolder:
    """A shared tier as a tailer holder: a failed invalidation raises, so it is retried."""

    def __init__(self, tier: SharedTier, start: float) -> None:
        self.name = "l2"
        self.tier = tier
        self.watermark = start

    async def apply(self, key: str, version: int) -> None:
        if not await self.tier.invalidate(key, version):
            raise ConnectionError("the shared tier did not take the invalidation")


class ServiceStats:
    __slots__ = ("bypasses", "fills", "hits", "misses")

    def __init__(self) -> None:
        self.hits: dict[str, int] = {"l1": 0, "l2": 0}
        self.misses = 0
        self.bypasses: dict[str, int] = {"lagging": 0, "strong": 0, "tier_unavailable": 0}
        self.fills: dict[str, int] = {}


class Service:
    def __init__(
        self,
        collections: Mapping[str, CollectionSpec],
        store: Store,
        cache: Cache,
        clock: Clock,
        *,
        l2: SharedTier | None = None,
        poll_interval: float | None = None,
        load_timeout: float = 10.0,
    ) -> None:
        self.collections = collections
        self.store = store
        self.cache = cache
        self.clock = clock
        self.l2 = l2
        self.load_timeout = load_timeout
        self.flights: SingleFlight[Loaded] = SingleFlight()
        self.stats = ServiceStats()
        self.l1_holder = L1Holder(cache, clock.now())
        holders: list[Holder] = [self.l1_holder]
        self.l2_holder: TierHolder | None = None
        if l2 is not None:
            self.l2_holder = TierHolder(l2, clock.now())
            holders.append(self.l2_holder)
        if poll_interval is None:
            bounds = [c.max_staleness for c in collections.values() if c.max_staleness > 0]
            poll_interval = min(1.0, max(0.005, min(bounds, default=1.0) / 4))
        self.tailer = Tailer(store, holders, clock, poll_interval=poll_interval)
        # Fault-injection hook: called between the primary read and the cache fill.
        self.before_fill: Callable[[], object] | None = None
        # A fill older than this is refused: tombstones must outlive the slowest fill.
        self.max_fill_age = cache.tombstone_ttl / 2
        self._tasks: set[asyncio.Future[object]] = set()
        # In-service consistency monitor (sampled hits checked later); None = off.
        self.monitor: ConsistencyMonitor | None = None

    async def start(self) -> None:
        if self.monitor is not None:
            await self.monitor.start()
        shared = [self.l2_holder] if self.l2_holder is not None else []
        replay = max((c.cache_ttl for c in self.collections.values()), default=0.0)
        await self.tailer.start(replay=replay, shared=shared)
        try:
            await self.store.listen(self.tailer.wake)
        except Exception as exc:  # notifications only speed things up; polling is the truth
            log.warning("change notifications unavailable, polling only: %s", exc)

    async def stop(self) -> None:
        await self.tailer.stop()
        if self.monitor is not None:
            await self.monitor.stop()

    # -- reads -------------------------------------------------------------------------

    def read_cached(self, spec: CollectionSpec, key: str, min_version: int) -> ReadResult | None:
        """The synchronous L1 part of a bounded/session read; None means go on with ``read``."""
        now = self.clock.now()
        if now - self.l1_holder.watermark > spec.max_staleness:
            return None
        entry = self.cache.get(key)
        if entry is MISSING or entry.version < min_version:
            return None
        self.stats.hits["l1"] += 1
        monitor = self.monitor
        if monitor is not None:
            monitor.countdown -= 1
            if monitor.countdown <= 0:
                monitor.hit(key, entry.version, now, spec.max_staleness)
        mode = ReadMode.SESSION if min_version else ReadMode.BOUNDED
        return ReadResult(entry.body, entry.version, entry.filled_at, Source.L1, mode, "hit")

    async def read(
        self,
        spec: CollectionSpec,
        id: str,
        mode: ReadMode,
        min_version: int = 0,
        *,
        l1_checked: bool = False,
    ) -> ReadResult:
        """``l1_checked``: the caller already looked in L1 and missed (don't count it twice)."""
        key = doc_key(spec.name, id)
        if mode is ReadMode.STRONG:
            self.stats.bypasses["strong"] += 1
            loaded = await self._load(spec, id)
            return self._primary_result(spec, key, loaded, mode, "strong")
        started = self.clock.now()
        bound = spec.max_staleness
        detail = "miss"
        if started - self.l1_holder.watermark > bound:
            self.stats.bypasses["lagging"] += 1
            detail = "lagging"
        else:
            hit = None if l1_checked else self.read_cached(spec, key, min_version)
            if hit is not None:
                hit.mode = mode
                return hit
            if self.l2 is not None:
                from_l2 = await self._read_l2(spec, key, min_version, mode, started)
                if from_l2 is not None:
                    return from_l2
        self.stats.misses += 1
        loaded = await self.flights.do(key, lambda: self._load(spec, id), timeout=self.load_timeout)
        doc = loaded.doc
        too_old = doc.version < min_version if doc is not None else min_version > 0
        if started - loaded.started_at > bound or too_old:
            # The shared flight started too early for this read (or before the session's write).
            loaded = await self._load(spec, id)
        return self._primary_result(spec, key, loaded, mode, detail)

    async def _read_l2(
        self, spec: CollectionSpec, key: str, min_version: int, mode: ReadMode, started: float
    ) -> ReadResult | None:
        assert self.l2 is not None and self.l2_holder is not None
        if started - self.l2_holder.watermark > spec.max_staleness:
            return None
        entry = await self.l2.get(key)
        if entry is None or entry.version < min_version:
            return None
        now = self.clock.now()
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        self.stats.hits["l2"] += 1
        monitor = self.monitor
        if monitor is not None:
            monitor.countdown -= 1
            if monitor.countdown <= 0:
                monitor.hit(key, entry.version, now, spec.max_staleness)
        remaining = None if entry.expires_at is None else entry.expires_at - entry.filled_at
        self.cache.set_if_newer(
            key,
            entry.version,
            entry.body,
            started_at=entry.filled_at,
            ttl=remaining,
            meta=b'"%d"' % entry.version,
        )
        return ReadResult(entry.body, entry.version, entry.filled_at, Source.L2, mode, "hit")

    async def _load(self, spec: CollectionSpec, id: str) -> Loaded:
        started = self.clock.now()
        doc = await self.store.get(spec.name, id)
        loaded = Loaded(doc, started)
        if self.before_fill is not None:
            pause = self.before_fill()
            if asyncio.iscoroutine(pause):
                await pause
        return loaded

    def _primary_result(
        self, spec: CollectionSpec, key: str, loaded: Loaded, mode: ReadMode, detail: str
    ) -> ReadResult:
        doc = loaded.doc
        if doc is None:
            raise NotFound(f"{spec.name}/{key.partition('/')[2]} does not exist")
        prefix = render_prefix(doc, loaded.started_at)
        self._fill(spec, key, doc.version, prefix, loaded.started_at)
        return ReadResult(prefix, doc.version, loaded.started_at, Source.PRIMARY, mode, detail)

    def _fill(
        self, spec: CollectionSpec, key: str, version: int, body: bytes, started: float
    ) -> None:
        if self.clock.now() - started > self.max_fill_age:
            self.stats.fills["refused_slow"] = self.stats.fills.get("refused_slow", 0) + 1
            return
        # meta holds the ETag value, so a hit formats nothing for it.
        outcome = self.cache.set_if_newer(
            key, version, body, started_at=started, ttl=spec.cache_ttl, meta=b'"%d"' % version
        )
        self.stats.fills[outcome.value] = self.stats.fills.get(outcome.value, 0) + 1
        # Only a version new to this process goes on to the shared tier: a strong read of
        # an unchanged document must not cost a Redis round trip every time.
        if self.l2 is not None and outcome is SetOutcome.STORED:
            self._background(
                self.l2.set_if_newer(
                    key, version, body, b"", started_at=started, ttl=spec.cache_ttl
                )
            )

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- writes ------------------------------------------------------------------------

    async def write(
        self,
        spec: CollectionSpec,
        id: str,
        mutate: Callable[[Document | None], bytes | None],
        idempotency: IdempotencyCompletion | None = None,
    ) -> WriteResult:
        now = self.clock.now()
        result = await self.store.write(WriteRequest(spec.name, id, mutate, now, idempotency))
        self.after_commit(spec, result, now)
        return result

    def after_commit(self, spec: CollectionSpec, result: WriteResult, started: float) -> None:
        doc = result.document
        key = doc_key(spec.name, doc.id)
        if not doc.deleted and spec.write_policy is WritePolicy.WRITE_THROUGH:
            self._fill(spec, key, doc.version, render_prefix(doc, started), started)
        else:
            self.cache.invalidate(key, doc.version)
            if self.l2 is not None:
                self._background(self.l2.invalidate(key, doc.version))
        self.tailer.wake()
        self._background(self._notify())

    async def _notify(self) -> None:
        try:
            await self.store.notify()
        except Exception as exc:
            log.debug("change notification failed: %s", exc)

    # -- mutators (run inside the store's transaction) --------------------------------

    @staticmethod
    def check_if_match(current: Document | None, if_match: int | None) -> None:
        if if_match is None:
            return
        if current is None:
            raise PreconditionFailed("If-Match given but the document does not exist", None)
        if current.version != if_match:
            raise PreconditionFailed(
                f"If-Match {if_match} does not match the current version {current.version}",
                current.version,
            )

    def encode_valid(self, spec: CollectionSpec, data: object) -> bytes:
        errors = spec.validate(data)
        if errors:
            raise ValidationFailed(errors)
        return _encode(data)


def merge_patch(target: object, patch: object) -> object:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def decode_data(data: bytes) -> object:
    return _decode(data)
