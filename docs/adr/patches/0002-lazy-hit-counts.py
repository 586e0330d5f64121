"""Issue 17 experiment (not landed): lossless lazy hit counts, folded into the sketch at duel time.

ADR 0002, "Issue 17", variant B. Monkeypatches the landed ``maxage.core`` (no
source change) so it can be measured with ``bench/sim.py``:

    LAZY=B PYTHONHASHSEED=0 python docs/adr/patches/0002-lazy-hit-counts.py --all
    LAZY=B PYTHONHASHSEED=0 python docs/adr/patches/0002-lazy-hit-counts.py --classes

* every hit is counted per key (here a side dict; in a real change, a counter
  on the entry record: one attribute increment on the hit path); the lossy
  read buffer stays for recency and the shadows, but its replay no longer
  increments the sketch;
* before a duel, the candidate's and the victim's pending hits are folded
  into the sketch (saturating); variant B also gives a probation victim with
  pending hits a second chance (promoted to protected, as its lost hit would
  have), then duels the next one. ``LAZY=A``: folding only.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import os
import maxage.core.cache as CA
import maxage.core.policy as P
from maxage.core.cache import _INF, EvictionReason
from maxage.core.sketch import INCREMENT, POPULAR, LUCKY_BITS, COUNTER_MAX
VARIANT = os.environ.get("LAZY", "A")

orig_init = CA.Cache.__init__
PEND = {}
def __init__(self, *a, **k):
    orig_init(self, *a, **k)
    pend = {}
    PEND[id(self)] = pend
    pol = self._policy
    if isinstance(pol, P.TinyLfuPolicy):
        P._TAKE[id(pol)] = lambda key: pend.pop(key, 0)
CA.Cache.__init__ = __init__
P._TAKE = {}

def _get_unlocked(self, key):
    try:
        e = self._data[key]
    except KeyError:
        return self._miss()
    exp = e.expires_at
    if exp == _INF or exp > self._now():
        self.stats.hits += 1
        self._on_hit(key)
        p = PEND[id(self)]
        p[key] = p.get(key, 0) + 1
        return e
    self._drop(key, e, EvictionReason.TTL)
    return self._miss()
CA.Cache._get_unlocked = _get_unlocked

def fold(sk, key, n):
    h = hash(key); b = (h & sk.block_mask) << 7; c = h >> 40; t = sk.table
    for i in (b | (c & 31), b | 32 | ((c >> 5) & 31), b | 64 | ((c >> 10) & 31), b | 96 | ((c >> 15) & 31)):
        t[i] = min(COUNTER_MAX, t[i] + n)

# on_hits: no sketch increment (frequency comes from folding)
orig_on_hits = P.TinyLfuPolicy.on_hits
def on_hits(self, keys):
    sk = self._sketch
    saved = sk.increment
    # monkeypatch via a no-op: FrequencySketch has slots; wrap by temporarily replacing class attr
    P.FrequencySketch.increment = lambda s, k: None
    try:
        orig_on_hits(self, keys)
    finally:
        P.FrequencySketch.increment = ORIG_INC
ORIG_INC = P.FrequencySketch.increment
P.TinyLfuPolicy.on_hits = on_hits

# duel with folding: replace admit's inlined duel by forcing evict() path
def admit(self, key, weight):
    take = P._TAKE.get(id(self))
    sk = self._sketch
    sk.increment(key)
    self._misses += 1
    sampler = self._sampler
    h = hash(key)
    if sampler is not None and not (h >> 32) & sampler.mask:
        sampler.replay(key, weight, sk)
    self._window[key] = weight
    self._seg[key] = P._WINDOW
    self._weight += weight
    self._window_weight += weight
    if len(self._seg) > self._grow_at:
        self._grow_sketch()
    if self._hits + self._misses >= self._sample_period:
        self._climb()
    if self._window_weight <= self.window_max and self._weight <= self.maximum:
        return P._NONE
    return self.evict()
P.TinyLfuPolicy.admit = admit

def evict(self, candidates=None):
    take = P._TAKE.get(id(self), lambda k: 0)
    window = self._window; probation = self._probation; seg = self._seg
    if candidates is None: candidates = []
    ww = self._window_weight; wmax = self.window_max
    while ww > wmax and window:
        k, w = window.popitem(last=False)
        ww -= w
        probation[k] = w; seg[k] = P._PROBATION; candidates.append(k)
    self._window_weight = ww
    victims = []
    sk, randbits = self._sketch, self._rng.getrandbits
    while self._weight > self.maximum:
        if candidates and probation:
            cand = candidates.pop()
            if cand not in probation: continue
            n = take(cand)
            if n: fold(sk, cand, n)
            victim = next(iter(probation))
            if VARIANT == "B":
                while victim != cand:
                    n = take(victim)
                    if not n: break
                    fold(sk, victim, n)
                    self._promote(victim)
                    victim = next(iter(probation))
            else:
                n = take(victim)
                if n: fold(sk, victim, n)
            if victim == cand:
                duel_won = False
            else:
                cf = sk.frequency(cand)
                duel_won = cf > sk.frequency(victim) or (cf >= POPULAR and not randbits(LUCKY_BITS))
            loser = victim if duel_won else cand
            self._weight -= probation.pop(loser)
        elif probation:
            loser, w = probation.popitem(last=False); self._weight -= w
        elif self._protected:
            loser, w = self._protected.popitem(last=False); self._weight -= w; self._protected_weight -= w
        else:
            loser, w = window.popitem(last=False); self._weight -= w; self._window_weight -= w
        del seg[loser]
        take(loser)
        victims.append(loser)
    return victims
P.TinyLfuPolicy.evict = evict


if __name__ == "__main__":
    import sim

    raise SystemExit(sim.main(sys.argv[1:]))
