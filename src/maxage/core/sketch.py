"""TinyLFU's memory: Caffeine's frequency sketch, and the admission duel that reads it.

Guarantees
----------
* S1 -- ``frequency(key)`` is never below the number of increments of ``key``
  since the last reset (capped at ``COUNTER_MAX``); it is above it only through
  hash collisions, which four counters per key keep rare (count-min).
* S2 -- memory is fixed at construction: 16 bytes per unit of width; nothing
  is stored per key.
* S3 -- when the additions reach ``sample_size``, every counter and the count
  of additions are halved (aging), so a shifting popularity is followed.

The policy (``maxage.core.policy.TinyLfuPolicy``) sizes the sketch for its
estimated capacity and replaces it as that estimate grows; the shadows of the
window climber (``maxage.core.climber``) read the same sketch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, TypeAlias

COUNTER_MAX: Final = 15  # 4-bit counters (Caffeine's): the duel needs a rank, not a count
ROWS: Final = 4  # count-min rows (Caffeine's four)
COUNTERS_PER_WIDTH: Final = 16  # counters per unit of width (Caffeine: 16 4-bit counters a long)
MIN_WIDTH: Final = 8  # the smallest sketch: 8 x 16 counters
AGE_PER_WIDTH: Final = 10  # default aging period, in increments per unit of width (Caffeine)
POPULAR: Final = 6  # a candidate this frequent may win a lost duel at random ...
LUCKY_BITS: Final = 7  # ... 1 time in 2**7 = 128, so a flood of one hash cannot pin a victim
MIX: Final = 1_073_741_789  # the largest prime below 2**30: ``hash(key) % MIX`` is one digit

# Byte-per-counter tables, so the hot operations are one lookup or one translate.
# The saturating increment is a tuple, not bytes: CPython 3.11 specialises a
# tuple subscript, not a bytes one (~100 instructions less per counter, callgrind).
INCREMENT: Final = tuple(min(i + 1, COUNTER_MAX) for i in range(256))
_HALVE: Final = bytes(i >> 1 for i in range(256))  # aging halves every counter in one translate
_ODD: Final = bytes(i & 1 for i in range(256))  # odd counters: the reset's rounding correction

__all__ = ["INCREMENT", "LUCKY_BITS", "MIX", "POPULAR", "FrequencySketch", "admits"]


Layout: TypeAlias = tuple[bytearray, bytearray, bytearray, bytearray, int, int, int, int]
"""A sketch's four rows and their four prime lengths (``FrequencySketch.layout``)."""


def _primes_below(n: int, count: int) -> list[int]:
    """The ``count`` largest primes below ``n`` (trial division: n is at most millions)."""
    out: list[int] = []
    c = n - 1
    while len(out) < count and c > 2:
        if c % 2 and all(c % d for d in range(3, int(c**0.5) + 1, 2)):
            out.append(c)
        c -= 1
    return out


class FrequencySketch:
    """A count-min sketch of 4-bit counters (byte-per-counter) in four rows of
    distinct prime lengths.

    A key's ``x = hash(key) % MIX`` (``MIX`` a prime below 2**30, so ``x`` is a
    one-digit int and every later operation on it is CPython's cheap path)
    picks counter ``x % p_r`` in row ``r`` (``p_0 > ... > p_3`` the largest
    primes below ``4 * width``, i.e. ``16 * width`` counters as in Caffeine).
    Distinct primes make the rows independent (Chinese remainder theorem): two
    keys with different ``x`` collide in two rows at once only if ``x`` differs
    by a multiple of ``p_r * p_s``. Counters cap at ``COUNTER_MAX``; an
    increment bumps each of the key's four counters below the cap, and the
    estimate is their minimum. After ``sample_size`` increments (default
    ``AGE_PER_WIDTH`` x the width; ``TinyLfuPolicy`` sets it) every counter is
    halved and the count of additions is reduced as in Caffeine (``(additions
    - odd/4) / 2``). No doorkeeper (Caffeine's choice; measured in ADR 0002).

    Why not Caffeine's block layout (one 64-byte block per key): in CPython the
    cost is the interpreter's, not the memory's -- the block index and four
    5-bit offsets took 17 bit operations per key (~3,900 instructions), the
    residues take 5 (~1,600). ``rows`` and ``primes`` are public because the
    hot paths of ``TinyLfuPolicy`` inline ``increment`` and ``frequency``
    (``layout`` is both in one tuple, for them and the shadows): keep them in
    step with ``_indexes``.
    """

    __slots__ = ("_width", "additions", "layout", "primes", "resets", "rows", "sample_size")

    def __init__(self, width: int) -> None:
        w = MIN_WIDTH
        while w < width:
            w <<= 1
        self._width = w
        primes = _primes_below(COUNTERS_PER_WIDTH * w // ROWS, ROWS)
        self.primes: tuple[int, int, int, int] = (primes[0], primes[1], primes[2], primes[3])
        self.rows: tuple[bytearray, bytearray, bytearray, bytearray] = (
            bytearray(primes[0]),
            bytearray(primes[1]),
            bytearray(primes[2]),
            bytearray(primes[3]),
        )
        # Rows and primes in one tuple: the hot paths unpack it once.
        self.layout: Layout = (*self.rows, *self.primes)
        self.sample_size = AGE_PER_WIDTH * w
        self.additions = 0  # increments since the last reset (Caffeine's ``size``)
        self.resets = 0  # agings so far: a frequency read before one is stale after it

    @property
    def width(self) -> int:
        return self._width

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        x = hash(key) % MIX
        p0, p1, p2, p3 = self.primes
        return (x % p0, x % p1, x % p2, x % p3)

    def increment(self, key: str) -> None:
        t0, t1, t2, t3 = self.rows
        p0, p1, p2, p3 = self.primes
        x = hash(key) % MIX
        i = x % p0
        t0[i] = INCREMENT[t0[i]]
        i = x % p1
        t1[i] = INCREMENT[t1[i]]
        i = x % p2
        t2[i] = INCREMENT[t2[i]]
        i = x % p3
        t3[i] = INCREMENT[t3[i]]
        self.additions += 1
        if self.additions >= self.sample_size:
            self.reset()

    def frequency(self, key: str) -> int:
        t0, t1, t2, t3 = self.rows
        p0, p1, p2, p3 = self.primes
        x = hash(key) % MIX
        return min(t0[x % p0], t1[x % p1], t2[x % p2], t3[x % p3])

    def add(self, key: str, n: int) -> None:
        """``n`` increments of ``key`` at once (saturating), as if replayed one by one."""
        for t, i in zip(self.rows, self._indexes(key), strict=True):
            t[i] = min(t[i] + n, COUNTER_MAX)
        self.additions += n
        if self.additions >= self.sample_size:
            self.reset()

    def raise_to(self, key: str, freq: int) -> None:
        """Make ``frequency(key) >= freq`` (capped at ``COUNTER_MAX``); used when resizing."""
        f = min(freq, COUNTER_MAX)
        for t, i in zip(self.rows, self._indexes(key), strict=True):
            if t[i] < f:
                t[i] = f

    def reset(self) -> None:
        odd = 0
        for t in self.rows:
            odd += t.translate(_ODD).count(1)
            t[:] = t.translate(_HALVE)  # in place: the policy's hot paths hold the rows
        self.additions = (self.additions - (odd >> 2)) >> 1
        self.resets += 1


def admits(sketch: FrequencySketch, cand: str, victim: str, randbits: Callable[[int], int]) -> bool:
    """TinyLFU's duel: the candidate wins iff its estimated frequency is above the
    victim's (ties keep the incumbent), or, if it is ``POPULAR``, at random 1 time
    in 2**``LUCKY_BITS`` (so an attacker cannot pin a victim by flooding).

    ``TinyLfuPolicy.admit`` and ``Shadow.access`` (``maxage.core.climber``) inline
    this (the fill path is hot): keep them in step.
    """
    cf = sketch.frequency(cand)
    return cf > sketch.frequency(victim) or (cf >= POPULAR and not randbits(LUCKY_BITS))
