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
are recency-biased), so the default is *adaptive* W-TinyLFU
(``TinyLfuPolicy``; its docstring is the design essay). The choice was made by
measurement (``bench/sim.py --all``; ``docs/adr/0002-eviction-policy.md``).

Where things are (Caffeine's lines): the policies here; the frequency sketch
and the admission duel in ``maxage.core.sketch``; the window climber and its
shadow caches in ``maxage.core.climber``. Variants kept for measurement only
live in ``bench/policy_variants.py``.

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
* P4 -- the window climber only moves weight between window and protected
  quota; it never changes the maximum.

Cost model and threading
------------------------
A hit must stay near the cost of a dict lookup. For a batching policy (one
with ``on_hits``) storage records a hit with one ``deque.append`` into a
bounded, lossy read buffer, and replays the buffer before every write and on
misses (Caffeine's read buffer; when reads outrun writes by more than the
buffer, the oldest are dropped -- recency sees a sample, stats stay exact, and
each entry keeps count of its dropped hits, which W-TinyLFU folds into the
key's frequency before the key duels: ``TinyLfuPolicy.take_hits``).
LRU's hit is ``OrderedDict.move_to_end`` directly. Policies do no locking:
storage calls them with its lock held (or from one event loop), so the
policy's structures are only ever touched by one thread at a time.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Final, Protocol

from maxage.core.climber import MIN_PERIOD, PROTECTED_SHARE, WindowClimber
from maxage.core.sketch import INCREMENT, LUCKY_BITS, POPULAR, FrequencySketch, admits

INITIAL_WINDOW: Final = 0.01  # the window starts at 1% (Caffeine's): TinyLFU until it learns
EXPECTED_ENTRIES: Final = 64  # the first sketch's width; it doubles with the residents
WIDTH_FACTOR: Final = 1.0  # sketch width per estimated entry: 16 counters (Caffeine's)
AGE_FACTOR: Final = 10.0  # halve the sketch every 10x estimated entries increments (5x: Zipf lost)
MIN_AGE: Final = 256  # ... but not more often than every 256 increments (tiny caches)

_NONE: Final[tuple[str, ...]] = ()  # "no victims"
_WINDOW, _PROBATION, _PROTECTED = 0, 1, 2  # the segment of a key in ``TinyLfuPolicy._seg``

__all__ = ["POLICIES", "LruPolicy", "Policy", "TinyLfuPolicy", "make_policy"]


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


class TinyLfuPolicy:
    """W-TinyLFU (Caffeine's): LRU window -> TinyLFU duel -> segmented-LRU main,
    with the window sized online.

    What it guarantees
    ------------------
    P1-P4 (module docstring), and: every event costs O(1) whatever the length
    of the history (frequency is an estimate from a fixed-size sketch, not a
    count per key ever seen); memory beyond the three queues is the sketch
    (16 B per estimated entry) and, adaptive, the shadows (~2 B per entry). A
    key leaves only by losing a duel or, with no candidate left to duel, from
    the LRU end of probation, then of protected, then of the window.

    The segments
    ------------
    New keys enter the *window*, an LRU of ``window_max`` weight (initially
    ``INITIAL_WINDOW`` = 1% of the maximum). What the window pushes out is a
    *candidate* for *main*, a segmented LRU of *probation* and *protected*
    (``PROTECTED_SHARE`` = 80% of main). A hit in probation promotes the key
    to protected; protected's overflow is demoted to probation's MRU end. A
    hit in the window or in protected moves the key to its segment's MRU end.

    The duel
    --------
    While the cache is over its maximum, a candidate duels probation's LRU
    *victim* and the one the sketch says was requested less often leaves
    (``sketch.admits``): ties keep the incumbent (admitting ties lost 0.17 on
    loop:1200), and a ``POPULAR`` (>= 6) candidate also wins 1 time in 128 at
    random, so hash flooding cannot pin a victim. This is what survives loops
    and scans: a one-shot key never beats a resident with a history. The
    steady state of a full cache (one newcomer, one overflow, one duel) is
    decided in ``admit`` before the candidate would enter probation; ``evict``
    handles every other case, with the same outcome.

    The sketch
    ----------
    Caffeine's count-min sketch (``maxage.core.sketch``). The bound is in
    bytes, so the capacity in entries is estimated: until the cache is half
    full the sketch doubles with the residents (from ``EXPECTED_ENTRIES`` =
    64); from half full on it is sized for ``maximum / mean weight`` entries
    (``WIDTH_FACTOR`` = 16 counters each) and halved every ``AGE_FACTOR`` =
    10x that many increments. Residents' frequencies survive a resize.

    The window size
    ---------------
    A fixed 1% window (``adaptive=False``, policy ``"tinylfu"``) loses to LRU
    on recency-biased traffic (lirs-sprite@1000: 0.839 against LRU's 0.906).
    With ``adaptive=True`` (the default) a ``WindowClimber``
    (``maxage.core.climber``) moves quota between window and protected at the
    end of every sample of ``CLIMB_FACTOR`` = 5x the estimated entries in
    requests (the first: 256; until the sketch is sized: 5x the residents, at
    least 2048).
    Three shadow W-TinyLFUs at windows of 1/20/90%, fed a hash-sampled 1/16 of
    the keys (fewer in big caches) and sharing this sketch, make the big
    moves: one fraction toward the best shadow if it beats the one nearest
    the current window by more than sqrt(hits). Otherwise the hill climber
    makes a small move: the first step shrinks the window by 0.1% of the
    maximum, each next one is 0.98 of the last, reversed when the hit ratio
    fell (Caffeine's restarts are off, except in one corner described at
    ``climber.RESTART_THRESHOLD``). A sample without hits moves nothing.
    Growing the window pulls main's coldest keys into it; shrinking it pushes
    the window's oldest into probation.
    """

    __slots__ = (
        "_climber",
        "_grow_at",
        "_hits",
        "_misses",
        "_probation",
        "_protected",
        "_protected_weight",
        "_rng",
        "_sample_period",
        "_sampler",
        "_seg",
        "_sized",
        "_sketch",
        "_weight",
        "_window",
        "_window_weight",
        "adaptive",
        "maximum",
        "protected_max",
        "take_hits",
        "window_max",
    )

    def __init__(
        self,
        maximum: int,
        *,
        adaptive: bool = True,
        window_fraction: float = INITIAL_WINDOW,
        seed: int | None = None,
        expected_entries: int = EXPECTED_ENTRIES,
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
        self.protected_max = int((maximum - self.window_max) * PROTECTED_SHARE)
        self._sketch = FrequencySketch(expected_entries)
        self._grow_at = self._sketch.width
        self._sized = False  # sketch sized by the capacity estimate (cache half full)
        self._rng = random.Random(seed)
        # The current hit-ratio sample (a fixed window only restarts it).
        self._hits = 0
        self._misses = 0
        self._sample_period = MIN_PERIOD
        self._climber = WindowClimber(maximum, seed) if adaptive else None
        # The climber once its shadows run (from the first sketch resize), else
        # None: the hot paths' one test before replaying a sampled key.
        self._sampler: WindowClimber | None = None
        # Hits on a resident key that never reached on_hits (storage's read buffer
        # was full), cleared by the call; folded into the sketch before the key
        # duels. Storage sets it (Cache._take_unreplayed_hits).
        self.take_hits: Callable[[str], int] = _no_hits

    @property
    def weight(self) -> int:
        return self._weight

    # -- events ---------------------------------------------------------------

    def on_hit(self, key: str) -> None:
        self._sketch.increment(key)
        self._hits += 1
        seg = self._seg[key]
        sampler = self._sampler
        if sampler is not None and not (hash(key) >> 32) & sampler.mask:
            sampler.replay(key, self._weight_in(key, seg), self._sketch)
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
        sketch = self._sketch
        increment = sketch.increment
        sampler = self._sampler
        smask = sampler.mask if sampler is not None else 0
        n = 0
        for key in keys:
            seg = seg_of(key)
            if seg is None:
                continue
            n += 1
            increment(key)
            if sampler is not None and not (hash(key) >> 32) & smask:
                sampler.replay(key, self._weight_in(key, seg), sketch)
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

        Long because it is the fill path: ``FrequencySketch.increment`` and
        ``sketch.admits`` are inlined (ADR 0002, "Speed"); keep them in step.
        """
        # FrequencySketch.increment, inlined.
        sk = self._sketch
        h = hash(key)
        b = (h & sk.block_mask) << 7
        c = h >> 40
        t = sk.table
        i = b | (c & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 32 | ((c >> 5) & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 64 | ((c >> 10) & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 96 | ((c >> 15) & 31)
        t[i] = INCREMENT[t[i]]
        sk.additions += 1
        if sk.additions >= sk.sample_size:
            sk.reset()
        self._misses += 1
        sampler = self._sampler
        if sampler is not None and not (h >> 32) & sampler.mask:
            sampler.replay(key, weight, sk)
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
        # Hits the read buffer dropped: the candidate's count toward its frequency;
        # a victim with any was hit in probation, so it is promoted as that hit
        # would have done (a second chance) and the next one duels.
        take = self.take_hits
        n = take(cand)
        if n:
            self._sketch.add(cand, n)
        victim = next(iter(probation))
        n = take(victim)
        while n:
            self._sketch.add(victim, n)
            self._promote(victim)
            if not probation:
                probation[cand] = cw
                seg[cand] = _PROBATION
                return self.evict([cand])
            victim = next(iter(probation))
            n = take(victim)
        # ``sketch.admits``, inlined.
        t = self._sketch.table
        bmask = self._sketch.block_mask
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
            or (cf >= POPULAR and not self._rng.getrandbits(LUCKY_BITS))
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
        sampler = self._sampler
        if sampler is not None and not (hash(key) >> 32) & sampler.mask:
            sampler.replay(key, weight, self._sketch)
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
        if self._climber is not None:
            self._climber.clear()

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
                take = self.take_hits
                n = take(cand)
                if n:
                    sk.add(cand, n)
                victim = next(iter(probation))
                n = take(victim) if victim != cand else 0
                while n:  # as in ``admit``: a second chance for a victim with dropped hits
                    sk.add(victim, n)
                    self._promote(victim)
                    victim = next(iter(probation))  # cand is still in probation
                    n = take(victim) if victim != cand else 0
                duel_won = victim != cand and admits(sk, cand, victim, randbits)
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

    # -- internals ------------------------------------------------------------

    def _weight_in(self, key: str, seg: int) -> int:
        """The weight of resident ``key`` in segment ``seg``."""
        if seg == _WINDOW:
            return self._window[key]
        if seg == _PROTECTED:
            return self._protected[key]
        return self._probation[key]

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

    def _grow_sketch(self) -> None:
        """Resize the sketch to the (estimated) entry capacity.

        The bound is in bytes, so the capacity in entries is estimated: while
        the cache is under half full the sketch doubles with the residents;
        from half full on it is sized for ``maximum / mean weight`` entries
        (Caffeine sizes a weighted cache's sketch at half full, too) and grows
        again only if the residents outgrow twice that estimate. Residents'
        frequencies are carried over (non-residents' history is lost). The
        climber hears of every resize (its shadows start at the first).
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
        climber = self._climber
        if climber is not None:
            climber.resize(est, self._sized)
            self._sampler = climber
        old = self._sketch
        new = FrequencySketch(int(WIDTH_FACTOR * est))
        for key in self._seg:
            new.raise_to(key, old.frequency(key))
        new.sample_size = max(MIN_AGE, int(AGE_FACTOR * est))
        self._sketch = new

    def _climb(self) -> None:
        """A hit-ratio sample is complete: let the climber move the window."""
        hits = self._hits
        total = hits + self._misses
        self._hits = self._misses = 0
        climber = self._climber
        if climber is None:  # a fixed window: the next sample starts, nothing moves
            return
        self._sample_period = climber.sample_size(self._sized, len(self._seg))
        if not hits:
            # a sample without hits says nothing about the window size (the
            # climber would keep stepping on momentum alone)
            return
        delta = climber.adjust(hits / total, self.window_max)
        if delta > 0:
            self._increase_window(delta)
        elif delta < 0:
            self._decrease_window(-delta)

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


def _no_hits(key: str) -> int:
    """``TinyLfuPolicy.take_hits`` without storage: no hit is ever dropped."""
    return 0


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
