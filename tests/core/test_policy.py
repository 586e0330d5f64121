"""Policy behaviour: W-TinyLFU survives loops and scans; LRU is exact LRU."""

from __future__ import annotations

from maxage.core import ENTRY_OVERHEAD, MISSING, Cache, ManualClock
from maxage.core.policy import FrequencySketch, LruPolicy, TinyLfuPolicy, make_policy


def hit_ratio(policy: str, keys: list[str], capacity: int) -> float:
    c = Cache(capacity * (ENTRY_OVERHEAD + 8), clock=ManualClock(0.0), policy=policy, seed=1)
    hits = 0
    for k in keys:
        if c.get(k) is not MISSING:
            hits += 1
        else:
            c.set_if_newer(k, 1, b"", started_at=0.0)
        assert len(c) <= capacity
    return hits / len(keys)


def test_loop_larger_than_cache() -> None:
    keys = [f"{i:08d}" for i in range(120)] * 40
    assert hit_ratio("lru", keys, 100) == 0.0
    assert hit_ratio("adaptive", keys, 100) > 0.5


def test_scan_resistance() -> None:
    hot = [f"h{i:07d}" for i in range(50)]
    keys: list[str] = []
    for r in range(40):
        keys += hot * 2
        keys += [f"s{r:03d}{j:04d}" for j in range(150)]  # one-shot scan
    assert hit_ratio("adaptive", keys, 100) > hit_ratio("lru", keys, 100) + 0.15


def test_sketch_counts_and_ages() -> None:
    s = FrequencySketch(64)
    for _ in range(5):
        s.increment("a")
    assert s.frequency("a") >= 5
    assert s.frequency("never") <= 1
    s.reset()
    assert 1 <= s.frequency("a") <= 3


def test_policy_weights_and_victims() -> None:
    for p in (LruPolicy(10), TinyLfuPolicy(10, seed=1), make_policy("tinylfu", 10)):
        for i in range(12):
            victims = p.admit(f"k{i}", 1)
            assert p.weight <= 10
            for v in victims:
                assert v.startswith("k")
        p.on_update("k11", 3) if p.weight else None
        p.evict()
        assert p.weight <= 10
        p.clear()
        assert p.weight == 0
