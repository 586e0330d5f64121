"""Start-up on a SQLite file whose write lock another process holds waits for it.

Two ``maxage serve`` processes started together on one file (or one started while
another builds an index) used to exit with "database is locked" once the lock was held
longer than one call's busy timeout.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from maxage.core.clock import SystemClock
from maxage.store.base import StoreError
from maxage.store.sqlite import SQLiteStore


async def test_open_waits_for_a_write_lock_held_past_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("BEGIN IMMEDIATE")
    store = SQLiteStore(path, clock=SystemClock(), timeout=0.1)
    opening = asyncio.create_task(store.open())
    try:
        # The lock outlives the store's busy timeout: at least one attempt fails...
        while not store.stats.errors.get("migrate"):
            assert not opening.done(), opening
            await asyncio.sleep(0.01)
        assert not opening.done()
        holder.execute("COMMIT")
        # ...and start-up goes on once the lock is released.
        await asyncio.wait_for(opening, 30)
        tables = {r[0] for r in holder.execute("SELECT name FROM sqlite_master")}
        assert {"documents", "changes"} <= tables
    finally:
        holder.close()
        if not opening.done():
            opening.cancel()
        await store.close()


async def test_open_gives_up_on_an_error_other_than_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(b"not a database" * 100)
    store = SQLiteStore(path, clock=SystemClock(), timeout=0.1)
    try:
        with pytest.raises(StoreError, match="not a database"):
            await asyncio.wait_for(store.open(), 10)
    finally:
        await store.close()
