"""Cache.top_tags: the tags on the most live entries (the cache server's status page)."""

from __future__ import annotations

from maxage.core import Cache, ManualClock


def test_top_tags_counts_live_entries_and_fills_with_single_tags() -> None:
    clock = ManualClock()
    c = Cache(1 << 20, clock=clock)
    for i in range(6):
        c.set_if_newer(
            f"k{i}", 1, b"x", started_at=clock.now(), tags=("all", f"own{i}", f"g{i % 2}")
        )
    assert c.top_tags(3) == [("all", 6), ("g0", 3), ("g1", 3)]
    assert [t for t, n in c.top_tags(4)][3].startswith("own")  # one entry each: fill-ins
    c.delete("k0")
    c.delete("k2")
    assert c.top_tags(2) == [("all", 4), ("g1", 3)]
    assert Cache(1024, clock=clock).top_tags(5) == []
