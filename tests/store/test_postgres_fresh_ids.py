"""The one-statement create (``WriteRequest.expect_absent``) against a concurrent writer
of the same id on PostgreSQL (the argument: "Fresh ids" in ``maxage.store.postgres``).

Both orders are forced, not slept for. A blocker connection inserts a row of the id and
does not commit: a write that takes the document's advisory lock and inserts its row
then waits for the blocker's outcome (PostgreSQL's unique check), holding the lock. The
test waits until the first write is stopped there, starts the second, waits until it is
stopped too, and checks *what* stops each (the first one's advisory lock, not the
blocker's row); then the blocker rolls back, and the test checks the outcome: one chain
of versions, one change row per version, in version order.

(A table lock cannot stop a write between its lock and its insert: PostgreSQL takes the
tables' locks of a statement before running it.) Without the advisory lock in the
create's statement, the create would wait on the blocker's row instead, in either
order, and the tests fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from maxage.core.clock import ManualClock
from maxage.store.base import Document, WriteRequest, WriteResult
from maxage.store.postgres import PostgresStore
from tests.support.changes import changes_settled


class Exists(Exception):
    pass


def create(current: Document | None) -> bytes:
    """The shape of the service's POST mutator."""
    if current is not None:
        raise Exists(current.version)
    return b'{"by":"create"}'


def replace(current: Document | None) -> bytes:
    return b'{"by":"put"}'


@pytest.fixture
async def blocker(pg: PostgresStore) -> AsyncIterator[Any]:
    """A connection for :func:`hold_row`; rolled back and closed at the end."""
    conn = await asyncpg.connect(pg.dsn)
    try:
        yield conn
    finally:
        if conn.is_in_transaction():
            await conn.execute("ROLLBACK")
        await conn.close()


async def hold_row(pg: PostgresStore, conn: Any, doc_id: str) -> int:
    """Insert a row of ``doc_id`` on ``conn`` without committing (and without the
    document's lock): writers that insert it wait for ``conn``. Returns its pid."""
    await conn.execute("BEGIN")
    await conn.execute(
        f'INSERT INTO "{pg.schema}".documents'
        " (collection, id, version, data, body, created_at, updated_at)"
        " VALUES ('c', $1, 1, '{}', '{}', 0, 0)",
        doc_id,
    )
    return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def waiting(
    pg: PostgresStore, n: int, tasks: list[asyncio.Task[WriteResult]]
) -> dict[int, tuple[str, list[int], bool]]:
    """Wait until ``n`` backends of this database wait on a lock; for each, by pid: the
    kind of lock it waits on, the pids blocking it, and whether it holds an advisory
    lock."""
    observer = await asyncpg.connect(pg.dsn)
    try:
        deadline = time.monotonic() + 10
        while True:
            rows = await observer.fetch(
                "SELECT a.pid, pg_blocking_pids(a.pid) AS blockers,"
                " (SELECT w.locktype FROM pg_locks AS w WHERE w.pid = a.pid AND NOT w.granted"
                "  LIMIT 1) AS waits_on,"
                " EXISTS (SELECT 1 FROM pg_locks AS h WHERE h.pid = a.pid AND h.granted"
                "  AND h.locktype = 'advisory') AS holds_advisory"
                " FROM pg_stat_activity AS a"
                " WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'"
            )
            if len(rows) >= n:
                return {
                    r["pid"]: (r["waits_on"], sorted(r["blockers"]), r["holds_advisory"])
                    for r in rows
                }
            for task in tasks:
                assert not task.done(), task
            assert time.monotonic() < deadline, f"only {len(rows)} of {n} writes are waiting"
            await asyncio.sleep(0.001)
    finally:
        await observer.close()


async def test_create_waits_for_a_put_that_read_no_row(
    pg: PostgresStore, clock: ManualClock, blocker: Any
) -> None:
    """A PUT of the id holds the lock and has read "no row": the create waits for it
    (not for the row the PUT waits for),
    then finds its row and runs as the general write (its mutator sees version 1)."""
    blocker_pid = await hold_row(pg, blocker, "id1")
    put = asyncio.ensure_future(pg.write(WriteRequest("c", "id1", replace, clock.now())))
    first = await waiting(pg, 1, [put])
    [(put_pid, (waits_on, blockers, holds))] = first.items()
    # The PUT read "no row" (the blocker's is not committed) and waits at its insert.
    assert (waits_on, blockers, holds) == ("transactionid", [blocker_pid], True)
    fresh = asyncio.ensure_future(
        pg.write(WriteRequest("c", "id1", create, clock.now(), expect_absent=True))
    )
    both = await waiting(pg, 2, [put, fresh])
    [create_wait] = [w for pid, w in both.items() if pid != put_pid]
    # The create waits on the PUT's advisory lock, before inserting anything.
    assert create_wait == ("advisory", [put_pid], False)
    await blocker.execute("ROLLBACK")
    r = await put
    assert r.created and r.document.version == 1
    with pytest.raises(Exists) as refused:
        await fresh
    assert refused.value.args == (1,)
    doc = await pg.get("c", "id1")
    assert doc is not None and doc.version == 1 and doc.data == b'{"by":"put"}'
    batch = await changes_settled(pg, 1)
    assert [(c.id, c.version, c.seq) for c in batch.changes] == [("id1", 1, r.seq)]


async def test_put_waits_for_a_create_in_progress(
    pg: PostgresStore, clock: ManualClock, blocker: Any
) -> None:
    """The create holds the lock (taken before its insert): a PUT of the id waits for
    it, then reads version 1 and writes version 2, with a larger seq."""
    blocker_pid = await hold_row(pg, blocker, "id2")
    fresh = asyncio.ensure_future(
        pg.write(WriteRequest("c", "id2", create, clock.now(), expect_absent=True))
    )
    first = await waiting(pg, 1, [fresh])
    [(create_pid, (waits_on, blockers, holds))] = first.items()
    # Its statement took the document's lock and then stopped at the insert.
    assert (waits_on, blockers, holds) == ("transactionid", [blocker_pid], True)
    put = asyncio.ensure_future(pg.write(WriteRequest("c", "id2", replace, clock.now())))
    both = await waiting(pg, 2, [fresh, put])
    [put_wait] = [w for pid, w in both.items() if pid != create_pid]
    assert put_wait == ("advisory", [create_pid], False)
    await blocker.execute("ROLLBACK")
    c, p = await fresh, await put
    assert c.created and c.document.version == 1
    assert not p.created and p.document.version == 2 and p.seq > c.seq
    batch = await changes_settled(pg, 2)
    assert [(ch.version, ch.seq) for ch in batch.changes] == [(1, c.seq), (2, p.seq)]


async def test_create_with_test_hooks_runs_in_an_explicit_transaction(
    pg: PostgresStore, clock: ManualClock
) -> None:
    """With hooks (the checker's faults) the same statement runs in BEGIN ... COMMIT, so
    a slow commit still delays it after its change row."""
    from maxage.hooks import Hooks

    class SlowCommit(Hooks):
        calls = 0

        def commit_delay(self) -> float:
            SlowCommit.calls += 1
            return 0.001

    store = PostgresStore(pg.dsn, clock=clock, schema=pg.schema, hooks=SlowCommit())
    await store.open()
    try:
        r = await store.write(WriteRequest("c", "h", create, clock.now(), expect_absent=True))
        assert r.created and r.document.version == 1 and SlowCommit.calls == 1
        with pytest.raises(Exists):
            await store.write(WriteRequest("c", "h", create, clock.now(), expect_absent=True))
        assert SlowCommit.calls == 1  # nothing committed: no delay drawn
    finally:
        await store.close()
    batch = await changes_settled(pg, 1)
    assert [(c.id, c.version) for c in batch.changes] == [("h", 1)]
