"""Unit tests of maxage.core.Cache (no sleeps: ManualClock)."""

from __future__ import annotations

import math
import sys
import threading

import pytest

from maxage.core import (
    ENTRY_OVERHEAD,
    MISSING,
    Cache,
    Entry,
    EvictionReason,
    ManualClock,
    SetOutcome,
)

POLICIES = ["lru", "adaptive"]


def make(max_bytes: int = 100_000, policy: str = "adaptive", **kw: object) -> Cache:
    return Cache(max_bytes, clock=ManualClock(1000.0), policy=policy, **kw)  # type: ignore[arg-type]


def size_of(key: str, body: bytes) -> int:
    return len(body) + len(key) + ENTRY_OVERHEAD


@pytest.mark.parametrize("policy", POLICIES)
def test_set_get_versions(policy: str) -> None:
    c = make(policy=policy)
    assert c.get("a") is MISSING
    assert c.set_if_newer("a", 1, b"v1", started_at=999.0) is SetOutcome.STORED
    e = c.get("a")
    assert isinstance(e, Entry)
    assert (e.version, e.body, e.filled_at, e.expires_at) == (1, b"v1", 999.0, math.inf)
    assert c.set_if_newer("a", 1, b"v1", started_at=999.0) is SetOutcome.UNCHANGED
    assert c.set_if_newer("a", 3, b"v3", started_at=999.0) is SetOutcome.STORED
    assert c.set_if_newer("a", 2, b"v2", started_at=999.0) is SetOutcome.REFUSED_OLDER
    assert c.get("a").version == 3  # type: ignore[union-attr]
    assert c.stats.hits == 2 and c.stats.misses == 1 and c.stats.stores == 2
    assert c.stats.refusals[SetOutcome.UNCHANGED] == 1
    assert c.stats.refusals[SetOutcome.REFUSED_OLDER] == 1
    assert len(c) == 1 and "a" in c and "b" not in c
    assert c.bytes_used == size_of("a", b"v3")


def test_cached_none_meta_and_empty_body_is_a_hit() -> None:
    c = make()
    c.set_if_newer("k", 1, b"", started_at=0.0, meta=None)
    assert c.get("k") is not MISSING
    assert not MISSING


def test_peek_has_no_stats() -> None:
    c = make()
    c.set_if_newer("a", 1, b"x", started_at=1000.0)
    assert c.peek("a").body == b"x"  # type: ignore[union-attr]
    assert c.peek("b") is MISSING
    assert c.stats.hits == 0 and c.stats.misses == 0


def test_ttl_from_started_at_and_expired_never_served() -> None:
    clock = ManualClock(1000.0)
    c = Cache(100_000, clock=clock)
    c.set_if_newer("a", 1, b"x", started_at=990.0, ttl=15.0)
    assert c.get("a").expires_at == 1005.0  # type: ignore[union-attr]
    clock.advance(4.9)
    assert c.peek("a") is not MISSING
    clock.advance(0.1)
    assert c.peek("a") is MISSING
    assert "a" not in c
    assert c.get("a") is MISSING
    assert c.stats.evictions[EvictionReason.TTL] == 1
    assert len(c) == 0 and c.bytes_used == 0


def test_expired_entries_pruned_by_writes() -> None:
    clock = ManualClock(0.0)
    c = Cache(10_000_000, clock=clock)
    for i in range(100):
        c.set_if_newer(f"k{i}", 1, b"x", started_at=0.0, ttl=1.0)
    clock.advance(2)
    for i in range(100):
        c.set_if_newer(f"n{i}", 1, b"x", started_at=2.0)
    assert len(c) == 100
    assert c.stats.evictions[EvictionReason.TTL] == 100


def test_ttl_jitter_only_shortens() -> None:
    c2 = Cache(100_000, clock=ManualClock(0.0), ttl_jitter=0.5, seed=1)
    for i in range(50):
        c2.set_if_newer(f"k{i}", 1, b"x", started_at=0.0, ttl=100.0)
    exps = {c2.peek(f"k{i}").expires_at for i in range(50)}  # type: ignore[union-attr]
    assert all(50.0 < x <= 100.0 for x in exps) and len(exps) > 10


def test_invalidate_and_tombstone() -> None:
    clock = ManualClock(0.0)
    c = Cache(100_000, clock=clock, tombstone_ttl=10.0)
    c.set_if_newer("a", 3, b"x", started_at=0.0)
    assert c.invalidate("a", 3) is False  # not older than 3
    assert c.get("a").version == 3  # type: ignore[union-attr]
    assert c.invalidate("a", 5) is True
    assert c.get("a") is MISSING
    assert c.tombstone("a") == 5
    assert c.invalidate("a", 4) is False  # out of order: tombstone stays 5
    assert c.tombstone("a") == 5
    assert c.set_if_newer("a", 4, b"x", started_at=0.0) is SetOutcome.REFUSED_TOMBSTONE
    assert c.set_if_newer("a", 5, b"x", started_at=0.0) is SetOutcome.STORED
    assert c.stats.evictions[EvictionReason.INVALIDATION] == 1
    clock.advance(10.0)
    assert c.tombstone("a") is None


def test_tombstones_are_bounded() -> None:
    clock = ManualClock(0.0)
    c = Cache(100_000, clock=clock, tombstone_ttl=1.0)
    for i in range(1000):
        c.invalidate(f"k{i}", 2)
        clock.advance(0.01)
    # only tombstones younger than tombstone_ttl (~100) plus a bounded lag remain
    assert len(c._tombs) <= 110
    clock.advance(5)
    for i in range(200):
        c.invalidate(f"z{i}", 1)
    assert len(c._tombs) <= 200  # the old ones were pruned, 8 per call


def test_delete_leaves_tombstone_above_stored() -> None:
    c = make()
    c.set_if_newer("a", 7, b"x", started_at=0.0)
    assert c.delete("a") is True
    assert c.tombstone("a") == 8
    assert c.set_if_newer("a", 7, b"x", started_at=0.0) is SetOutcome.REFUSED_TOMBSTONE
    assert c.delete("a") is False
    assert c.tombstone("a") == 9


def test_put_unversioned() -> None:
    c = make()
    assert c.put("a", b"1", started_at=0.0) == (SetOutcome.STORED, 1)
    assert c.put("a", b"2", started_at=0.0) == (SetOutcome.STORED, 2)
    c.delete("a")
    assert c.put("a", b"3", started_at=0.0) == (SetOutcome.STORED, 4)
    assert c.get("a").body == b"3"  # type: ignore[union-attr]


def test_invalidate_prefix_refuses_earlier_fills() -> None:
    clock = ManualClock(100.0)
    c = Cache(100_000, clock=clock, tombstone_ttl=30.0)
    for k in ("users/1", "users/2", "orders/1"):
        c.set_if_newer(k, 1, b"x", started_at=99.0)
    assert c.invalidate_prefix("users/") == 2
    assert list(sorted(c.keys())) == ["orders/1"]
    # a fill whose read started before the invalidation is refused
    assert c.set_if_newer("users/1", 2, b"y", started_at=100.0) is SetOutcome.REFUSED_TOMBSTONE
    assert c.put("users/3", b"y", started_at=99.5)[0] is SetOutcome.REFUSED_TOMBSTONE
    # one that started after is fine; other prefixes are unaffected
    assert c.set_if_newer("users/1", 2, b"y", started_at=100.5) is SetOutcome.STORED
    assert c.set_if_newer("orders/2", 1, b"y", started_at=1.0) is SetOutcome.STORED
    clock.advance(30.0)
    assert c.set_if_newer("users/9", 1, b"y", started_at=1.0) is SetOutcome.STORED


def test_invalidate_tag() -> None:
    clock = ManualClock(100.0)
    c = Cache(100_000, clock=clock)
    c.set_if_newer("a", 1, b"x", started_at=99.0, tags=["t1", "t2"])
    c.set_if_newer("b", 1, b"x", started_at=99.0, tags=("t2",))
    c.set_if_newer("c", 1, b"x", started_at=99.0)
    assert c.invalidate_tag("t2") == 2
    assert c.keys() == ["c"]
    assert c.set_if_newer("a", 2, b"x", started_at=99.0, tags=["t2"]) is (
        SetOutcome.REFUSED_TOMBSTONE
    )
    assert c.set_if_newer("a", 2, b"x", started_at=99.0, tags=["t1"]) is SetOutcome.STORED
    assert c.invalidate_tag("t1") == 1
    assert c.invalidate_tag("t1") == 0
    assert c._by_tag == {}


def test_too_large_refused_and_drops_stale() -> None:
    c = make(max_bytes=ENTRY_OVERHEAD + 100)
    assert c.set_if_newer("a", 1, b"x" * 50, started_at=0.0) is SetOutcome.STORED
    assert c.set_if_newer("a", 2, b"x" * 100, started_at=0.0) is SetOutcome.REFUSED_TOO_LARGE
    assert c.get("a") is MISSING and c.bytes_used == 0
    assert c.set_if_newer("a", 1, b"x", started_at=0.0) is SetOutcome.REFUSED_TOMBSTONE
    assert c.stats.refusals[SetOutcome.REFUSED_TOO_LARGE] == 1


@pytest.mark.parametrize("policy", POLICIES)
def test_byte_bound_never_exceeded(policy: str) -> None:
    c = make(max_bytes=20 * (ENTRY_OVERHEAD + 110), policy=policy)
    for i in range(500):
        body = b"x" * (i * 37 % 400)
        c.set_if_newer(f"k{i % 60:03d}", i + 1, body, started_at=0.0)
        c.get(f"k{(i * 7) % 60:03d}")
        assert c.bytes_used <= c.max_bytes
        assert c.bytes_used == sum(e.size for e in c._data.values())
    assert c.stats.evictions[EvictionReason.SIZE] > 0


@pytest.mark.parametrize("policy", POLICIES)
def test_lru_like_eviction_keeps_hot_keys(policy: str) -> None:
    c = make(max_bytes=10 * size_of("k000", b"x"), policy=policy)
    for i in range(10):
        c.set_if_newer(f"k{i:03d}", 1, b"x", started_at=0.0)
    for _ in range(5):
        c.get("k000")
    for i in range(10, 30):
        c.set_if_newer(f"k{i:03d}", 1, b"x", started_at=0.0)
        c.get("k000")
    assert "k000" in c
    assert len(c) <= 10


def test_bad_input() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="max_bytes"):
        Cache(0, clock=clock)
    with pytest.raises(ValueError, match="tombstone_ttl"):
        Cache(10, clock=clock, tombstone_ttl=-1)
    with pytest.raises(ValueError, match="policy"):
        Cache(10, clock=clock, policy="nope")
    c = Cache(100_000, clock=clock)
    with pytest.raises(TypeError, match="body"):
        c.set_if_newer("a", 1, "str", started_at=0.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="body"):
        c.put("a", bytearray(b"x"), started_at=0.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="version"):
        c.set_if_newer("a", 0, b"x", started_at=0.0)
    with pytest.raises(ValueError, match="version"):
        c.invalidate("a", 0)
    with pytest.raises(ValueError, match="ttl"):
        c.set_if_newer("a", 1, b"x", started_at=0.0, ttl=-1.0)
    with pytest.raises(TypeError, match="tags"):
        c.set_if_newer("a", 1, b"x", started_at=0.0, tags=[1])  # type: ignore[list-item]
    assert len(c) == 0 and c.bytes_used == 0 and c.stats.stores == 0


def test_clear_and_snapshot() -> None:
    c = make()
    c.set_if_newer("a", 1, b"x", started_at=0.0, tags=["t"])
    c.invalidate("b", 3)
    c.get("a")
    c.get("zz")
    snap = c.stats_snapshot()
    assert snap["hits"] == 1 and snap["misses"] == 1 and snap["entries"] == 1
    assert snap["tombstones"] == 1
    assert snap["evictions"] == {"size": 0, "ttl": 0, "invalidation": 0}
    c.clear()
    assert len(c) == 0 and c.bytes_used == 0 and c.tombstone("b") is None


@pytest.mark.parametrize("thread_safe", [True, False])
def test_thread_safe_flag(thread_safe: bool) -> None:
    c = make(thread_safe=thread_safe)
    c.set_if_newer("a", 1, b"x", started_at=1000.0)
    assert c.get("a") is not MISSING and c.peek("a") is not MISSING


def test_threads_hammer_keeps_invariants() -> None:
    c = make(max_bytes=50 * (ENTRY_OVERHEAD + 20))
    errors: list[BaseException] = []

    def work(tid: int) -> None:
        try:
            for i in range(2000):
                k = f"k{(i * (tid + 1)) % 120}"
                c.set_if_newer(k, i + 1, b"y" * (i % 10), started_at=1000.0)
                c.get(k)
                if i % 17 == 0:
                    c.invalidate(k, i + 2)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert c.bytes_used <= c.max_bytes
    assert c.bytes_used == sum(e.size for e in c._data.values())


def test_entry_overhead_is_measured() -> None:
    import tracemalloc

    c = Cache(10**9, clock=ManualClock(0.0), thread_safe=False)
    keys = [f"key-{i:08d}" for i in range(20_000)]
    bodies = [b"" for _ in keys]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k, b in zip(keys, bodies, strict=True):
            c.set_if_newer(k, 1, b, started_at=0.0, ttl=5.0)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    # the key and body objects already existed: add their headers
    per_entry = (after - before) / len(keys) + sys.getsizeof("") + sys.getsizeof(b"")
    assert per_entry <= ENTRY_OVERHEAD, per_entry
