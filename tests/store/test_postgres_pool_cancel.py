"""A store call that times out (or is cancelled) in the middle of a statement has that
statement cancelled on the server: the pool keeps the connection until the server has
answered asyncpg's cancel request, as asyncpg's pool did. Terminating the connection at
once dropped the request, and the server ran the statement to its end: a create waiting
on a lock committed after its caller had been told it timed out (a retry then made a
second document), while the process held more backends than its pool's size."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from maxage.core.clock import ManualClock
from maxage.store.base import StoreTimeout, WriteRequest
from tests.support.services import fresh_postgres_store, require_postgres

# statements on the schema still waiting for a lock (a cancelled one stops waiting)
WAITING = """SELECT count(*) FROM pg_stat_activity
             WHERE pid <> pg_backend_pid() AND wait_event_type = 'Lock'
               AND position($1 in query) > 0"""


async def waiting_after(conn: asyncpg.Connection, schema: str, *, deadline: float) -> int:
    """Statements on ``schema`` still waiting for a lock, polled until none is or
    ``deadline`` seconds have passed."""
    end = asyncio.get_running_loop().time() + deadline
    while True:
        n = int(await conn.fetchval(WAITING, schema))
        if n == 0 or asyncio.get_running_loop().time() > end:
            return n
        await asyncio.sleep(0.01)


async def test_a_timed_out_write_is_cancelled_on_the_server(clock: ManualClock) -> None:
    store = await fresh_postgres_store(clock, timeout=0.3, max_size=2)
    await store.open()
    holder = await asyncpg.connect(await require_postgres())
    try:
        locked = holder.transaction()
        await locked.start()
        # the document's lock held elsewhere: the create's one statement waits for it
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            store._doc_lock_key("c", "fresh"),
        )
        request = WriteRequest("c", "fresh", lambda _: b'{"a":1}', clock.now(), expect_absent=True)
        with pytest.raises(StoreTimeout):
            await store.write(request)
        # the server answers the cancel within milliseconds; a dropped one leaves the
        # statement waiting for the lock for good
        assert await waiting_after(holder, store.schema, deadline=5.0) == 0
        await locked.rollback()  # the lock is free: a statement still running would go on
        assert await store.get("c", "fresh") is None
        assert store._pool is not None and store._pool.get_idle_size() >= 1  # clean: kept
    finally:
        await holder.close()
        await store.close()


async def test_close_waits_for_a_connection_in_use(clock: ManualClock) -> None:
    store = await fresh_postgres_store(clock, max_size=2)  # one more to drop the schema
    await store.open()
    pool = store._pool
    assert pool is not None
    started = asyncio.Event()

    async def busy(conn: asyncpg.Connection) -> int:
        started.set()
        return int(await conn.fetchval("SELECT 1 FROM pg_sleep(0.2)"))

    call = asyncio.ensure_future(store._run("busy", busy))
    await started.wait()
    await store.close()  # returns once the busy connection came back (and was closed)
    assert call.done() and call.result() == 1
    assert not pool._all and pool._size == 0


async def test_the_call_deadline_is_asyncio_timeout(clock: ManualClock) -> None:
    """``_timed``'s own deadline behaves as ``asyncio.timeout``: a call past it is a
    StoreTimeout and leaves the task's cancel count as it was (an outer timeout still
    works); a cancellation from outside stays a cancellation; a call in time leaves no
    timer behind."""
    store = await fresh_postgres_store(clock, timeout=0.2, max_size=2)
    await store.open()

    async def sleep(seconds: float) -> object:
        async def q(conn: asyncpg.Connection) -> object:
            return await conn.fetchval("SELECT pg_sleep($1)", seconds)

        return await store._run("sleep", q)

    try:
        task = asyncio.current_task()
        assert task is not None
        with pytest.raises(StoreTimeout):
            await sleep(2.0)
        assert task.cancelling() == 0
        with pytest.raises(TimeoutError):  # an outer deadline shorter than the store's
            async with asyncio.timeout(0.05):
                await sleep(2.0)
        assert task.cancelling() == 0
        call = asyncio.ensure_future(sleep(2.0))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await sleep(0.0)  # in time
        await asyncio.sleep(0.3)  # past the deadline a leftover timer would have cancelled
        assert task.cancelling() == 0

        async def converted(conn: asyncpg.Connection) -> object:
            try:
                return await conn.fetchval("SELECT pg_sleep(2)")
            except asyncio.CancelledError:
                raise RuntimeError("the call turned its cancellation into an error") from None

        # the deadline's cancel is undone whatever the call turned it into
        with pytest.raises(RuntimeError):
            await store._run("converted", converted)
        assert task.cancelling() == 0
    finally:
        await store.close()
