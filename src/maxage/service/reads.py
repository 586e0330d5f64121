"""Reads: the one bounded-read rule, strong and session reads, and cache fills.

**The bounded-read rule** (P2, P4). A holder (L1, the in-process cache; L2, the
shared tier) may answer a read of a collection with bound ``S`` only if

1. the holder is caught up: ``now - holder.watermark <= S`` (every change
   committed before the watermark has been applied to it), and
2. its entry is live (not expired) and ``entry.version >= min_version``.

The answer is current as of ``known = max(entry.filled_at, watermark)``; its
``age = now - known`` (clamped at 0 if the wall clock steps back) and its
remaining budget is ``int(S - age)``, never negative. :meth:`Reads.l1` and
:meth:`Reads._from_l2` are the only places that apply the rule, and the API's
hot path calls :meth:`Reads.l1` (it does not restate it).

Otherwise the read loads from the primary through single-flight and fills with
``set_if_newer`` stamped with the *start* of the primary read (P1: a fill can
never claim to be newer than what the primary said). A joined flight that
started more than ``S`` before this read, or that returns a version below
``min_version``, is not used: the read goes to the primary itself.

**Strong read** (P3): always the primary (never a shared flight that may have
started before this read), then fill.

A fill older than ``max_fill_age`` (half the tombstone lifetime) is refused:
tombstones must outlive the slowest fill, or an invalidation could be undone.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maxage import tracing
from maxage.contracts import CollectionSpec, ReadMode, WritePolicy
from maxage.core.cache import Cache
from maxage.core.singleflight import SingleFlight
from maxage.core.types import MISSING, Clock, Entry, SetOutcome
from maxage.hooks import Hooks
from maxage.invalidation.tailer import Holder, doc_key
from maxage.service import representation
from maxage.service.errors import DocumentNotFound, MinVersionUnavailable, ReadModeNotAllowed
from maxage.store.base import Document, Store

if TYPE_CHECKING:
    from maxage.invalidation.monitor import ConsistencyMonitor
    from maxage.tiers.base import SharedTier


class Source(enum.Enum):
    L1 = "l1"
    L2 = "l2"
    PRIMARY = "primary"


class Lagging(enum.Enum):
    """:meth:`Reads.l1` outcome: the holder is behind the bound; go to the primary."""

    LAGGING = "lagging"


LAGGING = Lagging.LAGGING


@dataclass(slots=True)
class ReadResult:
    prefix: bytes  # the body up to the per-request tail of meta (representation.read_prefix)
    version: int
    source: Source
    mode: ReadMode
    detail: str  # RFC 9211 detail: "hit", "miss", "lagging", "strong"
    age: float  # seconds since the body was known current
    budget: int  # seconds of the bound left (0 for strong reads)

    @property
    def body(self) -> bytes:
        # ``_value_``: the member's value as a plain attribute (``.value`` is a Python-level
        # property on every read).
        return self.prefix + representation.read_suffix(
            self.budget, self.mode._value_, self.source._value_
        )


@dataclass(slots=True)
class Loaded:
    doc: Document | None
    started_at: float


class ReadStats:
    __slots__ = ("bypasses", "fills", "hits", "misses")

    def __init__(self) -> None:
        self.hits: dict[str, int] = {"l1": 0, "l2": 0}
        self.misses = 0
        self.bypasses: dict[str, int] = {"lagging": 0, "strong": 0, "tier_unavailable": 0}
        self.fills: dict[str, int] = {}


def freshness(now: float, filled_at: float, watermark: float, bound: float) -> tuple[float, int]:
    """``(age, budget)`` of a holder's answer (see the module docstring)."""
    known = filled_at if filled_at > watermark else watermark
    age = now - known
    if age < 0:  # the wall clock stepped back: never claim more budget than the bound
        age = 0.0
    budget = int(bound - age)
    return age, budget if budget > 0 else 0


def max_fill_age(cache: Cache) -> float:
    """The oldest a fill may be: half the tombstone lifetime, so that a tombstone always
    outlives the slowest fill it must refuse (the fill guard's rule; key records too)."""
    return cache.tombstone_ttl / 2


def resolve_mode(spec: CollectionSpec, requested: ReadMode | None, min_version: int) -> ReadMode:
    """The mode a read runs in: the requested one (``session`` when only ``min_version``
    is given), else the collection's default; refused when the collection does not allow it."""
    mode = requested
    if mode is None:
        mode = ReadMode.SESSION if min_version else spec.default_mode
    if mode not in spec.read_modes:
        raise ReadModeNotAllowed(
            f"collection {spec.name!r} allows read modes: {spec.allowed_modes_text()}",
            allowed_modes=[m.value for m in spec.read_modes],
        )
    return mode


class Reads:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        clock: Clock,
        l1_holder: Holder,
        *,
        l2: SharedTier | None,
        l2_holder: Holder | None,
        monitor: ConsistencyMonitor | None,
        hooks: Hooks | None,
        load_timeout: float,
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.l1_holder = l1_holder
        self.l2 = l2
        self.l2_holder = l2_holder
        self.monitor = monitor
        self.hooks = hooks
        self.load_timeout = load_timeout
        self.stats = ReadStats()
        self.flights: SingleFlight[Loaded] = SingleFlight()
        self.max_fill_age = max_fill_age(cache)
        # From when L1 has been sent every change (Service.start sets it from the tailer).
        self.l1_since = float("inf")
        self.tasks: set[asyncio.Future[object]] = set()

    # -- the rule ----------------------------------------------------------------------

    def l1(
        self, key: str, bound: float, min_version: int, now: float, *, sample: bool = True
    ) -> tuple[Entry, float, int] | Lagging | None:
        """L1's answer under the bounded-read rule: ``(entry, age, budget)``; ``LAGGING``
        when the holder is behind the bound; ``None`` on a miss. Counts the hit and feeds
        the monitor's sample (the API's hot path calls this, synchronously); ``sample``
        False for keys that are not documents (list pages)."""
        watermark = self.l1_holder.watermark
        if now - watermark > bound:
            return LAGGING
        entry = self.cache.get(key)
        if entry is MISSING or entry.version < min_version:
            return None
        self.stats.hits["l1"] += 1
        if sample:
            self._sample(key, entry.version, now, bound)
        age, budget = freshness(now, entry.filled_at, watermark, bound)
        return entry, age, budget

    def _sample(self, key: str, version: int, now: float, bound: float) -> None:
        monitor = self.monitor
        if monitor is not None:
            monitor.countdown -= 1
            if monitor.countdown <= 0:
                monitor.hit(key, version, now, bound)

    async def _from_l2(
        self, key: str, bound: float, min_version: int, mode: ReadMode, started: float
    ) -> ReadResult | None:
        assert self.l2 is not None and self.l2_holder is not None
        watermark = self.l2_holder.watermark
        if started - watermark > bound:
            return None
        entry = await self.l2.get(key)
        if entry is None or entry.version < min_version:
            return None
        now = self.clock.now()
        if entry.expires_at is not None and entry.expires_at <= now:
            return None
        self.stats.hits["l2"] += 1
        self._sample(key, entry.version, now, bound)
        # Copied into L1 only while young enough for L1's tombstones to judge it (the
        # fill guard's rule): an older copy could outlive the tombstone of a newer write.
        # And only if known current after L1's tailer started: a change committed before
        # then never reaches L1 (it starts at the end of the log), so after a restart an
        # older copy would be served under L1's watermark forever (found by maxage sim).
        known = entry.filled_at if entry.filled_at > watermark else watermark
        if known >= self.l1_since and now - known <= self.max_fill_age:
            remaining = None if entry.expires_at is None else entry.expires_at - entry.filled_at
            self.cache.set_if_newer(
                key,
                entry.version,
                entry.body,
                started_at=entry.filled_at,
                ttl=remaining,
                meta=b'"%d"' % entry.version,
            )
        age, budget = freshness(now, entry.filled_at, watermark, bound)
        return ReadResult(entry.body, entry.version, Source.L2, mode, "hit", age, budget)

    # -- reads -------------------------------------------------------------------------

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
        hit = None if l1_checked else self.l1(key, bound, min_version, started)
        if hit is LAGGING or (l1_checked and started - self.l1_holder.watermark > bound):
            self.stats.bypasses["lagging"] += 1
            detail = "lagging"
        elif hit is not None:
            entry, age, budget = hit
            return ReadResult(entry.body, entry.version, Source.L1, mode, "hit", age, budget)
        elif self.l2 is not None:
            if not self.l2.available:  # its breaker is open: straight to the primary
                self.stats.bypasses["tier_unavailable"] += 1
            else:
                from_l2 = await self._from_l2(key, bound, min_version, mode, started)
                if from_l2 is not None:
                    return from_l2
        self.stats.misses += 1
        if self.hooks is not None and self.flights.in_flight(key):
            self.hooks.joining(key)
        loaded = await self.flights.do(key, lambda: self._load(spec, id), timeout=self.load_timeout)
        doc = loaded.doc
        too_old = doc.version < min_version if doc is not None else min_version > 0
        careless = self.hooks is not None and self.hooks.join_any_flight()
        if (started - loaded.started_at > bound or too_old) and not careless:
            # The shared flight started too early for this read (or before the session's write).
            loaded = await self._load(spec, id)
            doc = loaded.doc
        if min_version and doc is not None and doc.version < min_version and not careless:
            # P4: never an older version labelled "session". The primary does not have it
            # (yet, or at all): say so instead of answering with what it has.
            have = doc.version if doc is not None else 0
            raise MinVersionUnavailable(
                f"version {min_version} of {spec.name}/{id} is not available "
                f"(the primary has {have or 'none'})",
                min_version=min_version,
                current_version=have,
            )
        return self._primary_result(spec, key, loaded, mode, detail)

    async def _load(self, spec: CollectionSpec, id: str) -> Loaded:
        started = self.clock.now()
        doc = await self.store.get(spec.name, id)
        loaded = Loaded(doc, started)
        if self.hooks is not None:
            pause = self.hooks.before_fill(
                doc_key(spec.name, id), doc.version if doc is not None else 0
            )
            if pause is not None:
                await pause
        return loaded

    def _primary_result(
        self, spec: CollectionSpec, key: str, loaded: Loaded, mode: ReadMode, detail: str
    ) -> ReadResult:
        doc = loaded.doc
        if doc is None:
            raise DocumentNotFound(f"{spec.name}/{key.partition('/')[2]} does not exist")
        prefix = representation.read_prefix(doc, loaded.started_at)
        self.fill(spec, key, doc.version, prefix, loaded.started_at)
        if mode is ReadMode.STRONG:
            age, budget = freshness(self.clock.now(), loaded.started_at, loaded.started_at, 0.0)
        else:
            age, budget = freshness(
                self.clock.now(), loaded.started_at, loaded.started_at, spec.max_staleness
            )
        return ReadResult(prefix, doc.version, Source.PRIMARY, mode, detail, age, budget)

    # -- fills -------------------------------------------------------------------------

    def fill(
        self,
        spec: CollectionSpec,
        key: str,
        version: int,
        body: bytes,
        started: float,
        *,
        shared: bool = True,
    ) -> None:
        """Offer ``body`` at ``version``, known current at ``started``, to the holders
        (L1 only unless ``shared``)."""
        if tracing.TRACER is not None:
            with tracing.span("maxage fill", **{"maxage.key": key, "maxage.version": version}):
                self._fill(spec, key, version, body, started, shared)
            return
        self._fill(spec, key, version, body, started, shared)

    def _fill(
        self,
        spec: CollectionSpec,
        key: str,
        version: int,
        body: bytes,
        started: float,
        shared: bool = True,
    ) -> None:
        if self.clock.now() - started > self.max_fill_age:
            self.stats.fills["refused_slow"] = self.stats.fills.get("refused_slow", 0) + 1
            return
        # meta holds the ETag value, so a hit formats nothing for it.
        outcome = self.cache.set_if_newer(
            key, version, body, started_at=started, ttl=spec.cache_ttl, meta=b'"%d"' % version
        )
        fills, name = self.stats.fills, outcome._value_
        fills[name] = fills.get(name, 0) + 1
        # Only a version new to this process goes on to the shared tier: a strong read of
        # an unchanged document must not cost a Redis round trip every time.
        if shared and self.l2 is not None and outcome is SetOutcome.STORED:
            self.background(
                self.l2.set_if_newer(
                    key, version, body, b"", started_at=started, ttl=spec.cache_ttl
                )
            )

    def invalidate(self, key: str, version: int) -> None:
        self.cache.invalidate(key, version)
        if self.l2 is not None:
            self.background(self.l2.invalidate(key, version))

    def background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def hot_collections(collections: Mapping[str, CollectionSpec]) -> list[CollectionSpec]:
    """Collections whose plain GET is a bounded read (the API's hot path serves them).
    Write-back collections are not: a read there may have to show this process's buffer."""
    return [
        s
        for s in collections.values()
        if s.default_mode is ReadMode.BOUNDED and s.write_policy is not WritePolicy.WRITE_BACK
    ]
