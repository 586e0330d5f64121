"""Redis is derived, never authoritative: killed mid-run and restarted, no client sees an
error or a stale read beyond the bound, the breaker shows in the metrics, and the tier
heals by itself.

A throwaway ``redis-server --save ''`` on a free port serves two ``maxage serve``
processes (A, B). A client writes through both and reads each document back through
both, recording every acknowledged version; each read is checked against the
acknowledgements (P2: a read starting at ``t`` returns a version >= every version acked
before ``t - S``; P1: never a version whose write had not started).
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict

import httpx

from tests.scaleout.conftest import BOUND, MERGE, Cluster, Server, metric, wait_for
from tests.support.services import redis_server


class History:
    def __init__(self, clients: list[httpx.Client], docs: list[str]) -> None:
        self.clients = clients
        self.docs = docs
        self.acked: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.started: dict[str, list[tuple[float, int]]] = defaultdict(list)
        self.reads = 0
        self.n = itertools.count()

    def write(self, c: httpx.Client, doc: str) -> None:
        began = time.time()
        r = c.patch(f"/v1/items/{doc}", json={"n": next(self.n)}, headers=MERGE)
        assert r.status_code == 200, r.text
        version = int(r.headers["etag"].strip('"'))
        self.started[doc].append((began, version))
        self.acked[doc].append((time.time(), version))

    def read(self, c: httpx.Client, doc: str) -> str:
        began = time.time()
        r = c.get(f"/v1/items/{doc}")
        ended = time.time()
        assert r.status_code == 200, r.text
        got = int(r.headers["etag"].strip('"'))
        assert r.json()["version"] == got  # P0
        must = max((v for t, v in self.acked[doc] if t < began - BOUND), default=1)
        assert got >= must, f"stale read of {doc}: v{got} < v{must} ({r.headers['cache-status']})"
        may = max((v for t, v in self.started[doc] if t < ended), default=1)
        assert got <= may, f"read from the future: v{got} > v{may}"  # P1
        self.reads += 1
        return r.headers["cache-status"]

    def round(self) -> None:
        """Write each document through one process, read it back through both."""
        a, b = self.clients
        for i, doc in enumerate(self.docs):
            self.write((a, b)[i % 2], doc)
            self.read(a, doc)
            self.read(b, doc)
            self.read(b, doc)
            self.read(a, doc)


def _metrics(s: httpx.Client) -> str:
    r = s.get("/metrics")
    assert r.status_code == 200
    return r.text


def test_redis_killed_and_restarted_mid_run(cluster_factory: object) -> None:
    with redis_server() as rs:
        cluster: Cluster = cluster_factory(None, cache=rs.url)  # type: ignore[operator]
        servers: list[Server] = [cluster.server("a").start(), cluster.server("b").start()]
        for s in servers:
            s.ready()
        with servers[0].client() as a, servers[1].client() as b:
            docs = []
            for c in (a, b, a, b):
                r = c.post("/v1/items", json={"n": 0})
                assert r.status_code == 201, r.text
                docs.append(r.json()["id"])
            h = History([a, b], docs)

            def l2_hits(c: httpx.Client) -> float:
                return metric(_metrics(c), "maxage_cache_hits_total", tier="l2")

            def both(name: str, value: float, **labels: str) -> bool:
                h.round()
                return all(metric(_metrics(c), name, **labels) == value for c in (a, b))

            # 1. healthy: the shared tier serves (one process reads what the other filled)
            def hits_on_both() -> bool:
                h.round()
                return l2_hits(a) > 0 and l2_hits(b) > 0

            wait_for(hits_on_both, 15, "L2 hits on both processes")
            assert both("maxage_l2_available", 1)

            # 2. Redis dies (SIGKILL) with reads and writes going on: no client error
            rs.stop()
            wait_for(lambda: both("maxage_l2_available", 0), 15, "the breaker to open")
            for c in (a, b):
                assert metric(_metrics(c), "maxage_l2_events_total", event="circuit_opened") >= 1
            reads_before = h.reads
            deadline = time.monotonic() + 2 * BOUND
            while time.monotonic() < deadline:  # a while longer than the bound, all 2xx
                h.round()
            assert h.reads > reads_before

            # 3. Redis comes back (empty) on the same port: the tier heals by itself
            rs.start()
            hits = {id(c): l2_hits(c) for c in (a, b)}
            wait_for(lambda: both("maxage_l2_available", 1), 15, "the breaker to close")
            for c in (a, b):
                text = _metrics(c)
                assert metric(text, "maxage_l2_events_total", event="circuit_closed") >= 1

            def hits_again() -> bool:
                h.round()
                return all(l2_hits(c) > hits[id(c)] for c in (a, b))

            wait_for(hits_again, 15, "L2 hits again after the restart")
            for c in (a, b):
                assert metric(_metrics(c), "maxage_tailer_pending_invalidations", holder="l2") == 0
        for s in servers:
            s.stop()
