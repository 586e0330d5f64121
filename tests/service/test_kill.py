"""``Service.kill`` (what a crash does in ``maxage sim``): every background loop of the
process stops at once, write-back's included, and nothing is flushed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from maxage.contracts import parse_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.service import Service
from maxage.store.sqlite import SQLiteStore

CONFIG = {
    "collections": {
        "counters": {
            "max_staleness": "5s",
            "write_policy": "write-back",
            "schema": {"type": "object"},
        },
        "docs": {
            "max_staleness": "1s",
            "write_policy": "write-through",
            "schema": {"type": "object"},
        },
    }
}


async def test_kill_cancels_every_background_loop(tmp_path: Path) -> None:
    clock = ManualClock(1_700_000_000.0)
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    try:
        config = parse_config(CONFIG, "test")
        service = Service(config.collections, store, Cache(1 << 20, clock=clock), clock)
        before = asyncio.all_tasks()
        await service.start()
        started = {t for t in asyncio.all_tasks() - before if not t.done()}
        # the tailer, the idempotency purger, write-back's flusher, the consumers' lag loop
        assert len(started) >= 4, started
        service.kill()
        assert all(t.cancelling() for t in started), [t for t in started if not t.cancelling()]
        await asyncio.gather(*started, return_exceptions=True)
        assert all(t.cancelled() for t in started), [t for t in started if not t.cancelled()]
    finally:
        await store.close()
