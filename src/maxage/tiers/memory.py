"""A shared tier in this process's memory, for ``maxage sim``: the Redis tier's semantics.

It keeps exactly the rules of ``tiers/redis.py``'s Lua scripts (and passes the
same shared-tier contract suite, ``tests/tiers/test_tier_contract.py``):

* ``set_if_newer`` refuses a version below the key's tombstone
  (REFUSED_TOMBSTONE), equal to the stored one (UNCHANGED) or below it
  (REFUSED_OLDER); otherwise it stores the entry with ``expires_at =
  started_at + ttl`` (the TTL runs from the primary read, not from the set).
* ``invalidate`` drops a stored version below ``v`` and raises the tombstone to
  ``v``; a tombstone only rises and lives ``tombstone_ttl`` after its last
  raise or re-assertion.
* Never raises: while :attr:`reachable` is False (a partition the simulator
  injects) ``get`` misses, ``set_if_newer`` is ``UNAVAILABLE`` and
  ``invalidate`` returns False, as the Redis tier does with its breaker open.

Each call is atomic (nothing is awaited inside it), as a Lua script is on Redis.
"""

from __future__ import annotations

from maxage.core.types import Clock, SetOutcome
from maxage.tiers.base import TierEntry

_STAT_NAMES = (
    "hits",
    "misses",
    "stored",
    "unchanged",
    "refused_older",
    "refused_tombstone",
    "refused_unavailable",
    "invalidations",
    "invalidations_failed",
)


class MemoryTier:
    """One shared tier; every simulated node holds a reference to the same object."""

    def __init__(self, *, clock: Clock, tombstone_ttl: float = 60.0) -> None:
        self.clock = clock
        self.tombstone_ttl = tombstone_ttl
        self.entries: dict[str, TierEntry] = {}
        self.tombstones: dict[str, tuple[int, float]] = {}  # key -> (version, expires_at)
        self.reachable = True
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)

    @property
    def available(self) -> bool:
        return self.reachable

    def _tombstone(self, key: str, now: float) -> int:
        tomb = self.tombstones.get(key)
        if tomb is None:
            return 0
        if tomb[1] <= now:
            del self.tombstones[key]
            return 0
        return tomb[0]

    async def get(self, key: str) -> TierEntry | None:
        if not self.reachable:
            return None
        entry = self.entries.get(key)
        if (
            entry is not None
            and entry.expires_at is not None
            and entry.expires_at <= self.clock.now()
        ):
            del self.entries[key]
            entry = None
        self.stats["hits" if entry is not None else "misses"] += 1
        return entry

    async def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        meta: bytes,
        *,
        started_at: float,
        ttl: float | None,
    ) -> SetOutcome:
        if not self.reachable:
            self.stats["refused_unavailable"] += 1
            return SetOutcome.UNAVAILABLE
        now = self.clock.now()
        outcome = self._judge(key, version, now)
        if outcome is SetOutcome.STORED:
            expires = None if ttl is None else started_at + ttl
            self.entries[key] = TierEntry(version, body, meta, started_at, expires)
        self.stats[outcome.value] += 1
        return outcome

    def _judge(self, key: str, version: int, now: float) -> SetOutcome:
        """The fill guard (the Redis tier's FILL script)."""
        if version < self._tombstone(key, now):
            return SetOutcome.REFUSED_TOMBSTONE
        current = self.entries.get(key)
        if current is not None and current.expires_at is not None and current.expires_at <= now:
            del self.entries[key]
            current = None
        if current is not None:
            if version == current.version:
                return SetOutcome.UNCHANGED
            if version < current.version:
                return SetOutcome.REFUSED_OLDER
        return SetOutcome.STORED

    async def invalidate(self, key: str, version: int) -> bool:
        if not self.reachable:
            self.stats["invalidations_failed"] += 1
            return False
        now = self.clock.now()
        current = self.entries.get(key)
        if current is not None and current.version < version:
            del self.entries[key]
        if self._tombstone(key, now) <= version:
            self.tombstones[key] = (version, now + self.tombstone_ttl)
        self.stats["invalidations"] += 1
        return True

    def flush_entries(self) -> int:
        """Drop every entry, keeping the tombstones (an eviction of entries: the fill
        guard survives it; a FLUSHALL that drops tombstones is outside the contract)."""
        n = len(self.entries)
        self.entries.clear()
        return n

    async def rate_limit(
        self, bucket: str, interval: float, capacity: float
    ) -> tuple[bool, float, float] | None:
        return None  # no shared limiter: callers fall back to per-process limits

    async def close(self) -> None:
        return None
