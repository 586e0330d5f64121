"""Hostile clients (issue 12): every attack is bounded, measured as the server's RSS.

Each memory test starts its own ``maxage cache-server`` with a small
``--max-bytes``, warms it up, reads ``VmRSS`` from ``/proc``, runs a bounded
attack over one pipelined raw connection (fast: no per-request round trip),
and asserts that the growth stays within the byte bound plus a fixed allowance
for the interpreter (allocator slack, connection buffers). No test depends on
timing: a slow machine only makes them slower.
"""

from __future__ import annotations

import re
import socket
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from .conftest import CacheServer, read_response

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux)"
)

MiB = 1024 * 1024
SLACK = 24 * MiB  # interpreter and allocator allowance on top of the byte bound


def rss(server: CacheServer) -> int:
    text = Path(f"/proc/{server.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB$", text, re.MULTILINE)
    assert m is not None
    return int(m.group(1)) * 1024


def metric(server: CacheServer, name: str) -> float:
    with server.client() as c:
        text = c.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not exported"
    return float(m.group(1))


def blast(server: CacheServer, requests: Iterable[bytes], window: int = 200) -> Counter[int]:
    """Send ``requests`` pipelined over one connection, ``window`` at a time; count statuses."""
    statuses: Counter[int] = Counter()
    with server.connect(timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        batch: list[bytes] = []

        def flush() -> None:
            s.sendall(b"".join(batch))
            for _ in batch:
                statuses[read_response(s, timeout=60)[0]] += 1
            batch.clear()

        for r in requests:
            batch.append(r)
            if len(batch) >= window:
                flush()
        if batch:
            flush()
    return statuses


def req(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if body or method in ("PUT", "POST") else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}{cl}\r\n".encode() + body


@pytest.fixture()
def small() -> Iterator[CacheServer]:
    s = CacheServer("--max-bytes", "8MiB")
    yield s
    assert s.stop() == 0, s.stderr()


def test_a_delete_flood_of_unique_long_keys_is_bounded(small: CacheServer) -> None:
    def deletes(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            yield req("DELETE", f"/v1/keys/{i:08d}" + "k" * 992)

    assert blast(small, deletes(0, 2000)) == {200: 2000}  # warm-up
    before = rss(small)
    assert blast(small, deletes(2000, 60_000)) == {200: 60_000}
    grown = rss(small) - before
    print(f"delete flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB", file=sys.stderr)
    # before the fix: every tombstone lived 60 s, uncounted (~80 MB here)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_guard_bytes") <= 2 * MiB
    assert metric(small, "maxage_cache_memory_bytes") <= 8 * MiB
    assert metric(small, "maxage_cache_tombstones") > 0
    assert metric(small, "maxage_cache_guards_folded_total") > 0


def test_a_flood_of_heavily_tagged_entries_is_bounded(small: CacheServer) -> None:
    def puts(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            tags = ",".join(f"t{i}-{j}" for j in range(64))
            yield req("PUT", f"/v1/keys/k{i}?tags={tags}", b"v")

    assert blast(small, puts(0, 500)) == {201: 500}
    before = rss(small)
    assert blast(small, puts(500, 8000)) == {201: 8000}
    grown = rss(small) - before
    print(f"tag flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB", file=sys.stderr)
    # before the fix: ~250 MB for 8 MiB (the index was not counted)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_memory_bytes") <= 8 * MiB
    assert metric(small, "maxage_cache_tags") > 0


def test_an_invalidation_flood_leaves_bounded_guards(small: CacheServer) -> None:
    def invalidations(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            tags = ",".join(f"{i:04d}-{j:04d}-" + "g" * 180 for j in range(256))
            body = b'{"tags": [%s]}' % b",".join(b'"%s"' % t.encode() for t in tags.split(","))
            yield req("POST", "/v1/invalidate", body, "Content-Type: application/json\r\n")

    assert blast(small, invalidations(0, 4), window=4) == {200: 4}
    before = rss(small)
    assert blast(small, invalidations(4, 160), window=16) == {200: 160}
    grown = rss(small) - before
    print(
        f"invalidation flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB",
        file=sys.stderr,
    )
    # before the fix: 41,000 guards of ~500 B each, uncounted, and every write
    # rebuilt the guard maps (quadratic)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_guard_bytes") <= 2 * MiB
    with small.client() as c:  # writes are not slowed down by the guards
        assert c.put("/v1/keys/after", content=b"x", params={"tags": "a,b"}).status_code == 201
