"""Two ``maxage serve`` processes (A and B) on one PostgreSQL schema and one Redis database.

Write through A, read through B: strong reads see the write at once (P3), bounded reads
see it within ``max_staleness`` by invalidation from the change log (P2; TTL is 5 min,
the bound 1 s), session reads with A's ETag are never older (P4). A stalled tailer on B
turns into ``lagging`` bypasses, never stale reads. The change feed lists writes made
through both processes in commit order, resumes from a cursor, and streams over SSE.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.scaleout.conftest import (
    BOUND,
    Cluster,
    Server,
    create,
    metric,
    update,
    version_of,
    wait_for,
)

REDIS_DB = 11


@pytest.fixture(scope="module")
def pair(cluster_factory: object) -> Iterator[tuple[Server, Server]]:
    cluster: Cluster = cluster_factory(REDIS_DB)  # type: ignore[operator]
    a = cluster.server("a").start()
    b = cluster.server("b").start()
    yield a.ready(), b.ready()


@pytest.fixture(scope="module")
def ca(pair: tuple[Server, Server]) -> Iterator[httpx.Client]:
    with pair[0].client() as c:
        yield c


@pytest.fixture(scope="module")
def cb(pair: tuple[Server, Server]) -> Iterator[httpx.Client]:
    with pair[1].client() as c:
        yield c


def warm(c: httpx.Client, url: str, version: int) -> None:
    """Read until the reader serves ``version`` from its own in-process cache."""

    def hit() -> bool:
        r = c.get(url)
        return version_of(r) == version and "hit; detail=l1" in r.headers["cache-status"]

    wait_for(hit, 5, f"an L1 hit of {url} v{version}")


@pytest.mark.parametrize("collection", ["items", "notes"])
def test_strong_read_through_b_sees_a_write_at_once(
    ca: httpx.Client, cb: httpx.Client, collection: str
) -> None:
    doc = create(ca, collection)
    url = f"/v1/{collection}/{doc}"
    warm(cb, url, 1)
    for n in range(1, 21):
        version, _ = update(ca, collection, doc, n)
        strong = cb.get(url, params={"consistency": "strong"})
        assert version_of(strong) == version
        assert strong.json()["data"] == {"n": n}
        assert "detail=strong" in strong.headers["cache-status"]
        no_cache = cb.get(url, headers={"cache-control": "no-cache"})
        assert version_of(no_cache) == version


@pytest.mark.parametrize("collection", ["items", "notes"])
def test_bounded_read_through_b_is_fresh_within_the_bound(
    ca: httpx.Client, cb: httpx.Client, collection: str
) -> None:
    doc = create(ca, collection)
    url = f"/v1/{collection}/{doc}"
    for round_ in range(3):
        warm(cb, url, round_ + 1)
        version, acked = update(ca, collection, doc, round_ + 1)
        deadline = acked + BOUND + 2.0
        fresh_at = None
        while True:
            started = time.time()
            r = cb.get(url)
            got = version_of(r)
            assert got <= version  # P1: no version that was never written
            if started > acked + BOUND:
                # P2: a read that starts after ack + S returns the acknowledged version
                assert got == version, (round_, r.headers["cache-status"])
            if got == version:
                fresh_at = time.time()
                break
            assert time.time() < deadline, "bounded read never caught up"
        assert fresh_at - acked <= BOUND + 0.5
        # Invalidation, not expiry, did it (TTL is 5 min): the cache serves the new version.
        warm(cb, url, version)


def test_session_read_through_b_never_older_than_a_write(
    ca: httpx.Client, cb: httpx.Client
) -> None:
    doc = create(ca)
    url = f"/v1/items/{doc}"
    warm(cb, url, 1)
    for n in range(1, 21):
        version, _ = update(ca, "items", doc, n)
        etag = int(ca.get(url, params={"consistency": "strong"}).headers["etag"].strip('"'))
        assert etag == version
        r = cb.get(url, params={"min_version": str(version)})
        assert version_of(r) >= version
        assert r.json()["meta"]["consistency"] == "session"


def test_stalled_tailer_turns_into_lagging_bypasses_not_stale_reads(
    pair: tuple[Server, Server], ca: httpx.Client, cb: httpx.Client
) -> None:
    doc = create(ca)
    url = f"/v1/items/{doc}"
    warm(cb, url, 1)
    before = metric(cb.get("/metrics").text, "maxage_cache_bypasses_total", reason="lagging")
    r = cb.put("/_maxage/faults", json={"faults": {"stall-tailer": 1}})
    assert r.status_code == 200, r.text
    try:
        assert r.json()["faults"] == {"stall-tailer": 1.0}
        version, acked = update(ca, "items", doc, 7)
        lagging = None
        deadline = acked + BOUND + 3.0
        while lagging is None:
            started = time.time()
            r = cb.get(url)
            got = version_of(r)
            if started > acked + BOUND:
                assert got == version, r.headers["cache-status"]  # never a stale read
            if "bypass; detail=lagging" in r.headers["cache-status"]:
                lagging = r
            assert time.time() < deadline, "reads through B never bypassed as lagging"
        assert version_of(lagging) == version
        assert lagging.json()["meta"]["source"] == "primary"
        # every later read (tailer still stalled) bypasses too and is current
        for _ in range(5):
            r = cb.get(url)
            assert version_of(r) == version
            assert "bypass; detail=lagging" in r.headers["cache-status"]
        text = cb.get("/metrics").text
        assert metric(text, "maxage_cache_bypasses_total", reason="lagging") >= before + 6
        assert metric(text, "maxage_tailer_lag_seconds") > BOUND
    finally:
        assert cb.delete("/_maxage/faults").status_code == 200
    # P6: the tailer resumes, the watermark catches up, the cache serves again
    warm(cb, url, version)
    assert metric(cb.get("/metrics").text, "maxage_tailer_lag_seconds") <= BOUND


def _feed(c: httpx.Client, after: str, **params: str) -> list[dict[str, object]]:
    r = c.get("/v1/items/changes", params={"after": after, **params})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in r.text.splitlines() if line]


def test_change_feed_is_in_commit_order_across_processes_and_resumable(
    ca: httpx.Client, cb: httpx.Client
) -> None:
    existing = _feed(ca, "0")
    start = str(existing[-1]["cursor"]) if existing else "0"
    written: list[tuple[str, int]] = []
    docs = [create(ca), create(cb)]
    written += [(docs[0], 1), (docs[1], 1)]
    for i in range(10):
        writer = (ca, cb)[i % 2]
        doc = docs[(i // 2) % 2]
        version, _ = update(writer, "items", doc, i)
        written.append((doc, version))
    # each write was acknowledged before the next began: commit order is issue order
    for reader in (ca, cb):
        feed = _feed(reader, start)
        assert [(c["id"], c["version"]) for c in feed] == written
        cursors = [int(str(c["cursor"])) for c in feed]
        assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
        assert all(c["op"] == "put" for c in feed)
    feed = _feed(cb, start)
    # resuming from any cursor replays exactly what follows it
    for k in (0, 3, len(feed) - 1):
        assert _feed(ca, str(feed[k]["cursor"])) == feed[k + 1 :]
    assert _feed(cb, start, limit="4") == feed[:4]


def test_change_feed_sse_delivers_a_later_write(
    ca: httpx.Client, cb: httpx.Client, pair: tuple[Server, Server]
) -> None:
    doc = create(ca)
    tail = _feed(cb, "0")
    after = str(tail[-1]["cursor"]) if tail else "0"
    timeout = httpx.Timeout(10.0, read=5.0)
    with (
        pair[1].client(timeout=timeout) as sse_client,
        sse_client.stream(
            "GET",
            "/v1/items/changes",
            params={"after": after, "follow": "true"},
            headers={"accept": "text/event-stream"},
        ) as stream,
    ):
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        version, _ = update(ca, "items", doc, 42)  # made after the stream was opened
        # Changes that committed before the update but were still held back by an older
        # transaction of the cluster when ``tail`` was read (longer than the store waits
        # for them) come first, in commit order: the feed's contract, not a failure.
        events: list[dict[str, str]] = []
        event: dict[str, str] = {}
        deadline = time.monotonic() + 5
        for line in stream.iter_lines():
            if line.startswith(("id:", "data:")):
                k, _, v = line.partition(":")
                event[k] = v.strip()
            elif not line and "data" in event:
                events.append(event)
                data = json.loads(event["data"])
                if (data["id"], data["version"]) == (doc, version):
                    break
                assert data["id"] != doc or data["version"] < version, events
                event = {}
            assert time.monotonic() < deadline, events
        assert events, "the stream ended with no event"
        data = json.loads(events[-1]["data"])
        assert (data["id"], data["version"]) == (doc, version), events
        assert events[-1]["id"] == data["cursor"]
        cursors = [int(e["id"]) for e in events]
        assert cursors == sorted(set(cursors)) and cursors[0] > int(after), events
