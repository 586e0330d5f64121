"""PostgreSQL adapter lifecycle: concurrent migrations, unreachable server, naive mode."""

from __future__ import annotations

import asyncio

import pytest

from maxage.core.clock import ManualClock
from maxage.store.base import BatchItem, BatchWriteRequest, StoreError
from maxage.store.postgres import MIGRATIONS, PostgresStore
from tests.support.services import (
    drop_postgres_schema,
    free_port,
    require_postgres,
    unique_name,
)


async def test_concurrent_open_migrates_once(clock: ManualClock) -> None:
    dsn = await require_postgres()
    schema = unique_name("m")
    stores = [PostgresStore(dsn, clock=clock, schema=schema, max_size=2) for _ in range(5)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert {await s.schema_version() for s in stores} == {MIGRATIONS[-1][0]}
        assert await stores[1].secret("x") == await stores[4].secret("x")
    finally:
        await asyncio.gather(*(s.close() for s in stores))
        await drop_postgres_schema(dsn, schema)


async def test_concurrent_index_sync_builds_each_index_once(clock: ManualClock) -> None:
    """Processes starting together (``serve --workers N`` on a fresh schema): one builds
    the query indexes, the others wait their turn and find them built; none deadlocks
    with the builder's CREATE INDEX CONCURRENTLY."""
    from maxage.contracts import IndexSpec

    dsn = await require_postgres()
    schema = unique_name("ix")
    indexes = {"q": tuple(IndexSpec(f"f{i}", (f"f{i}",), "string") for i in range(4))}
    stores = [PostgresStore(dsn, clock=clock, schema=schema, max_size=2) for _ in range(3)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        synced = await asyncio.gather(*(s.sync_indexes(indexes) for s in stores))
        assert sorted(len(r.created) for r in synced) == [0, 0, 4]
    finally:
        await asyncio.gather(*(s.close() for s in stores))
        await drop_postgres_schema(dsn, schema)


async def test_unreachable_server_is_a_store_error(clock: ManualClock) -> None:
    store = PostgresStore(
        f"postgresql://postgres@127.0.0.1:{free_port()}/test", clock=clock, timeout=2
    )
    with pytest.raises(StoreError):
        await store.open()
    assert store.stats.errors["connect"] == 1
    await store.close()


def test_schema_name_is_validated(clock: ManualClock) -> None:
    with pytest.raises(ValueError):
        PostgresStore("postgresql://x", clock=clock, schema='x"; DROP')


async def test_upgrade_to_positioned_seqs(
    clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 3 on a log written before it (seq = xid, no bodies): the old rows stay
    readable and ordered below every new one, a put's body falls back to the document
    while it is at that version, and a writer of the old version is refused."""
    import asyncpg

    import maxage.store.postgres as pg_module

    dsn = await require_postgres()
    schema = unique_name("u")
    monkeypatch.setattr(pg_module, "MIGRATIONS", MIGRATIONS[:4])
    old = PostgresStore(dsn, clock=clock, schema=schema)
    await old.open()
    await old.close()
    conn = await asyncpg.connect(dsn)
    try:
        for id, version, data in (("a", 1, b'{"v":1}'), ("a", 2, b'{"v":2}'), ("b", 1, b"{}")):
            async with conn.transaction():  # what the older version wrote: seq = its xid
                await conn.execute(
                    f"INSERT INTO {schema}.documents VALUES ('c', $1, $2, $3, 0, 0, false)"
                    " ON CONFLICT (collection, id) DO UPDATE SET version = $2, data = $3",
                    id,
                    version,
                    data,
                )
                await conn.execute(
                    f"INSERT INTO {schema}.changes VALUES (pg_current_xact_id()::text::bigint,"
                    " 'c', $1, $2, 'put', 0)",
                    id,
                    version,
                )
        monkeypatch.setattr(pg_module, "MIGRATIONS", MIGRATIONS)
        new = PostgresStore(dsn, clock=clock, schema=schema)
        await new.open()
        try:
            assert await new.schema_version() == MIGRATIONS[-1][0]
            written = await new.write_batch(
                BatchWriteRequest("c", [BatchItem("b", lambda _: b'{"w":2}')], clock.now())
            )
            changes = (await new.changes_after(0, 100)).changes
            assert [(c.id, c.version) for c in changes] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
            assert changes[-1].seq == written.results[0].seq
            bodies = await new.change_bodies([c.seq for c in changes])
            assert [bodies[c.seq] for c in changes] == [None, b'{"v":2}', None, b'{"w":2}']
            with pytest.raises(asyncpg.CheckViolationError):
                async with conn.transaction():
                    await conn.execute(
                        f"INSERT INTO {schema}.changes VALUES (pg_current_xact_id()::text::bigint,"
                        " 'c', 'a', 3, 'put', 0)"
                    )
        finally:
            await new.close()
    finally:
        await conn.close()
        await drop_postgres_schema(dsn, schema)
