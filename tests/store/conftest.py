"""Store fixtures: every adapter runs the same contract suite (tests/store/test_contract.py);
the PostgreSQL adapter's own tests (``test_postgres_*.py``) get ``pg``, a store on a fresh
schema of their own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from maxage.core.clock import ManualClock
from maxage.store.base import Store
from maxage.store.memory import MemoryStore
from maxage.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from maxage.store.postgres import PostgresStore

StoreFactory = Callable[[], Store]


def _sqlite(tmp_path: Path, clock: ManualClock) -> Store:
    return SQLiteStore(tmp_path / "primary.db", clock=clock)


STORE_KINDS = ["sqlite", "memory"]  # memory: maxage sim's simulated primary
try:  # the PostgreSQL adapter joins the suite when present
    import maxage.store.postgres  # noqa: F401

    STORE_KINDS.append("postgres")
except ImportError:  # pragma: no cover - adapter not built yet
    pass


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_700_000_000.0)


@pytest.fixture(params=STORE_KINDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = _sqlite(tmp_path, clock)
    elif request.param == "memory":
        s = MemoryStore(clock=clock)
    else:
        from tests.support.services import fresh_postgres_store

        s = await fresh_postgres_store(clock)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def pg(clock: ManualClock) -> AsyncIterator[PostgresStore]:
    """An open PostgresStore on a schema of its own (skips, or fails under CI=true, without
    PostgreSQL); the schema is dropped on close."""
    from tests.support.services import fresh_postgres_store

    store = await fresh_postgres_store(clock)
    await store.open()
    try:
        yield store
    finally:
        await store.close()
