"""``maxage serve --workers 2``: the contract holds across the worker processes of one server.

Every request below goes on a fresh connection, so the workers take turns; the fault
control endpoint answers with the serving worker's pid, which shows both workers serve.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.scaleout.conftest import BOUND, Cluster, Server, create, update, version_of, wait_for

REDIS_DB = 12


@pytest.fixture(scope="module")
def server(cluster_factory: object) -> Iterator[Server]:
    cluster: Cluster = cluster_factory(REDIS_DB)  # type: ignore[operator]
    yield cluster.server("w", workers=2).start().ready()


@pytest.fixture(scope="module")
def fresh(server: Server) -> Iterator[httpx.Client]:
    """A client that opens a new connection for every request."""
    with server.client(limits=httpx.Limits(max_keepalive_connections=0)) as c:
        yield c


def test_both_workers_serve(fresh: httpx.Client) -> None:
    pids: set[int] = set()

    def two() -> bool:
        pids.add(int(fresh.get("/_maxage/faults").json()["pid"]))
        return len(pids) >= 2

    wait_for(two, 10, "requests served by two different workers")


def test_strong_and_session_reads_across_workers(fresh: httpx.Client) -> None:
    doc = create(fresh)
    url = f"/v1/items/{doc}"
    for _ in range(10):  # fill both workers' in-process caches with v1
        assert version_of(fresh.get(url)) == 1
    for n in range(1, 16):
        version, _ = update(fresh, "items", doc, n)
        assert version_of(fresh.get(url, params={"consistency": "strong"})) == version
        assert version_of(fresh.get(url, params={"min_version": str(version)})) >= version


@pytest.mark.parametrize("collection", ["items", "notes"])
def test_bounded_reads_across_workers_fresh_within_the_bound(
    fresh: httpx.Client, collection: str
) -> None:
    doc = create(fresh, collection)
    url = f"/v1/{collection}/{doc}"
    for round_ in range(2):
        for _ in range(10):  # both workers hold the current version
            fresh.get(url)
        version, acked = update(fresh, collection, doc, round_ + 1)
        streak = 0
        while streak < 10:  # ten fresh reads in a row: every worker caught up
            started = time.time()
            got = version_of(fresh.get(url))
            assert got <= version
            if started > acked + BOUND:
                assert got == version  # P2 across workers
            streak = streak + 1 if got == version else 0
            assert time.time() < acked + BOUND + 3.0, "workers never converged"
