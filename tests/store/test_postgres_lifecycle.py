"""PostgreSQL adapter lifecycle: concurrent migrations, unreachable server, naive mode."""

from __future__ import annotations

import asyncio

import pytest

from maxage.core.clock import ManualClock
from maxage.store.base import StoreError
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
