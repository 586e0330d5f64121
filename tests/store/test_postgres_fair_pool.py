"""PostgreSQL store calls get a pool connection in arrival order (``PostgresStore._timed``):
a call that arrives as a connection is released does not pass the calls already waiting
(asyncpg's pool alone lets it, and sends the passed caller to the back of the line)."""

from __future__ import annotations

import asyncio
from typing import Any

from maxage.core.clock import ManualClock
from tests.support.services import fresh_postgres_store


async def test_calls_get_a_connection_in_arrival_order(clock: ManualClock) -> None:
    store = await fresh_postgres_store(clock, max_size=1)
    await store.open()
    order: list[int] = []
    gate = asyncio.Event()

    async def hold(conn: Any) -> None:
        await gate.wait()

    def record(i: int) -> Any:
        async def fn(conn: Any) -> None:
            order.append(i)

        return fn

    try:
        holder = asyncio.ensure_future(store._run("hold", hold))
        while store._pool is not None and store._pool.get_idle_size() > 0:  # holder has it
            await asyncio.sleep(0)
        waiting = []
        for i in range(1, 4):
            waiting.append(asyncio.ensure_future(store._run("wait", record(i))))
            for _ in range(3):
                await asyncio.sleep(0)  # each one queues before the next arrives
        late: list[asyncio.Future[None]] = []

        def arrive(_: object) -> None:
            late.append(asyncio.ensure_future(store._run("late", record(4))))

        # Callers that arrive while the connection goes back to the pool.
        holder.add_done_callback(arrive)
        gate.set()
        await holder
        await asyncio.gather(*waiting, *late)
        assert order == [1, 2, 3, 4]
    finally:
        await store.close()
