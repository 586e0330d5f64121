"""The hot path (a plain GET answered from L1 without a Request object) and the general
path (the same GET with ``?consistency=bounded``, which the hot path never takes) give
the same answer in every case: hit, miss, a lagging holder, an advanced watermark, a
clock that steps back, every age up to and past the bound. Both call the service's one
bounded-read rule (``Reads.l1``); this proves the HTTP around it agrees too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxage.api.app import App, Settings, build_app
from maxage.contracts import parse_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.service import Service
from maxage.store.base import WriteRequest
from maxage.store.sqlite import SQLiteStore

BOUND = 5.0
CONFIG = {
    "collections": {
        "docs": {
            "max_staleness": f"{BOUND}s",
            "write_policy": "write-around",
            "ttl": "1h",
            "schema": {"type": "object"},
        }
    }
}


async def call(app: App, path: str, query: bytes = b"") -> tuple[int, dict[str, bytes], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query,
             "headers": [(b"x-request-id", b"same")]}  # fmt: skip
    await app(scope, receive, send)
    headers = dict(sent[0]["headers"])
    return sent[0]["status"], headers, sent[1]["body"]


class World:
    def __init__(self, app: App, service: Service, store: SQLiteStore, clock: ManualClock):
        self.app, self.service, self.store, self.clock = app, service, store, clock
        self.n = 0

    async def external_write(self, id: str) -> None:
        self.n += 1
        body = b'{"n":%d}' % self.n
        await self.store.write(WriteRequest("docs", id, lambda _: body, self.clock.now()))

    async def both(self, id: str) -> tuple[Any, Any]:
        """At one instant: a read that may fill, then the hot path, then the general path
        (a hit changes nothing, so both see the same state)."""
        await call(self.app, f"/v1/docs/{id}", b"consistency=bounded")
        hot = await call(self.app, f"/v1/docs/{id}")
        general = await call(self.app, f"/v1/docs/{id}", b"consistency=bounded")
        return general, hot


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    clock = ManualClock(1_700_000_000.0)
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    cache = Cache(1 << 20, clock=clock, tombstone_ttl=600.0, thread_safe=False)
    service = Service(parse_config(CONFIG, "t").collections, store, cache, clock)
    service.tailer.cursor = 0
    for s in service.tailer.states:
        s.holder.watermark = clock.now()
    yield World(build_app(service, Settings()), service, store, clock)
    await store.close()


def _same(general: Any, hot: Any) -> None:
    assert general[0] == hot[0]
    assert general[2] == hot[2]
    assert general[1] == hot[1]


async def test_fixed_cases(world: World) -> None:
    await world.external_write("a")
    cases = [0.0, 0.4, 1.0, 2.6, BOUND - 0.01, BOUND, BOUND + 0.01, -2.0, 3.0, 7.0]
    for step in cases:
        world.clock.set(world.clock.now() + step)  # a negative step: the wall clock steps back
        general, hot = await world.both("a")
        _same(general, hot)
    # a poll moves the watermark past the fill: "known" is the watermark now
    await world.service.tailer.poll_once()
    world.clock.advance(1.5)
    general, hot = await world.both("a")
    _same(general, hot)
    assert hot[1][b"cache-status"] == b"maxage; hit; detail=l1"
    world.clock.advance(BOUND + 1)  # the tailer has not polled since: lagging
    general, hot = await world.both("a")
    _same(general, hot)
    assert hot[1][b"cache-status"] == b"maxage; fwd=bypass; detail=lagging; stored"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["write", "poll", "tick", "tick", "read"]),
            st.floats(min_value=-3.0, max_value=2 * BOUND),
        ),
        min_size=1,
        max_size=25,
    )
)
async def test_random_interleavings(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, float]]
) -> None:
    tmp = tmp_path_factory.mktemp("hot")
    clock = ManualClock(1_700_000_000.0)
    store = SQLiteStore(tmp / "db.sqlite", clock=clock)
    await store.open()
    try:
        cache = Cache(1 << 20, clock=clock, tombstone_ttl=600.0, thread_safe=False)
        service = Service(parse_config(CONFIG, "t").collections, store, cache, clock)
        service.tailer.cursor = 0
        for s in service.tailer.states:
            s.holder.watermark = clock.now()
        w = World(build_app(service, Settings()), service, store, clock)
        await w.external_write("a")
        for op, dt in ops:
            if op == "write":
                await w.external_write("a")
            elif op == "poll":
                await service.tailer.poll_once()
            elif op == "tick":
                clock.set(clock.now() + dt)  # may step back
            else:
                general, hot = await w.both("a")
                _same(general, hot)
    finally:
        await store.close()
