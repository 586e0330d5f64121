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
key's frequency before the key duels: ``TinyLfuPolicy.take_hits``, which
reads them on storage's records, ``TinyLfuPolicy.records``, once storage has
seen its buffer full, ``TinyLfuPolicy.hits_dropped``: until then every count
is 0 and the duels skip them).
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
from maxage.core.sketch import INCREMENT, LUCKY_BITS, MIX, POPULAR, FrequencySketch, admits

INITIAL_WINDOW: Final = 0.01  # the window starts at 1% (Caffeine's): TinyLFU until it learns
EXPECTED_ENTRIES: Final = 64  # the first sketch's width; it doubles with the residents
WIDTH_FACTOR: Final = 1.0  # sketch width per estimated entry: 16 counters (Caffeine's)
AGE_FACTOR: Final = 10.0  # halve the sketch every 10 increments per unit of its width (theine's)
MIN_AGE: Final = 256  # ... but not more often than every 256 increments (tiny caches)
SHADOW_TRUST_DROPPED: Final = 0.05  # no shadow jump after a sample with more dropped hits

_NONE: Final[tuple[str, ...]] = ()  # "no victims"

__all__ = ["POLICIES", "LruPolicy", "Policy", "TinyLfuPolicy", "make_policy"]


class HitCounted(Protocol):
    """Storage's record of a resident key, as W-TinyLFU sees it: only the count of
    its hits that never reached the policy (``maxage.core.types.Entry``)."""

    unreplayed_hits: int


class Records(Protocol):
    """Storage's records by key (``Cache``'s entry dict)."""

    def __getitem__(self, key: str, /) -> HitCounted: ...


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
            key, weight = order.popitem(False)
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
    (``WIDTH_FACTOR`` = 16 counters each; the width is rounded up to a power
    of two) and halved every ``AGE_FACTOR`` = 10 increments per unit of that
    width (as theine). Residents' frequencies survive a resize.

    The window size
    ---------------
    A fixed 1% window (``adaptive=False``, policy ``"tinylfu"``) loses to LRU
    on recency-biased traffic (lirs-sprite@1000: 0.839 against LRU's 0.906).
    With ``adaptive=True`` (the default) a ``WindowClimber``
    (``maxage.core.climber``) moves quota between window and protected at the
    end of every sample of ``CLIMB_FACTOR`` = 5x the estimated entries in
    requests (the first: 256; until the sketch is sized: 5x the residents, at
    least 2048).
    Three shadow W-TinyLFUs at windows of 1/20/90%, fed a hash-sampled 1/8 of
    the keys (fewer in big caches) and sharing this sketch, make the big
    moves: toward the best shadow (up to two fractions) if it beats the one
    nearest the current window by more than sqrt(hits) -- more when their hits
    come in long runs (``WindowClimber.shadow_jump``). The shadows see every
    access to a sampled key, including the hits the read buffer dropped
    (``_replay_dropped``, at the next drain: without them a recency shadow
    acted like a bigger cache and pulled scans to a 90% window). A sample
    that began before the sketch was sized (the fill) is forgotten by the
    shadows and never jumps. After a sample in which more than
    ``SHADOW_TRUST_DROPPED`` = 5% of the requests were dropped hits, the
    shadows may shrink the window but not grow it (the real policy's recency
    never saw those hits; on a loop with a hot set the shadows chose a 90%
    window where 1% wins by 0.3). Otherwise the hill climber
    makes a small move: the first step shrinks the window by 0.1% of the
    maximum, each next one is 0.98 of the last, reversed when the hit ratio
    fell (Caffeine's restarts are off, except in one corner described at
    ``climber.RESTART_THRESHOLD``). A sample without hits moves nothing.
    Growing the window pulls main's coldest keys into it; shrinking it pushes
    the window's oldest into probation.
    """

    __slots__ = (
        "_climber",
        "_dropped",
        "_grow_at",
        "_hits",
        "_left",
        "_probation",
        "_protected",
        "_protected_weight",
        "_rng",
        "_sample_period",
        "_sample_sized",
        "_sampled",
        "_sampler",
        "_sized",
        "_sketch",
        "_victim",
        "_victim_freq",
        "_victim_resets",
        "_weight",
        "_window",
        "_window_weight",
        "adaptive",
        "hits_dropped",
        "maximum",
        "protected_max",
        "records",
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
        self._dropped = 0  # of the sample's hits, those the read buffer dropped
        self._sample_period = MIN_PERIOD
        self._left = MIN_PERIOD  # requests left in the sample (the fill path counts down)
        self._climber = WindowClimber(maximum, seed) if adaptive else None
        # The climber once its shadows run (from the first sketch resize), else
        # None: the hot paths' one test before replaying a sampled key.
        self._sampler: WindowClimber | None = None
        # Sampled keys admitted since the shadows run -> their dropped hits already
        # shown to the shadows (``_replay_dropped``); keys that left are pruned lazily.
        self._sampled: dict[str, int] = {}
        self._sample_sized = False  # the current sample began with the sketch sized
        # Storage's records of the residents (``Cache`` sets its entry dict): each
        # counts the hits on its key that never reached on_hits (the read buffer
        # was full); ``take_hits`` folds them into the sketch before the key duels.
        self.records: Records = _NO_RECORDS
        # False until storage's read buffer may have dropped a hit (it was full when
        # drained; ``Cache._drain`` sets it): until then every record's count is 0
        # and the duels skip reading them.
        self.hits_dropped = False
        # Probation's LRU key as of its last duel, its frequency then and the
        # sketch's resets then (``admit``); None once the head may have changed
        # (every path that removes probation's head, promotes or forgets the key
        # or replaces the sketch resets it).
        self._victim: str | None = None
        self._victim_freq = 0
        self._victim_resets = 0

    @property
    def weight(self) -> int:
        return self._weight

    # -- events ---------------------------------------------------------------

    def on_hit(self, key: str) -> None:
        self._sketch.increment(key)
        self._hits += 1
        self._left -= 1
        sampler = self._sampler
        if sampler is not None and not hash(key) % MIX & sampler.mask:
            sampler.replay(key, self._weight_of(key), self._sketch)
        if key in self._protected:
            self._protected.move_to_end(key)
        elif key in self._window:
            self._window.move_to_end(key)
        else:
            self._promote(key)
        if self._left <= 0:
            self._climb()

    def on_hits(self, keys: Iterable[str], dropped: int = 0) -> None:
        """Replay a batch of buffered hits (keys no longer resident are skipped);
        ``dropped`` more hits happened since the last batch that the buffer did
        not keep: they count in the hit-ratio sample, and when they are many the
        shadows (which never saw them) do not move the window (``_climb``)."""
        sampler = self._sampler
        if dropped and sampler is not None and self.hits_dropped:
            self._replay_dropped(sampler)
        window = self._window
        probation = self._probation
        protected = self._protected
        sketch = self._sketch
        increment = sketch.increment
        smask = sampler.mask if sampler is not None else 0
        n = 0
        for key in keys:
            # the segment by membership (hot keys live in protected: one lookup)
            if key in protected:
                seg = protected
            elif key in window:
                seg = window
            elif key in probation:
                seg = probation
            else:
                continue
            n += 1
            increment(key)
            if sampler is not None and not hash(key) % MIX & smask:
                sampler.replay(key, seg[key], sketch)
            if seg is probation:
                self._promote(key)
            else:
                seg.move_to_end(key)
        self._hits += n + dropped
        self._dropped += dropped
        self._left -= n + dropped
        if self._left <= 0:
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
        t0, t1, t2, t3, p0, p1, p2, p3 = sk.layout
        x = hash(key) % MIX
        i = x % p0
        t0[i] = INCREMENT[t0[i]]
        i = x % p1
        t1[i] = INCREMENT[t1[i]]
        i = x % p2
        t2[i] = INCREMENT[t2[i]]
        i = x % p3
        t3[i] = INCREMENT[t3[i]]
        sk.additions += 1
        if sk.additions >= sk.sample_size:
            sk.reset()
        left = self._left - 1
        self._left = left
        sampler = self._sampler
        if sampler is not None and not x & sampler.mask:
            self._sampled[key] = 0
            sampler.replay(key, weight, sk)
        window = self._window
        window[key] = weight
        total = self._weight + weight  # stored where a call may read it, and at the end
        ww = self._window_weight + weight
        maximum = self.maximum
        # A full cache re-checks its sketch size at each climber sample (``_climb``).
        if total <= maximum and self._residents() > self._grow_at:
            self._weight = total
            self._grow_sketch()
            sk = self._sketch
            t0, t1, t2, t3, p0, p1, p2, p3 = sk.layout
        if left <= 0:
            self._weight = total
            self._window_weight = ww
            self._climb()  # may move keys between the window and main, or grow the sketch
            ww = self._window_weight
            sk = self._sketch
            t0, t1, t2, t3, p0, p1, p2, p3 = sk.layout
        wmax = self.window_max
        if ww <= wmax:
            self._weight = total
            self._window_weight = ww
            return _NONE if total <= maximum else self.evict()
        cand, cw = window.popitem(False)
        ww -= cw
        self._window_weight = ww
        probation = self._probation
        if ww > wmax or total <= maximum or not probation:
            self._weight = total
            probation[cand] = cw
            return _NONE if total <= maximum else self.evict([cand])
        # ``sketch.admits``, inlined. The victim's frequency: probation's LRU key
        # usually defends many duels in a row (newcomers lose ties), so it is read
        # once and kept until the key leaves probation's head, is promoted, or the
        # sketch ages or is replaced (``_victim_frequency``).
        if self.hits_dropped:
            # Hits the read buffer dropped: the candidate's count toward its
            # frequency; a victim with any was hit in probation, so it is promoted
            # as that hit would have done (a second chance) and the next one duels.
            # (``take_hits``, inlined; an ``add`` may reset the sketch: the rows
            # are the same objects, halved in place.)
            records = self.records
            r = records[cand]
            n = r.unreplayed_hits
            if n:
                r.unreplayed_hits = 0
                sk.add(cand, n)
            victim = self._victim  # probation's head as of the last duel, if still so
            if victim is None:
                victim = next(iter(probation))
            r = records[victim]
            n = r.unreplayed_hits
            while n:
                r.unreplayed_hits = 0
                sk.add(victim, n)
                self._promote(victim)
                if not probation:
                    self._weight = total
                    probation[cand] = cw
                    return self.evict([cand])
                victim = next(iter(probation))
                r = records[victim]
                n = r.unreplayed_hits
            if victim is self._victim and sk.resets == self._victim_resets:
                vf = self._victim_freq
            else:
                vf = self._victim_frequency(victim)
        else:  # no hit was ever dropped: every record's count is 0
            victim = self._victim  # probation's head as of the last duel, if still so
            if victim is not None and sk.resets == self._victim_resets:
                vf = self._victim_freq
            else:
                if victim is None:
                    victim = next(iter(probation))
                vf = self._victim_frequency(victim)
        # The candidate's: its estimate is at most any one of its counters, so a
        # first counter neither above the victim's nor POPULAR loses the duel
        # (the usual case: a newcomer seen once); else the minimum of all four.
        x = hash(cand) % MIX
        cf = t0[x % p0]
        if cf > vf or cf >= POPULAR:
            f = t1[x % p1]
            if f < cf:
                cf = f
            f = t2[x % p2]
            if f < cf:
                cf = f
            f = t3[x % p3]
            if f < cf:
                cf = f
            if cf > vf or (cf >= POPULAR and not self._rng.getrandbits(LUCKY_BITS)):
                self._victim = None
                total -= probation.pop(victim)
                probation[cand] = cw
                self._weight = total
                if total <= maximum:
                    return [victim]
                return [victim, *self.evict()]  # the victim weighed less than the newcomer
        total -= cw
        self._weight = total
        if total <= maximum:
            return [cand]
        return [cand, *self.evict()]  # the candidate weighed less than the newcomer

    def on_update(self, key: str, weight: int) -> None:
        self._sketch.increment(key)
        sampler = self._sampler
        if sampler is not None and not hash(key) % MIX & sampler.mask:
            sampler.replay(key, weight, self._sketch)
        if key in self._window:
            old = self._window.pop(key)
            self._window[key] = weight
            self._window_weight += weight - old
        elif key in self._protected:
            old = self._protected.pop(key)
            self._protected[key] = weight
            self._protected_weight += weight - old
        else:
            old = self._probation[key]
            self._probation[key] = weight
            self._promote(key)
        self._weight += weight - old

    def on_remove(self, key: str) -> None:
        self._victim = None
        if key in self._window:
            w = self._window.pop(key)
            self._window_weight -= w
        elif key in self._protected:
            w = self._protected.pop(key)
            self._protected_weight -= w
        else:
            w = self._probation.pop(key)
        self._weight -= w

    def clear(self) -> None:
        self._victim = None
        self.hits_dropped = False  # no records left
        self._sampled.clear()
        self._window.clear()
        self._probation.clear()
        self._protected.clear()
        self._weight = self._window_weight = self._protected_weight = 0
        if self._climber is not None:
            self._climber.clear()

    def evict(self, candidates: list[str] | None = None) -> list[str]:
        """Drop keys until the weight is within the maximum (Policy.evict).

        ``candidates``: keys ``admit`` already moved from the window to
        probation, oldest first; window overflow is appended to them.
        """
        self._victim = None  # probation's head may change below
        # Move window overflow to probation's MRU end: they are the candidates.
        window = self._window
        probation = self._probation
        if candidates is None:
            candidates = []
        ww = self._window_weight
        wmax = self.window_max
        while ww > wmax and window:
            k, w = window.popitem(False)
            ww -= w
            probation[k] = w
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
                if self.hits_dropped:
                    take = self.take_hits
                    n = take(cand)
                    if n:
                        sk.add(cand, n)
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
                loser, w = probation.popitem(False)
                weight -= w
            elif self._protected:
                loser, w = self._protected.popitem(False)
                weight -= w
                self._protected_weight -= w
            else:
                loser, w = window.popitem(False)
                weight -= w
                self._window_weight -= w
            victims.append(loser)
        self._weight = weight
        return victims

    # -- internals ------------------------------------------------------------

    def take_hits(self, key: str) -> int:
        """The hits on resident ``key`` the policy never saw (the read buffer was
        full), cleared. Asked before ``key`` duels, i.e. in a write, after storage
        drained the buffer: nothing is counted twice."""
        r = self.records[key]
        n = r.unreplayed_hits
        if n:
            r.unreplayed_hits = 0
        return n

    def _victim_frequency(self, victim: str) -> int:
        """The frequency of ``victim``, probation's head: kept from its last duel
        while it stays the head (``_victim``) and the sketch has not aged since."""
        sk = self._sketch
        if victim is self._victim and sk.resets == self._victim_resets:
            return self._victim_freq
        vf = sk.frequency(victim)
        self._victim = victim
        self._victim_freq = vf
        self._victim_resets = sk.resets
        return vf

    def _weight_of(self, key: str) -> int:
        """The weight of resident ``key``."""
        w = self._protected.get(key)
        if w is None:
            w = self._window.get(key)
        if w is None:
            w = self._probation[key]
        return w

    def _residents(self) -> int:
        return len(self._window) + len(self._probation) + len(self._protected)

    def _promote(self, key: str) -> None:
        """A probation key was accessed: move it to protected, demote overflow."""
        if key == self._victim:
            self._victim = None
        w = self._probation.pop(key)
        self._protected[key] = w
        self._protected_weight += w
        self._demote_protected()

    def _demote_protected(self) -> None:
        protected = self._protected
        while self._protected_weight > self.protected_max and len(protected) > 1:
            k, w = protected.popitem(False)
            self._protected_weight -= w
            self._probation[k] = w

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
        n = self._residents()
        weight = max(1, self._weight)
        if 2 * weight >= self.maximum:
            est = max(n, self.maximum * n // weight)
            self._grow_at = 2 * est
            self._sized = True
        else:
            est = 2 * n
            # re-estimate at half full (at the current mean weight), or at 2x
            self._grow_at = min(2 * n, self.maximum * n // (2 * weight) + 1)
        self._victim = None  # a new sketch: frequencies read from the old one are stale
        climber = self._climber
        if climber is not None:
            climber.resize(est, self._sized)
            self._sampler = climber
        old = self._sketch
        new = FrequencySketch(int(WIDTH_FACTOR * est))
        for segment in (self._window, self._probation, self._protected):
            for key in segment:
                new.raise_to(key, old.frequency(key))
        # Aged every 10 increments per unit of width (Caffeine's 10x per entry
        # of a power-of-two table, as theine): 10x the estimate aged a capacity
        # just above a power of two up to 1.4x as often (scans@1500/3000 lost).
        new.sample_size = max(MIN_AGE, int(AGE_FACTOR * new.width))
        self._sketch = new

    def _climb(self) -> None:
        """A hit-ratio sample is complete: let the climber move the window (and
        re-check the sketch's size, which ``admit`` checks only while not full)."""
        if self._residents() > self._grow_at:
            self._grow_sketch()
        hits = self._hits
        total = self._sample_period - self._left
        dropped = self._dropped
        self._hits = self._dropped = 0
        climber = self._climber
        if climber is None:  # a fixed window: the next sample starts, nothing moves
            self._left = self._sample_period
            return
        self._sample_period = self._left = climber.sample_size(self._sized, self._residents())
        warm = self._sample_sized
        self._sample_sized = self._sized
        sampled = self._sampled
        if len(sampled) > 2 * (self._residents() >> climber.shift) + 64:
            self._prune_sampled(climber.mask)
        if not hits:
            # a sample without hits says nothing about the window size (the
            # climber would keep stepping on momentum alone)
            return
        # A sample that began before the sketch was sized (the cache under half
        # full) holds the fill: every shadow's main was frozen by ties with the
        # first keys it saw, so recency wins there whatever the workload (scans
        # jumped to a 90% window on it). Its shadow hits are forgotten and it
        # does not jump (the hill climber still may). After a sample with many
        # dropped hits the shadows do not jump either: they saw those as
        # accesses (``_replay_dropped``), but the real policy's recency did not
        # (a drop is folded in only at the key's next duel), so the sample says
        # less about the window than its shadows' counts suggest.
        trusted = dropped <= SHADOW_TRUST_DROPPED * total
        delta = climber.adjust(hits / total, self.window_max, shadows=trusted, warm=warm)
        if delta > 0:
            self._increase_window(delta)
        elif delta < 0:
            self._decrease_window(-delta)

    def _replay_dropped(self, sampler: WindowClimber) -> None:
        """Show the shadows the hits on sampled keys that the read buffer dropped.

        The shadows must see the whole stream of their sampled keys: without
        the dropped hits (long runs of hits, e.g. a scan through a resident
        range) they saw fewer hits *and* fewer accesses -- a recency shadow then
        behaves like a bigger cache (the dropped accesses would have pushed its
        old keys out), so it out-hit the window it was compared with and the
        window jumped to 90% on scans, where the real 90% window is 0.06 worse.
        Each record counts its dropped hits (``unreplayed_hits``; the duels fold
        and clear them); what is new since the last look is replayed, before the
        buffered hits of this drain (the dropped ones are older). Called from
        ``on_hits`` only when hits were dropped: a drain, not the hit path.
        """
        records = self.records
        sketch = self._sketch
        mask = sampler.mask
        sampled = self._sampled
        gone: list[str] = []
        for key, seen in sampled.items():
            try:
                n = records[key].unreplayed_hits  # storage's keys are the policy's (P1)
            except KeyError:
                gone.append(key)
                continue
            if n == seen:
                continue
            if hash(key) % MIX & mask:  # left the sample (the shadows resampled)
                gone.append(key)
                continue
            sampled[key] = n
            # a duel cleared the count since (``take_hits``): all n are new
            w = self._weight_of(key)
            for _ in range(n - seen if n > seen else n):
                sampler.replay(key, w, sketch)
        for key in gone:
            del sampled[key]

    def _prune_sampled(self, mask: int) -> None:
        """Forget sampled keys that left the cache or the sample."""
        window, probation, protected = self._window, self._probation, self._protected
        self._sampled = {
            k: n
            for k, n in self._sampled.items()
            if not hash(k) % MIX & mask and (k in protected or k in window or k in probation)
        }

    def _increase_window(self, quota: int) -> None:
        self._victim = None  # probation's head may move to the window
        quota = min(quota, self.protected_max)
        if quota <= 0:
            return
        self.protected_max -= quota
        self.window_max += quota
        self._demote_protected()
        # Pull the coldest main entries into the window's MRU end up to the quota.
        moved = 0
        for source in (self._probation, self._protected):
            while moved < quota and source:
                k, w = source.popitem(False)
                if source is self._protected:
                    self._protected_weight -= w
                self._window[k] = w
                self._window_weight += w
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
        while self._window_weight > self.window_max and window:
            k, w = window.popitem(False)
            self._window_weight -= w
            self._probation[k] = w


class _NoRecords:
    """``TinyLfuPolicy.records`` without storage: no hit is ever dropped."""

    __slots__ = ()
    unreplayed_hits = 0

    def __getitem__(self, key: str) -> _NoRecords:
        return self


_NO_RECORDS: Final = _NoRecords()


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
