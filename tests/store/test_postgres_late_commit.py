"""Change-log completeness on PostgreSQL (DESIGN.md "Tailing", P7; docs/adr/0003).

A write transaction that took its ``seq`` first but commits last must not be
skipped by a tailer, and the naive ``seq > last`` poller (``seq_tailer=True``)
must be shown to skip it, so this test can fail.

The interleaving is forced, not slept for: the long transaction completes an
idempotency claim, and the test holds that claim's row locked from another
connection, so the long write stops after it has taken its seq (and written
its change row) until the test lets it go.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from maxage.core.clock import ManualClock
from maxage.hooks import Hooks
from maxage.service.idempotency import decide
from maxage.store.base import (
    ClaimState,
    Document,
    IdempotencyCompletion,
    StoredResponse,
    StoreTimeout,
    WriteRequest,
    WriteResult,
)
from maxage.store.postgres import POSITIONS, PostgresStore
from tests.support.changes import changes_settled


class SeqTailer(Hooks):
    """The seq-tailer mutant: tail by ``seq > cursor`` with no completeness proof."""

    seq_tailer = True


def put(data: bytes) -> Any:
    return lambda current: data


def render(result: WriteResult) -> StoredResponse:
    return StoredResponse(201, (), b"%d" % result.document.version)


@dataclass
class HeldWrite:
    """A write transaction stopped after taking its seq, until ``release()``."""

    task: asyncio.Task[WriteResult]
    xid: int
    blocker: Any

    async def release(self, blocker_ends: str = "ROLLBACK") -> WriteResult:
        await self.blocker.execute(blocker_ends)
        return await self.task


async def start_held_write(
    store: PostgresStore, clock: ManualClock, doc_id: str, scope: str
) -> HeldWrite:
    now = clock.now()
    claim = await store.claim_idempotency(
        scope, "fp", "owner", now, 60, 3600, lambda record: decide(record, "fp", now)
    )
    assert claim.state is ClaimState.ACQUIRED
    blocker = await asyncpg.connect(store.dsn)
    await blocker.execute("BEGIN")
    await blocker.execute(
        f'SELECT 1 FROM "{store.schema}".idempotency WHERE scope = $1 FOR UPDATE', scope
    )
    blocker_pid = await blocker.fetchval("SELECT pg_backend_pid()")
    request = WriteRequest(
        "c",
        doc_id,
        put(b'{"slow":true}'),
        clock.now(),
        IdempotencyCompletion(scope, "owner", render),
    )
    task = asyncio.ensure_future(store.write(request))
    # Wait for the condition (the write is blocked on our lock), not for time.
    observer = await asyncpg.connect(store.dsn)
    try:
        deadline = time.monotonic() + 5
        while True:
            xid = await observer.fetchval(
                "SELECT backend_xid::text::bigint FROM pg_stat_activity"
                " WHERE $1 = ANY(pg_blocking_pids(pid))",
                blocker_pid,
            )
            if xid is not None:
                break
            assert not task.done(), task
            assert time.monotonic() < deadline, "the long write never reached the lock"
            await asyncio.sleep(0.001)
    finally:
        await observer.close()
    # pg_stat_activity's backend_xid is 32-bit; the store's seq is the epoch-extended xid8.
    return HeldWrite(task, int(xid), blocker)


@pytest.fixture
async def naive(pg: PostgresStore, clock: ManualClock) -> AsyncIterator[PostgresStore]:
    """The broken mutant, on the same schema as ``pg``."""
    store = PostgresStore(pg.dsn, clock=clock, schema=pg.schema, hooks=SeqTailer())
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def test_late_commit_is_not_skipped(
    pg: PostgresStore, naive: PostgresStore, clock: ManualClock
) -> None:
    held = await start_held_write(pg, clock, "slow", "hold-1")
    try:
        clock.advance(1)
        fast = await pg.write(WriteRequest("c", "fast", put(b"{}"), clock.now()))
        fast_xid = fast.seq // POSITIONS
        assert (held.xid & 0xFFFFFFFF) < (fast_xid & 0xFFFFFFFF), "long txn took its seq first"
        clock.advance(1)

        # Poll while the long transaction is still open.
        safe1 = await pg.changes_after(0, 100)
        naive1 = await naive.changes_after(0, 100)
        assert [c.seq for c in naive1.changes] == [fast.seq]  # naive passes over the gap
        assert safe1.changes == [] and safe1.cursor == 0  # held back: an older txn still runs
        assert safe1.complete
        # The watermark may not claim the held-back commit.
        assert safe1.snapshot_at <= fast.document.updated_at
        assert await pg.last_seq() == 0
        assert await naive.last_seq() == fast.seq

        slow = await held.release()
    finally:
        if not held.task.done():
            await held.release()
        await held.blocker.close()
    assert slow.seq < fast.seq  # the rows committed out of sequence order
    clock.advance(1)

    safe2 = await pg.changes_after(safe1.cursor, 100)
    naive2 = await naive.changes_after(naive1.cursor, 100)
    assert [c.seq for c in safe2.changes] == [slow.seq, fast.seq]
    assert [(c.id, c.version) for c in safe2.changes] == [("slow", 1), ("fast", 1)]
    assert safe2.snapshot_at == clock.now()
    # The mutant skipped the late commit for good: this is what the checker must catch.
    assert naive2.changes == []
    seen_by_naive = {c.seq for c in [*naive1.changes, *naive2.changes]}
    assert slow.seq not in seen_by_naive


async def test_rolled_back_long_transaction_releases_the_frontier(
    pg: PostgresStore, clock: ManualClock
) -> None:
    # The long write loses its idempotency claim while blocked: it rolls back.
    held = await start_held_write(pg, clock, "doomed", "hold-2")
    try:
        fast = await pg.write(WriteRequest("c", "fast", put(b"{}"), clock.now()))
        assert (await pg.changes_after(0, 10)).changes == []
        await held.blocker.execute(
            f'UPDATE "{pg.schema}".idempotency SET owner = $1 WHERE scope = $2', "thief", "hold-2"
        )
        with pytest.raises(Exception, match="lost"):
            await held.release("COMMIT")
    finally:
        await held.blocker.close()
    batch = await pg.changes_after(0, 10)
    assert [c.seq for c in batch.changes] == [fast.seq]
    assert await pg.get("c", "doomed") is None


async def test_many_interleavings_skip_nothing(pg: PostgresStore, clock: ManualClock) -> None:
    """Held writes released in reverse order, polling between every step."""
    helds = [await start_held_write(pg, clock, f"slow{i}", f"hold-m{i}") for i in range(3)]
    cursor = 0
    seen: list[int] = []
    expected: list[int] = []
    try:
        for i in range(3):
            expected.append(
                (await pg.write(WriteRequest("c", f"fast{i}", put(b"{}"), clock.now()))).seq
            )
            batch = await pg.changes_after(cursor, 100)
            seen += [c.seq for c in batch.changes]
            cursor = batch.cursor
        for held in reversed(helds):
            expected.append((await held.release()).seq)
            batch = await pg.changes_after(cursor, 100)
            seen += [c.seq for c in batch.changes]
            cursor = batch.cursor
    finally:
        for held in helds:
            if not held.task.done():
                await held.release()
            await held.blocker.close()
    assert seen == sorted(expected)


async def test_concurrent_writes_keep_per_document_version_order(
    pg: PostgresStore, clock: ManualClock
) -> None:
    await asyncio.gather(
        *(pg.write(WriteRequest("c", f"d{i % 3}", put(b"{}"), clock.now())) for i in range(30))
    )
    batch = await changes_settled(pg, 30)
    assert len(batch.changes) == 30 and batch.complete
    for doc in ("d0", "d1", "d2"):
        versions = [c.version for c in batch.changes if c.id == doc]
        assert versions == list(range(1, 11))


async def test_pagination_with_a_held_row(pg: PostgresStore, clock: ManualClock) -> None:
    early = [
        (await pg.write(WriteRequest("c", f"e{i}", put(b"{}"), clock.now()))).seq for i in range(4)
    ]
    held = await start_held_write(pg, clock, "slow", "hold-p")
    try:
        late = (await pg.write(WriteRequest("c", "late", put(b"{}"), clock.now()))).seq
        b1 = await pg.changes_after(0, 3)
        assert [c.seq for c in b1.changes] == early[:3] and not b1.complete
        b2 = await pg.changes_after(b1.cursor, 3)
        assert [c.seq for c in b2.changes] == early[3:] and b2.complete
        slow = (await held.release()).seq
    finally:
        await held.blocker.close()
    b3 = await pg.changes_after(b2.cursor, 3)
    assert [c.seq for c in b3.changes] == [slow, late]


def _noop(current: Document | None) -> bytes:
    return b"{}"


async def test_every_call_times_out(pg: PostgresStore, clock: ManualClock) -> None:
    quick = PostgresStore(pg.dsn, clock=clock, schema=pg.schema, timeout=0.2)
    await quick.open()
    blocker = await asyncpg.connect(pg.dsn)
    try:
        await blocker.execute("BEGIN")
        await blocker.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            quick._doc_lock_key("c", "locked"),
        )
        with pytest.raises(StoreTimeout):
            await quick.write(WriteRequest("c", "locked", _noop, clock.now()))
        assert quick.stats.errors["write"] == 1
        await blocker.execute("ROLLBACK")
        # The pool healed: the next call works.
        r = await quick.write(WriteRequest("c", "locked", _noop, clock.now()))
        assert r.document.version == 1
    finally:
        await blocker.close()
        await quick.close()


async def test_a_poll_waits_for_rows_held_back_at_its_start(
    pg: PostgresStore, clock: ManualClock
) -> None:
    """A feed read made after a write was acknowledged contains it, though an older
    transaction (any client of the cluster) was still running when the read began: the
    poll waits for what it found held back (here released after its first look)."""
    pg.frontier_wait = 60.0  # the test ends the wait, not the budget
    held = await start_held_write(pg, clock, "slow", "hold-w")
    try:
        fast = await pg.write(WriteRequest("c", "fast", put(b"{}"), clock.now()))
        polls = pg.stats.ops.get("changes", 0)
        poll = asyncio.ensure_future(pg.changes_after(0, 100))
        deadline = time.monotonic() + 5
        while pg.stats.ops.get("changes", 0) < polls + 2:  # it looked, and looked again
            assert not poll.done(), poll.result()
            assert time.monotonic() < deadline, "the poll never re-polled"
            await asyncio.sleep(0.001)
        slow = await held.release()
        batch = await asyncio.wait_for(poll, 5)
    finally:
        if not held.task.done():
            await held.release()
        await held.blocker.close()
    assert [c.seq for c in batch.changes] == [slow.seq, fast.seq]
    assert batch.complete and batch.snapshot_at == clock.now()


async def test_a_long_transaction_holds_a_poll_only_for_the_wait(
    pg: PostgresStore, clock: ManualClock
) -> None:
    pg.frontier_wait = 0.05
    held = await start_held_write(pg, clock, "slow", "hold-l")
    try:
        fast = await pg.write(WriteRequest("c", "fast", put(b"{}"), clock.now()))
        clock.advance(1)
        polls = pg.stats.ops.get("changes", 0)
        batch = await asyncio.wait_for(pg.changes_after(0, 100), 5)
        # 1 + 2 + 4 + 8 + 16 + 19 ms of sleep: six re-polls, then it returns without them.
        assert pg.stats.ops["changes"] - polls == 7
        assert batch.changes == [] and batch.cursor == 0 and batch.complete
        assert batch.snapshot_at <= fast.document.updated_at
        # The same long transaction is not waited for again: one look per later poll.
        for _ in range(3):
            polls = pg.stats.ops["changes"]
            again = await asyncio.wait_for(pg.changes_after(0, 100), 5)
            assert pg.stats.ops["changes"] - polls == 1
            assert again.changes == [] and again.snapshot_at <= fast.document.updated_at
    finally:
        if not held.task.done():
            await held.release()
        await held.blocker.close()
    # Once it ended, the frontier moved: the rows are returned (and waited for again).
    after = await asyncio.wait_for(pg.changes_after(0, 100), 5)
    assert "fast" in {c.id for c in after.changes}
