"""The read contract on the real SQLite primary with an injected clock (P2, P3, P4).

The tailer is driven by hand (``poll_once``) so every interleaving is forced:
a write by "another process" goes straight to the store and reaches this
process's cache only through the change log, exactly as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from maxage.contracts import ReadMode, parse_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.hooks import Hooks
from maxage.service import Service, Source, WriteIntent, WriteKind, prepare
from maxage.store.base import WriteRequest
from maxage.store.sqlite import SQLiteStore

BOUND = 5.0
CONFIG = {
    "collections": {
        "docs": {
            "max_staleness": f"{BOUND}s",
            "write_policy": "write-around",
            "ttl": "1h",  # TTL far beyond the bound: expiry cannot hide a broken guard
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
        "wt": {
            "max_staleness": f"{BOUND}s",
            "write_policy": "write-through",
            "ttl": "1h",
            "schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        },
    }
}


class PauseHooks(Hooks):
    """``pause`` (when set) runs between a primary read and its cache fill."""

    def __init__(self) -> None:
        self.pause: Callable[[], Awaitable[None]] | None = None

    def before_fill(self, key: str, version: int) -> Awaitable[None] | None:
        return self.pause() if self.pause is not None else None


class Harness:
    def __init__(
        self, service: Service, store: SQLiteStore, clock: ManualClock, hooks: PauseHooks
    ) -> None:
        self.service = service
        self.hooks = hooks
        self.store = store
        self.clock = clock
        self.spec = service.collections["docs"]

    async def external_write(self, id: str, n: int) -> int:
        """A write committed by another process: no local cache update, only the change log."""
        r = await self.store.write(
            WriteRequest("docs", id, lambda _: b'{"n":%d}' % n, self.clock.now())
        )
        return r.document.version

    async def local_write(self, id: str, n: int, collection: str = "docs") -> int:
        spec = self.service.collections[collection]
        intent = WriteIntent(WriteKind.REPLACE, id, {"n": n})
        r = await self.service.writes.commit(prepare(spec, intent))
        return r.document.version

    async def read(
        self,
        id: str,
        mode: ReadMode = ReadMode.BOUNDED,
        min_version: int = 0,
        collection: str = "docs",
    ):  # type: ignore[no-untyped-def]
        spec = self.service.collections[collection]
        return await self.service.reads.read(spec, id, mode, min_version)


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock(1_700_000_000.0)
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    cache = Cache(1 << 20, clock=clock, tombstone_ttl=120.0)
    config = parse_config(CONFIG, "test")
    hooks = PauseHooks()
    service = Service(config.collections, store, cache, clock, hooks=hooks)
    service.tailer.cursor = 0
    for s in service.tailer.states:
        s.holder.watermark = clock.now()
    yield Harness(service, store, clock, hooks)
    await store.close()


async def test_bounded_read_serves_cache_until_bound_then_bypasses_when_tailer_lags(
    h: Harness,
) -> None:
    await h.local_write("a", 1)
    first = await h.read("a")
    assert first.source is Source.PRIMARY and first.version == 1
    assert (await h.read("a")).source is Source.L1
    await h.external_write("a", 2)  # not yet seen by this process
    h.clock.advance(BOUND)  # still within the bound: the old version is allowed
    within = await h.read("a")
    assert within.source is Source.L1 and within.version == 1
    h.clock.advance(0.5)  # the tailer has not polled: watermark too old, so bypass
    lagging = await h.read("a")
    assert lagging.source is Source.PRIMARY and lagging.version == 2
    assert lagging.detail == "lagging"
    assert h.service.reads.stats.bypasses["lagging"] == 1


async def test_tailer_invalidation_makes_next_read_fresh(h: Harness) -> None:
    await h.local_write("a", 1)
    await h.read("a")
    await h.external_write("a", 2)
    await h.service.tailer.poll_once()
    r = await h.read("a")
    assert r.version == 2 and r.source is Source.PRIMARY
    assert (await h.read("a")).source is Source.L1


async def test_slow_fill_of_old_version_is_refused_after_invalidation(h: Harness) -> None:
    await h.local_write("a", 1)
    # A fill reads v1, then stalls before the cache set while v2 commits and is applied.
    gate_open = False

    async def pause() -> None:
        nonlocal gate_open
        if not gate_open:
            gate_open = True
            await h.external_write("a", 2)
            await h.service.tailer.poll_once()

    h.hooks.pause = pause
    stale = await h.read("a")
    assert stale.version == 1  # that read itself began before v2: allowed
    h.hooks.pause = None
    assert h.service.cache.peek("a") is not None
    # The old fill was refused by the tombstone, so the next read cannot serve v1.
    r = await h.read("a")
    assert r.version == 2


async def test_strong_read_sees_last_acknowledged_write(h: Harness) -> None:
    await h.local_write("a", 1)
    await h.read("a")
    v2 = await h.external_write("a", 2)
    r = await h.read("a", ReadMode.STRONG)
    assert r.version == v2 and r.source is Source.PRIMARY


async def test_session_read_never_goes_backwards(h: Harness) -> None:
    await h.local_write("a", 1)
    await h.read("a")  # v1 cached
    v2 = await h.external_write("a", 2)
    r = await h.read("a", ReadMode.SESSION, min_version=v2)
    assert r.version >= v2
    # and the bounded read may still be v1 (within the bound), but never the session one
    assert (await h.read("a", ReadMode.SESSION, min_version=v2)).version >= v2


async def test_write_through_fills_and_write_around_invalidates(h: Harness) -> None:
    await h.local_write("x", 1, collection="wt")
    assert (await h.read("x", collection="wt")).source is Source.L1
    await h.local_write("y", 1)
    assert (await h.read("y")).source is Source.PRIMARY


@example(  # a lagging tailer: the watermark rule alone keeps P2
    ops=[
        ("local_write", "a", 0),
        ("read", "a", 0),
        ("ext_write", "a", 0),
        ("tick", "a", 7.0),
        ("read", "a", 0),
    ]
)
@example(  # an invalidation applied, then a bounded read: the tombstone/drop keeps P2
    ops=[
        ("local_write", "a", 0),
        ("read", "a", 0),
        ("ext_write", "a", 0),
        ("poll", "a", 0),
        ("tick", "a", 6.0),
        ("read", "a", 0),
    ]
)
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "ext_write",
                    "local_write",
                    "read",
                    "read",
                    "strong",
                    "session",
                    "poll",
                    "tick",
                    "tick",
                ]
            ),
            st.sampled_from(["a", "a", "a", "b"]),
            st.floats(min_value=0.0, max_value=7.0),
        ),
        min_size=1,
        max_size=40,
    )
)
async def test_property_bounded_strong_session(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, float]]
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    clock = ManualClock(1_700_000_000.0)
    store = SQLiteStore(tmp / "db.sqlite", clock=clock)
    await store.open()
    try:
        cache = Cache(1 << 20, clock=clock, tombstone_ttl=600.0)
        service = Service(parse_config(CONFIG, "t").collections, store, cache, clock)
        service.tailer.cursor = 0
        for s in service.tailer.states:
            s.holder.watermark = clock.now()
        hh = Harness(service, store, clock, PauseHooks())
        acked: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
        seen_by_session: dict[str, int] = {"a": 0, "b": 0}
        n = 0
        for op, key, dt in ops:
            n += 1
            if op == "ext_write":
                acked[key].append((clock.now(), await hh.external_write(key, n)))
            elif op == "local_write":
                acked[key].append((clock.now(), await hh.local_write(key, n)))
            elif op == "poll":
                await service.tailer.poll_once()
            elif op == "tick":
                clock.advance(dt)
            elif not acked[key]:
                continue
            else:
                now = clock.now()
                floor_bounded = max((v for t, v in acked[key] if t < now - BOUND), default=0)
                floor_strong = max((v for t, v in acked[key] if t <= now), default=0)
                try:
                    if op == "read":
                        r = await hh.read(key)
                        assert r.version >= floor_bounded, (r, acked[key], now)  # P2
                    elif op == "strong":
                        r = await hh.read(key, ReadMode.STRONG)
                        assert r.version >= floor_strong  # P3
                    else:
                        r = await hh.read(key, ReadMode.SESSION, seen_by_session[key])
                        assert r.version >= seen_by_session[key]  # P4
                        assert r.version >= floor_bounded
                        seen_by_session[key] = r.version
                except Exception as exc:  # a read of a never-written key is NotFound
                    if type(exc).__name__ != "NotFound":
                        raise
    finally:
        await store.close()
