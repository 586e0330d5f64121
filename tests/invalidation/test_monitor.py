"""The in-service consistency monitor (docs/consistency.md "In-service monitor").

Unit tests drive a :class:`ConsistencyMonitor` on the real SQLite primary with a
:class:`ManualClock`; the black-box tests start ``maxage serve`` and read ``/metrics``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from maxage.contracts import ReadMode, parse_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock, SystemClock
from maxage.invalidation.monitor import STALENESS_BUCKETS, ConsistencyMonitor
from maxage.service import Service, Source, WriteIntent, WriteKind, prepare
from maxage.store.base import StoreError, WriteRequest
from maxage.store.sqlite import SQLiteStore
from tests.api.conftest import MaxageServer, metric

BOUND = 5.0
CONFIG = {
    "collections": {
        "docs": {
            "max_staleness": f"{BOUND}s",
            "write_policy": "write-around",
            "ttl": "1h",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        }
    }
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await s.open()
    yield s
    await s.close()


async def write(store: SQLiteStore, clock: ManualClock, id: str, n: int) -> int:
    r = await store.write(WriteRequest("docs", id, lambda _: b'{"n":%d}' % n, clock.now()))
    return r.document.version


def staleness_bucket(m: ConsistencyMonitor, le: float) -> int:
    t = m.tallies["docs"]
    return sum(t.counts[: STALENESS_BUCKETS.index(le) + 1])


async def test_old_version_served_after_the_bound_is_a_violation(
    store: SQLiteStore, clock: ManualClock
) -> None:
    m = ConsistencyMonitor(store, clock, sample_every=1, delay=1.0)
    v1 = await write(store, clock, "a", 1)
    clock.advance(10)
    await write(store, clock, "a", 2)  # committed at t
    clock.advance(BOUND + 2)  # the hit of v1 is 7 s after v2's commit: beyond the bound
    m.record_hit("docs", "a", v1, clock.now(), BOUND)
    assert await m.check_due() == 0  # not due before ``delay``
    clock.advance(1.0)
    assert await m.check_due() == 1
    assert (m.checked, m.violations, m.errors) == (1, 1, 0)
    t = m.tallies["docs"]
    assert t.sum == pytest.approx(BOUND + 2)
    assert staleness_bucket(m, 5.0) == 0 and staleness_bucket(m, 10.0) == 1


async def test_old_version_within_the_bound_is_checked_not_a_violation(
    store: SQLiteStore, clock: ManualClock
) -> None:
    m = ConsistencyMonitor(store, clock, sample_every=1, delay=1.0)
    v1 = await write(store, clock, "a", 1)
    clock.advance(10)
    await write(store, clock, "a", 2)
    clock.advance(BOUND - 0.5)  # stale by 4.5 s, allowed by a 5 s bound
    m.record_hit("docs", "a", v1, clock.now(), BOUND)
    m.record_hit("docs", "a", v1 + 1, clock.now(), BOUND)  # the latest: staleness 0
    clock.advance(1.0)
    assert await m.check_due() == 2
    assert (m.checked, m.violations) == (2, 0)
    assert staleness_bucket(m, 0.0) == 1  # the latest version
    assert staleness_bucket(m, 5.0) == 2
    assert m.tallies["docs"].sum == pytest.approx(BOUND - 0.5)


async def test_a_newer_version_committed_after_the_hit_is_not_stale(
    store: SQLiteStore, clock: ManualClock
) -> None:
    m = ConsistencyMonitor(store, clock, sample_every=1, delay=1.0)
    v1 = await write(store, clock, "a", 1)
    served = clock.now()
    clock.advance(0.5)
    await write(store, clock, "a", 2)  # after the hit: the hit was current
    m.record_hit("docs", "a", v1, served, 0.0)
    clock.advance(1.0)
    await m.check_due()
    assert (m.checked, m.violations) == (1, 0)
    assert staleness_bucket(m, 0.0) == 1


async def test_sampling_records_exactly_one_in_n_hits(
    tmp_path: Path, store: SQLiteStore, clock: ManualClock
) -> None:
    n = 7
    cache = Cache(1 << 20, clock=clock, tombstone_ttl=120.0)
    m = ConsistencyMonitor(store, clock, sample_every=n)
    service = Service(parse_config(CONFIG, "test").collections, store, cache, clock, monitor=m)
    for s in service.tailer.states:
        s.holder.watermark = clock.now()
    spec = service.collections["docs"]
    await service.writes.commit(prepare(spec, WriteIntent(WriteKind.REPLACE, "a", {"n": 1})))
    first = await service.reads.read(spec, "a", ReadMode.BOUNDED)
    assert first.source is Source.PRIMARY  # a miss is never sampled
    hits = 0
    for i in range(5 * n + 3):
        if i % 2:
            r = await service.reads.read(spec, "a", ReadMode.BOUNDED)
            assert r.source is Source.L1
        else:
            assert isinstance(service.reads.l1("docs/a", spec.max_staleness, 0, clock.now()), tuple)
        hits += 1
    assert m.recorded == len(m.pending) == hits // n == 5
    assert all(h.collection == "docs" and h.id == "a" and h.bound == BOUND for h in m.pending)


async def test_service_hit_with_a_broken_watermark_is_counted(
    store: SQLiteStore, clock: ManualClock
) -> None:
    """A holder that claims to be caught up when it is not (the no-watermark mutant)."""
    cache = Cache(1 << 20, clock=clock, tombstone_ttl=120.0)
    m = ConsistencyMonitor(store, clock, sample_every=1, delay=1.0)
    service = Service(parse_config(CONFIG, "test").collections, store, cache, clock, monitor=m)
    spec = service.collections["docs"]
    service.l1_holder.watermark = clock.now()
    await service.writes.commit(prepare(spec, WriteIntent(WriteKind.REPLACE, "a", {"n": 1})))
    await service.reads.read(spec, "a", ReadMode.BOUNDED)  # fills v1
    await write(store, clock, "a", 2)  # another process; this tailer never polls
    clock.advance(BOUND + 1)
    service.l1_holder.watermark = clock.now()  # the lie
    r = await service.reads.read(spec, "a", ReadMode.BOUNDED)
    assert r.source is Source.L1 and r.version == 1
    clock.advance(1.0)
    assert await m.check_due() == 1
    assert (m.checked, m.violations) == (1, 1)


async def test_full_queue_drops_and_counts(store: SQLiteStore, clock: ManualClock) -> None:
    m = ConsistencyMonitor(store, clock, sample_every=1, max_pending=3)
    for i in range(5):
        m.record_hit("docs", f"k{i}", 1, clock.now(), BOUND)
    assert (len(m.pending), m.recorded, m.dropped) == (3, 3, 2)
    clock.advance(2.0)
    assert await m.check_due() == 3
    assert m.checked == 3 and m.violations == 0  # documents that never existed: nothing newer
    m.record_hit("docs", "k9", 1, clock.now(), BOUND)  # room again
    assert (len(m.pending), m.dropped) == (1, 2)


async def test_hits_of_one_version_in_a_pass_share_one_look_up(
    store: SQLiteStore, clock: ManualClock
) -> None:
    """Each hit is still classified by its own serving time; the primary is asked once
    per (document, version) in the pass."""
    asked: list[tuple[str, str, int]] = []
    committed_at = store.committed_at

    async def counted(collection: str, id: str, version: int) -> float | None:
        asked.append((collection, id, version))
        return await committed_at(collection, id, version)

    m = ConsistencyMonitor(store, clock, sample_every=1, delay=1.0)
    v1 = await write(store, clock, "a", 1)
    clock.advance(10)
    await write(store, clock, "a", 2)
    m.record_hit("docs", "a", v1, clock.now(), BOUND)  # within the bound
    clock.advance(BOUND + 1)
    m.record_hit("docs", "a", v1, clock.now(), BOUND)  # the same version, now too old
    m.record_hit("docs", "a", v1 + 1, clock.now(), BOUND)  # the latest
    store.committed_at = counted  # type: ignore[method-assign]
    clock.advance(1.0)
    assert await m.check_due() == 3
    assert sorted(asked) == [("docs", "a", v1), ("docs", "a", v1 + 1)]
    assert (m.checked, m.violations) == (3, 1)
    await m.check_due(everything=True)
    m.record_hit("docs", "a", v1, clock.now(), BOUND)
    clock.advance(1.0)
    assert await m.check_due() == 1  # a later pass asks again
    assert len(asked) == 3


async def test_failed_checks_are_counted_as_errors(store: SQLiteStore, clock: ManualClock) -> None:
    async def unavailable(collection: str, id: str, version: int) -> float | None:
        raise StoreError("primary down")

    m = ConsistencyMonitor(store, clock, sample_every=1)
    m.record_hit("docs", "a", 1, clock.now(), BOUND)
    m.record_hit("docs", "b", 1, clock.now(), BOUND)
    store.committed_at = unavailable  # type: ignore[method-assign]
    clock.advance(2.0)
    assert await m.check_due() == 2  # counted, not retried
    assert (m.checked, m.errors, len(m.pending)) == (0, 2, 0)


async def test_background_task_checks_after_the_delay(store: SQLiteStore) -> None:
    m = ConsistencyMonitor(store, SystemClock(), sample_every=1, delay=0.05)
    await m.start()
    try:
        m.record_hit("docs", "a", 1, time.time(), BOUND)
        deadline = time.monotonic() + 5
        while m.checked == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert m.checked == 1 and not m.pending
    finally:
        await m.stop()


# -- black box: a running server ------------------------------------------------------

MUTANT_CONFIG = """
[collections.docs]
max_staleness = "500ms"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-around"
ttl = "120s"

[collections.docs.schema]
type = "object"
[collections.docs.schema.properties.n]
type = "integer"
"""


def poll_metrics(http: httpx.Client, until: str, at_least: float, deadline_s: float = 15.0) -> str:
    deadline = time.monotonic() + deadline_s
    while True:
        text = http.get("/metrics").text
        if sum_metric(text, until) >= at_least or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def sum_metric(text: str, name: str) -> float:
    """The sum of a family's samples over its labels."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rpartition(" ")[2])
    return total


def test_running_server_checks_hits_and_finds_no_violation(tmp_path: Path) -> None:
    server = MaxageServer(tmp_path, "--monitor-sample", "1")
    try:
        with server.client() as http:
            r = http.put("/v1/products/p1", json={"name": "pen", "price": 1.5})
            assert r.status_code in (200, 201), r.text
            for _ in range(20):
                assert http.get("/v1/products/p1").status_code == 200
            text = poll_metrics(http, "maxage_consistency_checked_total", 1)
            assert metric(text, "maxage_consistency_checked_total", collection="products") > 0
            assert sum_metric(text, "maxage_consistency_violations_total") == 0
            assert "maxage_consistency_staleness_seconds_bucket" in text
            assert metric(text, "maxage_consistency_sample_every") == 1
    finally:
        assert server.stop() == 0


def test_monitor_off(tmp_path: Path) -> None:
    server = MaxageServer(tmp_path, "--monitor-sample", "0")
    try:
        with server.client() as http:
            assert "maxage_consistency_checked_total" not in http.get("/metrics").text
    finally:
        server.stop()


def test_running_mutant_is_counted_as_a_violation(tmp_path: Path) -> None:
    """no-watermark + stall-tailer + drop: stale hits past the bound, seen by the monitor."""
    cfg = tmp_path / "docs.toml"
    cfg.write_text(MUTANT_CONFIG)
    server = MaxageServer(tmp_path, "--config", str(cfg), "--monitor-sample", "1",
                          "--fault-injection", "--mutant", "no-watermark")  # fmt: skip
    try:
        with server.client() as http:
            assert http.put("/v1/docs/a", json={"n": 1}).status_code in (200, 201)
            assert http.get("/v1/docs/a").json()["meta"]["version"] == 1  # fill
            r = http.put("/_maxage/faults", json={"faults": {"stall-tailer": 1, "drop": 1}})
            assert r.status_code == 200, r.text
            assert http.put("/v1/docs/a", json={"n": 2}).status_code == 200
            time.sleep(1.0)  # twice the bound
            stale = http.get("/v1/docs/a")
            assert stale.headers["cache-status"].startswith("maxage; hit")
            assert stale.json()["meta"]["version"] == 1  # the mutant serves v1
            text = poll_metrics(http, "maxage_consistency_violations_total", 1)
            assert metric(text, "maxage_consistency_violations_total", collection="docs") >= 1
            http.delete("/_maxage/faults")
    finally:
        server.stop()
