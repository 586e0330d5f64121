"""Mutants: deliberately broken variants of one guard each, so the checker and the
tests can show they catch the bug the guard prevents (TEST ONLY).

* ``no-version-guard`` — a fill is a plain overwrite; versions and tombstones ignored
* ``no-tombstone`` — an invalidation drops older entries but leaves no tombstone
* ``no-watermark`` — holders always claim to be caught up (reads ignore the watermark)
* ``error-path-drop`` — a failed invalidation is forgotten instead of retried
* ``seq-tailer`` — PostgreSQL: tail the log by ``seq > cursor`` (skips late commits)
* ``feed-replay`` — the change feed resumes *at* the client's cursor instead of after
  it: every reconnect delivers the last change again (P7)
* ``feed-skip`` — the change feed resumes one past the client's cursor: a reconnect
  loses the change right after it (P7)

Each is planted through a public seam: the cache class the composition root
constructs (:func:`cache_class`), or a hook of :class:`maxage.faults.FaultHooks`.
"""

from __future__ import annotations

import time
from typing import Any

from maxage.core.cache import Cache
from maxage.core.types import EvictionReason, SetOutcome
from maxage.invalidation.tailer import Holder

MUTANTS = (
    "no-version-guard",
    "no-tombstone",
    "no-watermark",
    "error-path-drop",
    "seq-tailer",
    "feed-replay",
    "feed-skip",
)
FEED_SHIFT = {"feed-replay": -1, "feed-skip": 1}  # how the feed mutants move a resume cursor


class NoVersionGuardCache(Cache):
    """Mutant: a fill is a plain overwrite; versions and tombstones are ignored."""

    __slots__ = ()

    def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Any = (),
    ) -> SetOutcome:
        with self._lock:
            old = self._data.get(key)
            if old is not None:
                self._drop(key, old, EvictionReason.INVALIDATION)
            if key in self._tombs:  # forget the guard, with its byte charge
                del self._tombs[key]
                self._forget_guard(self._tombs, key)
        return super().set_if_newer(
            key, version, body, started_at=started_at, ttl=ttl, meta=meta, tags=tags
        )


class NoTombstoneCache(Cache):
    """Mutant: an invalidation drops older entries but leaves no tombstone."""

    __slots__ = ()

    def invalidate(self, key: str, version: int) -> bool:
        with self._lock:
            e = self._data.get(key)
            if e is not None and e.version < version:
                self._drop(key, e, EvictionReason.INVALIDATION)
                return True
            return False


def cache_class(mutant: str | None) -> type[Cache]:
    """The in-process cache class to construct for ``mutant`` (the real one otherwise)."""
    if mutant == "no-version-guard":
        return NoVersionGuardCache
    if mutant == "no-tombstone":
        return NoTombstoneCache
    return Cache


class CaughtUpHolder:
    """Mutant wrapper: the watermark always reads as now; the tailer's writes are kept
    (and ignored by reads)."""

    def __init__(self, inner: Holder) -> None:
        self.inner = inner
        self.name = inner.name

    @property
    def watermark(self) -> float:
        return time.time()

    @watermark.setter
    def watermark(self, value: float) -> None:
        self.inner.watermark = value

    async def apply(self, key: str, version: int) -> None:
        await self.inner.apply(key, version)


def check(mutant: str | None) -> None:
    if mutant is not None and mutant not in MUTANTS:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(MUTANTS)}")
