"""List queries in every adapter: each operator, typed comparison, the documented order
(missing values last ascending, first descending), keyset pages, count, the collection
version, and query indexes (created, dropped, used by the planner)."""

from __future__ import annotations

import json
import random

import pytest

from maxage.contracts import IndexSpec
from maxage.core.clock import ManualClock
from maxage.store.base import (
    Condition,
    ListQuery,
    Op,
    Scalar,
    Store,
    WriteRequest,
    index_value,
    prefix_upper,
)
from maxage.store.query_sql import index_name

STATUS = IndexSpec("status", ("status",), "string")
SCORE = IndexSpec("score", ("score",), "number")
COUNT = IndexSpec("n", ("n",), "integer")
FLAG = IndexSpec("flag", ("flag",), "boolean")
AUTHOR = IndexSpec("author.id", ("author", "id"), "string")
INDEXES = (STATUS, SCORE, COUNT, FLAG, AUTHOR)


def _doc(i: int, rng: random.Random) -> dict[str, object]:
    doc: dict[str, object] = {}
    if rng.random() < 0.85:
        doc["status"] = rng.choice(["draft", "published", "pub", "Published", "é", ""])
    if rng.random() < 0.85:
        doc["score"] = rng.choice([0, 1, 1.5, -2, 10, 0.1, 100])
    if rng.random() < 0.1:
        doc["score"] = "not a number"  # another type: no value for the index
    if rng.random() < 0.85:
        doc["n"] = rng.randrange(-3, 4)
    if rng.random() < 0.85:
        doc["flag"] = rng.random() < 0.5
    if rng.random() < 0.7:
        doc["author"] = {"id": rng.choice(["a1", "a2", "b1"])}
    return doc


async def _load(store: Store, clock: ManualClock, n: int = 60) -> dict[str, dict[str, object]]:
    rng = random.Random(7)
    docs = {}
    for i in range(n):
        doc = _doc(i, rng)
        doc_id = f"d{rng.randrange(10**6):06d}-{i:03d}"
        await store.write(
            WriteRequest("q", doc_id, lambda _, d=doc: json.dumps(d).encode(), clock.now())
        )
        docs[doc_id] = doc
    await store.write(WriteRequest("other", "x", lambda _: b'{"status":"draft"}', clock.now()))
    return docs


def _ok(v: Scalar | None, c: Condition) -> bool:
    if v is None:
        return False
    x = c.values[0]
    return {
        Op.EQ: lambda: v == x,
        Op.NE: lambda: v != x,
        Op.LT: lambda: v < x,  # type: ignore[operator]
        Op.LTE: lambda: v <= x,  # type: ignore[operator]
        Op.GT: lambda: v > x,  # type: ignore[operator]
        Op.GTE: lambda: v >= x,  # type: ignore[operator]
        Op.IN: lambda: v in c.values,
        Op.PREFIX: lambda: isinstance(v, str) and v.startswith(str(x)),
    }[c.op]()


def _expected(docs: dict[str, dict[str, object]], q: ListQuery) -> list[str]:
    rows = [
        (i, d)
        for i, d in docs.items()
        if all(_ok(index_value(d, c.index), c) for c in q.conditions)
    ]
    if q.sort is None:
        return sorted((i for i, _ in rows), reverse=q.descending)
    valued = sorted(
        ((index_value(d, q.sort), i) for i, d in rows if index_value(d, q.sort) is not None),
        reverse=q.descending,
    )
    missing = sorted((i for i, d in rows if index_value(d, q.sort) is None), reverse=q.descending)
    ids = [i for _, i in valued]
    return missing + ids if q.descending else ids + missing


async def _all_pages(store: Store, q: ListQuery) -> list[str]:
    out: list[str] = []
    after = None
    while True:
        page = await store.list_query(
            ListQuery(q.collection, q.conditions, q.sort, q.descending, after, 7)
        )
        out.extend(d.id for d in page.documents)
        if len(page.documents) < 7:
            return out
        last = page.documents[-1]
        value = index_value(json.loads(last.data), q.sort) if q.sort is not None else None
        after = (value, last.id)


CASES = [
    (),
    (Condition(STATUS, Op.EQ, ("published",)),),
    (Condition(STATUS, Op.NE, ("published",)),),
    (Condition(STATUS, Op.IN, ("pub", "draft", "")),),
    (Condition(STATUS, Op.PREFIX, ("pub",)),),
    (Condition(STATUS, Op.GT, ("P",)),),
    (Condition(SCORE, Op.GTE, (1,)), Condition(SCORE, Op.LT, (10,))),
    (Condition(SCORE, Op.EQ, (0.1,)),),
    (Condition(SCORE, Op.LTE, (1.5,)),),
    (Condition(COUNT, Op.GT, (0,)),),
    (Condition(COUNT, Op.IN, (-3, 3)),),
    (Condition(FLAG, Op.EQ, (True,)),),
    (Condition(FLAG, Op.NE, (True,)),),
    (Condition(AUTHOR, Op.EQ, ("a1",)), Condition(FLAG, Op.EQ, (False,))),
    (Condition(AUTHOR, Op.PREFIX, ("",)),),
]


@pytest.mark.parametrize("conditions", CASES, ids=[str(i) for i in range(len(CASES))])
async def test_every_operator_sort_and_keyset(
    store: Store, clock: ManualClock, conditions: tuple[Condition, ...]
) -> None:
    await store.sync_indexes({"q": INDEXES})
    docs = await _load(store, clock)
    for sort in (None, STATUS, SCORE, COUNT, FLAG, AUTHOR):
        for descending in (False, True):
            q = ListQuery("q", conditions, sort, descending, limit=1000, count=True)
            want = _expected(docs, q)
            result = await store.list_query(q)
            assert [d.id for d in result.documents] == want, (sort, descending)
            assert result.total == len(want)
            assert await _all_pages(store, q) == want, (sort, descending)


async def test_version_is_the_collections_highest_seq(store: Store, clock: ManualClock) -> None:
    assert (await store.list_query(ListQuery("q"))).version == 0
    r1 = await store.write(WriteRequest("q", "a", lambda _: b"{}", clock.now()))
    await store.write(WriteRequest("other", "a", lambda _: b"{}", clock.now()))
    assert (await store.list_query(ListQuery("q"))).version == r1.seq
    r2 = await store.write(WriteRequest("q", "a", lambda _: None, clock.now()))
    result = await store.list_query(ListQuery("q", count=True))
    assert result.version == r2.seq and result.documents == [] and result.total == 0


def test_prefix_upper() -> None:
    assert prefix_upper("ab") == "ac"
    assert prefix_upper("a\U0010ffff") == "b"
    assert prefix_upper("\U0010ffff") is None
    assert prefix_upper("\ud7ff") == "\ue000"


async def test_sync_indexes_creates_and_drops(store: Store) -> None:
    first = await store.sync_indexes({"q": (STATUS, SCORE)})
    if not first.created:  # the memory store answers by scanning
        return
    assert set(first.created) == {index_name("q", STATUS), index_name("q", SCORE)}
    again = await store.sync_indexes({"q": (STATUS, SCORE)})
    assert again.created == () and again.dropped == ()
    changed = await store.sync_indexes({"q": (SCORE, FLAG)})
    assert changed.created == (index_name("q", FLAG),)
    assert changed.dropped == (index_name("q", STATUS),)


async def test_the_planner_uses_the_index(store: Store, clock: ManualClock) -> None:
    explain = getattr(store, "explain", None)
    if explain is None:
        pytest.skip("the memory store has no planner")
    await store.sync_indexes({"q": INDEXES})
    for i in range(1500):
        data = json.dumps({"author": {"id": f"a{i % 300}"}, "score": i}).encode()
        await store.write(WriteRequest("q", f"d{i:05d}", lambda _, d=data: d, clock.now()))
    plan = await explain(ListQuery("q", (Condition(AUTHOR, Op.EQ, ("a1",)),), limit=20))
    assert index_name("q", AUTHOR) in plan, plan
    plan = await explain(ListQuery("q", (), SCORE, True, (1.5, "d5"), limit=20))
    assert index_name("q", SCORE) in plan, plan


async def test_a_long_string_is_not_indexed_and_never_fails_a_write(
    store: Store, clock: ManualClock
) -> None:
    await store.sync_indexes({"q": INDEXES})
    long = "x" * 3000 + "é" * 3000  # beyond any btree entry
    await store.write(WriteRequest("q", "long", lambda _: json.dumps({"status": long}).encode(),
                                   clock.now()))  # fmt: skip
    await store.write(WriteRequest("q", "short", lambda _: b'{"status": "x"}', clock.now()))
    got = await store.list_query(ListQuery("q", (Condition(STATUS, Op.PREFIX, ("x",)),)))
    assert [d.id for d in got.documents] == ["short"]
    ordered = await store.list_query(ListQuery("q", (), STATUS))
    assert [d.id for d in ordered.documents] == ["short", "long"]  # no value: last
