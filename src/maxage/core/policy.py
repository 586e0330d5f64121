"""Eviction and admission policies, kept apart from storage (Caffeine's split).

Why a policy at all
-------------------
A cache in front of a primary is worth its hit ratio. LRU is cheap and good
when the recent past predicts the near future (``lirs-sprite``), and useless
on loops and scans larger than the cache (``lirs-loop``: 0 hits). TinyLFU
admission -- keep a newcomer only if it has been requested more often than
the resident it would replace -- survives loops and scans, but a fixed small
admission window loses to LRU on recency-biased traffic. maxage must serve
both (a JSON API's hot documents are frequency-biased; a feed's newest pages
are recency-biased), so the default is *adaptive* W-TinyLFU: Caffeine's
window TinyLFU whose window size is tuned online by hill climbing. The choice
was made by measurement (``bench/sim.py --all``;
``docs/adr/0002-eviction-policy.md``).

The split
---------
Storage (``maxage.core.cache.Cache``) owns the *facts*: entries, versions,
bodies, sizes, expiry, tombstones, the byte total. A policy owns an *opinion*
over keys and weights only: it never sees a body or a version, and storage
never decides what to evict. They meet at ``on_hit``/``on_hits``,
``admit``, ``on_update``, ``on_remove`` and ``evict``. Consequences:
correctness (the fill guard, TTL, the byte bound) cannot be broken by a
policy bug beyond evicting the "wrong" key -- storage asserts the bound after
``evict()`` -- and policies are swappable and comparable on the same traces.

Invariants a policy keeps
-------------------------
* P1 -- the policy's key set equals storage's key set, and its ``weight``
  equals storage's ``bytes_used`` (the hypothesis state machine checks the
  byte side after every step).
* P2 -- ``evict()`` returns keys until ``weight <= maximum``; every returned key
  is already forgotten by the policy.
* P3 -- W-TinyLFU: ``window + probation + protected`` partition the keys;
  ``protected_weight <= protected_max`` after each event (except a single
  over-weight entry); ``window_max + protected_max <= maximum``.
* P4 -- hill climbing only moves weight between window and protected quota; it
  never changes the maximum.

W-TinyLFU, as built here
------------------------
Window LRU (starts at 1%) -> candidates -> TinyLFU duel against probation's
LRU victim -> segmented LRU main (protected 80%). Frequencies come from
Caffeine's block-based count-min sketch (four 4-bit counters per key in one
128-counter block, no doorkeeper). The byte bound means the number of entries
is not known up front, so the sketch starts small and doubles with the
residents (carrying their frequencies over) until the cache is half full; then
it is sized for the estimated capacity (``maximum / mean weight`` entries) and
aged by halving every 10x that many increments.

The window size is the hard part. Caffeine's hill climber (sample the hit ratio,
step the window in the direction that helped) is too slow and too noisy for a
recency trace whose phases swing the hit ratio (``lirs-sprite`` needs a window
near 90%, every Zipf trace near 1%). So the window is *chosen by simulation*:
three miniature fixed-window W-TinyLFUs (*shadows*, windows of 1/20/90%) see a
hash-sampled subset of the keys (1/16, fewer in big caches: each shadow keeps
about 512 entries or more) and share the real sketch. Every period (5x
estimated entries requests) the window moves one shadow fraction toward the
shadow with the most (decayed) hits, if it beats the shadow nearest the current
window by more than ``sqrt(hits)``; otherwise the hill climber makes a small
move (first step -0.1% of the maximum, 0.98 decay, no restarts). Every
constant here was chosen by measurement (ADR 0002, both hash seeds).

Cost model and threading
------------------------
A hit must stay near the cost of a dict lookup. For a batching policy (one
with ``on_hits``) storage records a hit with one ``deque.append`` into a
bounded, lossy read buffer, and replays the buffer before every write and on
misses (Caffeine's read buffer; when reads outrun writes by more than the
buffer, the oldest are dropped -- the policy sees a sample, stats stay exact).
LRU's hit is ``OrderedDict.move_to_end`` directly. Policies do no locking:
storage calls them with its lock held (or from one event loop), so the
policy's structures are only ever touched by one thread at a time.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

_NONE: tuple[str, ...] = ()  # "no victims"

__all__ = ["FrequencySketch", "LruPolicy", "Policy", "TinyLfuPolicy", "make_policy"]


class Policy(Protocol):
    """What storage needs from a policy.

    Every method is called with the cache lock held (or from the single event
    loop), so implementations need no locking of their own.

    * ``on_hit(key)`` -- ``key`` is resident and was read. Must be cheap.
    * optional ``on_hits(keys)`` -- a batch of buffered hits, replayed later;
      a policy that has it gets its hits through storage's lossy read buffer
      (Caffeine's read buffer: a hit costs one ``deque.append``).
    * ``admit(key, weight)`` -- ``key`` became resident; returns the keys
      storage must drop so the weighted total is <= the maximum (already
      forgotten by the policy; the newcomer itself may be one of them). One
      call, not an insert plus ``evict()``: it is the fill path's cost.
    * ``on_update(key, weight)`` -- a resident ``key`` got a new value/weight.
    * ``on_remove(key)`` -- storage removed a resident ``key`` (TTL,
      invalidation, clear); the policy forgets it.
    * ``evict()`` -- called after updates; returns the keys storage must
      drop so that the weighted total is <= the maximum. The returned keys are
      already forgotten by the policy.
    """

    def on_hit(self, key: str) -> object: ...
    def admit(self, key: str, weight: int) -> Sequence[str]: ...
    def on_update(self, key: str, weight: int) -> None: ...
    def on_remove(self, key: str) -> None: ...
    def evict(self) -> list[str]: ...
    def clear(self) -> None: ...

    @property
    def weight(self) -> int: ...


class LruPolicy:
    """Plain LRU over an ``OrderedDict``; a hit is one C call (``move_to_end``)."""

    __slots__ = ("_order", "_weight", "maximum", "on_hit")

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._order: OrderedDict[str, int] = OrderedDict()
        self._weight = 0
        self.on_hit: Callable[[str], object] = self._order.move_to_end

    @property
    def weight(self) -> int:
        return self._weight

    def admit(self, key: str, weight: int) -> Sequence[str]:
        self._order[key] = weight
        self._weight += weight
        return _NONE if self._weight <= self.maximum else self.evict()

    def on_update(self, key: str, weight: int) -> None:
        order = self._order
        self._weight += weight - order[key]
        order[key] = weight
        order.move_to_end(key)

    def on_remove(self, key: str) -> None:
        self._weight -= self._order.pop(key)

    def evict(self) -> list[str]:
        victims: list[str] = []
        order = self._order
        while self._weight > self.maximum and order:
            key, weight = order.popitem(last=False)
            self._weight -= weight
            victims.append(key)
        return victims

    def clear(self) -> None:
        self._order.clear()
        self._weight = 0


# --------------------------------------------------------------------- W-TinyLFU

_HALVE = bytes(i >> 1 for i in range(256))
_ODD = bytes(i & 1 for i in range(256))
_INC = bytes(min(i + 1, 15) for i in range(256))  # saturating 4-bit increment


class FrequencySketch:
    """Caffeine's block-based count-min sketch of 4-bit counters (byte-per-counter).

    The table holds ``16 * width`` counters in blocks of 128 (Caffeine: eight
    64-bit words of sixteen 4-bit counters). A key hashes to one block (low
    bits of its ``str`` hash, SipHash: well mixed) and to one counter in each
    of the block's four 32-counter quarters (20 high bits of the hash) -- the
    four "rows" of a count-min sketch, kept in one cache line. Counters cap at
    15; an increment bumps each of the key's four counters below the cap, and
    the estimate is their minimum. After ``sample_size`` increments (default
    10x the width; ``TinyLfuPolicy`` sets it) every counter is halved and the
    count is reduced as in Caffeine (``(size - odd/4) / 2``): aging, so the sketch
    follows a shifting popularity distribution. No doorkeeper (Caffeine's
    choice; measured in ADR 0002). Memory: 16 bytes per width unit.

    The hot paths of ``TinyLfuPolicy`` inline the index arithmetic below (see
    ``_indexes``); keep them in step.
    """

    __slots__ = ("_bmask", "_size", "_table", "_width", "sample_size")

    def __init__(self, width: int) -> None:
        w = 8
        while w < width:
            w <<= 1
        self._width = w
        self._bmask = (w >> 3) - 1
        self._table = bytearray(16 * w)
        self.sample_size = 10 * w
        self._size = 0

    @property
    def width(self) -> int:
        return self._width

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key)
        b = (h & self._bmask) << 7
        c = h >> 40
        return (
            b | (c & 31),
            b | 32 | ((c >> 5) & 31),
            b | 64 | ((c >> 10) & 31),
            b | 96 | ((c >> 15) & 31),
        )

    def increment(self, key: str) -> None:
        h = hash(key)
        b = (h & self._bmask) << 7
        c = h >> 40
        t = self._table
        i = b | (c & 31)
        t[i] = _INC[t[i]]
        i = b | 32 | ((c >> 5) & 31)
        t[i] = _INC[t[i]]
        i = b | 64 | ((c >> 10) & 31)
        t[i] = _INC[t[i]]
        i = b | 96 | ((c >> 15) & 31)
        t[i] = _INC[t[i]]
        self._size += 1
        if self._size >= self.sample_size:
            self.reset()

    def frequency(self, key: str) -> int:
        h = hash(key)
        b = (h & self._bmask) << 7
        c = h >> 40
        t = self._table
        return min(
            t[b | (c & 31)],
            t[b | 32 | ((c >> 5) & 31)],
            t[b | 64 | ((c >> 10) & 31)],
            t[b | 96 | ((c >> 15) & 31)],
        )

    def raise_to(self, key: str, freq: int) -> None:
        """Make ``frequency(key) >= freq`` (capped at 15); used when resizing."""
        t = self._table
        f = min(freq, 15)
        for i in self._indexes(key):
            if t[i] < f:
                t[i] = f

    def reset(self) -> None:
        t = self._table
        odd = t.translate(_ODD).count(1)
        t[:] = t.translate(_HALVE)  # in place: the policy's hot paths hold the table
        self._size = (self._size - (odd >> 2)) >> 1


_WINDOW, _PROBATION, _PROTECTED = 0, 1, 2


class _Shadow:
    """A miniature, non-adaptive W-TinyLFU at one fixed window fraction.

    Used only to size the real policy's window (``TinyLfuPolicy._shadow_*``):
    it sees a hash-sampled subset of the keys, at the same fraction of the
    maximum, and shares the real policy's sketch (the sampled keys'
    frequencies on the full stream). Kept light: three plain dicts in
    insertion order (LRU end = first key; a move is pop + re-insert), no
    segment map, no sketch of its own. (Measured: ~1.7-2.1 us per access
    and shadow on this box, same as with ``OrderedDict`` queues.)
    """

    __slots__ = (
        "fraction",
        "hits",
        "maximum",
        "probation",
        "protected",
        "protected_max",
        "protected_weight",
        "weight",
        "window",
        "window_max",
        "window_weight",
    )

    def __init__(self, maximum: int, fraction: float) -> None:
        self.fraction = fraction
        self.maximum = maximum
        self.window_max = max(1, int(maximum * fraction))
        self.protected_max = int((maximum - self.window_max) * 0.8)
        self.window: dict[str, int] = {}
        self.probation: dict[str, int] = {}
        self.protected: dict[str, int] = {}
        self.weight = self.window_weight = self.protected_weight = 0
        self.hits = 0.0

    def access(
        self, key: str, weight: int, sketch: FrequencySketch, rng: Callable[[int], int]
    ) -> None:
        window = self.window
        protected = self.protected
        probation = self.probation
        if key in window:
            window[key] = window.pop(key)
            self.hits += 1.0
            return
        if key in protected:
            protected[key] = protected.pop(key)
            self.hits += 1.0
            return
        if key in probation:
            self.hits += 1.0
            w = probation.pop(key)
            protected[key] = w
            pw = self.protected_weight + w
            pmax = self.protected_max
            while pw > pmax and len(protected) > 1:
                k = next(iter(protected))
                v = protected.pop(k)
                pw -= v
                probation[k] = v
            self.protected_weight = pw
            return
        # miss: insert into the window, move overflow to probation, duel
        window[key] = weight
        ww = self.window_weight + weight
        total = self.weight + weight
        wmax = self.window_max
        maximum = self.maximum
        while ww > wmax and window:
            k = next(iter(window))
            v = window.pop(k)
            ww -= v
            probation[k] = v
            if total > maximum and len(probation) > 1:
                victim = next(iter(probation))
                loser = victim if _admits(sketch, k, victim, rng) else k
                total -= probation.pop(loser)
        self.window_weight = ww
        self.weight = total
        if total > maximum:
            self._shrink()

    def _shrink(self) -> None:
        """Evict LRU-first (probation, protected, window) down to the maximum."""
        window, probation, protected = self.window, self.probation, self.protected
        while self.weight > self.maximum:
            if probation:
                self.weight -= probation.pop(next(iter(probation)))
            elif protected:
                v = protected.pop(next(iter(protected)))
                self.weight -= v
                self.protected_weight -= v
            else:
                v = window.pop(next(iter(window)))
                self.weight -= v
                self.window_weight -= v

    def resample(self, mask: int, maximum: int) -> None:
        """Keep only the keys with ``(hash(key) >> 32) & mask == 0`` (a subset of the
        current sample) and scale the maximum and the hit count to match."""

        def keep(d: dict[str, int]) -> dict[str, int]:
            return {k: w for k, w in d.items() if not (hash(k) >> 32) & mask}

        self.window, self.probation, self.protected = (
            keep(self.window),
            keep(self.probation),
            keep(self.protected),
        )
        self.window_weight = sum(self.window.values())
        self.protected_weight = sum(self.protected.values())
        self.weight = self.window_weight + self.protected_weight + sum(self.probation.values())
        self.hits *= maximum / self.maximum
        self.maximum = maximum
        self.window_max = max(1, int(maximum * self.fraction))
        self.protected_max = int((maximum - self.window_max) * 0.8)
        self._shrink()

    def clear(self) -> None:
        self.window.clear()
        self.probation.clear()
        self.protected.clear()
        self.weight = self.window_weight = self.protected_weight = 0


def _admits(
    sketch: FrequencySketch, cand: str, victim: str, randbits: Callable[[int], int]
) -> bool:
    """TinyLFU's duel: the candidate wins iff its estimated frequency is above the
    victim's (ties keep the incumbent), or, if it is popular (>= 6), at random 1
    time in 128 (so an attacker cannot pin a victim by flooding)."""
    cf = sketch.frequency(cand)
    return cf > sketch.frequency(victim) or (cf >= 6 and not randbits(7))


class TinyLfuPolicy:
    """W-TinyLFU (Caffeine): LRU window -> TinyLFU admission -> segmented-LRU main.

    New keys enter the *window* (an LRU, initially 1% of the weight). Keys
    pushed out of the window become *candidates* at the MRU end of *probation*;
    while the cache is over its maximum a candidate duels the LRU *victim* of
    probation and the one the frequency sketch says is less popular leaves
    (ties keep the incumbent; a popular candidate also wins 1/128 of the time
    to defeat hash-flooding). A hit in probation promotes to *protected* (80%
    of main); protected overflow is demoted to probation.

    With ``adaptive=True`` a hill climber (Caffeine's) resizes the window every
    sample period (``CLIMB_FACTOR`` x the estimated entries, in requests): it
    keeps stepping in the direction that raised the hit ratio in the last
    period, reverses when the ratio falls, decays the step by 2% per period and
    restarts with a big step (6.25% of the maximum) when the ratio moves by
    more than 5%; its first step grows the window. A recency-
    biased workload grows the window toward LRU; a frequency-biased or looping
    one shrinks it toward pure TinyLFU.

    The climber's big moves come from *shadows* (ADR 0002): three miniature
    non-adaptive W-TinyLFUs at windows of 1/20/90% (``_Shadow``), fed the
    1/16 of the keys picked by ``hash(key) >> 32`` (fewer once the capacity
    estimate leaves each shadow over ``SHADOW_ENTRIES`` entries) and sharing
    this policy's sketch. Every period the window jumps one shadow fraction toward the
    shadow with the most (decayed) hits if it beats the shadow nearest the
    current window by more than ``sqrt(hits)``; otherwise the climber makes
    its small move (first step -0.1% of the maximum, no restarts, period
    ``CLIMB_FACTOR`` = 5x entries; no move on a sample without hits).
    """

    __slots__ = (
        "_climb_period",
        "_grow_at",
        "_hits",
        "_misses",
        "_prev_hit_ratio",
        "_probation",
        "_protected",
        "_protected_weight",
        "_rng",
        "_sample_period",
        "_seg",
        "_shadow_mask",
        "_shadow_rng",
        "_shadows",
        "_sized",
        "_sketch",
        "_step",
        "_weight",
        "_window",
        "_window_weight",
        "adaptive",
        "maximum",
        "protected_max",
        "window_max",
    )

    def __init__(
        self,
        maximum: int,
        *,
        adaptive: bool = True,
        window_fraction: float = 0.01,
        seed: int | None = None,
        expected_entries: int = 64,
    ) -> None:
        self.maximum = maximum
        self.adaptive = adaptive
        self._window: OrderedDict[str, int] = OrderedDict()
        self._probation: OrderedDict[str, int] = OrderedDict()
        self._protected: OrderedDict[str, int] = OrderedDict()
        self._seg: dict[str, int] = {}
        self._weight = 0
        self._window_weight = 0
        self._protected_weight = 0
        self.window_max = max(1, int(maximum * window_fraction))
        self.protected_max = int((maximum - self.window_max) * 0.8)
        self._sketch = FrequencySketch(expected_entries)
        self._grow_at = self._sketch.width
        self._climb_period = 256
        self._sized = False  # sketch sized by the capacity estimate (cache half full)
        self._rng = random.Random(seed)
        self._hits = 0
        self._misses = 0
        self._prev_hit_ratio = 0.0
        self._step = self.INITIAL_STEP * maximum
        self._sample_period = 256
        self._shadows: list[_Shadow] = []
        self._shadow_rng = random.Random(seed)
        self._shadow_mask = (1 << self.SHADOW_SHIFT) - 1

    @property
    def weight(self) -> int:
        return self._weight

    # -- events ---------------------------------------------------------------

    def on_hit(self, key: str) -> None:
        self._sketch.increment(key)
        self._hits += 1
        if self._shadows and not (hash(key) >> 32) & self._shadow_mask:
            self._shadow_access(key, None)
        seg = self._seg[key]
        if seg == _PROTECTED:
            self._protected.move_to_end(key)
        elif seg == _WINDOW:
            self._window.move_to_end(key)
        else:
            self._promote(key)
        if self._hits + self._misses >= self._sample_period:
            self._climb()

    def on_hits(self, keys: Iterable[str]) -> None:
        """Replay a batch of buffered hits (keys no longer resident are skipped)."""
        seg_of = self._seg.get
        window = self._window
        protected = self._protected
        increment = self._sketch.increment
        shadow = self._shadow_access if self._shadows else None
        smask = self._shadow_mask
        n = 0
        for key in keys:
            seg = seg_of(key)
            if seg is None:
                continue
            n += 1
            increment(key)
            if shadow is not None and not (hash(key) >> 32) & smask:
                shadow(key, None)
            if seg == _PROTECTED:
                protected.move_to_end(key)
            elif seg == _WINDOW:
                window.move_to_end(key)
            else:
                self._promote(key)
        self._hits += n
        if self._hits + self._misses >= self._sample_period:
            self._climb()

    def admit(self, key: str, weight: int) -> Sequence[str]:
        """Insert ``key`` into the window; duel the window's overflow (usually the
        one key it pushes out) against probation's LRU victim.

        The steady state of a full cache -- one newcomer, one window overflow, one
        duel -- is handled here in one call: the candidate is judged *before* it
        would move to probation, so a loser never enters it. Everything else
        (a cache not yet full, overflow of several keys) takes ``evict``'s loop,
        with the same outcome.
        """
        # FrequencySketch.increment, inlined (the fill path is hot).
        sk = self._sketch
        h = hash(key)
        b = (h & sk._bmask) << 7
        c = h >> 40
        t = sk._table
        i = b | (c & 31)
        t[i] = _INC[t[i]]
        i = b | 32 | ((c >> 5) & 31)
        t[i] = _INC[t[i]]
        i = b | 64 | ((c >> 10) & 31)
        t[i] = _INC[t[i]]
        i = b | 96 | ((c >> 15) & 31)
        t[i] = _INC[t[i]]
        sk._size += 1
        if sk._size >= sk.sample_size:
            sk.reset()
        self._misses += 1
        if self._shadows and not (h >> 32) & self._shadow_mask:
            self._shadow_access(key, weight)
        window = self._window
        window[key] = weight
        seg = self._seg
        seg[key] = _WINDOW
        self._weight = total = self._weight + weight
        self._window_weight += weight
        if len(seg) > self._grow_at:
            self._grow_sketch()
        if self._hits + self._misses >= self._sample_period:
            self._climb()  # may move keys between the window and main
        ww = self._window_weight
        wmax = self.window_max
        if ww <= wmax:
            return _NONE if total <= self.maximum else self.evict()
        cand, cw = window.popitem(last=False)
        ww -= cw
        self._window_weight = ww
        probation = self._probation
        if ww > wmax or total <= self.maximum or not probation:
            probation[cand] = cw
            seg[cand] = _PROBATION
            return _NONE if total <= self.maximum else self.evict([cand])
        victim = next(iter(probation))
        # ``_admits``, inlined (the fill path is hot).
        t = self._sketch._table
        bmask = self._sketch._bmask
        h = hash(cand)
        b = (h & bmask) << 7
        c = h >> 40
        cf = t[b | (c & 31)]
        f = t[b | 32 | ((c >> 5) & 31)]
        if f < cf:
            cf = f
        f = t[b | 64 | ((c >> 10) & 31)]
        if f < cf:
            cf = f
        f = t[b | 96 | ((c >> 15) & 31)]
        if f < cf:
            cf = f
        h = hash(victim)
        b = (h & bmask) << 7
        c = h >> 40
        if (
            cf > t[b | (c & 31)]
            or cf > t[b | 32 | ((c >> 5) & 31)]
            or cf > t[b | 64 | ((c >> 10) & 31)]
            or cf > t[b | 96 | ((c >> 15) & 31)]
            or (cf >= 6 and not self._rng.getrandbits(7))
        ):
            total -= probation.pop(victim)
            del seg[victim]
            probation[cand] = cw
            seg[cand] = _PROBATION
            loser = victim
        else:
            total -= cw
            del seg[cand]
            loser = cand
        self._weight = total
        if total <= self.maximum:
            return [loser]
        return [loser, *self.evict()]  # the loser weighed less than the newcomer

    def on_update(self, key: str, weight: int) -> None:
        self._sketch.increment(key)
        if self._shadows and not (hash(key) >> 32) & self._shadow_mask:
            self._shadow_access(key, weight)
        seg = self._seg[key]
        if seg == _WINDOW:
            old = self._window.pop(key)
            self._window[key] = weight
            self._window_weight += weight - old
        elif seg == _PROTECTED:
            old = self._protected.pop(key)
            self._protected[key] = weight
            self._protected_weight += weight - old
        else:
            old = self._probation[key]
            self._probation[key] = weight
            self._promote(key)
        self._weight += weight - old

    def on_remove(self, key: str) -> None:
        seg = self._seg.pop(key)
        if seg == _WINDOW:
            w = self._window.pop(key)
            self._window_weight -= w
        elif seg == _PROTECTED:
            w = self._protected.pop(key)
            self._protected_weight -= w
        else:
            w = self._probation.pop(key)
        self._weight -= w

    def clear(self) -> None:
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self._seg.clear()
        self._weight = self._window_weight = self._protected_weight = 0
        for sh in self._shadows:
            sh.clear()

    # -- internals ------------------------------------------------------------

    def _promote(self, key: str) -> None:
        """A probation key was accessed: move it to protected, demote overflow."""
        w = self._probation.pop(key)
        self._protected[key] = w
        self._seg[key] = _PROTECTED
        self._protected_weight += w
        self._demote_protected()

    def _demote_protected(self) -> None:
        protected = self._protected
        seg = self._seg
        while self._protected_weight > self.protected_max and len(protected) > 1:
            k, w = protected.popitem(last=False)
            self._protected_weight -= w
            self._probation[k] = w
            seg[k] = _PROBATION

    def evict(self, candidates: list[str] | None = None) -> list[str]:
        """Drop keys until the weight is within the maximum (Policy.evict).

        ``candidates``: keys ``admit`` already moved from the window to
        probation, oldest first; window overflow is appended to them.
        """
        # Move window overflow to probation's MRU end: they are the candidates.
        window = self._window
        probation = self._probation
        seg = self._seg
        if candidates is None:
            candidates = []
        ww = self._window_weight
        wmax = self.window_max
        while ww > wmax and window:
            k, w = window.popitem(last=False)
            ww -= w
            probation[k] = w
            seg[k] = _PROBATION
            candidates.append(k)
        self._window_weight = ww
        victims: list[str] = []
        sk, randbits = self._sketch, self._rng.getrandbits
        weight = self._weight
        maximum = self.maximum
        while weight > maximum:
            if candidates and probation:
                cand = candidates.pop()
                if cand not in probation:  # already lost a duel as a victim
                    continue
                victim = next(iter(probation))
                duel_won = victim != cand and _admits(sk, cand, victim, randbits)
                loser = victim if duel_won else cand
                weight -= probation.pop(loser)
            elif probation:
                loser, w = probation.popitem(last=False)
                weight -= w
            elif self._protected:
                loser, w = self._protected.popitem(last=False)
                weight -= w
                self._protected_weight -= w
            else:
                loser, w = window.popitem(last=False)
                weight -= w
                self._window_weight -= w
            del seg[loser]
            victims.append(loser)
        self._weight = weight
        return victims

    def _grow_sketch(self) -> None:
        """Resize the sketch to the (estimated) entry capacity.

        The bound is in bytes, so the capacity in entries is estimated: while
        the cache is under half full the sketch doubles with the residents;
        from half full on it is sized for ``maximum / mean weight`` entries
        (Caffeine sizes a weighted cache's sketch at half full, too) and grows
        again only if the residents outgrow twice that estimate. Residents'
        frequencies are carried over (non-residents' history is lost).
        """
        n = len(self._seg)
        weight = max(1, self._weight)
        if 2 * weight >= self.maximum:
            est = max(n, self.maximum * n // weight)
            self._grow_at = 2 * est
            self._sized = True
        else:
            est = 2 * n
            # re-estimate at half full (at the current mean weight), or at 2x
            self._grow_at = min(2 * n, self.maximum * n // (2 * weight) + 1)
        if self._shadows and self._sized:
            # Shadows of at least SHADOW_ENTRIES entries decide as well as bigger
            # ones and cost 1/2**shift of an access: a big cache samples fewer
            # keys. The new sample is a subset of the old one (one more mask
            # bit), so the shadows stay warm.
            shift = self.SHADOW_SHIFT
            while est >> (shift + 1) >= self.SHADOW_ENTRIES and shift < 16:
                shift += 1
            mask = (1 << shift) - 1
            if mask > self._shadow_mask:
                self._shadow_mask = mask
                for sh in self._shadows:
                    sh.resample(mask, max(1, self.maximum >> shift))
        if self.adaptive and not self._shadows and self.SHADOW_FRACTIONS:
            # First growth of the sketch (64 residents): start the shadows
            # (1/2**SHADOW_SHIFT of the keys, 1/2**SHADOW_SHIFT of the maximum
            # each; a shadow's dicts hold only sampled keys, ~2 B per entry).
            smax = max(1, self.maximum >> self.SHADOW_SHIFT)
            self._shadows = [_Shadow(smax, f) for f in self.SHADOW_FRACTIONS]
        old = self._sketch
        new = FrequencySketch(int(self.WIDTH_FACTOR * est))
        for key in self._seg:
            new.raise_to(key, old.frequency(key))
        new.sample_size = max(256, int(self.AGE_FACTOR * est))
        self._sketch = new
        self._climb_period = max(256, int(self.CLIMB_FACTOR * est))

    WIDTH_FACTOR = 1.0  # sketch width (x16 counters) per estimated entry
    WARMUP_CLIMB = True
    MIN_SAMPLE = 2048  # fewest requests in a climber sample (smaller ones are noise)
    INITIAL_STEP = -0.001  # first climb's move (fraction of the maximum; < 0 shrinks)
    CLIMB_FACTOR = 5.0  # climb every CLIMB_FACTOR x (estimated) entries requests
    AGE_FACTOR = 10.0  # halve the sketch every AGE_FACTOR x (estimated) entries increments
    RESTART_THRESHOLD = 1.0  # no restarts: big moves come from the shadows
    STEP_PERCENT = 0.0625
    STEP_DECAY = 0.98

    SHADOW_FRACTIONS: tuple[float, ...] = (0.01, 0.2, 0.9)
    SHADOW_SHIFT = 4  # shadows see at least 1 key in 2**SHADOW_SHIFT (by hash(key) >> 32)
    SHADOW_ENTRIES = 512  # ... and fewer once that leaves a shadow this many entries
    SHADOW_DECAY = 0.8  # weight of the previous periods' shadow hits
    SHADOW_CLIMB = True  # hill-climb in the periods the shadows do not jump
    SHADOW_MARGIN = 1.0  # jump if best - nearest > MARGIN * sqrt(nearest)

    def _shadow_access(self, key: str, weight: int | None) -> None:
        """A sampled key was requested: replay it on every shadow cache.

        ``weight`` None: a hit; the key's weight is read from its segment.
        """
        if weight is None:
            seg = self._seg[key]
            source = (
                self._window
                if seg == _WINDOW
                else self._protected
                if seg == _PROTECTED
                else self._probation
            )
            weight = source[key]
        sk = self._sketch
        rng = self._shadow_rng.getrandbits
        for sh in self._shadows:
            sh.access(key, weight, sk, rng)

    def _shadow_pick(self) -> bool:
        """Jump the window to the shadows' best fraction if it clearly beats the
        shadow nearest the current window; returns whether it jumped."""
        shadows = self._shadows
        hits = [sh.hits for sh in shadows]
        fractions = self.SHADOW_FRACTIONS
        frac = self.window_max / self.maximum
        near = min(range(len(fractions)), key=lambda i: abs(fractions[i] - frac))
        best = max(range(len(hits)), key=hits.__getitem__)
        d = self.SHADOW_DECAY
        jump = hits[best] - hits[near] > self.SHADOW_MARGIN * (hits[near] + 1.0) ** 0.5
        for sh in shadows:
            sh.hits *= d
        if not jump:
            return False
        if abs(best - near) > 1:
            # one fraction per period: a one-period winner far away (a loop's
            # phase) costs less when it is wrong
            best = near + (1 if best > near else -1)
        target = max(1, int(self.maximum * fractions[best]))
        delta = target - self.window_max
        if delta > 0:
            self._increase_window(delta)
        elif delta < 0:
            self._decrease_window(-delta)
        return True

    def _climb(self) -> None:
        total = self._hits + self._misses
        hit_ratio = self._hits / total
        self._hits = self._misses = 0
        if not self._sized and not self.WARMUP_CLIMB:
            # Caffeine: no climbing before the sketch is sized (here: the cache
            # is half full); warm-up hit ratios only rise and would push the
            # window one way on short traces.
            self._sample_period = int(self.MIN_SAMPLE)
            return
        self._sample_period = (
            self._climb_period
            if self._sized
            else max(int(self.MIN_SAMPLE), int(self.CLIMB_FACTOR * len(self._seg)))
        )
        if not self.adaptive or not hit_ratio:
            # a sample without hits says nothing about the window size (the
            # climber would keep stepping on momentum alone)
            return
        if self._shadows and (self._shadow_pick() or not self.SHADOW_CLIMB):
            self._prev_hit_ratio = hit_ratio
            return
        change = hit_ratio - self._prev_hit_ratio
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= self.RESTART_THRESHOLD:
            self._step = self.STEP_PERCENT * self.maximum * (1 if amount >= 0 else -1)
        else:
            self._step = self.STEP_DECAY * amount
        self._prev_hit_ratio = hit_ratio
        quota = int(amount)
        if quota > 0:
            self._increase_window(quota)
        elif quota < 0:
            self._decrease_window(-quota)

    def _increase_window(self, quota: int) -> None:
        quota = min(quota, self.protected_max)
        if quota <= 0:
            return
        self.protected_max -= quota
        self.window_max += quota
        self._demote_protected()
        # Pull the coldest main entries into the window's MRU end up to the quota.
        seg = self._seg
        moved = 0
        for source in (self._probation, self._protected):
            while moved < quota and source:
                k, w = source.popitem(last=False)
                if source is self._protected:
                    self._protected_weight -= w
                self._window[k] = w
                self._window_weight += w
                seg[k] = _WINDOW
                moved += w
            if moved >= quota:
                break

    def _decrease_window(self, quota: int) -> None:
        quota = min(quota, self.window_max - 1)
        if quota <= 0:
            return
        self.protected_max += quota
        self.window_max -= quota
        window = self._window
        seg = self._seg
        while self._window_weight > self.window_max and window:
            k, w = window.popitem(last=False)
            self._window_weight -= w
            self._probation[k] = w
            seg[k] = _PROBATION


POLICIES: dict[str, Callable[[int, int | None], Policy]] = {
    "lru": lambda maximum, seed: LruPolicy(maximum),
    "adaptive": lambda maximum, seed: TinyLfuPolicy(maximum, adaptive=True, seed=seed),
    "tinylfu": lambda maximum, seed: TinyLfuPolicy(maximum, adaptive=False, seed=seed),
}


def make_policy(name: str, maximum: int, seed: int | None = None) -> Policy:
    """Build the policy called ``name`` for a weighted maximum of ``maximum``."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}") from None
    return factory(maximum, seed)
