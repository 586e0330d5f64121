"""Shared vocabulary of every holder: keys, versions, entries, the miss marker, the clock.

Everything here is standard library only; the outer packages (service, tiers,
cacheserver, checker) import these names instead of inventing their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

Key: TypeAlias = str
Version: TypeAlias = int


class _Missing(enum.Enum):
    """A miss; distinct from any cached value (a cached ``None`` is not a miss)."""

    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing.MISSING
Missing: TypeAlias = _Missing


class Clock(Protocol):
    """Injected time source. ``now()`` is wall-clock seconds (comparable across processes)."""

    def now(self) -> float: ...


class SetOutcome(enum.Enum):
    """Why a versioned write did or did not land."""

    STORED = "stored"
    UNCHANGED = "unchanged"  # same version already stored: an idempotent replay
    REFUSED_OLDER = "refused_older"
    REFUSED_TOMBSTONE = "refused_tombstone"
    REFUSED_TOO_LARGE = "refused_too_large"
    UNAVAILABLE = "unavailable"  # a shared tier that cannot be reached (never stored)

    @property
    def stored(self) -> bool:
        return self is SetOutcome.STORED


class EvictionReason(enum.Enum):
    SIZE = "size"
    TTL = "ttl"
    INVALIDATION = "invalidation"


@dataclass(slots=True)
class Entry:
    """One cached value: the final response body and what is needed to serve it.

    ``filled_at`` is the start of the primary read that produced ``body`` (not the
    time of the set), so age and TTL are measured from the moment the data was
    known to be current.
    """

    key: Key
    version: Version
    body: bytes
    meta: object
    filled_at: float
    expires_at: float
    tags: tuple[str, ...] = ()
    size: int = 0
    # Hits the policy has not seen: counted on every hit, less those replayed from
    # the read buffer; what a full buffer dropped is folded in when the key duels
    # (``TinyLfuPolicy.take_hits``; ADR 0002, "Issue 17").
    unreplayed_hits: int = 0
