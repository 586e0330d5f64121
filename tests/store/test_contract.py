"""The store contract: any primary adapter must pass these (DESIGN.md P5, P7)."""

from __future__ import annotations

import asyncio
import time

import pytest

from maxage.contracts import MAX_BATCH_OPERATIONS
from maxage.core.clock import ManualClock
from maxage.service.idempotency import decide
from maxage.store.base import (
    BatchItem,
    BatchResult,
    BatchWriteRequest,
    Change,
    ChangeOp,
    Claim,
    ClaimState,
    Document,
    IdempotencyCompletion,
    IdempotencyLost,
    ListQuery,
    Store,
    StoredResponse,
    WriteRequest,
    WriteResult,
)
from tests.support.changes import changes_settled


async def claim(
    store: Store, scope: str, fp: str, owner: str, now: float, lease: float, keep: float
) -> Claim:
    """A claim decided by the service's one rule (the store only persists it)."""
    return await store.claim_idempotency(
        scope, fp, owner, now, lease, keep, lambda record: decide(record, fp, now)
    )


def put(data: bytes):  # type: ignore[no-untyped-def]
    return lambda current: data


def delete(current: Document | None) -> bytes | None:
    assert current is not None
    return None


async def test_write_then_get_bumps_version(store: Store, clock: ManualClock) -> None:
    r1 = await store.write(WriteRequest("c", "a", put(b'{"x":1}'), clock.now()))
    assert r1.created and r1.document.version == 1
    clock.advance(1)
    r2 = await store.write(WriteRequest("c", "a", put(b'{"x":2}'), clock.now()))
    assert not r2.created and r2.document.version == 2
    doc = await store.get("c", "a")
    assert doc is not None
    assert doc.version == 2 and doc.data == b'{"x":2}'
    assert doc.created_at == r1.document.created_at < doc.updated_at


async def test_get_missing_and_other_collection(store: Store, clock: ManualClock) -> None:
    await store.write(WriteRequest("c", "a", put(b"{}"), clock.now()))
    assert await store.get("c", "zz") is None
    assert await store.get("other", "a") is None


async def test_delete_keeps_version_chain(store: Store, clock: ManualClock) -> None:
    await store.write(WriteRequest("c", "a", put(b"{}"), clock.now()))
    r = await store.write(WriteRequest("c", "a", delete, clock.now()))
    assert r.document.deleted and r.document.version == 2
    assert await store.get("c", "a") is None
    again = await store.write(WriteRequest("c", "a", put(b'{"y":1}'), clock.now()))
    assert again.created and again.document.version == 3


async def test_mutator_exception_rolls_back(store: Store, clock: ManualClock) -> None:
    await store.write(WriteRequest("c", "a", put(b'{"v":1}'), clock.now()))
    before = await store.last_seq()

    def boom(current: Document | None) -> bytes:
        raise ValueError("precondition failed")

    with pytest.raises(ValueError):
        await store.write(WriteRequest("c", "a", boom, clock.now()))
    doc = await store.get("c", "a")
    assert doc is not None and doc.version == 1
    assert await store.last_seq() == before


async def test_one_change_row_per_version_in_commit_order(store: Store, clock: ManualClock) -> None:
    for i in range(5):
        await store.write(WriteRequest("c", f"k{i % 2}", put(b"{}"), clock.now()))
    await store.write(WriteRequest("c", "k0", delete, clock.now()))
    batch = await store.changes_after(0, 100)
    assert batch.complete
    seen = [(c.id, c.version, c.op) for c in batch.changes]
    assert seen == [
        ("k0", 1, ChangeOp.PUT),
        ("k1", 1, ChangeOp.PUT),
        ("k0", 2, ChangeOp.PUT),
        ("k1", 2, ChangeOp.PUT),
        ("k0", 3, ChangeOp.PUT),
        ("k0", 4, ChangeOp.DELETE),
    ]
    seqs = [c.seq for c in batch.changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert batch.cursor == seqs[-1] == await store.last_seq()


async def test_changes_after_paginates_and_is_complete_at_end(
    store: Store, clock: ManualClock
) -> None:
    for i in range(7):
        await store.write(WriteRequest("c", f"k{i}", put(b"{}"), clock.now()))
    b1 = await store.changes_after(0, 3)
    assert len(b1.changes) == 3 and not b1.complete
    b2 = await store.changes_after(b1.cursor, 3)
    b3 = await store.changes_after(b2.cursor, 3)
    assert len(b3.changes) == 1 and b3.complete
    empty = await store.changes_after(b3.cursor, 3)
    assert empty.changes == [] and empty.complete and empty.cursor == b3.cursor


async def test_snapshot_at_covers_prior_commits(store: Store, clock: ManualClock) -> None:
    r = await store.write(WriteRequest("c", "a", put(b"{}"), clock.now()))
    clock.advance(1)
    batch = await store.changes_after(0, 10)
    assert batch.snapshot_at >= r.document.updated_at
    assert [c.seq for c in batch.changes] == [r.seq]


async def test_concurrent_writes_form_one_chain(store: Store, clock: ManualClock) -> None:
    results = await asyncio.gather(
        *(store.write(WriteRequest("c", "hot", put(b"{}"), clock.now())) for _ in range(20))
    )
    versions = sorted(r.document.version for r in results)
    assert versions == list(range(1, 21))
    batch = await changes_settled(store, 20)
    assert sorted(c.version for c in batch.changes) == versions


@pytest.mark.parametrize("doc_id", ["it's", "back\\slash\\'", "a'); SELECT 1; --", "ünï 💡"])
async def test_any_id_text_is_stored_and_its_writers_serialized(
    store: Store, clock: ManualClock, doc_id: str
) -> None:
    """Ids with quotes, backslashes and non-ASCII letters: stored as given, and their
    writers (single and batch) still form one unbroken chain (PostgreSQL sends the lock
    key as a literal)."""
    batch = BatchWriteRequest("c", [BatchItem("other", put(b"{}")), BatchItem(doc_id, put(b"{}"))],
                              clock.now())  # fmt: skip
    await asyncio.gather(
        store.write_batch(batch),
        *(store.write(WriteRequest("c", doc_id, put(b"{}"), clock.now())) for _ in range(5)),
    )
    doc = await store.get("c", doc_id)
    assert doc is not None and doc.id == doc_id and doc.version == 6
    changes = await changes_settled(store, 7)
    assert [c.version for c in changes.changes if c.id == doc_id] == [1, 2, 3, 4, 5, 6]


class Exists(Exception):
    pass


def create(data: bytes):  # type: ignore[no-untyped-def]
    """The shape of the service's POST mutator: data when there is no live row."""

    def mutate(current: Document | None) -> bytes:
        if current is not None:
            raise Exists(current.version)
        return data

    return mutate


async def test_expect_absent_creates_version_one(store: Store, clock: ManualClock) -> None:
    r = await store.write(
        WriteRequest("c", "fresh", create(b'{"n":1}'), clock.now(), expect_absent=True)
    )
    assert r.created and r.document.version == 1 and r.response is None
    assert r.document.created_at == r.document.updated_at == clock.now()
    doc = await store.get("c", "fresh")
    assert doc == r.document
    batch = await changes_settled(store, 1)
    assert [(c.seq, c.id, c.version, c.op) for c in batch.changes] == [
        (r.seq, "fresh", 1, ChangeOp.PUT)
    ]
    assert await store.change_bodies([r.seq]) == {r.seq: b'{"n":1}'}


@pytest.mark.parametrize("deleted", [False, True])
async def test_expect_absent_on_an_existing_row_is_the_general_write(
    store: Store, clock: ManualClock, deleted: bool
) -> None:
    """The hint changes nothing when a row of the id exists (live or deleted): ``mutate``
    sees that row, and at most one change row per version is written."""
    await store.write(WriteRequest("c", "x", put(b'{"v":1}'), clock.now()))
    if deleted:
        await store.write(WriteRequest("c", "x", delete, clock.now()))
    clock.advance(1)
    if not deleted:
        with pytest.raises(Exists):
            await store.write(
                WriteRequest("c", "x", create(b'{"v":2}'), clock.now(), expect_absent=True)
            )
    seen: list[Document | None] = []

    def replace(current: Document | None) -> bytes:
        seen.append(current)
        return b'{"v":9}'

    r = await store.write(WriteRequest("c", "x", replace, clock.now(), expect_absent=True))
    assert r.document.version == (3 if deleted else 2) and r.created is deleted
    assert seen[-1] is None if deleted else seen[-1] is not None and seen[-1].version == 1
    batch = await changes_settled(store, 3 if deleted else 2)
    assert [c.version for c in batch.changes] == ([1, 2, 3] if deleted else [1, 2])


async def test_expect_absent_with_a_mutator_refusing_no_row(
    store: Store, clock: ManualClock
) -> None:
    """A mutator that refuses "no row" (a delete) raises as it would without the hint."""

    def remove(current: Document | None) -> None:
        return None

    with pytest.raises(LookupError):
        await store.write(WriteRequest("c", "nothing", remove, clock.now(), expect_absent=True))
    await store.write(WriteRequest("c", "there", put(b"{}"), clock.now()))
    r = await store.write(WriteRequest("c", "there", remove, clock.now(), expect_absent=True))
    assert r.document.deleted and r.document.version == 2


async def test_expect_absent_creates_and_writers_of_one_id_form_one_chain(
    store: Store, clock: ManualClock
) -> None:
    """Creates with the hint racing plain writes of the same id: one chain, one change row
    per version, and exactly one write made version 1."""
    writes = [
        WriteRequest("c", "raced", put(b"{}"), clock.now(), expect_absent=i % 2 == 0)
        for i in range(12)
    ]
    results = await asyncio.gather(*(store.write(w) for w in writes))
    assert sorted(r.document.version for r in results) == list(range(1, 13))
    assert sum(r.created for r in results) == 1
    batch = await changes_settled(store, 12)
    assert [c.version for c in batch.changes] == list(range(1, 13))


async def test_list_page_keyset(store: Store, clock: ManualClock) -> None:
    for i in (3, 1, 2, 5, 4):
        await store.write(WriteRequest("c", f"id{i}", put(b"{}"), clock.now()))
    await store.write(WriteRequest("c", "id2", delete, clock.now()))
    await store.write(WriteRequest("other", "id0", put(b"{}"), clock.now()))
    p1 = (await store.list_query(ListQuery("c", limit=2))).documents
    assert [d.id for d in p1] == ["id1", "id3"]
    p2 = (await store.list_query(ListQuery("c", after=(None, p1[-1].id), limit=2))).documents
    assert [d.id for d in p2] == ["id4", "id5"]
    assert (await store.list_query(ListQuery("c", after=(None, "id5"), limit=2))).documents == []


def _render(result: WriteResult) -> StoredResponse:
    return StoredResponse(
        201, (("etag", f'"{result.document.version}"'),), b"body-%d" % result.document.version
    )


async def test_idempotency_claim_complete_replay(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    first = await claim(store, "POST /c k1", "fp1", "owner-a", now, 30, 3600)
    assert first.state is ClaimState.ACQUIRED
    again = await claim(store, "POST /c k1", "fp1", "owner-b", now, 30, 3600)
    assert again.state is ClaimState.IN_FLIGHT
    other = await claim(store, "POST /c k1", "fp2", "owner-b", now, 30, 3600)
    assert other.state is ClaimState.MISMATCH
    r = await store.write(
        WriteRequest(
            "c", "a", put(b"{}"), now, IdempotencyCompletion("POST /c k1", "owner-a", _render)
        )
    )
    assert r.response == StoredResponse(201, (("etag", '"1"'),), b"body-1")
    replay = await claim(store, "POST /c k1", "fp1", "owner-c", now, 30, 3600)
    assert replay.state is ClaimState.DONE and replay.response == r.response


async def test_idempotency_lost_claim_writes_nothing(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    assert (await claim(store, "s", "fp", "a", now, 5, 3600)).state is ClaimState.ACQUIRED
    clock.advance(10)  # lease expired: b takes over
    assert (await claim(store, "s", "fp", "b", clock.now(), 5, 3600)).state is ClaimState.ACQUIRED
    with pytest.raises(IdempotencyLost):
        await store.write(
            WriteRequest(
                "c", "a", put(b"{}"), clock.now(), IdempotencyCompletion("s", "a", _render)
            )
        )
    assert await store.get("c", "a") is None
    assert await store.last_seq() == 0


async def test_idempotency_release_and_purge(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    await claim(store, "s", "fp", "a", now, 30, 100)
    await store.release_idempotency("s", "a")
    assert (await claim(store, "s", "fp2", "b", now, 30, 100)).state is ClaimState.ACQUIRED
    clock.advance(101)
    assert await store.purge_idempotency(clock.now()) == 1
    assert (await claim(store, "s", "fp3", "c", clock.now(), 30, 100)).state is ClaimState.ACQUIRED


async def test_secret_is_stable(store: Store) -> None:
    a = await store.secret("page_token")
    b = await store.secret("page_token")
    assert a == b and len(a) == 32
    assert await store.secret("other") != a


async def test_committed_at_is_the_first_newer_version(store: Store, clock: ManualClock) -> None:
    """The consistency monitor's question: when was a version newer than N committed?"""
    t1 = clock.now()
    await store.write(WriteRequest("c", "a", put(b'{"v":1}'), t1))
    clock.advance(2)
    t2 = clock.now()
    await store.write(WriteRequest("c", "a", put(b'{"v":2}'), t2))
    clock.advance(3)
    await store.write(WriteRequest("c", "a", delete, clock.now()))
    await store.write(WriteRequest("c", "b", put(b"{}"), clock.now()))
    assert await store.committed_at("c", "a", 0) == t1
    assert await store.committed_at("c", "a", 1) == t2
    assert await store.committed_at("c", "a", 2) == t2 + 3  # a delete is a newer version
    assert await store.committed_at("c", "a", 3) is None
    assert await store.committed_at("other", "a", 0) is None
    assert await store.committed_at("c", "zz", 0) is None


# -- batches: one transaction for many documents ------------------------------------------


async def log_after(store: Store, cursor: int, n: int) -> list[Change]:
    """The first ``n`` changes after ``cursor``. On PostgreSQL another transaction of the
    cluster (other tests') may hold the frontier back for a moment: poll until they show."""
    deadline = time.monotonic() + 10
    while True:
        changes = list((await store.changes_after(cursor, 10 * MAX_BATCH_OPERATIONS)).changes)
        if len(changes) >= n or time.monotonic() > deadline:
            return changes[:n]
        await asyncio.sleep(0.01)


def _render_batch(batch: BatchResult) -> StoredResponse:
    return StoredResponse(200, (), b",".join(r.document.id.encode() for r in batch.results))


async def test_batch_applies_items_in_order_with_one_change_row_each(
    store: Store, clock: ManualClock
) -> None:
    await store.write(WriteRequest("c", "old", put(b'{"v":1}'), clock.now()))
    await store.write(WriteRequest("c", "gone", put(b'{"v":1}'), clock.now()))
    before = await store.last_seq()
    clock.advance(1)
    batch = await store.write_batch(
        BatchWriteRequest(
            "c",
            [
                BatchItem("new", put(b'{"v":"n"}')),
                BatchItem("old", put(b'{"v":2}')),
                BatchItem("gone", delete),
            ],
            clock.now(),
        )
    )
    assert [(r.document.id, r.document.version, r.created) for r in batch.results] == [
        ("new", 1, True),
        ("old", 2, False),
        ("gone", 2, False),
    ]
    assert batch.results[2].document.deleted and batch.response is None
    changes = await log_after(store, before, 3)
    assert [(c.id, c.version, c.op) for c in changes] == [
        ("new", 1, ChangeOp.PUT),
        ("old", 2, ChangeOp.PUT),
        ("gone", 2, ChangeOp.DELETE),
    ]
    assert [c.seq for c in changes] == [r.seq for r in batch.results]
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert all(c.committed_at == clock.now() for c in changes)
    old = await store.get("c", "old")
    assert old is not None and old.data == b'{"v":2}'
    assert await store.get("c", "gone") is None


async def test_batch_failing_item_writes_nothing(store: Store, clock: ManualClock) -> None:
    await store.write(WriteRequest("c", "a", put(b'{"v":1}'), clock.now()))

    def refuse(current: Document | None) -> bytes | None:
        raise ValueError("precondition failed")

    with pytest.raises(ValueError, match="precondition failed"):
        await store.write_batch(
            BatchWriteRequest(
                "c",
                [
                    BatchItem("a", put(b'{"v":2}')),
                    BatchItem("b", put(b"{}")),
                    BatchItem("z", refuse),
                ],
                clock.now(),
            )
        )
    a = await store.get("c", "a")
    assert a is not None and (a.version, a.data) == (1, b'{"v":1}')
    assert await store.get("c", "b") is None
    # Nothing reached the change log.
    assert await store.committed_at("c", "a", 1) is None
    assert await store.committed_at("c", "b", 0) is None
    # The store is usable afterwards, and the chain continues where it was.
    again = await store.write(WriteRequest("c", "a", put(b'{"v":3}'), clock.now()))
    assert again.document.version == 2


async def test_batch_completes_its_idempotency_claim(store: Store, clock: ManualClock) -> None:
    now = clock.now()
    assert (await claim(store, "b1", "fp", "me", now, 30, 3600)).state is ClaimState.ACQUIRED
    batch = await store.write_batch(
        BatchWriteRequest(
            "c",
            [BatchItem("x", put(b"{}")), BatchItem("y", put(b"{}"))],
            now,
            IdempotencyCompletion("b1", "me", _render_batch),
        )
    )
    assert batch.response == StoredResponse(200, (), b"x,y")
    replay = await claim(store, "b1", "fp", "other", now, 30, 3600)
    assert replay.state is ClaimState.DONE and replay.response == batch.response
    # A lost claim aborts the whole batch.
    assert (await claim(store, "b2", "fp", "a", now, 5, 3600)).state is ClaimState.ACQUIRED
    clock.advance(10)
    assert (await claim(store, "b2", "fp", "b", clock.now(), 5, 3600)).state is ClaimState.ACQUIRED
    with pytest.raises(IdempotencyLost):
        await store.write_batch(
            BatchWriteRequest(
                "c",
                [BatchItem("z", put(b"{}"))],
                clock.now(),
                IdempotencyCompletion("b2", "a", _render_batch),
            )
        )
    assert await store.get("c", "z") is None
    assert await store.committed_at("c", "z", 0) is None


async def test_concurrent_batches_in_opposite_orders_all_commit(
    store: Store, clock: ManualClock
) -> None:
    """Locks are taken in one global order: crossing batches and single writes never
    deadlock, and every document keeps one unbroken version chain."""
    ids = [f"d{i}" for i in range(8)]

    def batch(order: list[str]) -> BatchWriteRequest:
        return BatchWriteRequest("c", [BatchItem(i, put(b"{}")) for i in order], clock.now())

    writes = []
    for n in range(6):
        writes.append(store.write_batch(batch(ids if n % 2 else ids[::-1])))
        writes.append(store.write(WriteRequest("c", ids[n], put(b"{}"), clock.now())))
    await asyncio.gather(*writes)
    changes = await log_after(store, 0, 6 * 8 + 6)
    for i in ids:
        versions = [c.version for c in changes if c.id == i]
        assert sorted(versions) == list(range(1, len(versions) + 1))
        assert versions == sorted(versions)  # the log is in each document's version order
    assert len(changes) == 6 * 8 + 6


async def test_batch_limit(store: Store, clock: ManualClock) -> None:
    items = [BatchItem(f"i{n}", put(b"{}")) for n in range(MAX_BATCH_OPERATIONS + 1)]
    with pytest.raises(ValueError):
        await store.write_batch(BatchWriteRequest("c", items, clock.now()))
    full = await store.write_batch(BatchWriteRequest("c", items[:-1], clock.now()))
    assert len(full.results) == MAX_BATCH_OPERATIONS
    changes = await log_after(store, 0, MAX_BATCH_OPERATIONS)
    assert [c.id for c in changes] == [i.id for i in items[:-1]]


async def test_change_bodies_are_the_data_at_each_version(store: Store, clock: ManualClock) -> None:
    one = await store.write(WriteRequest("c", "a", put(b'{"v":1}'), clock.now()))
    two = await store.write(WriteRequest("c", "a", put(b'{"v":2}'), clock.now()))
    batch = await store.write_batch(
        BatchWriteRequest(
            "c", [BatchItem("b", put(b'{"w":1}')), BatchItem("a", delete)], clock.now()
        )
    )
    seqs = [one.seq, two.seq, *(r.seq for r in batch.results)]
    assert await store.change_bodies(seqs) == {
        one.seq: b'{"v":1}',
        two.seq: b'{"v":2}',
        batch.results[0].seq: b'{"w":1}',
        batch.results[1].seq: None,
    }
    assert await store.change_bodies([]) == {}
