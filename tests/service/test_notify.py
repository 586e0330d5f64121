"""Change notifications after local commits: a notification starts after every commit,
and commits that end while one is in flight share the next one (not one each)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from maxage.contracts import parse_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.service import Service, WriteIntent, WriteKind, prepare
from maxage.store.base import WriteRequest, WriteResult
from maxage.store.sqlite import SQLiteStore

CONFIG = {
    "collections": {
        "docs": {
            "max_staleness": "5s",
            "write_policy": "write-through",
            "schema": {"type": "object"},
        }
    }
}


class GatedNotifyStore(SQLiteStore):
    """SQLite whose ``notify`` records how many writes had committed when it started,
    then waits for ``gate``."""

    def __init__(self, path: Path, clock: ManualClock) -> None:
        super().__init__(path, clock=clock)
        self.committed = 0
        self.started_after: list[int] = []  # per notification: commits before it started
        self.gate = asyncio.Event()

    async def write(self, request: WriteRequest) -> WriteResult:
        result = await super().write(request)
        self.committed += 1
        return result

    async def notify(self) -> None:
        self.started_after.append(self.committed)
        await self.gate.wait()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[tuple[Service, GatedNotifyStore]]:
    clock = ManualClock(1_700_000_000.0)
    store = GatedNotifyStore(tmp_path / "db.sqlite", clock)
    await store.open()
    config = parse_config(CONFIG, "test")
    yield Service(config.collections, store, Cache(1 << 20, clock=clock), clock), store
    store.gate.set()
    await store.close()


async def write(service: Service, id: str) -> None:
    spec = service.collections["docs"]
    await service.writes.commit(prepare(spec, WriteIntent(WriteKind.REPLACE, id, {"n": 1})))


async def settle(service: Service) -> None:
    while service.reads.tasks:
        await asyncio.gather(*list(service.reads.tasks))


async def test_commits_during_a_notification_share_one_that_starts_after_them(
    service: tuple[Service, GatedNotifyStore],
) -> None:
    svc, store = service
    await write(svc, "a")
    await asyncio.sleep(0)  # the first notification starts and waits at the gate
    assert store.started_after == [1]
    for id in ("b", "c", "d"):
        await write(svc, id)
    assert store.started_after == [1]  # still in flight: no more round trips meanwhile
    store.gate.set()
    await settle(svc)
    assert store.started_after == [1, 4]  # one more, started after the last commit


async def test_every_commit_is_followed_by_a_notification_when_none_is_in_flight(
    service: tuple[Service, GatedNotifyStore],
) -> None:
    svc, store = service
    store.gate.set()
    for n, id in enumerate(("a", "b", "c"), 1):
        await write(svc, id)
        await settle(svc)
        assert store.started_after[-1] == n
    assert store.started_after == [1, 2, 3]
