"""The shared-tier protocol: a derived, never authoritative L2 behind the in-process cache.

A tier keeps the fill guard of DESIGN.md ("Fill guard") atomically on its side:
``set_if_newer`` stores only a version newer than the stored one and not below
the key's tombstone; ``invalidate`` drops older versions and leaves a tombstone.
A tier never raises to its caller: when it is unreachable, slow or its circuit
breaker is open, ``get`` is a miss, ``set_if_newer`` is refused and
``invalidate`` returns False (so a tailer retries and its watermark stops).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from maxage.core.types import SetOutcome


@dataclass(frozen=True, slots=True)
class TierEntry:
    version: int
    body: bytes
    meta: bytes
    filled_at: float  # start of the primary read that produced ``body``
    expires_at: float | None  # absolute (``filled_at + ttl``); None: no TTL


class SharedTier(Protocol):
    stats: dict[str, int]

    @property
    def available(self) -> bool:
        """False while the circuit breaker is open (calls are refused without I/O)."""
        ...

    async def get(self, key: str) -> TierEntry | None:
        """The entry, or None on a miss, an expired entry, or when the tier is unavailable."""
        ...

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
        """STORED, UNCHANGED (same version: a replay), REFUSED_OLDER, REFUSED_TOMBSTONE.

        When the tier is unavailable the fill is not stored and the outcome is
        ``SetOutcome.UNAVAILABLE``; never raises.
        """
        ...

    async def invalidate(self, key: str, version: int) -> bool:
        """Drop a stored version < ``version`` and raise the tombstone; False if unavailable."""
        ...

    async def rate_limit(
        self, bucket: str, interval: float, capacity: float
    ) -> tuple[bool, float, float] | None:
        """One atomic GCRA step on shared state: ``(allowed, retry_after, ahead)`` seconds,
        or None when unavailable (callers fall back to per-process limits)."""
        ...

    async def close(self) -> None: ...
