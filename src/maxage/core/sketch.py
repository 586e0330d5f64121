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
from typing import Final

COUNTER_MAX: Final = 15  # 4-bit counters (Caffeine's): the duel needs a rank, not a count
MIN_WIDTH: Final = 8  # the smallest table is one 128-counter block (8 x 16 counters)
AGE_PER_WIDTH: Final = 10  # default aging period, in increments per unit of width (Caffeine)
POPULAR: Final = 6  # a candidate this frequent may win a lost duel at random ...
LUCKY_BITS: Final = 7  # ... 1 time in 2**7 = 128, so a flood of one hash cannot pin a victim

# Byte-per-counter tables, so the hot operations are one lookup or one translate.
INCREMENT: Final = bytes(min(i + 1, COUNTER_MAX) for i in range(256))  # saturating increment
_HALVE: Final = bytes(i >> 1 for i in range(256))  # aging halves every counter in one translate
_ODD: Final = bytes(i & 1 for i in range(256))  # odd counters: the reset's rounding correction

__all__ = ["INCREMENT", "LUCKY_BITS", "POPULAR", "FrequencySketch", "admits"]


class FrequencySketch:
    """Caffeine's block-based count-min sketch of 4-bit counters (byte-per-counter).

    The table holds ``16 * width`` counters in blocks of 128 (Caffeine: eight
    64-bit words of sixteen 4-bit counters). A key hashes to one block (low
    bits of its ``str`` hash, SipHash: well mixed) and to one counter in each
    of the block's four 32-counter quarters (20 high bits of the hash) -- the
    four "rows" of a count-min sketch, kept in one cache line. Counters cap at
    ``COUNTER_MAX``; an increment bumps each of the key's four counters below
    the cap, and the estimate is their minimum. After ``sample_size``
    increments (default ``AGE_PER_WIDTH`` x the width; ``TinyLfuPolicy`` sets
    it) every counter is halved and the count of additions is reduced as in
    Caffeine (``(additions - odd/4) / 2``). No doorkeeper (Caffeine's choice;
    measured in ADR 0002).

    ``table``, ``block_mask`` and ``additions`` are public because the hot
    paths of ``TinyLfuPolicy`` (``admit``) inline ``increment`` and
    ``frequency``; the index arithmetic is in ``_indexes``: keep them in step.
    """

    __slots__ = ("_width", "additions", "block_mask", "sample_size", "table")

    def __init__(self, width: int) -> None:
        w = MIN_WIDTH
        while w < width:
            w <<= 1
        self._width = w
        self.block_mask = (w >> 3) - 1
        self.table = bytearray(16 * w)
        self.sample_size = AGE_PER_WIDTH * w
        self.additions = 0  # increments since the last reset (Caffeine's ``size``)

    @property
    def width(self) -> int:
        return self._width

    def _indexes(self, key: str) -> tuple[int, int, int, int]:
        h = hash(key)
        b = (h & self.block_mask) << 7
        c = h >> 40
        return (
            b | (c & 31),
            b | 32 | ((c >> 5) & 31),
            b | 64 | ((c >> 10) & 31),
            b | 96 | ((c >> 15) & 31),
        )

    def increment(self, key: str) -> None:
        h = hash(key)
        b = (h & self.block_mask) << 7
        c = h >> 40
        t = self.table
        i = b | (c & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 32 | ((c >> 5) & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 64 | ((c >> 10) & 31)
        t[i] = INCREMENT[t[i]]
        i = b | 96 | ((c >> 15) & 31)
        t[i] = INCREMENT[t[i]]
        self.additions += 1
        if self.additions >= self.sample_size:
            self.reset()

    def frequency(self, key: str) -> int:
        h = hash(key)
        b = (h & self.block_mask) << 7
        c = h >> 40
        t = self.table
        return min(
            t[b | (c & 31)],
            t[b | 32 | ((c >> 5) & 31)],
            t[b | 64 | ((c >> 10) & 31)],
            t[b | 96 | ((c >> 15) & 31)],
        )

    def add(self, key: str, n: int) -> None:
        """``n`` increments of ``key`` at once (saturating), as if replayed one by one."""
        t = self.table
        for i in self._indexes(key):
            t[i] = min(t[i] + n, COUNTER_MAX)
        self.additions += n
        if self.additions >= self.sample_size:
            self.reset()

    def raise_to(self, key: str, freq: int) -> None:
        """Make ``frequency(key) >= freq`` (capped at ``COUNTER_MAX``); used when resizing."""
        t = self.table
        f = min(freq, COUNTER_MAX)
        for i in self._indexes(key):
            if t[i] < f:
                t[i] = f

    def reset(self) -> None:
        t = self.table
        odd = t.translate(_ODD).count(1)
        t[:] = t.translate(_HALVE)  # in place: the policy's hot paths hold the table
        self.additions = (self.additions - (odd >> 2)) >> 1


def admits(sketch: FrequencySketch, cand: str, victim: str, randbits: Callable[[int], int]) -> bool:
    """TinyLFU's duel: the candidate wins iff its estimated frequency is above the
    victim's (ties keep the incumbent), or, if it is ``POPULAR``, at random 1 time
    in 2**``LUCKY_BITS`` (so an attacker cannot pin a victim by flooding).

    ``TinyLfuPolicy.admit`` inlines this (the fill path is hot): keep them in step.
    """
    cf = sketch.frequency(cand)
    return cf > sketch.frequency(victim) or (cf >= POPULAR and not randbits(LUCKY_BITS))
