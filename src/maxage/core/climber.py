"""Sizing W-TinyLFU's admission window: sampled shadow caches plus a hill climber.

Why not Caffeine's hill climber alone
-------------------------------------
The best window is a property of the workload: every Zipf trace wants about
1% of the maximum, the recency trace ``lirs-sprite`` near 90%. Caffeine's hill
climber (sample the hit ratio, step the window in the direction that helped)
gets there too slowly and too noisily when a trace's phases swing the hit
ratio between samples. So the window is *chosen by simulation*: three
miniature fixed-window W-TinyLFUs (``Shadow``, windows of 1/20/90%) see a
hash-sampled subset of the keys and share the real policy's sketch, and the
window jumps toward the one with the most hits. The hill climber stays for the
small moves between jumps. Every constant below was measured (``bench/sim.py
--all`` under two hash seeds; ADR 0002 has the numbers).

What ``WindowClimber`` guarantees
---------------------------------
* C1 -- it only *proposes* a window delta (``adjust``); the policy applies it
  by moving quota between window and protected, never changing the maximum
  (policy invariant P4).
* C2 -- a jump moves at most ``MAX_JUMP`` shadow fractions per period, only
  if the best shadow beats the one nearest the current window by more than
  ``SHADOW_MARGIN * sqrt(hits + (burst - BURST_SLACK) * both shadows' hits)``
  (``burst``: how many times longer the shadows' runs of consecutive hits are
  than independent hits make them, at least 1); never after a warm-up sample (whose
  shadow hits are forgotten: ``adjust(warm=False)``), and toward a larger
  window only after a sample the policy trusts (few hits dropped by
  storage's read buffer: ``adjust(shadows=...)``); otherwise the hill
  climber steps:
  first ``INITIAL_STEP`` of the maximum, then the previous step decayed by
  ``STEP_DECAY``, reversed whenever the hit ratio fell.
* C3 -- the shadows see the keys with ``hash(key) % MIX & mask == 0`` (the
  residue mod a power of two, independent of the sketch's residues mod odd
  primes), at least 1 in 2**``SHADOW_SHIFT``, fewer as the
  capacity estimate grows; a new sample is a subset of the old one, so the
  shadows stay warm. They cost about 2 B per entry and, per sampled access,
  ~2 us per shadow.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

from maxage.core.sketch import LUCKY_BITS, MIX, POPULAR, FrequencySketch

PROTECTED_SHARE: Final = 0.8  # protected's share of main, in policy and shadows (Caffeine's)
MIN_PERIOD: Final = 256  # the first sample, and the shortest: fewer requests say nothing
MIN_SAMPLE: Final = 2048  # warm-up samples at least this long (256: multi2@2000 chased noise)
CLIMB_FACTOR: Final = 5.0  # sample = 5x the estimated entries in requests (10x: sprite lost)
INITIAL_STEP: Final = -0.001  # first step: shrink by 0.1% of the maximum (-0.2%: loop rows lost)
STEP_DECAY: Final = 0.98  # each step is 98% of the last (Caffeine's): the climber settles
RESTART_THRESHOLD: Final = 1.0  # restarts only on a 0 -> 1 jump (hill_climb); 0.05 lost loops
RESTART_STEP: Final = 0.0625  # the restart's step, a fraction of the maximum (Caffeine's)
SHADOW_FRACTIONS: Final = (0.01, 0.2, 0.9)  # Zipf wants ~1%, sprite ~90%; 20% between
SHADOW_SHIFT: Final = 3  # shadows see >= 1 key in 8 (1/16: loopzipf@1000 lost 0.03 to noisy jumps)
SHADOW_MAX_SHIFT: Final = 16  # ... and at most 1 in 65536
SHADOW_ENTRIES: Final = 512  # sample fewer keys while each shadow keeps this many (same picks)
SHADOW_DECAY: Final = 0.8  # weight of earlier periods' shadow hits: a few periods of memory
MAX_JUMP: Final = 2  # fractions a jump may cross (1: shift@1000 and scans@1000 lost 0.01-0.04)
SHADOW_MARGIN: Final = 1.0  # jump if best - nearest > MARGIN * sqrt(nearest): no noise jumps
BURST_SLACK: Final = 2.0  # ... plus the variance of runs of hits > 2x independent ones' (scans)

__all__ = ["PROTECTED_SHARE", "Shadow", "WindowClimber"]


class Shadow:
    """A miniature, non-adaptive W-TinyLFU at one fixed window fraction.

    It sees a hash-sampled subset of the keys, at the same fraction of the
    maximum, and shares the real policy's sketch (the sampled keys'
    frequencies on the full stream). Kept light: three plain dicts in
    insertion order (LRU end = first key; a move is pop + re-insert), no
    segment map, no sketch of its own; a miss's window overflow duels before
    it would enter probation, with ``sketch.admits`` inlined, as in the
    policy's ``admit``. (Measured: ~1.7-2.1 us per access and shadow, same as
    with ``OrderedDict`` queues.) ``hits`` is decayed by the climber, and so is
    ``run_sq``, the sum of the squared lengths of its runs of consecutive hits
    (``run``: the current one), which says how bursty its hits are.
    """

    __slots__ = (
        "fraction",
        "hits",
        "maximum",
        "probation",
        "protected",
        "protected_max",
        "protected_weight",
        "run",
        "run_sq",
        "weight",
        "window",
        "window_max",
        "window_weight",
    )

    def __init__(self, maximum: int, fraction: float) -> None:
        self.fraction = fraction
        self.maximum = maximum
        self.window_max = max(1, int(maximum * fraction))
        self.protected_max = int((maximum - self.window_max) * PROTECTED_SHARE)
        self.window: dict[str, int] = {}
        self.probation: dict[str, int] = {}
        self.protected: dict[str, int] = {}
        self.weight = self.window_weight = self.protected_weight = 0
        self.hits = 0.0
        self.run = 0  # consecutive hits up to the last access
        self.run_sq = 0.0  # sum of the squared lengths of finished runs (decayed with hits)

    def access(
        self, key: str, weight: int, sketch: FrequencySketch, rng: Callable[[int], int]
    ) -> None:
        window = self.window
        protected = self.protected
        probation = self.probation
        if key in window:
            window[key] = window.pop(key)
            self.hits += 1.0
            self.run += 1
            return
        if key in protected:
            protected[key] = protected.pop(key)
            self.hits += 1.0
            self.run += 1
            return
        if key in probation:
            self.hits += 1.0
            self.run += 1
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
        # miss: a run of hits ends; insert into the window, move overflow to
        # probation, duel
        run = self.run
        if run:
            self.run_sq += run * run
            self.run = 0
        window[key] = weight
        ww = self.window_weight + weight
        total = self.weight + weight
        wmax = self.window_max
        maximum = self.maximum
        while ww > wmax and window:
            k = next(iter(window))
            v = window.pop(k)
            ww -= v
            if total > maximum and probation:
                # ``k`` duels probation's LRU key before it would enter probation
                # (as the policy's ``admit``; same outcome as entering, dueling and
                # dropping the loser): ``admits(sketch, k, victim, rng)``, inlined
                # with ``frequency``. A first counter neither above the victim's
                # frequency nor POPULAR loses, as the candidate's minimum would.
                victim = next(iter(probation))
                t0, t1, t2, t3, p0, p1, p2, p3 = sketch.layout
                x = hash(victim) % MIX
                vf = t0[x % p0]
                f = t1[x % p1]
                if f < vf:
                    vf = f
                f = t2[x % p2]
                if f < vf:
                    vf = f
                f = t3[x % p3]
                if f < vf:
                    vf = f
                x = hash(k) % MIX
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
                    if cf > vf or (cf >= POPULAR and not rng(LUCKY_BITS)):
                        total -= probation.pop(victim)
                        probation[k] = v
                        continue
                total -= v
            else:
                probation[k] = v
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
        """Keep only the keys with ``hash(key) % MIX & mask == 0`` (a subset of the
        current sample) and scale the maximum and the hit count to match."""

        def keep(d: dict[str, int]) -> dict[str, int]:
            return {k: w for k, w in d.items() if not hash(k) % MIX & mask}

        self.window, self.probation, self.protected = (
            keep(self.window),
            keep(self.probation),
            keep(self.protected),
        )
        self.window_weight = sum(self.window.values())
        self.protected_weight = sum(self.protected.values())
        self.weight = self.window_weight + self.protected_weight + sum(self.probation.values())
        self.hits *= maximum / self.maximum
        self.run_sq *= maximum / self.maximum
        self.maximum = maximum
        self.window_max = max(1, int(maximum * self.fraction))
        self.protected_max = int((maximum - self.window_max) * PROTECTED_SHARE)
        self._shrink()

    def clear(self) -> None:
        self.window.clear()
        self.probation.clear()
        self.protected.clear()
        self.weight = self.window_weight = self.protected_weight = 0
        self.run = 0


class WindowClimber:
    """Proposes, once per hit-ratio sample, how far to move the policy's window.

    The policy owns the segments and the sample's hit counters; it tells the
    climber of every sampled access (``replay``, only once ``shadows`` exist:
    the policy tests ``hash(key) % MIX & mask`` inline), of every resize of
    its sketch (``resize``: the shadows start at the first, then sample fewer
    keys as the capacity estimate grows), and asks it at the end of each
    sample for a delta (``adjust``) and the next sample's length
    (``sample_size``).
    """

    __slots__ = (
        "_period",
        "_prev_hit_ratio",
        "_rng",
        "_step",
        "mask",
        "maximum",
        "shadows",
        "shift",
    )

    def __init__(self, maximum: int, seed: int | None = None) -> None:
        self.maximum = maximum
        self.shadows: list[Shadow] = []  # empty until the policy's first sketch resize
        self.shift = SHADOW_SHIFT
        self.mask = (1 << SHADOW_SHIFT) - 1
        self._rng = random.Random(seed)  # the shadows' random admissions (not the policy's)
        self._prev_hit_ratio = 0.0
        self._step = INITIAL_STEP * maximum
        self._period = MIN_PERIOD

    def sample_size(self, sized: bool, entries: int) -> int:
        """Requests in the next sample: ``CLIMB_FACTOR`` x the capacity estimate once
        the sketch is sized, before that x the residents (at least ``MIN_SAMPLE``)."""
        return self._period if sized else max(MIN_SAMPLE, int(CLIMB_FACTOR * entries))

    def resize(self, estimate: int, sized: bool) -> None:
        """The policy resized its sketch for ``estimate`` entries (``sized``: from
        the byte bound, no longer from the residents)."""
        if not self.shadows:
            # 1/2**SHADOW_SHIFT of the keys and of the maximum each; a shadow's
            # dicts hold only sampled keys (~2 B per entry of the cache).
            smax = max(1, self.maximum >> SHADOW_SHIFT)
            self.shadows = [Shadow(smax, f) for f in SHADOW_FRACTIONS]
        elif sized:
            # Shadows of at least SHADOW_ENTRIES entries decide as well as bigger
            # ones and cost 1/2**shift of an access: a big cache samples fewer
            # keys. One more mask bit keeps the new sample a subset of the old.
            shift = SHADOW_SHIFT
            while estimate >> (shift + 1) >= SHADOW_ENTRIES and shift < SHADOW_MAX_SHIFT:
                shift += 1
            mask = (1 << shift) - 1
            if mask > self.mask:
                self.mask = mask
                self.shift = shift
                for sh in self.shadows:
                    sh.resample(mask, max(1, self.maximum >> shift))
        self._period = max(MIN_PERIOD, int(CLIMB_FACTOR * estimate))

    def replay(self, key: str, weight: int, sketch: FrequencySketch) -> None:
        """A sampled key was requested (after its sketch increment): replay it on
        every shadow."""
        rng = self._rng.getrandbits
        for sh in self.shadows:
            sh.access(key, weight, sketch, rng)

    def adjust(
        self, hit_ratio: float, window_max: int, shadows: bool = True, warm: bool = True
    ) -> int:
        """The window delta (weight; > 0 grows it) after a sample with hits
        (``shadows=False``: the shadows' hits decay, but they do not jump;
        ``warm=False``: a warm-up sample -- their hits are forgotten, no jump)."""
        if self.shadows:
            delta = self.shadow_jump(window_max, jump=shadows, warm=warm, hit_ratio=hit_ratio)
            if delta is not None:
                self._prev_hit_ratio = hit_ratio
                return delta
        return self.hill_climb(hit_ratio)

    def shadow_jump(
        self, window_max: int, jump: bool = True, warm: bool = True, hit_ratio: float = 0.0
    ) -> int | None:
        """Decay the shadows' hits; return the delta that moves the window one
        fraction toward the best shadow if it clearly beats the shadow nearest the
        current window (``None``: no jump). ``warm=False`` forgets their hits.
        ``hit_ratio``: the policy's in the sample just ended (``burst`` below)."""
        shadows = self.shadows
        if not warm:
            for sh in shadows:
                sh.hits = sh.run_sq = 0.0
            return None
        fractions = SHADOW_FRACTIONS
        frac = window_max / self.maximum
        near = min(range(len(fractions)), key=lambda i: abs(fractions[i] - frac))
        hits = [sh.hits for sh in shadows]
        best = max(range(len(hits)), key=hits.__getitem__)
        # ``jump=False`` (an untrusted sample) holds back only a jump to a larger
        # window: growing it hands main's keys to an LRU window that a scan
        # flushes, shrinking it only moves the window's oldest to probation.
        # The margin is the noise of the difference. sqrt(hits) is that of
        # independent hits. Hits that come in long runs (a range scan through
        # keys one shadow holds and the other does not) are few independent
        # events, so the difference swings by whole runs from one period to the
        # next (scans@1000: a 1% -> 90% jump on one lucky period, then a 0.08
        # hit ratio). A count made of runs has a variance of ~ sum(length^2);
        # over the hits, that is the hit-weighted mean run length, which
        # independent hits at ratio h make (1 + h) / (1 - h) (geometric runs):
        # ``burst`` is how many times longer the shadows' runs are (>= 1), and
        # both shadows' excess variance beyond ``BURST_SLACK`` is added to the
        # old margin's. Measured (per period): Zipf, shift, web12 1.0-1.2 (the
        # normalisation uses the policy's h, not each shadow's: the slack keeps
        # their margin as before -- at 1.0, shift@1500 seed 13 lost a needed
        # jump), sprite 1-5, loopzipf ~6, loops and loophot 6-18, scans 15-30.
        b, n = shadows[best], shadows[near]
        h = min(max(hit_ratio, 0.0), 0.99)
        runs_sq = b.run_sq + n.run_sq + b.run * b.run + n.run * n.run
        burst = max(1.0, runs_sq / (b.hits + n.hits + 1.0) * (1.0 - h) / (1.0 + h))
        noise = hits[near] + 1.0 + max(0.0, burst - BURST_SLACK) * (hits[best] + hits[near])
        jump = (jump or best < near) and hits[best] - hits[near] > SHADOW_MARGIN * noise**0.5
        for sh in shadows:
            sh.hits *= SHADOW_DECAY
            sh.run_sq *= SHADOW_DECAY
        if not jump:
            return None
        if abs(best - near) > MAX_JUMP:
            # (MAX_JUMP = 1 made shift@1000 reach 90% only after 2.6 of its 8
            # phases; a loop's phase no longer misleads: its hits are dropped)
            best = near + (MAX_JUMP if best > near else -MAX_JUMP)
        return max(1, int(self.maximum * fractions[best])) - window_max

    def hill_climb(self, hit_ratio: float) -> int:
        """Caffeine's hill climber: keep the direction if the hit ratio did not
        fall, reverse it if it did; the step decays by ``STEP_DECAY``.

        Restarts (a fresh ``RESTART_STEP`` when the hit ratio moves by
        ``RESTART_THRESHOLD`` or more) are as good as off: the change is below
        1.0 except in one corner, the first sample with hits being all hits (the
        previous ratio is still 0.0) -- e.g. a cache filled with exactly the
        first sample's worth of keys, then only read (and updated). That corner
        restarts with a 6.25% shrinking step, as it always has; whether to drop
        it is a behaviour change for its own measurement.
        """
        change = hit_ratio - self._prev_hit_ratio
        amount = self._step if change >= 0 else -self._step
        if abs(change) >= RESTART_THRESHOLD:
            self._step = RESTART_STEP * self.maximum * (1 if amount >= 0 else -1)
        else:
            self._step = STEP_DECAY * amount
        self._prev_hit_ratio = hit_ratio
        return int(amount)

    def clear(self) -> None:
        """The cache was cleared: empty the shadows (the climb's state is kept)."""
        for sh in self.shadows:
            sh.clear()
