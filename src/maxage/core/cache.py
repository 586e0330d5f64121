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
* I1 -- ``bytes_used <= max_bytes`` after every public call returns.
* I2 -- no read (``get``/``peek``) returns an entry whose ``expires_at <= now``.
* I3 -- a stored version only ever rises while the entry is resident; a fill
  with ``version < tombstone(key)`` is refused, as is a fill under an
  invalidated prefix/tag whose ``started_at`` is not after the invalidation.
* I4 -- a tombstone only ever rises, and lives ``tombstone_ttl`` seconds after
  its last raise; memory for tombstones is bounded by (invalidations per
  second x ``tombstone_ttl``): expired ones are pruned amortised, a bounded
  number per write call, oldest first.
* I5 -- a call that raises (bad input) changes nothing.

Sizes
-----
An entry weighs ``len(body) + len(key) + ENTRY_OVERHEAD`` bytes.
``ENTRY_OVERHEAD`` was measured with ``tracemalloc`` (CPython 3.11, 64-bit): the
entry record (~96 B), its boxed floats, the storage dict slot, the policy's
node, the TTL heap item, the key's and body's object headers come to
~310-470 B per entry depending on the policy and TTL (W-TinyLFU adds a
segment-map slot and 16-32 B of sketch per entry); 512 B covers them
(``tests/core/test_cache.py::test_entry_overhead_is_measured`` keeps it honest).
``meta`` objects are not measured: keep them small (precomputed headers).

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
not just by ``max_bytes``).
"""

from __future__ import annotations

import heapq
import math
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from maxage.core.policy import Policy, make_policy
from maxage.core.types import MISSING, Clock, Entry, EvictionReason, Missing, SetOutcome

__all__ = ["ENTRY_OVERHEAD", "Cache", "Stats"]

ENTRY_OVERHEAD: Final = 512
"""Bytes charged per entry on top of ``len(body) + len(key)`` (measured; see module doc)."""

_INF: Final = math.inf
_STORED: Final = SetOutcome.STORED
READ_BUFFER: Final = 256  # hits buffered for a batching policy before reads are dropped
_PRUNE_BATCH: Final = 8  # expired tombstones / TTL heap items handled per write call


class Stats:
    """Plain counters. Cheap to update; read them any time (``Cache.stats_snapshot``).

    Size evictions are counted in the plain int ``size_evictions_pending`` on the
    write path (hashing an ``Enum`` key runs Python code) and folded into
    ``evictions`` whenever it is read."""

    __slots__ = ("_evictions", "hits", "misses", "refusals", "size_evictions_pending", "stores")

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.refusals: dict[SetOutcome, int] = {
            o: 0 for o in SetOutcome if o is not SetOutcome.STORED
        }
        self._evictions: dict[EvictionReason, int] = {r: 0 for r in EvictionReason}
        self.size_evictions_pending = 0

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


class Cache:
    """A versioned, byte-bounded cache with tombstones and TTL. See the module doc."""

    get: Callable[[str], Entry | Missing]
    """Return the live entry for ``key`` (counts hit/miss, feeds the policy) or MISSING.
    An expired entry is dropped (eviction reason TTL) and reported as a miss."""
    peek: Callable[[str], Entry | Missing]
    """Like ``get`` but without stats or policy effect; never returns an expired entry."""

    __slots__ = (
        "_by_tag",
        "_clock",
        "_data",
        "_hk_at",
        "_lock",
        "_now",
        "_on_hit",
        "_policy",
        "_prefix_tombs",
        "_reads",
        "_replay",
        "_rng",
        "_tag_tombs",
        "_tomb_queue",
        "_tombs",
        "_ttl_heap",
        "_ttl_seq",
        "_used",
        "get",
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
    ) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError("max_bytes must be an int")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be > 0, got {max_bytes}")
        if not tombstone_ttl >= 0:
            raise ValueError(f"tombstone_ttl must be >= 0, got {tombstone_ttl}")
        if not 0.0 <= ttl_jitter < 1.0:
            raise ValueError(f"ttl_jitter must be in [0, 1), got {ttl_jitter}")
        self.max_bytes = max_bytes
        self.tombstone_ttl = float(tombstone_ttl)
        self.ttl_jitter = float(ttl_jitter)
        self.thread_safe = thread_safe
        self.policy_name = policy
        self._clock = clock
        self._now = clock.now
        self._rng = random.Random(seed)
        self._policy: Policy = make_policy(policy, max_bytes, seed)
        # Hits reach a batching policy through a bounded, lossy read buffer (as in
        # Caffeine): the hit path pays one deque.append; the buffer is replayed
        # into the policy before every write and on misses. When reads outrun
        # writes by more than READ_BUFFER, the oldest recorded reads are dropped
        # (the policy sees a sample of them; hits are still counted exactly).
        self._reads: deque[str] = deque(maxlen=READ_BUFFER)
        on_hits = getattr(self._policy, "on_hits", None)
        self._replay: Callable[[Iterable[str]], object] | None = on_hits
        self._on_hit: Callable[[str], object] = (
            self._reads.append if on_hits is not None else self._policy.on_hit
        )
        self._data: dict[str, Entry] = {}
        self._used = 0
        # key -> (version, expires_at); queue of (expires_at, key) in raise order.
        self._tombs: dict[str, tuple[int, float]] = {}
        self._tomb_queue: deque[tuple[float, str]] = deque()
        # prefix/tag -> (invalidated_at, expires_at)
        self._prefix_tombs: dict[str, tuple[float, float]] = {}
        self._tag_tombs: dict[str, tuple[float, float]] = {}
        self._by_tag: dict[str, set[str]] = {}
        self._ttl_heap: list[tuple[float, int, str]] = []
        self._ttl_seq = 0
        # Earliest time a write must run ``_housekeep`` (the next tombstone or TTL
        # expiry; -inf while the prefix/tag guard maps need pruning): the
        # write path's amortised check is one float comparison.
        self._hk_at = _INF
        self._lock = threading.Lock()
        self.stats = Stats()
        if thread_safe:
            self.get = self._get_locked
            self.peek = self._peek_locked
        else:
            self.get = self._get_unlocked
            self.peek = self._peek_unlocked

    # ------------------------------------------------------------------ reads

    def _get_unlocked(self, key: str) -> Entry | Missing:
        """Return the live entry for ``key`` (counts a hit and feeds the policy) or MISSING."""
        # The hit is the hot path: a dict subscript (cheaper than ``.get``), one
        # expiry compare, the stats counter and one ``deque.append``.
        try:
            e = self._data[key]
        except KeyError:
            return self._miss()
        exp = e.expires_at
        if exp == _INF or exp > self._now():
            self.stats.hits += 1
            self._on_hit(key)
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
        return self._used

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
        ``started_at`` not after an invalidation of one of its prefixes/tags);
        REFUSED_TOO_LARGE (larger than ``max_bytes``; an older stored version is
        then dropped and the tombstone raised to ``version``, since a newer one
        is known to exist).
        """
        # Fast-path validation inline (the common call); the helpers raise.
        if type(body) is not bytes:
            _check_body(body)
        if type(version) is not int or version < 1:
            _check_version(version)
        if ttl is not None and not ttl >= 0:
            _check_ttl(ttl)
        tag_tuple = _check_tags(tags) if tags else ()
        with self._lock:
            if self._reads:
                self._drain()
            now = self._now()
            if now >= self._hk_at:
                self._housekeep(now)
            # Fast path, inlined (the read-through fill): a new key with no
            # tombstone or guard on it. Everything else goes through _store.
            data = self._data
            if (
                key not in data
                and key not in self._tombs
                and not self._prefix_tombs
                and not (tag_tuple and self._tag_tombs)
            ):
                size = len(body) + len(key) + ENTRY_OVERHEAD
                max_bytes = self.max_bytes
                if size <= max_bytes:
                    if ttl is None:
                        data[key] = Entry(
                            key, version, body, meta, started_at, _INF, tag_tuple, size
                        )
                    else:
                        self._put_entry_ttl(
                            key, version, body, meta, started_at, ttl, tag_tuple, size
                        )
                    used = self._used + size
                    if tag_tuple:
                        self._tag(key, tag_tuple)
                    self.stats.stores += 1
                    victims = self._policy.admit(key, size)
                    if victims:
                        for victim in victims:
                            e = data.pop(victim)
                            used -= e.size
                            if e.tags:
                                self._untag(victim, e.tags)
                        self.stats.size_evictions_pending += len(victims)
                        assert used <= max_bytes, "policy left the cache over its byte bound"
                    self._used = used
                    return _STORED
            return self._store(key, version, body, started_at, ttl, meta, tag_tuple, False, now)

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

        Returns (outcome, version)."""
        _check_body(body)
        _check_ttl(ttl)
        tag_tuple = _check_tags(tags)
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
        if (self._prefix_tombs and self._prefix_refused(key, started_at, now)) or (
            tags and self._tag_tombs and self._tag_refused(tags, started_at, now)
        ):
            stats.refusals[SetOutcome.REFUSED_TOMBSTONE] += 1
            if old is not None:  # a newer version exists: the stored one is stale
                self._drop(key, old, EvictionReason.INVALIDATION)
            return SetOutcome.REFUSED_TOMBSTONE
        size = len(body) + len(key) + ENTRY_OVERHEAD
        if size > self.max_bytes:
            stats.refusals[SetOutcome.REFUSED_TOO_LARGE] += 1
            # A newer version exists but cannot be held: the old one must not be served.
            self._raise_tombstone(key, version, now)
            if old is not None:
                self._drop(key, old, EvictionReason.INVALIDATION)
            return SetOutcome.REFUSED_TOO_LARGE

        if ttl is None:
            data[key] = Entry(key, version, body, meta, started_at, _INF, tags, size)
        else:
            self._put_entry_ttl(key, version, body, meta, started_at, ttl, tags, size)
        if old is not None:
            self._used += size - old.size
            if old.tags:
                self._untag(key, old.tags)
            self._policy.on_update(key, size)
            victims: Sequence[str] = self._policy.evict() if self._used > self.max_bytes else ()
        else:
            self._used += size
            victims = self._policy.admit(key, size)
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
        self._data[key] = Entry(key, version, body, meta, started_at, expires_at, tags, size)
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
            s = by_tag.get(tag)
            if s is None:
                by_tag[tag] = {key}
            else:
                s.add(key)

    def _drop_victims(self, victims: Sequence[str]) -> None:
        """Forget the keys the policy gave up to stay within ``max_bytes``."""
        if not victims:
            return
        data = self._data
        for victim in victims:
            e = data.pop(victim)
            self._used -= e.size
            if e.tags:
                self._untag(victim, e.tags)
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
            self._housekeep(now)
            self._raise_tombstone(key, version, now)
            e = self._live(key, now)
            if e is not None and e.version < version:
                self._drop(key, e, EvictionReason.INVALIDATION)
                return True
            return False

    def delete(self, key: str) -> bool:
        """Drop ``key``; leave a tombstone at (stored version + 1) against in-flight fills.

        With nothing stored, the tombstone becomes max(existing tombstone, 0) + 1.
        Returns True if an entry was dropped.
        """
        with self._lock:
            now = self._now()
            self._housekeep(now)
            e = self._live(key, now)
            v = e.version if e is not None else 0
            t = self._tombs.get(key)
            if t is not None and t[1] > now and t[0] > v:
                v = t[0]
            self._raise_tombstone(key, v + 1, now)
            if e is not None:
                self._drop(key, e, EvictionReason.INVALIDATION)
                return True
            return False

    def invalidate_prefix(self, prefix: str) -> int:
        """Drop every key starting with ``prefix``; refuse, for ``tombstone_ttl``, fills
        under it whose ``started_at`` is not after now. Returns how many were dropped."""
        with self._lock:
            now = self._now()
            self._housekeep(now)
            prev = self._prefix_tombs.get(prefix)
            at = now if prev is None or prev[1] <= now else max(prev[0], now)
            self._prefix_tombs[prefix] = (at, now + self.tombstone_ttl)
            if len(self._prefix_tombs) > 64:
                self._hk_at = -_INF
            doomed = [(k, e) for k, e in self._data.items() if k.startswith(prefix)]
            for k, e in doomed:
                self._drop(k, e, EvictionReason.INVALIDATION)
            return len(doomed)

    def invalidate_tag(self, tag: str) -> int:
        """Drop every entry carrying ``tag``; refuse, for ``tombstone_ttl``, fills with
        that tag whose ``started_at`` is not after now. Returns how many were dropped."""
        with self._lock:
            now = self._now()
            self._housekeep(now)
            prev = self._tag_tombs.get(tag)
            at = now if prev is None or prev[1] <= now else max(prev[0], now)
            self._tag_tombs[tag] = (at, now + self.tombstone_ttl)
            if len(self._tag_tombs) > 64:
                self._hk_at = -_INF
            keys = list(self._by_tag.get(tag, ()))
            for k in keys:
                self._drop(k, self._data[k], EvictionReason.INVALIDATION)
            return len(keys)

    def clear(self) -> None:
        """Drop every entry, tombstone and guard (stats are kept)."""
        with self._lock:
            self._data.clear()
            self._reads.clear()
            self._policy.clear()
            self._used = 0
            self._tombs.clear()
            self._tomb_queue.clear()
            self._prefix_tombs.clear()
            self._tag_tombs.clear()
            self._by_tag.clear()
            self._ttl_heap.clear()
            self._hk_at = _INF

    def expire(self) -> int:
        """Drop every expired entry and tombstone now (O(n)); returns entries dropped."""
        with self._lock:
            now = self._now()
            doomed = [(k, e) for k, e in self._data.items() if e.expires_at <= now]
            for k, e in doomed:
                self._drop(k, e, EvictionReason.TTL)
            self._rebuild_ttl_heap()
            self._tombs = {k: t for k, t in self._tombs.items() if t[1] > now}
            self._tomb_queue = deque(sorted((t[1], k) for k, t in self._tombs.items()))
            self._prefix_tombs = {p: t for p, t in self._prefix_tombs.items() if t[1] > now}
            self._tag_tombs = {p: t for p, t in self._tag_tombs.items() if t[1] > now}
            self._reset_hk_at()
            return len(doomed)

    # ------------------------------------------------------------------ stats

    def stats_snapshot(self) -> dict[str, object]:
        """A plain dict of every counter plus gauges (bytes, entries, tombstones)."""
        with self._lock:
            s = self.stats
            return {
                "hits": s.hits,
                "misses": s.misses,
                "stores": s.stores,
                "refusals": {k.value: v for k, v in s.refusals.items()},
                "evictions": {k.value: v for k, v in s.evictions.items()},
                "bytes_used": self._used,
                "max_bytes": self.max_bytes,
                "entries": len(self._data),
                "tombstones": len(self._tombs),
                "prefix_tombstones": len(self._prefix_tombs),
                "tag_tombstones": len(self._tag_tombs),
                "policy": self.policy_name,
            }

    # -------------------------------------------------------------- internals

    def _drain(self) -> None:
        """Replay buffered hits into the policy (before any write touches it)."""
        if self._replay is not None:
            self._replay(self._reads)
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
        self.stats.evictions[reason] += 1

    def _untag(self, key: str, tags: tuple[str, ...]) -> None:
        by_tag = self._by_tag
        for tag in tags:
            s = by_tag.get(tag)
            if s is not None:
                s.discard(key)
                if not s:
                    del by_tag[tag]

    def _raise_tombstone(self, key: str, version: int, now: float) -> None:
        t = self._tombs.get(key)
        if t is not None and t[1] > now and t[0] > version:
            version = t[0]
        expires_at = now + self.tombstone_ttl
        self._tombs[key] = (version, expires_at)
        self._tomb_queue.append((expires_at, key))
        if expires_at < self._hk_at:
            self._hk_at = expires_at

    def _prefix_refused(self, key: str, started_at: float, now: float) -> bool:
        refused = False
        expired: list[str] = []
        for prefix, (at, exp) in self._prefix_tombs.items():
            if exp <= now:
                expired.append(prefix)
            elif started_at <= at and key.startswith(prefix):
                refused = True
        for prefix in expired:
            del self._prefix_tombs[prefix]
        return refused

    def _tag_refused(self, tags: tuple[str, ...], started_at: float, now: float) -> bool:
        tag_tombs = self._tag_tombs
        for tag in tags:
            t = tag_tombs.get(tag)
            if t is not None:
                if t[1] <= now:
                    del tag_tombs[tag]
                elif started_at <= t[0]:
                    return True
        return False

    def _housekeep(self, now: float) -> None:
        """Amortised pruning: a bounded number of expired tombstones and TTL entries."""
        q = self._tomb_queue
        n = _PRUNE_BATCH
        while q and n and q[0][0] <= now:
            n -= 1
            _, key = q.popleft()
            t = self._tombs.get(key)
            if t is not None and t[1] <= now:
                del self._tombs[key]
        heap = self._ttl_heap
        n = _PRUNE_BATCH
        while heap and n and heap[0][0] <= now:
            n -= 1
            _, _, key = heapq.heappop(heap)
            e = self._data.get(key)
            if e is not None and e.expires_at <= now:
                self._drop(key, e, EvictionReason.TTL)
        if len(self._tag_tombs) > 64 or len(self._prefix_tombs) > 64:
            self._tag_tombs = {p: t for p, t in self._tag_tombs.items() if t[1] > now}
            self._prefix_tombs = {p: t for p, t in self._prefix_tombs.items() if t[1] > now}
        self._reset_hk_at()

    def _reset_hk_at(self) -> None:
        """Recompute the earliest time a write must housekeep (see ``_hk_at``)."""
        if len(self._tag_tombs) > 64 or len(self._prefix_tombs) > 64:
            self._hk_at = -_INF
            return
        q = self._tomb_queue
        h = self._ttl_heap
        a = q[0][0] if q else _INF
        b = h[0][0] if h else _INF
        self._hk_at = a if a < b else b

    def _rebuild_ttl_heap(self) -> None:
        heap = [(e.expires_at, i, k) for i, (k, e) in enumerate(self._data.items())]
        self._ttl_heap = [h for h in heap if h[0] != _INF]
        heapq.heapify(self._ttl_heap)
        self._ttl_seq = len(heap)
        self._reset_hk_at()


def _check_body(body: object) -> None:
    if not isinstance(body, bytes):
        raise TypeError(f"body must be bytes, got {type(body).__name__}")


def _check_version(version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")


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
    return t
