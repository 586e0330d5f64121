"""Eviction/admission policies, kept apart from storage (Caffeine's split).

Storage (:class:`maxage.core.cache.Cache`) owns entries, bytes, TTL and
tombstones. A policy only sees keys and weights and decides two things: which
resident keys to give up when the weighted total exceeds the maximum
(victims), and -- for admission policies -- whether a newcomer is worth a
resident. See ``cache.py`` for the contract between the two and
``docs/adr/0002-eviction-policy.md`` for why the default is what it is.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

__all__ = ["LruPolicy", "Policy", "make_policy"]


class Policy(Protocol):
    """What storage needs from a policy.

    Every method is called with the cache lock held (or from the single event
    loop), so implementations need no locking of their own.

    * ``on_hit(key)`` -- ``key`` is resident and was read. Must be cheap.
    * ``on_insert(key, weight)`` -- ``key`` became resident.
    * ``on_update(key, weight)`` -- a resident ``key`` got a new value/weight.
    * ``on_remove(key)`` -- storage removed a resident ``key`` (TTL,
      invalidation, clear); the policy forgets it.
    * ``evict()`` -- called after inserts/updates; returns the keys storage must
      drop so that the weighted total is <= the maximum. The returned keys are
      already forgotten by the policy.
    """

    on_hit: Callable[[str], object]

    def on_insert(self, key: str, weight: int) -> None: ...
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

    def on_insert(self, key: str, weight: int) -> None:
        self._order[key] = weight
        self._weight += weight

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


POLICIES: dict[str, Callable[[int, int | None], Policy]] = {
    "lru": lambda maximum, seed: LruPolicy(maximum),
    "adaptive": lambda maximum, seed: LruPolicy(maximum),  # replaced by W-TinyLFU below
}


def make_policy(name: str, maximum: int, seed: int | None = None) -> Policy:
    """Build the policy called ``name`` for a weighted maximum of ``maximum``."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"policy must be one of {sorted(POLICIES)}, got {name!r}") from None
    return factory(maximum, seed)
