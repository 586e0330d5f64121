"""Reading a store's change log in tests where other transactions may be in flight."""

from __future__ import annotations

import asyncio
import time

from maxage.store.base import ChangeBatch, Store


async def changes_settled(store: Store, count: int, timeout: float = 10.0) -> ChangeBatch:
    """``changes_after(0, ...)`` once it returns at least ``count`` changes.

    PostgreSQL holds back change rows that commit after an older transaction still in
    flight anywhere on the cluster (the completeness rule in ``store/base.py``); on a
    shared test cluster that can be another test's transaction for a moment. This waits
    for the condition instead of hoping no such transaction exists; the assertion after
    it is still the test's."""
    deadline = time.monotonic() + timeout
    while True:
        batch = await store.changes_after(0, count + 100)
        if len(batch.changes) >= count or time.monotonic() > deadline:
            return batch
        await asyncio.sleep(0.01)
