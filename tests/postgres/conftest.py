"""Fixtures for the PostgreSQL adapter's own tests (a fresh schema per test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from maxage.core.clock import ManualClock
from maxage.store.postgres import PostgresStore
from tests.support.services import fresh_postgres_store


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture
async def pg(clock: ManualClock) -> AsyncIterator[PostgresStore]:
    store: PostgresStore = await fresh_postgres_store(clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
