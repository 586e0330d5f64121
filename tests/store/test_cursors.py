"""The store contract for cursors (named consumers, webhook subscriptions) and dead letters:
every adapter (SQLite, PostgreSQL, memory) passes the same tests."""

from __future__ import annotations

from maxage.store.base import Change, ChangeOp, DeadLetter, Store, WriteRequest


async def _write(store: Store, id: str, now: float) -> int:
    result = await store.write(WriteRequest("c", id, lambda current: b"{}", now))
    return result.seq


async def test_cursor_lease_ack_and_auto_ack(store: Store) -> None:
    first = await store.claim_cursor("c", "n", "r1", 10.0, 5.0, ack_delivered=False)
    assert (first.position, first.delivered, first.lease_owner) == (0, 0, "r1")
    # Another reader is refused while the lease holds (the row comes back unchanged).
    busy = await store.claim_cursor("c", "n", "r2", 12.0, 5.0, ack_delivered=False)
    assert busy.lease_owner == "r1"
    # The holder records what it sent; only it may, and only upwards.
    moved = await store.move_cursor("c", "n", 13.0, delivered=7, owner="r1", lease=5.0)
    assert moved is not None and (moved.position, moved.delivered) == (0, 7)
    assert moved.lease_until == 18.0
    assert await store.move_cursor("c", "n", 13.0, delivered=9, owner="r2") is None
    # An ack from anyone moves the position, never down.
    acked = await store.move_cursor("c", "n", 14.0, position=5)
    assert acked is not None and (acked.position, acked.acked_at) == (5, 14.0)
    assert (await store.move_cursor("c", "n", 15.0, position=3)).position == 5  # type: ignore[union-attr]
    # Released: a new reader with auto-ack starts after everything sent before.
    await store.release_cursor("c", "n", "r1")
    auto = await store.claim_cursor("c", "n", "r2", 16.0, 5.0, ack_delivered=True)
    assert (auto.lease_owner, auto.position, auto.delivered) == ("r2", 7, 7)
    # An expired lease is taken over.
    later = await store.claim_cursor("c", "n", "r3", 30.0, 5.0, ack_delivered=False)
    assert later.lease_owner == "r3"
    assert [c.name for c in await store.cursors()] == ["n"]
    assert await store.move_cursor("c", "missing", 1.0, position=1) is None
    assert await store.drop_cursor("c", "n") and not await store.drop_cursor("c", "n")


async def test_changes_behind(store: Store) -> None:
    empty = await store.changes_behind("c", 0, 100)
    assert (empty.behind, empty.oldest_at, empty.newest_at) == (0, None, None)
    seqs = [await _write(store, f"d{i}", 100.0 + i) for i in range(5)]
    await store.write(WriteRequest("other", "x", lambda current: b"{}", 200.0))
    backlog = await store.changes_behind("c", seqs[1], 100)
    assert (backlog.behind, backlog.oldest_at, backlog.newest_at) == (3, 102.0, 104.0)
    assert (await store.changes_behind("c", seqs[1], 2)).behind == 2  # capped
    assert (await store.changes_behind("c", seqs[-1], 100)).behind == 0


async def test_deadletters_and_the_cursor_move_together(store: Store) -> None:
    seq = await _write(store, "d1", 100.0)
    # Not read back through changes_after: on a shared PostgreSQL another test's open
    # transaction may hold the row behind the frontier for a while.
    change = Change(seq, "c", "d1", 1, ChangeOp.PUT, 100.0)
    await store.claim_cursor("c", "_webhook.w", "me", 100.0, 5.0, ack_delivered=False)
    letter = DeadLetter(0, "c", "w", change, 5, "HTTP 500", 101.0)
    id_ = await store.add_deadletter(letter, cursor=("_webhook.w", seq))
    cursor = await store.move_cursor("c", "_webhook.w", 102.0)
    assert cursor is not None and cursor.position == seq
    stored = await store.deadletter(id_)
    assert stored is not None and stored.id == id_ and stored.change == change
    assert (stored.attempts, stored.error, stored.subscription) == (5, "HTTP 500", "w")
    second = await store.add_deadletter(DeadLetter(0, "other", "w", change, 1, "x", 103.0))
    assert [d.id for d in await store.deadletters(None, 0, 10)] == [id_, second]
    assert [d.id for d in await store.deadletters("c", 0, 10)] == [id_]
    assert [d.id for d in await store.deadletters(None, id_, 10)] == [second]
    assert await store.drop_deadletter(id_) and not await store.drop_deadletter(id_)
    assert await store.deadletter(id_) is None
