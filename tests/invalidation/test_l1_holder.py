"""The in-process cache as a tailer holder (``invalidation/tailer.py``, ``L1Holder``).

A change at version 1 is not applied to the cache (it would drop nothing and its
tombstone would refuse nothing: versions start at 1); the generation still rises.
These tests pin that the cache then behaves, for every fill and read, exactly as
after the invalidation, and that later versions are applied as before.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.core.types import MISSING, SetOutcome
from maxage.invalidation.tailer import Generations, L1Holder


def _holder() -> tuple[L1Holder, Cache, Generations]:
    cache = Cache(1 << 20, clock=ManualClock(100.0), thread_safe=False)
    generations = Generations()
    return L1Holder(cache, 100.0, generations), cache, generations


def test_version_1_leaves_no_tombstone_and_raises_the_generation() -> None:
    holder, cache, generations = _holder()
    asyncio.run(holder.apply("products/a", 1))
    assert cache.tombstone("products/a") is None
    assert generations.of("products") == 1


def test_version_1_keeps_a_filled_first_version() -> None:
    holder, cache, _ = _holder()
    cache.set_if_newer("products/a", 1, b"{}", started_at=100.0)
    asyncio.run(holder.apply("products/a", 1))
    entry = cache.get("products/a")
    assert entry is not MISSING and entry.version == 1


def test_later_versions_are_applied() -> None:
    holder, cache, generations = _holder()
    cache.set_if_newer("products/a", 1, b"{}", started_at=100.0)
    asyncio.run(holder.apply("products/a", 2))
    assert cache.get("products/a") is MISSING
    assert cache.tombstone("products/a") == 2
    assert cache.set_if_newer("products/a", 1, b"{}", started_at=100.0) is (
        SetOutcome.REFUSED_TOMBSTONE
    )
    assert generations.of("products") == 1


@settings(max_examples=200, deadline=None)
@given(
    before=st.lists(st.integers(1, 4), max_size=3),
    after=st.lists(st.integers(1, 4), min_size=1, max_size=4),
)
def test_skipping_version_1_is_the_invalidation(before: list[int], after: list[int]) -> None:
    """Fills before and after: the same outcomes and the same stored version as a cache
    that did invalidate at version 1."""
    holder, skipped, _ = _holder()
    applied = Cache(1 << 20, clock=ManualClock(100.0), thread_safe=False)
    for v in before:
        assert skipped.set_if_newer("k/a", v, b"x", started_at=100.0) is applied.set_if_newer(
            "k/a", v, b"x", started_at=100.0
        )
    asyncio.run(holder.apply("k/a", 1))
    applied.invalidate("k/a", 1)
    for v in after:
        assert skipped.set_if_newer("k/a", v, b"x", started_at=100.0) is applied.set_if_newer(
            "k/a", v, b"x", started_at=100.0
        )
        a, b = skipped.get("k/a"), applied.get("k/a")
        assert (None if a is MISSING else a.version) == (None if b is MISSING else b.version)


def test_version_0_is_no_version() -> None:
    with pytest.raises(ValueError):
        Cache(1 << 20, clock=ManualClock(0.0)).set_if_newer("k/a", 0, b"x", started_at=0.0)
