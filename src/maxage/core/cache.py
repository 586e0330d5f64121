"""The cache engine: versioned entries, tombstones, a byte bound, TTL, stats.

(The design essay is in the module docstring of ``maxage.core.policy``'s
adaptive policy and repeated in short here.)

Storage vs policy
-----------------
``Cache`` owns the *facts*: which entries exist, their versions, bodies, sizes,
expiry times, the tombstones that guard against slow fills, and the byte total.
The policy (``maxage.core.policy``) owns the *opinion*: given the keys and their
weights, which key to give up when the byte total would exceed ``max_bytes``.
The two meet at five calls (``on_hit``, ``admit``, ``on_update``,
``on_remove``, ``evict``) made with the lock held.

Invariants (checked by the hypothesis state machine in ``tests/core``)
-----------------------------------------------------------------------
* I1 -- ``bytes_used <= max_bytes`` after every public call returns, and
  ``bytes_used + guard_bytes <= max_bytes`` whenever ``max_bytes >=
  4 * MIN_GUARD_BYTES`` (see "Guards" below).
* I2 -- no read (``get``/``peek``) returns an entry whose ``expires_at <= now``.
* I3 -- a stored version only ever rises while the entry is resident; a fill
  with ``version < tombstone(key)`` is refused, as is a fill under an
  invalidated prefix/tag whose ``started_at`` is not after the invalidation.
* I4 -- a tombstone only ever rises, and lives ``tombstone_ttl`` seconds after
  its last raise, unless the guard bound folds it early (then every fill that
  started before its raise is refused instead: safe, coarser).
* I5 -- a call that raises (bad input) changes nothing.

Sizes
-----
An entry weighs ``len(body) + len(key) + ENTRY_OVERHEAD`` (plus
``INDEX_OVERHEAD`` with the prefix index), plus ``len(tag) + TAG_OVERHEAD``
per tag (the tag index) and whatever the cache's ``meta_size`` callable says
its ``meta`` costs. ``ENTRY_OVERHEAD`` was measured with ``tracemalloc``
(CPython 3.11, 64-bit): the entry record (~104 B), its boxed floats, the
storage dict slot, the policy's node, the TTL heap item, the key's and body's
object headers come to ~310-512 B per entry depending on the policy and TTL
(W-TinyLFU with a TTL, the worst case, measured 512 B at 20,000 entries once
the record gained its ``unreplayed_hits`` counter, issue 17); 528 B covers them
(``tests/core/test_cache.py::test_entry_overhead_is_measured`` keeps it honest,
and the ``*_OVERHEAD`` constants below have tests of their own).

Guards
------
Key tombstones, prefix guards and tag guards ("guards") are per-key memory
too. Each is charged (``TOMBSTONE_OVERHEAD + len(key)``, ``GUARD_OVERHEAD +
len(prefix or tag)``) to ``guard_bytes``, which may use at most
``max(guard_share * max_bytes, MIN_GUARD_BYTES)``; while guards hold bytes the
entries' capacity shrinks by as much (the policy evicts), so entries and
guards together stay within ``max_bytes``. Guards live in insertion-ordered
maps (order of last raise = order of expiry, the TTL being one constant), so
expiry and the bound both take the oldest first, in O(1) each. A guard pushed
out by the bound (or a prefix guard beyond ``MAX_PREFIX_GUARDS``) is *folded*
into one floor: every fill whose ``started_at`` is not after the folded
guard's invalidation is refused until it would have expired. That keeps I3 for
in-flight fills (what guards exist for) at the price of refusing some
unrelated slow fills under attack; a versioned write that *starts* later is
judged against the stored version only (as after a tombstone's expiry).

Invalidations by tag or prefix cost O(affected entries): the tag index maps a
tag to its keys, and with ``prefix_index=True`` a sorted key index finds a
prefix's keys by bisection (without it, a prefix invalidation scans every
key). ``begin_invalidation`` returns an ``Invalidation`` that drops its
entries in bounded steps, so an event loop can serve other requests between
them; the guards are installed before the first step.

Threading model
---------------
Every public method is atomic. With ``thread_safe=True`` (default) a
``threading.Lock`` (uncontended: ~40 ns) serialises calls, so the cache can be
shared by threads. With ``thread_safe=False`` the hot read path (``get``,
``peek``) skips the lock; use that only when every call comes from one thread
(e.g. one asyncio event loop -- no method awaits, so calls never interleave).
Mutating calls take the (cheap) lock in both modes.

Expiry
------
``expires_at = started_at + ttl * (1 - ttl_jitter * U)``, ``U`` uniform in
[0, 1): jitter only ever *shortens* a TTL, so ``ttl`` stays an upper bound.
Expired entries are dropped when read, and amortised on writes from a heap of
expiry times (so memory held by expired entries is bounded by the write rate,
not just by ``max_bytes``); ``housekeep()`` does the same work for callers
with a timer (the cache server calls it every tick, so expired guards are
released even when nobody writes).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Protocol, cast

from maxage.core.policy import Policy, TinyLfuPolicy, make_policy
from maxage.core.types import MISSING, Clock, Entry, EvictionReason, Missing, SetOutcome

__all__ = [
    "ENTRY_OVERHEAD",
    "GUARD_OVERHEAD",
    "INDEX_OVERHEAD",
    "MAX_VERSION",
    "TAG_OVERHEAD",
    "TOMBSTONE_OVERHEAD",
    "Cache",
    "Invalidation",
    "Stats",
    "VersionExhausted",
]

ENTRY_OVERHEAD: Final = 528
"""Bytes charged per entry on top of ``len(body) + len(key)`` (measured; see module doc)."""
TAG_OVERHEAD: Final = 256
"""Bytes charged per tag of an entry on top of ``len(tag)``: the entry's tuple slot, the
tag's string header and the tag index's slot (a set, or the key itself for a tag on one
entry); measured worst case ~200 B (``test_tag_overhead_is_measured``)."""
TOMBSTONE_OVERHEAD: Final = 320
"""Bytes charged per key tombstone on top of ``len(key)``: the key's string header, the
ordered map's slot and link, the (version, expiry) record; measured ~230-290 B."""
GUARD_OVERHEAD: Final = 320
"""Bytes charged per prefix or tag guard on top of ``len(prefix or tag)`` (as a tombstone)."""
INDEX_OVERHEAD: Final = 16
"""Bytes charged per entry for the sorted key index (``prefix_index=True``): a list slot
and the sublists' slack; measured ~8 B."""
GUARD_SHARE: Final = 0.25
"""Default share of ``max_bytes`` guards may use (``Cache(guard_share=...)``)."""
MIN_GUARD_BYTES: Final = 16 * 1024
"""Guards may always use this much, however small ``max_bytes`` (a 1 KiB cache still
needs tombstones); only caches below ``4 * MIN_GUARD_BYTES`` can exceed their bound by it."""
MAX_PREFIX_GUARDS: Final = 64
"""Live prefix guards kept; older ones are folded. Every write under a live prefix guard
checks one dict per distinct guard length, so this bounds that cost."""
MAX_VERSION: Final = 2**63 - 1
"""Versions are 1..MAX_VERSION (a signed 64-bit integer, as in the stores)."""

_INF: Final = math.inf
_NEG_INF: Final = -math.inf
# ``Entry`` records on the fill path are made by ``object.__new__`` and slot stores:
# ``Entry(...)`` runs the dataclass ``__init__`` as a Python call (~900 more
# instructions a fill, callgrind: bench/callgrind_core.py). Keep the stores in step
# with ``Entry``'s fields.
_new_entry: Final = object.__new__
_STORED: Final = SetOutcome.STORED
READ_BUFFER: Final = 256  # hits buffered for a batching policy before reads are dropped
_PRUNE_BATCH: Final = 8  # TTL heap items handled per write call
_GUARD_PRUNE_BATCH: Final = 64  # expired guards released per write call (each O(1))
_INDEX_LOAD: Final = 512  # keys per sublist of the sorted key index


class VersionExhausted(ValueError):
    """An unversioned write would need a version above ``MAX_VERSION``."""


class _Bounded(Protocol):
    """Both policies evict down to a public ``maximum`` (Policy invariant P2); storage
    lowers it while guards hold bytes."""

    maximum: int


class Stats:
    """Plain counters. Cheap to update; read them any time (``Cache.stats_snapshot``).

    Size evictions are counted in the plain int ``size_evictions_pending`` on the
    write path (hashing an ``Enum`` key runs Python code) and folded into
    ``evictions`` whenever it is read."""

    __slots__ = (
        "_evictions",
        "guards_expired",
        "guards_folded",
        "hits",
        "misses",
        "refusals",
        "size_evictions_pending",
        "stores",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.refusals: dict[SetOutcome, int] = {
            o: 0 for o in SetOutcome if o is not SetOutcome.STORED
        }
        self._evictions: dict[EvictionReason, int] = {r: 0 for r in EvictionReason}
        self.size_evictions_pending = 0
        self.guards_expired = 0  # guards released at the end of their life
        self.guards_folded = 0  # guards pushed out by the guard bound into the floor

    @property
    def evictions(self) -> dict[EvictionReason, int]:
        if self.size_evictions_pending:
            self._evictions[EvictionReason.SIZE] += self.size_evictions_pending
            self.size_evictions_pending = 0
        return self._evictions

    @evictions.setter
    def evictions(self, value: dict[EvictionReason, int]) -> None:
        self._evictions = value
        self.size_evictions_pending = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def __repr__(self) -> str:
        return (
            f"Stats(hits={self.hits}, misses={self.misses}, stores={self.stores}, "
            f"refusals={ {k.value: v for k, v in self.refusals.items()} }, "
            f"evictions={ {k.value: v for k, v in self.evictions.items()} })"
        )


class _SortedKeys:
    """The keys in sorted order, as a list of sorted sublists of at most
    ``2 * _INDEX_LOAD`` keys (the idea of ``sortedcontainers.SortedList``):
    add/remove are a bisection and one short ``list`` insert/delete."""

    __slots__ = ("_lists", "_maxes")

    def __init__(self) -> None:
        self._lists: list[list[str]] = []
        self._maxes: list[str] = []

    def add(self, key: str) -> None:
        maxes = self._maxes
        if not maxes:
            self._lists.append([key])
            maxes.append(key)
            return
        i = bisect.bisect_left(maxes, key)
        if i == len(maxes):
            i -= 1
            lst = self._lists[i]
            lst.append(key)
            maxes[i] = key
        else:
            lst = self._lists[i]
            bisect.insort(lst, key)
        if len(lst) > 2 * _INDEX_LOAD:
            self._lists[i : i + 1] = [lst[:_INDEX_LOAD], lst[_INDEX_LOAD:]]
            maxes[i : i + 1] = [lst[_INDEX_LOAD - 1], lst[-1]]

    def remove(self, key: str) -> None:
        maxes = self._maxes
        i = bisect.bisect_left(maxes, key)
        lst = self._lists[i]
        j = bisect.bisect_left(lst, key)
        del lst[j]
        if not lst:
            del self._lists[i]
            del maxes[i]
        elif j == len(lst):
            maxes[i] = lst[-1]

    def after(self, start: str, inclusive: bool, limit: int) -> list[str]:
        """Up to ``limit`` keys ``>= start`` (``> start`` unless ``inclusive``), in order."""
        maxes = self._maxes
        i = bisect.bisect_left(maxes, start)
        out: list[str] = []
        lists = self._lists
        while i < len(lists) and len(out) < limit:
            lst = lists[i]
            j = bisect.bisect_left(lst, start) if inclusive else bisect.bisect_right(lst, start)
            out.extend(lst[j : j + limit - len(out)])
            i += 1
            inclusive = True
            start = ""
        return out

    def clear(self) -> None:
        self._lists.clear()
        self._maxes.clear()

    def __len__(self) -> int:
        return sum(len(lst) for lst in self._lists)


class Invalidation:
    """A tag and/or prefix invalidation under way (``Cache.begin_invalidation``).

    Its guards are installed when it begins; ``step(budget)`` drops the affected
    entries, examining at most ``budget`` keys per call, and returns True once
    done. Between steps other calls may run: entries written after the
    invalidation began (``filled_at`` after it) are kept, everything the
    invalidation covered is gone when ``step`` returns True."""

    __slots__ = ("_at", "_cache", "_cursor", "_first", "_pending", "_prefix", "done", "dropped")

    def __init__(self, cache: Cache, at: float, prefix: str | None) -> None:
        self._cache = cache
        self._at = at
        self._prefix = prefix
        self._cursor: str | None = None  # prefix index: last key examined
        # (tag or None for a prefix scan's snapshot, keys to examine)
        self._pending: list[tuple[str | None, set[str] | list[str]]] = []
        self._first = True
        self.done = False
        self.dropped = 0

    def step(self, budget: int) -> bool:
        """Examine up to ``budget`` keys; True when the invalidation is complete."""
        if self.done:
            return True
        with self._cache._lock:
            return self._step(budget)

    def _step(self, budget: int) -> bool:
        cache = self._cache
        data = cache._data
        # The first step runs in the same lock section as the guards: nothing was
        # written in between, so every affected entry goes. Later steps keep
        # entries written since (a PUT after the invalidation began).
        at = _INF if self._first else self._at
        self._first = False
        pending = self._pending
        while pending and budget > 0:
            tag, keys = pending[-1]
            if tag is None:
                assert isinstance(keys, list)
                while keys and budget > 0:
                    budget -= 1
                    k = keys.pop()
                    e = data.get(k)
                    if e is not None and e.filled_at <= at:
                        cache._drop(k, e, EvictionReason.INVALIDATION)
                        self.dropped += 1
            else:
                assert isinstance(keys, set)
                while keys and budget > 0:
                    budget -= 1
                    k = keys.pop()
                    e = data.get(k)
                    if e is not None and tag in e.tags and e.filled_at <= at:
                        cache._drop(k, e, EvictionReason.INVALIDATION)
                        self.dropped += 1
            if not keys:
                pending.pop()
        prefix = self._prefix
        index = cache._index
        if prefix is not None and index is not None and budget > 0:
            while budget > 0:
                cursor = self._cursor
                batch = index.after(
                    prefix if cursor is None else cursor, cursor is None, min(budget, 1024)
                )
                if not batch:
                    self._prefix = None
                    break
                self._cursor = batch[-1]
                budget -= len(batch)
                stop = False
                for k in batch:
                    if not k.startswith(prefix):
                        stop = True
                        break
                    e = data[k]
                    if e.filled_at <= at:
                        cache._drop(k, e, EvictionReason.INVALIDATION)
                        self.dropped += 1
                if stop:
                    self._prefix = None
                    break
        self.done = not pending and (self._prefix is None or index is None)
        return self.done

    def run(self) -> int:
        """Finish in one go (holding the lock); returns how many entries were dropped."""
        while not self.step(1 << 30):
            pass
        return self.dropped


class Cache:
    """A versioned, byte-bounded cache with tombstones and TTL. See the module doc."""

    peek: Callable[[str], Entry | Missing]
    """Like ``get`` but without stats or policy effect; never returns an expired entry."""

    __slots__ = (
        "_bounded",
        "_by_tag",
        "_clock",
        "_data",
        "_entry_overhead",
        "_floor_at",
        "_floor_exp",
        "_guard_bytes",
        "_hk_at",
        "_index",
        "_lfu",
        "_lock",
        "_meta_size",
        "_now",
        "_on_hit",
        "_policy",
        "_prefix_lens",
        "_prefix_tombs",
        "_reads",
        "_replay",
        "_replayed_to",
        "_rng",
        "_share_bytes",
        "_tag_tombs",
        "_tombs",
        "_ttl_heap",
        "_ttl_seq",
        "_used",
        "guard_max_bytes",
        "max_bytes",
        "peek",
        "policy_name",
        "stats",
        "thread_safe",
        "tombstone_ttl",
        "ttl_jitter",
    )

    def __init__(
        self,
        max_bytes: int,
        *,
        clock: Clock,
        policy: str = "adaptive",
        tombstone_ttl: float = 60.0,
        ttl_jitter: float = 0.0,
        seed: int | None = None,
        thread_safe: bool = True,
        guard_share: float = GUARD_SHARE,
        prefix_index: bool = False,
        meta_size: Callable[[object], int] | None = None,
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError("max_bytes must be an int")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if not tombstone_ttl >= 0:
            raise ValueError(f"tombstone_ttl must be >= 0, got {tombstone_ttl}")
        if not 0.0 <= ttl_jitter < 1.0:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {ttl_jitter}")
        if not 0.0 < guard_share <= 0.5:
            raise ValueError(f"guard_share must be in (0, 0.5], got {guard_share}")
        self.max_bytes = max_bytes
        self.tombstone_ttl = float(tombstone_ttl)
        self.ttl_jitter = float(ttl_jitter)
        self.thread_safe = thread_safe
        self.policy_name = policy
        self._clock = clock
        self._now = clock.now
        self._rng = random.Random(seed)
        self._policy: Policy = make_policy(policy, max_bytes, seed)
        self._bounded = cast(_Bounded, self._policy)
        # Hits reach a batching policy through a bounded, lossy read buffer (as in
        # Caffeine): the hit path pays one deque.append; the buffer is replayed
        # into the policy before every write and on misses. When reads outrun
        # writes by more than READ_BUFFER, the oldest recorded reads are dropped
        # (the policy's recency sees a sample of them; hits are still counted
        # exactly, and each entry counts its own, so W-TinyLFU folds the dropped
        # ones into a key's frequency before the key duels: ADR 0002, issue 17).
        self._reads: deque[str] = deque(maxlen=READ_BUFFER)
        self._data: dict[str, Entry] = {}
        self._lfu: TinyLfuPolicy | None = None  # the policy, if it reads the records
        if isinstance(self._policy, TinyLfuPolicy):
            self._policy.records = self._data
            self._lfu = self._policy
        on_hits = getattr(self._policy, "on_hits", None)
        self._replay: Callable[[Iterable[str], int], object] | None = on_hits
        self._replayed_to = 0  # stats.hits at the last drain: the rest were buffered or dropped
        self._on_hit: Callable[[str], object] = (
            self._reads.append if on_hits is not None else self._policy.on_hit
        )
        self._meta_size = meta_size
        self._used = 0
        self._index: _SortedKeys | None = _SortedKeys() if prefix_index else None
        self._entry_overhead = ENTRY_OVERHEAD + (INDEX_OVERHEAD if prefix_index else 0)
        # Guards, each map in order of last raise (= order of expiry):
        # key -> (version, expires_at); prefix/tag -> (invalidated_at, expires_at).
        self._tombs: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._prefix_tombs: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._prefix_lens: dict[int, int] = {}  # guard length -> live prefix guards of it
        self._tag_tombs: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._guard_bytes = 0
        self._share_bytes = int(max_bytes * guard_share)
        self.guard_max_bytes = max(self._share_bytes, MIN_GUARD_BYTES)
        # Folded guards: fills that started at or before _floor_at are refused
        # until _floor_exp.
        self._floor_at = -_INF
        self._floor_exp = -_INF
        # tag -> its one key, or the set of its keys (a set costs ~200 B: most
        # tags in the wild are on one entry).
        self._by_tag: dict[str, str | set[str]] = {}
        self._ttl_heap: list[tuple[float, int, str]] = []
        self._ttl_seq = 0
        # Earliest time a write must run ``_housekeep`` (the next guard or TTL
        # expiry): the write path's amortised check is one float comparison.
        self._hk_at = _INF
        self._lock = threading.Lock()
        self.stats = Stats()
        if thread_safe:
            self.peek = self._peek_locked
        else:
            self.peek = self._peek_unlocked

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> Entry | Missing:
        """Return the live entry for ``key`` (counts hit/miss, feeds the policy) or MISSING.
        An expired entry is dropped (eviction reason TTL) and reported as a miss."""
        # The hit is the hot path: a dict subscript (cheaper than ``.get``), one
        # expiry compare, the stats counter and one ``deque.append``. A method with
        # a branch, not a per-instance bound method in a slot: ``c.get(k)`` on a
        # slot is an unspecialised attribute load (~100 instructions more, callgrind).
        if self.thread_safe:
            return self._get_locked(key)
        try:
            e = self._data[key]
        except KeyError:
            return self._miss()
        exp = e.expires_at
        if exp == _INF or exp > self._now():
            self.stats.hits += 1
            self._on_hit(key)
            e.unreplayed_hits += 1
            return e
        self._drop(key, e, EvictionReason.TTL)
        return self._miss()

    def _get_locked(self, key: str) -> Entry | Missing:
        with self._lock:
            try:
                e = self._data[key]
            except KeyError:
                return self._miss()
            exp = e.expires_at
            if exp == _INF or exp > self._now():
                self.stats.hits += 1
                self._on_hit(key)
                e.unreplayed_hits += 1
                return e
            self._drop(key, e, EvictionReason.TTL)
            return self._miss()

    def _miss(self) -> Missing:
        self.stats.misses += 1
        if self._reads:
            self._drain()
        return MISSING

    def _peek_unlocked(self, key: str) -> Entry | Missing:
        """Like ``get`` without stats or policy effect. Still never returns an expired entry."""
        e = self._data.get(key)
        if e is None:
            return MISSING
        exp = e.expires_at
        if exp == _INF or exp > self._now():
            return e
        return MISSING

    def _peek_locked(self, key: str) -> Entry | Missing:
        with self._lock:
            return self._peek_unlocked(key)

    def __contains__(self, key: object) -> bool:
        """True if a live entry exists (no stats, no policy effect)."""
        if not isinstance(key, str):
            return False
        return self.peek(key) is not MISSING

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes_used(self) -> int:
        """Bytes charged to entries (the policy's weight)."""
        return self._used

    @property
    def guard_bytes(self) -> int:
        """Bytes charged to tombstones and prefix/tag guards."""
        return self._guard_bytes

    def tombstone(self, key: str) -> int | None:
        """The live tombstone version for ``key``, or None."""
        with self._lock:
            t = self._tombs.get(key)
            if t is None or t[1] <= self._now():
                return None
            return t[0]

    def keys(self) -> list[str]:
        """Snapshot of resident keys (may include expired-not-yet-dropped ones)."""
        with self._lock:
            return list(self._data)

    # ----------------------------------------------------------------- writes

    def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Iterable[str] = (),
    ) -> SetOutcome:
        """Store ``body`` as ``version`` of ``key`` iff it is newer and not guarded.

        Outcomes: STORED; UNCHANGED (same version already stored: idempotent
        replay); REFUSED_OLDER; REFUSED_TOMBSTONE (below the key's tombstone, or
        ``started_at`` not after an invalidation of one of its prefixes/tags, or
        of a folded guard); REFUSED_TOO_LARGE (larger than ``max_bytes``; an
        older stored version is then dropped and the tombstone raised to
        ``version``, since a newer one is known to exist).
        """
        # Fast-path validation inline (the common call); the helpers raise.
        if type(body) is not bytes:
            _check_body(body)
        if type(version) is not int or version < 1 or version > MAX_VERSION:
            _check_version(version)
        if ttl is not None and not ttl >= 0:
            _check_ttl(ttl)
        tag_tuple = _check_tags(tags) if tags else ()
        # acquire/release rather than ``with``: the statement's __enter__/__exit__
        # protocol costs ~1,600 more instructions a call (callgrind: bench/callgrind_core.py).
        lock = self._lock
        lock.acquire()
        try:
            if self._reads:
                self._drain()
            # The clock is read only when something can expire (the fast path
            # needs no time): the next housekeeping time is finite.
            hk_at = self._hk_at
            if hk_at == _INF:
                now = _NEG_INF
            else:
                now = self._now()
                if now >= hk_at:
                    self._housekeep(now)
            # Fast path, inlined (the read-through fill): a new key with no
            # tombstone or guard on it (no guard bytes: no guard at all).
            # Everything else goes through _store.
            data = self._data
            if (
                key not in data
                and (
                    not self._guard_bytes
                    or (
                        key not in self._tombs
                        and not self._prefix_tombs
                        and not (tag_tuple and self._tag_tombs)
                    )
                )
                and started_at > self._floor_at
            ):
                size = len(body) + len(key) + self._entry_overhead
                if self._meta_size is not None:
                    size += self._meta_size(meta)
                max_bytes = self.max_bytes
                if size <= max_bytes:
                    if tag_tuple:
                        size += _tags_size(tag_tuple)
                    if ttl is None:
                        # ``Entry(...)``, without the call of its ``__init__``.
                        e = _new_entry(Entry)
                        e.key = key
                        e.version = version
                        e.body = body
                        e.meta = meta
                        e.filled_at = started_at
                        e.expires_at = _INF
                        e.tags = tag_tuple
                        e.size = size
                        e.unreplayed_hits = 0
                        data[key] = e
                    else:
                        self._put_entry_ttl(
                            key, version, body, meta, started_at, ttl, tag_tuple, size
                        )
                    used = self._used + size
                    if tag_tuple:
                        self._tag(key, tag_tuple)
                    if self._index is not None:
                        self._index.add(key)
                    stats = self.stats
                    stats.stores += 1
                    victims = self._policy.admit(key, size)
                    if victims:
                        index = self._index
                        for victim in victims:
                            e = data.pop(victim)
                            used -= e.size
                            if e.tags:
                                self._untag(victim, e.tags)
                            if index is not None:
                                index.remove(victim)
                            stats.size_evictions_pending += 1
                        assert used <= max_bytes, "policy left the cache over its byte bound"
                    self._used = used
                    return _STORED
            if now == _NEG_INF:
                now = self._now()
            return self._store(key, version, body, started_at, ttl, meta, tag_tuple, False, now)
        finally:
            lock.release()

    def put(
        self,
        key: str,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Iterable[str] = (),
    ) -> tuple[SetOutcome, int]:
        """Unversioned overwrite: version = max(stored, tombstone) + 1.

        Raises ``VersionExhausted`` (changing nothing) if that would pass
        ``MAX_VERSION``. Returns (outcome, version)."""
        # Validation inline for the common call, as in set_if_newer; the helpers raise.
        if type(body) is not bytes:
            _check_body(body)
        if ttl is not None and not ttl >= 0:
            _check_ttl(ttl)
        tag_tuple = _check_tags(tags) if tags else ()
        with self._lock:
            if self._reads:
                self._drain()
            now = self._now()
            if now >= self._hk_at:
                self._housekeep(now)
            e = self._live(key, now)
            v = e.version if e is not None else 0
            t = self._tombs.get(key)
            if t is not None and t[1] > now and t[0] > v:
                v = t[0]
            if v >= MAX_VERSION:
                raise VersionExhausted(f"{key!r} is at version {v}, the highest there is")
            version = v + 1
            outcome = self._store(key, version, body, started_at, ttl, meta, tag_tuple, True, now)
            return outcome, version

    def _store(
        self,
        key: str,
        version: int,
        body: bytes,
        started_at: float,
        ttl: float | None,
        meta: object,
        tags: tuple[str, ...],
        overwrite: bool,
        now: float,
    ) -> SetOutcome:
        """The general write (callers drained the read buffer and housekept at ``now``)."""
        stats = self.stats
        data = self._data
        old = data.get(key)
        if old is not None:
            if old.expires_at <= now:
                self._drop(key, old, EvictionReason.TTL)
                old = None
            elif not overwrite:
                if version == old.version:
                    stats.refusals[SetOutcome.UNCHANGED] += 1
                    return SetOutcome.UNCHANGED
                if version < old.version:
                    stats.refusals[SetOutcome.REFUSED_OLDER] += 1
                    return SetOutcome.REFUSED_OLDER
        if self._tombs:
            t = self._tombs.get(key)
            if t is not None and t[1] > now and version < t[0]:
                stats.refusals[SetOutcome.REFUSED_TOMBSTONE] += 1
                return SetOutcome.REFUSED_TOMBSTONE
        if (
            (started_at <= self._floor_at and now < self._floor_exp)
            or (self._prefix_tombs and self._prefix_refused(key, started_at, now))
            or (tags and self._tag_tombs and self._tag_refused(tags, started_at, now))
        ):
            stats.refusals[SetOutcome.REFUSED_TOMBSTONE] += 1
            if old is not None:  # a newer version exists: the stored one is stale
                self._drop(key, old, EvictionReason.INVALIDATION)
            return SetOutcome.REFUSED_TOMBSTONE
        size = len(body) + len(key) + self._entry_overhead
        if self._meta_size is not None:
            size += self._meta_size(meta)
        if size > self.max_bytes:
            stats.refusals[SetOutcome.REFUSED_TOO_LARGE] += 1
            # A newer version exists but cannot be held: the old one must not be served.
            if old is not None:
                self._drop(key, old, EvictionReason.INVALIDATION)
            self._raise_tombstone(key, version, now)
            return SetOutcome.REFUSED_TOO_LARGE
        if tags:
            # The tag index is charged to the entry; it never makes a value "too
            # large" (the policy drops an entry that does not fit at once).
            size += _tags_size(tags)

        if ttl is None:
            data[key] = Entry(key, version, body, meta, started_at, _INF, tags, size)
        else:
            self._put_entry_ttl(key, version, body, meta, started_at, ttl, tags, size)
        policy = self._policy
        if old is not None:
            self._used += size - old.size
            if old.tags:
                self._untag(key, old.tags)
            policy.on_update(key, size)
            victims: Sequence[str] = policy.evict() if self._used > self._bounded.maximum else ()
        else:
            self._used += size
            if self._index is not None:
                self._index.add(key)
            victims = policy.admit(key, size)
        if tags:
            self._tag(key, tags)  # before the drop: the newcomer may be a victim
        stats.stores += 1
        self._drop_victims(victims)
        return SetOutcome.STORED

    def _put_entry_ttl(
        self,
        key: str,
        version: int,
        body: bytes,
        meta: object,
        started_at: float,
        ttl: float,
        tags: tuple[str, ...],
        size: int,
    ) -> None:
        """Store the entry of a write with a TTL (jitter, TTL heap, housekeeping time)."""
        if self.ttl_jitter:
            ttl = ttl * (1.0 - self.ttl_jitter * self._rng.random())
        expires_at = started_at + ttl
        e = _new_entry(Entry)  # ``Entry(...)``, as in ``set_if_newer``'s fast path
        e.key = key
        e.version = version
        e.body = body
        e.meta = meta
        e.filled_at = started_at
        e.expires_at = expires_at
        e.tags = tags
        e.size = size
        e.unreplayed_hits = 0
        self._data[key] = e
        if expires_at != _INF:
            self._ttl_seq += 1
            heapq.heappush(self._ttl_heap, (expires_at, self._ttl_seq, key))
            if expires_at < self._hk_at:
                self._hk_at = expires_at
            if len(self._ttl_heap) > 2 * len(self._data) + 64:
                self._rebuild_ttl_heap()

    def _tag(self, key: str, tags: tuple[str, ...]) -> None:
        by_tag = self._by_tag
        for tag in tags:
            cur = by_tag.get(tag)
            if cur is None:
                by_tag[tag] = key
            elif type(cur) is str:
                if cur != key:
                    by_tag[tag] = {cur, key}
            else:
                assert isinstance(cur, set)
                cur.add(key)

    def _drop_victims(self, victims: Sequence[str]) -> None:
        """Forget the keys the policy gave up to stay within ``max_bytes``."""
        if not victims:
            return
        data = self._data
        index = self._index
        for victim in victims:
            e = data.pop(victim)
            self._used -= e.size
            if e.tags:
                self._untag(victim, e.tags)
            if index is not None:
                index.remove(victim)
        self.stats.size_evictions_pending += len(victims)
        assert self._used <= self.max_bytes, "policy left the cache over its byte bound"

    def invalidate(self, key: str, version: int) -> bool:
        """Drop ``key`` if its version < ``version``; raise its tombstone to ``version``.

        Duplicated and out-of-order invalidations are harmless (a tombstone only
        rises). Returns True if an entry was dropped.
        """
        _check_version(version)
        with self._lock:
            now = self._now()
            if now >= self._hk_at:
                self._housekeep(now)
            e = self._live(key, now)
            dropped = e is not None and e.version < version
            if dropped:
                assert e is not None
                self._drop(key, e, EvictionReason.INVALIDATION)
            self._raise_tombstone(key, version, now)
            return dropped

    def delete(self, key: str) -> bool:
        """Drop ``key``; leave a tombstone at (stored version + 1) against in-flight fills.

        With nothing stored, the tombstone becomes max(existing tombstone, 0) + 1
        (at most ``MAX_VERSION``). Returns True if an entry was dropped.
        """
        with self._lock:
            now = self._now()
            if now >= self._hk_at:
                self._housekeep(now)
            e = self._live(key, now)
            v = e.version if e is not None else 0
            t = self._tombs.get(key)
            if t is not None and t[1] > now and t[0] > v:
                v = t[0]
            # Drop before raising: a new tombstone may shrink the entries' capacity.
            if e is not None:
                self._drop(key, e, EvictionReason.INVALIDATION)
            self._raise_tombstone(key, min(v + 1, MAX_VERSION), now)
            return e is not None

    def begin_invalidation(
        self, tags: Iterable[str] = (), prefix: str | None = None, *, budget: int = 1 << 30
    ) -> Invalidation:
        """Invalidate every entry carrying one of ``tags`` or whose key starts with
        ``prefix``: install the guards (fills with those tags or under that prefix
        whose ``started_at`` is not after now are refused for ``tombstone_ttl``),
        then drop up to ``budget`` affected keys at once. Returns the
        ``Invalidation``; call its ``step`` until it is done."""
        tag_tuple = _check_tags(tags)
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string, got {type(prefix).__name__}")
        with self._lock:
            now = self._now()
            if now >= self._hk_at:
                self._housekeep(now)
            inv = Invalidation(self, now, prefix)
            by_tag = self._by_tag
            for tag in tag_tuple:
                self._raise_guard(self._tag_tombs, tag, now)
                cur = by_tag.pop(tag, None)  # detached: later writes start a new set
                if cur is not None:
                    inv._pending.append((tag, {cur} if type(cur) is str else cur))  # type: ignore[arg-type]
            if prefix is not None:
                self._raise_guard(self._prefix_tombs, prefix, now)
                if self._index is None:
                    doomed = [k for k in self._data if k.startswith(prefix)]
                    if doomed:
                        inv._pending.append((None, doomed))
            inv._step(budget)
            return inv

    def invalidate_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix``; refuse, for ``tombstone_ttl``, fills
        under it whose ``started_at`` is not after now. Returns how many were dropped."""
        return self.begin_invalidation((), prefix).run()

    def invalidate_tag(self, tag: str) -> int:
        """Drop every entry carrying ``tag``; refuse, for ``tombstone_ttl``, fills with
        that tag whose ``started_at`` is not after now. Returns how many were dropped."""
        return self.begin_invalidation((tag,)).run()

    def clear(self) -> None:
        """Drop every entry, tombstone and guard (stats are kept)."""
        with self._lock:
            self._data.clear()
            self._reads.clear()
            self._replayed_to = self.stats.hits
            self._policy.clear()
            self._used = 0
            self._tombs.clear()
            self._prefix_tombs.clear()
            self._prefix_lens.clear()
            self._tag_tombs.clear()
            self._guard_bytes = 0
            self._floor_at = self._floor_exp = -_INF
            self._set_capacity()
            self._by_tag.clear()
            if self._index is not None:
                self._index.clear()
            self._ttl_heap.clear()
            self._hk_at = _INF

    def expire(self) -> int:
        """Drop every expired entry and guard now (O(n)); returns entries dropped."""
        with self._lock:
            now = self._now()
            doomed = [(k, e) for k, e in self._data.items() if e.expires_at <= now]
            for k, e in doomed:
                self._drop(k, e, EvictionReason.TTL)
            self._rebuild_ttl_heap()
            self._prune_guards(now, 1 << 62)
            self._reset_hk_at()
            return len(doomed)

    def housekeep(self) -> None:
        """Release expired guards (all of them: each is O(1)) and a batch of expired
        entries; for callers with a timer, so memory is released without writes."""
        with self._lock:
            now = self._now()
            self._prune_guards(now, 1 << 62)
            if now >= self._hk_at:
                self._housekeep(now)

    # ------------------------------------------------------------------ stats

    def stats_snapshot(self) -> dict[str, object]:
        """A plain dict of every counter plus gauges (bytes, entries, guards)."""
        with self._lock:
            s = self.stats
            return {
                "hits": s.hits,
                "misses": s.misses,
                "stores": s.stores,
                "refusals": {k.value: v for k, v in s.refusals.items()},
                "evictions": {k.value: v for k, v in s.evictions.items()},
                "bytes_used": self._used,
                "guard_bytes": self._guard_bytes,
                "guard_max_bytes": self.guard_max_bytes,
                "max_bytes": self.max_bytes,
                "entries": len(self._data),
                "tags": len(self._by_tag),
                "tombstones": len(self._tombs),
                "prefix_tombstones": len(self._prefix_tombs),
                "tag_tombstones": len(self._tag_tombs),
                "guards_expired": s.guards_expired,
                "guards_folded": s.guards_folded,
                "policy": self.policy_name,
            }

    def top_tags(self, n: int) -> list[tuple[str, int]]:
        """The ``n`` tags on the most live entries, most first (O(tags): for status pages).
        Tags on one entry only count when fewer than ``n`` tags are on several."""
        with self._lock:
            shared = [(tag, len(keys)) for tag, keys in self._by_tag.items() if type(keys) is set]
            if len(shared) < n:
                singles = (tag for tag, keys in self._by_tag.items() if type(keys) is str)
                shared += [(tag, 1) for tag in itertools.islice(singles, n - len(shared))]
        return heapq.nlargest(n, shared, key=lambda tc: tc[1])

    # -------------------------------------------------------------- internals

    def _drain(self) -> None:
        """Replay buffered hits into the policy (before any write touches it).

        Each replayed hit leaves its entry's ``unreplayed_hits``; what remains there
        are the hits the full buffer dropped (``TinyLfuPolicy.take_hits``; only a
        full buffer drops, so W-TinyLFU reads them only once one was drained:
        ``TinyLfuPolicy.hits_dropped``). The policy also hears how many were
        dropped since the last drain (its hit-ratio samples count them, and its
        shadows' view of the stream lacks them)."""
        if self._replay is not None:
            reads = self._reads
            data = self._data
            for key in reads:
                e = data.get(key)
                if e is not None and e.unreplayed_hits:
                    e.unreplayed_hits -= 1
            if len(reads) >= READ_BUFFER and self._lfu is not None:
                # A full buffer may have dropped hits (they stay on their records):
                # from now on W-TinyLFU's duels read the records.
                self._lfu.hits_dropped = True
            hits = self.stats.hits
            dropped = hits - self._replayed_to - len(reads)
            self._replayed_to = hits
            self._replay(reads, dropped if dropped > 0 else 0)  # < 0 after stats.reset()
        self._reads.clear()

    def _live(self, key: str, now: float) -> Entry | None:
        """The entry for ``key`` unless absent or expired (an expired one is dropped)."""
        e = self._data.get(key)
        if e is not None and e.expires_at <= now:
            self._drop(key, e, EvictionReason.TTL)
            return None
        return e

    def _drop(self, key: str, e: Entry, reason: EvictionReason) -> None:
        del self._data[key]
        self._used -= e.size
        self._policy.on_remove(key)
        if e.tags:
            self._untag(key, e.tags)
        if self._index is not None:
            self._index.remove(key)
        self.stats.evictions[reason] += 1

    def _untag(self, key: str, tags: tuple[str, ...]) -> None:
        by_tag = self._by_tag
        for tag in tags:
            cur = by_tag.get(tag)
            if cur is None:
                continue
            if type(cur) is str:
                if cur == key:
                    del by_tag[tag]
            else:
                assert isinstance(cur, set)
                cur.discard(key)
                if len(cur) <= 1:
                    if cur:
                        by_tag[tag] = next(iter(cur))
                    else:
                        del by_tag[tag]

    # -- guards

    def _raise_tombstone(self, key: str, version: int, now: float) -> None:
        tombs = self._tombs
        t = tombs.get(key)
        expires_at = now + self.tombstone_ttl
        if t is None:
            tombs[key] = (version, expires_at)
            self._guard_bytes += TOMBSTONE_OVERHEAD + len(key)
            self._guards_grew()
        else:
            if t[1] > now and t[0] > version:
                version = t[0]
            tombs[key] = (version, expires_at)
            tombs.move_to_end(key)
        if expires_at < self._hk_at:
            self._hk_at = expires_at

    def _raise_guard(
        self, guards: OrderedDict[str, tuple[float, float]], name: str, now: float
    ) -> None:
        prev = guards.get(name)
        expires_at = now + self.tombstone_ttl
        if prev is None:
            guards[name] = (now, expires_at)
            self._guard_bytes += GUARD_OVERHEAD + len(name)
            if guards is self._prefix_tombs:
                n = len(name)
                self._prefix_lens[n] = self._prefix_lens.get(n, 0) + 1
                while len(guards) > MAX_PREFIX_GUARDS:
                    self._fold_first(guards)
            self._guards_grew()
        else:
            at = now if prev[1] <= now else max(prev[0], now)
            guards[name] = (at, expires_at)
            guards.move_to_end(name)
        if expires_at < self._hk_at:
            self._hk_at = expires_at

    def _guards_grew(self) -> None:
        """Keep guards within their bound (fold the oldest) and entries within the rest."""
        while self._guard_bytes > self.guard_max_bytes:
            oldest: OrderedDict[str, tuple[Any, float]] | None = None
            exp = _INF
            for guards in (self._tombs, self._prefix_tombs, self._tag_tombs):
                if guards:
                    e = next(iter(guards.values()))[1]
                    if e <= exp:
                        oldest, exp = guards, e
            if oldest is None:  # pragma: no cover - bytes are only charged to guards
                break
            self._fold_first(oldest)
        self._set_capacity()

    def _fold_first(self, guards: OrderedDict[str, tuple[Any, float]]) -> None:
        """Drop the oldest guard of ``guards``; fills it refused stay refused (the floor)."""
        name, (first, exp) = guards.popitem(last=False)
        at = exp - self.tombstone_ttl if guards is self._tombs else float(first)
        if at > self._floor_at:
            self._floor_at = at
        if exp > self._floor_exp:
            self._floor_exp = exp
        self._forget_guard(guards, name)
        self.stats.guards_folded += 1

    def _forget_guard(self, guards: OrderedDict[str, tuple[Any, float]], name: str) -> None:
        if guards is self._tombs:
            self._guard_bytes -= TOMBSTONE_OVERHEAD + len(name)
            return
        self._guard_bytes -= GUARD_OVERHEAD + len(name)
        if guards is self._prefix_tombs:
            n = len(name)
            left = self._prefix_lens[n] - 1
            if left:
                self._prefix_lens[n] = left
            else:
                del self._prefix_lens[n]

    def _set_capacity(self) -> None:
        """Entries get ``max_bytes`` less what guards use (up to the guard share)."""
        g = self._guard_bytes
        share = self._share_bytes
        policy = self._bounded
        cap = self.max_bytes - (g if g < share else share)
        if policy.maximum != cap:
            policy.maximum = cap
            if self._used > cap:
                self._drop_victims(self._policy.evict())

    def _prune_guards(self, now: float, limit: int) -> None:
        """Release up to ``limit`` expired guards of each kind (oldest first)."""
        freed = False
        for guards in (self._tombs, self._prefix_tombs, self._tag_tombs):
            n = limit
            while guards and n:
                name, t = next(iter(guards.items()))
                if t[1] > now:
                    break
                n -= 1
                del guards[name]
                self._forget_guard(guards, name)
                self.stats.guards_expired += 1
                freed = True
        if freed:
            self._set_capacity()

    def _prefix_refused(self, key: str, started_at: float, now: float) -> bool:
        guards = self._prefix_tombs
        n = len(key)
        for length in self._prefix_lens:
            if length <= n:
                g = guards.get(key[:length])
                if g is not None and started_at <= g[0] and g[1] > now:
                    return True
        return False

    def _tag_refused(self, tags: tuple[str, ...], started_at: float, now: float) -> bool:
        tag_tombs = self._tag_tombs
        for tag in tags:
            t = tag_tombs.get(tag)
            if t is not None and started_at <= t[0] and t[1] > now:
                return True
        return False

    def _housekeep(self, now: float) -> None:
        """Amortised pruning: a bounded number of expired guards and TTL entries."""
        self._prune_guards(now, _GUARD_PRUNE_BATCH)
        heap = self._ttl_heap
        n = _PRUNE_BATCH
        while heap and n and heap[0][0] <= now:
            n -= 1
            _, _, key = heapq.heappop(heap)
            e = self._data.get(key)
            if e is not None and e.expires_at <= now:
                self._drop(key, e, EvictionReason.TTL)
        self._reset_hk_at()

    def _reset_hk_at(self) -> None:
        """Recompute the earliest time a write must housekeep (see ``_hk_at``)."""
        at = self._ttl_heap[0][0] if self._ttl_heap else _INF
        for guards in (self._tombs, self._prefix_tombs, self._tag_tombs):
            if guards:
                exp = next(iter(guards.values()))[1]
                if exp < at:
                    at = exp
        self._hk_at = at

    def _rebuild_ttl_heap(self) -> None:
        heap = [(e.expires_at, i, k) for i, (k, e) in enumerate(self._data.items())]
        self._ttl_heap = [h for h in heap if h[0] != _INF]
        heapq.heapify(self._ttl_heap)
        self._ttl_seq = len(heap)
        self._reset_hk_at()


def _tags_size(tags: tuple[str, ...]) -> int:
    n = TAG_OVERHEAD * len(tags)
    for t in tags:
        n += len(t)
    return n


def _check_body(body: object) -> None:
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    if version > MAX_VERSION:
        raise ValueError(f"version must be <= {MAX_VERSION}, got a {version.bit_length()}-bit one")


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl >= 0:
        raise ValueError(f"ttl must be >= 0 (or None for no expiry), got {ttl}")


def _check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if not tags:
        return ()
    t = tuple(tags)
    for tag in t:
        if not isinstance(tag, str):
            raise TypeError(f"tags must be strings, got {type(tag).__name__}")
    if len(t) > 1:
        t = tuple(dict.fromkeys(t))  # a repeated tag is one index slot, charged once
    return t
