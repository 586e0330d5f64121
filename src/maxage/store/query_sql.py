"""List queries as SQL, for both adapters: one plan, two dialects.

Invariant: a condition or sort on an index uses exactly the expression that index is
built on (:meth:`Dialect.expr`) and the index's partial predicate (the collection as a
literal, live rows only), so the database can answer it from the index. Field paths and
collection names are inlined: both are validated identifiers (``contracts``); every
value is a bound parameter.

Keyset order with missing values: a query reads two parts, documents *with* a value for
the sort index, ordered by ``(value, id)``, and documents *without*, ordered by ``id``;
ascending reads the first part then the second, descending the reverse (a missing value
sorts last ascending). Each part is a range scan of the ``(expression, id)`` index, and
the adapter reads both, the count and the collection version in one snapshot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from maxage.contracts import IndexSpec
from maxage.store.base import Condition, ListQuery, Op, Scalar, prefix_upper

# Bump when an expression changes: indexes get new names and are rebuilt by sync_indexes.
EXPRESSION_VERSION = 2
INDEX_PREFIX = "mxq_"


def index_name(collection: str, index: IndexSpec) -> str:
    """The primary's name for a query index: a digest of what the index is built on."""
    key = f"{collection}\0{'/'.join(index.path)}\0{index.type}\0{EXPRESSION_VERSION}"
    return INDEX_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Dialect:
    expr: Callable[[IndexSpec], str]  # the typed value expression (None: missing/other type)
    param: Callable[[int], str]  # placeholder for the n-th parameter (1-based)
    value: Callable[[IndexSpec, Scalar], object]  # a query value as the driver binds it
    live: str  # the live-rows predicate, as written in the partial index
    hint: Callable[[str], str] = lambda name: ""  # text after the table naming index ``name``


@dataclass
class Statement:
    sql: str
    args: list[object]


class _Builder:
    def __init__(self, d: Dialect) -> None:
        self.d = d
        self.args: list[object] = []

    def bind(self, value: object) -> str:
        self.args.append(value)
        return self.d.param(len(self.args))


def where_clause(
    d: Dialect, collection: str, b: _Builder, conditions: tuple[Condition, ...]
) -> str:
    parts = [f"collection = '{collection}'", d.live]
    for c in conditions:
        e = d.expr(c.index)
        vals = [d.value(c.index, v) for v in c.values]
        if c.op is Op.IN:
            parts.append(f"{e} IN ({', '.join(b.bind(v) for v in vals)})")
        elif c.op is Op.PREFIX:
            assert isinstance(c.values[0], str)
            upper = prefix_upper(c.values[0])
            parts.append(f"{e} >= {b.bind(vals[0])}")
            if upper is not None:
                parts.append(f"{e} < {b.bind(upper)}")
        else:
            parts.append(f"{e} {_SQL_OPS[c.op]} {b.bind(vals[0])}")
    return " AND ".join(parts)


_SQL_OPS = {Op.EQ: "=", Op.NE: "<>", Op.LT: "<", Op.LTE: "<=", Op.GT: ">", Op.GTE: ">="}


def chosen_index(q: ListQuery) -> IndexSpec | None:
    """The index a page is read through, for a planner without statistics (SQLite before
    its first ANALYZE would scan the collection by id): an equality or ``in`` condition's
    (few rows, then sorted), else the sort's (rows in order, filtered), else a range or
    prefix condition's; None: by id."""
    for c in q.conditions:
        if c.op in (Op.EQ, Op.IN):
            return c.index
    if q.sort is not None:
        return q.sort
    for c in q.conditions:
        if c.op is not Op.NE:
            return c.index
    return None


def page_statements(
    d: Dialect, q: ListQuery, columns: str, table: str, shared: _Builder | None = None
) -> list[Statement]:
    """The statements of one page, in order: read them in turn (one snapshot) until
    ``q.limit`` documents are found. With ``shared``, every statement binds into it
    (one numbering, for :func:`page_statement`) and also selects ``part`` (its place)
    and ``sortv`` (the sort value)."""
    desc = " DESC" if q.descending else ""
    cmp = "<" if q.descending else ">"
    via = chosen_index(q)
    source = table if via is None else table + d.hint(index_name(q.collection, via))
    sortv = "NULL" if q.sort is None else d.expr(q.sort)
    made: list[Statement] = []

    def part(extra: str, order: str, keyset: Callable[[_Builder], str] | None) -> Statement:
        b = shared or _Builder(d)
        where = where_clause(d, q.collection, b, q.conditions) + extra
        if keyset is not None:
            where += " AND " + keyset(b)
        what = columns if shared is None else f"{len(made)} AS part, {columns}, {sortv} AS sortv"
        sql = f"SELECT {what} FROM {source} WHERE {where} ORDER BY {order} LIMIT {int(q.limit)}"
        made.append(Statement(sql, b.args))
        return made[-1]

    if q.sort is None:
        if q.after is None:
            return [part("", f"id{desc}", None)]
        after_id = q.after[1]
        return [part("", f"id{desc}", lambda b: f"id {cmp} {b.bind(after_id)}")]
    e = d.expr(q.sort)
    sort = q.sort
    with_value = f" AND {e} IS NOT NULL"
    without = f" AND {e} IS NULL"
    by_value = f"{e}{desc}, id{desc}"
    by_id = f"id{desc}"
    after = q.after
    if after is None:  # made in page order (``part`` numbers them)
        if q.descending:
            missing, valued = part(without, by_id, None), part(with_value, by_value, None)
        else:
            valued, missing = part(with_value, by_value, None), part(without, by_id, None)
    elif after[0] is None:
        last_id = after[1]
        missing = part(without, by_id, lambda b: f"id {cmp} {b.bind(last_id)}")
        if not q.descending:
            return [missing]  # every valued document came before
        valued = part(with_value, by_value, None)
    else:
        v, last_id = d.value(sort, after[0]), after[1]
        valued = part(
            with_value, by_value, lambda b: f"({e}, id) {cmp} ({b.bind(v)}, {b.bind(last_id)})"
        )
        if q.descending:
            return [valued]  # every missing document came before
        missing = part(without, by_id, None)
    return [missing, valued] if q.descending else [valued, missing]


def count_statement(
    d: Dialect, q: ListQuery, table: str, shared: _Builder | None = None
) -> Statement:
    b = shared or _Builder(d)
    where = where_clause(d, q.collection, b, q.conditions)
    return Statement(f"SELECT count(*) FROM {table} WHERE {where}", b.args)


def page_statement(d: Dialect, q: ListQuery, columns: str, table: str, changes: str) -> Statement:
    """A whole page in one statement, so in one snapshot without a transaction (one round
    trip on PostgreSQL): rows ``list_version, list_total, part, <columns>, sortv`` in page
    order; a page without documents is one row whose other columns are NULL. The parts of
    :func:`page_statements` are joined by UNION ALL, each still a range scan of its index
    (the sort on ``part, sortv, id`` orders at most two pages of rows)."""
    b = _Builder(d)
    parts = page_statements(d, q, columns, table, shared=b)
    union = " UNION ALL ".join(f"({p.sql})" for p in parts)
    total = f"({count_statement(d, q, table, shared=b).sql})" if q.count else "NULL::bigint"
    version = f"(SELECT COALESCE(max(seq), 0) FROM {changes} WHERE collection = '{q.collection}')"
    desc = " DESC" if q.descending else ""
    sql = (
        f"SELECT m.list_version, m.list_total, u.* FROM (SELECT {version} AS list_version,"
        f" {total} AS list_total) AS m LEFT JOIN LATERAL ({union}) AS u ON true"
        f" ORDER BY u.part, u.sortv{desc}, u.id{desc}"
    )
    return Statement(sql, b.args)


def index_statement(d: Dialect, collection: str, index: IndexSpec, table: str, how: str) -> str:
    """``CREATE INDEX {how} name ON table ((expr), id) WHERE <partial predicate>``."""
    return (
        f"CREATE INDEX {how} {index_name(collection, index)} ON {table}"
        f" (({d.expr(index)}), id) WHERE collection = '{collection}' AND {d.live}"
    )
