"""P7 on hand-made histories: each planted feed anomaly is flagged; a clean feed passes."""

from __future__ import annotations

import json

from maxage.checker.checks import check
from maxage.checker.feed import CHANGE, DRAINED
from maxage.checker.history import OK, Op, iter_ops


def w(i: int, kind: str, key: str, v: int, t0: float, t1: float, *, replay: bool = False) -> Op:
    return Op(i, 1, kind, "c", key, invoke=t0, ret=t1, outcome=OK, version=v, token=f"t{i}",
              body_hash=f"h{i}", status=204 if kind == "delete" else 200, replay=replay)  # fmt: skip


def line(i: int, key: str, v: int, cursor: int, at: float, *, conn: int = 100, after: int = 0,
         op: str = "put") -> Op:  # fmt: skip
    return Op(i, conn, CHANGE, "c", key, version=v, cursor=cursor, after=after, detail=op,
              invoke=at, ret=at)  # fmt: skip


def drained(i: int, t0: float, t1: float, after: int, conn: int = 200) -> Op:
    return Op(i, conn, CHANGE, "c", invoke=t0, ret=t1, after=after, detail=DRAINED)


def writes() -> list[Op]:
    return [
        w(1, "create", "a", 1, 0.0, 0.1),
        w(2, "create", "b", 1, 0.2, 0.3),
        w(3, "put", "a", 2, 0.4, 0.5),
        w(4, "delete", "b", 2, 0.6, 0.7),
    ]


def clean_feed() -> list[Op]:
    # two connections: the first dropped after two lines, the second resumed after cursor 2
    return [
        line(10, "a", 1, 1, 0.15),
        line(11, "b", 1, 2, 0.35),
        line(12, "a", 2, 3, 0.55, conn=101, after=2),
        line(13, "b", 2, 4, 0.75, conn=101, after=2, op="delete"),
        drained(14, 0.8, 0.9, after=4),
    ]


def p7(ops: list[Op]) -> list[str]:
    return [v.message for v in check(ops, {"c": 1.0}).violations if v.prop == "P7"]


def test_a_clean_feed_with_a_resume_passes() -> None:
    assert p7(writes() + clean_feed()) == []


def test_a_change_replayed_on_resume_is_flagged() -> None:
    feed = clean_feed()
    feed.insert(2, line(15, "b", 1, 2, 0.5, conn=101, after=2))
    assert any("sent cursor 2 again" in m for m in p7(writes() + feed))


def test_a_change_skipped_on_resume_is_flagged() -> None:
    feed = [o for o in clean_feed() if o.id != 12]  # "a" version 2 never arrives
    messages = p7(writes() + feed)
    assert any("a version 2 was acknowledged, but the feed" in m for m in messages)


def test_a_version_gap_is_flagged_before_the_feed_is_drained() -> None:
    ops = [*writes(), w(5, "put", "a", 3, 0.8, 0.9)]
    feed = [line(10, "a", 1, 1, 0.15), line(11, "a", 3, 5, 1.0)]
    assert any("skipped version(s) 2..2" in m for m in p7(ops + feed))


def test_two_rows_for_one_version_are_flagged() -> None:
    feed = [*clean_feed()[:4], line(16, "a", 2, 5, 0.95, conn=102, after=4)]
    assert any("two change rows for c/a version 2" in m for m in p7(writes() + feed))


def test_a_delete_shown_as_a_put_is_flagged() -> None:
    feed = clean_feed()
    feed[3] = line(13, "b", 2, 4, 0.75, conn=101, after=2, op="put")
    assert any("a delete appears in the feed as op 'put'" in m for m in p7(writes() + feed))


def test_commit_order_against_real_time_is_flagged() -> None:
    feed = [
        line(10, "a", 1, 2, 0.15),  # acknowledged before "b" was sent, yet the later cursor
        line(11, "b", 1, 1, 0.35, conn=101),
    ]
    assert any("has the larger cursor" in m for m in p7(writes()[:2] + feed))


def test_an_idempotent_replay_is_not_ordered_by_its_own_interval() -> None:
    ops = [*writes()[:2], w(5, "create", "a", 1, 0.4, 0.5, replay=True)]
    feed = [line(10, "a", 1, 1, 0.15), line(11, "b", 1, 2, 0.35)]
    assert p7(ops + feed) == []


def test_documents_the_run_did_not_write_are_ignored() -> None:
    feed = [*clean_feed(), line(20, "other", 7, 9, 0.95, conn=103, after=4)]
    assert p7(writes() + feed) == []


def test_feed_records_round_trip_through_the_history_file() -> None:
    """Zeros are values (client 0, cursor 0, after 0), not empty fields to leave out."""
    ops = [*writes(), *clean_feed(), Op(99, 0, "create", "c", "z", invoke=0.0, ret=0.1)]
    again = list(iter_ops(json.dumps(o.brief()) for o in ops))
    assert again == ops
