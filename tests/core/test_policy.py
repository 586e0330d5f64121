"""Policy behaviour: W-TinyLFU survives loops and scans; LRU is exact LRU."""

from __future__ import annotations

from maxage.core import ENTRY_OVERHEAD, MISSING, Cache, ManualClock
from maxage.core.climber import SHADOW_SHIFT
from maxage.core.policy import LruPolicy, TinyLfuPolicy, make_policy
from maxage.core.sketch import MIX, FrequencySketch


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


def test_window_follows_a_recency_workload() -> None:
    """Every key is reused once, 300 requests later, then never again: LRU holds
    it, a 1% window cannot (the newcomer loses its duel). The shadows must move
    the window toward LRU."""
    keys: list[str] = []
    for i in range(60_000):
        keys.append(f"n{i:07d}")
        if i >= 150:
            keys.append(f"n{i - 150:07d}")
    lru = hit_ratio("lru", keys, 400)
    fixed = hit_ratio("tinylfu", keys, 400)
    adaptive = hit_ratio("adaptive", keys, 400)
    assert lru > 0.45 and fixed < 0.2, (lru, fixed)
    assert adaptive > lru - 0.1, (adaptive, lru)  # without the shadows: 0.01


def test_shadows_sample_fewer_keys_in_a_big_cache() -> None:
    p = TinyLfuPolicy(100_000, seed=1)
    for i in range(100_000):
        for v in p.admit(f"k{i:07d}", 1):
            assert v.startswith("k")
    climber = p._climber
    assert climber is not None
    shadows = climber.shadows
    assert shadows and climber.mask > (1 << SHADOW_SHIFT) - 1
    mask = climber.mask
    for sh in shadows:
        assert sh.maximum == 100_000 // (mask + 1)
        keys = [*sh.window, *sh.probation, *sh.protected]
        assert keys and all(not hash(k) % MIX & mask for k in keys)
        assert sh.weight == len(keys) <= sh.maximum


def test_hits_the_read_buffer_drops_are_kept_on_the_entry() -> None:
    """More hits between two writes than the read buffer holds: the replay sees the
    last READ_BUFFER of them, the entry keeps count of the rest for the duel."""
    from maxage.core.cache import READ_BUFFER

    c = Cache(100 * (ENTRY_OVERHEAD + 8), clock=ManualClock(0.0), seed=1, thread_safe=False)
    for i in range(50):
        c.set_if_newer(f"k{i:07d}", 1, b"", started_at=0.0)
    hits = READ_BUFFER + 300
    for _ in range(hits):
        e = c.get("k0000007")
    assert e is not MISSING
    assert e.unreplayed_hits == hits  # counted on the hit path, replayed later
    c.set_if_newer("other", 1, b"", started_at=0.0)  # a write replays the buffer
    assert e.unreplayed_hits == hits - READ_BUFFER  # what the full buffer dropped


def test_duels_read_the_records_once_the_read_buffer_was_full() -> None:
    """Only a full read buffer drops hits: until storage drains a full one, every
    record's count of dropped hits is 0 and W-TinyLFU's duels do not read them."""
    from maxage.core.cache import READ_BUFFER

    c = Cache(100 * (ENTRY_OVERHEAD + 8), clock=ManualClock(0.0), seed=1, thread_safe=False)
    policy = c._policy
    assert isinstance(policy, TinyLfuPolicy)
    for i in range(300):  # full, so fills duel
        c.set_if_newer(f"k{i:07d}", 1, b"", started_at=0.0)
        for _ in range(i % 5):
            c.get(f"k{i // 2:07d}")
    assert not policy.hits_dropped
    assert all(e.unreplayed_hits == 0 for e in c._data.values())
    hot = c.keys()[-1]
    for _ in range(READ_BUFFER):
        assert c.get(hot) is not MISSING
    c.set_if_newer("other", 1, b"", started_at=0.0)
    assert policy.hits_dropped  # a full buffer was drained
    c.clear()
    assert not policy.hits_dropped
