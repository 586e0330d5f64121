"""SQLite primary (the embedded default), in WAL mode.

Threading: every call runs off the event loop. Writes go through one dedicated
writer thread (one connection; SQLite has a single writer anyway) and start with
``BEGIN IMMEDIATE`` so the read-modify-write of a document holds the database
write lock from its first read: that also makes several processes on one file
safe. Reads use a small pool of threads, each with its own connection; WAL lets
them run beside the writer.

Change-log order: ``seq`` is assigned inside the write transaction while the
write lock is held, so commit order equals ``seq`` order and a poll that starts
a read transaction at time ``t`` sees every change committed before ``t``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from maxage import tracing
from maxage.contracts import MAX_BATCH_OPERATIONS, IndexSpec
from maxage.core.types import Clock
from maxage.hooks import Hooks
from maxage.store.base import (
    CHANGE_OPS,
    MAX_INDEXED_CHARS,
    Backlog,
    BatchResult,
    BatchWriteRequest,
    Change,
    ChangeBatch,
    ChangeOp,
    Claim,
    ClaimDecision,
    ClaimState,
    CursorRecord,
    DeadLetter,
    Document,
    IdempotencyLost,
    IdempotencyRecord,
    IndexSync,
    ListQuery,
    ListResult,
    Mutator,
    Scalar,
    StoredResponse,
    StoreError,
    StoreStats,
    StoreTimeout,
    WriteRequest,
    WriteResult,
    decode_headers,
    encode_headers,
    moved,
    mutated,
)
from maxage.store.query_sql import (
    INDEX_PREFIX,
    Dialect,
    Statement,
    count_statement,
    index_name,
    index_statement,
    page_statements,
)

T = TypeVar("T")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS documents (
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (collection, id)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS changes (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        collection TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        op TEXT NOT NULL,
        committed_at REAL NOT NULL,
        data BLOB
    )""",
    """CREATE TABLE IF NOT EXISTS idempotency (
        scope TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        owner TEXT NOT NULL,
        state TEXT NOT NULL,
        status INTEGER,
        headers TEXT,
        body BLOB,
        lease_until REAL NOT NULL,
        expires_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_expires ON idempotency (expires_at)",
    "CREATE INDEX IF NOT EXISTS changes_committed_at ON changes (committed_at)",
    # The consistency monitor's lookup: the first change of a document after a version.
    "CREATE INDEX IF NOT EXISTS changes_doc_version ON changes (collection, id, version)",
    # A list's collection version: the highest seq of the collection.
    "CREATE INDEX IF NOT EXISTS changes_collection_seq ON changes (collection, seq)",
    """CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS cursors (
        collection TEXT NOT NULL,
        name TEXT NOT NULL,
        position INTEGER NOT NULL,
        delivered INTEGER NOT NULL,
        acked_at REAL NOT NULL,
        lease_owner TEXT NOT NULL,
        lease_until REAL NOT NULL,
        PRIMARY KEY (collection, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS deadletters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        collection TEXT NOT NULL,
        subscription TEXT NOT NULL,
        seq INTEGER NOT NULL,
        doc_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        op TEXT NOT NULL,
        committed_at REAL NOT NULL,
        attempts INTEGER NOT NULL,
        error TEXT NOT NULL,
        failed_at REAL NOT NULL
    )""",
]


def _idempotency_record(row: tuple[Any, ...]) -> IdempotencyRecord:
    fingerprint, state, status, headers, body, lease_until, expires_at = row
    done = state == "done"
    response = StoredResponse(int(status), decode_headers(headers), bytes(body)) if done else None
    return IdempotencyRecord(fingerprint, done, response, float(lease_until), float(expires_at))


def _row_to_doc(row: tuple[object, ...]) -> Document:
    collection, id_, version, data, created_at, updated_at, deleted = row
    return Document(
        collection=str(collection),
        id=str(id_),
        version=int(version),  # type: ignore[call-overload]
        data=bytes(data),  # type: ignore[call-overload]
        created_at=float(created_at),  # type: ignore[arg-type]
        updated_at=float(updated_at),  # type: ignore[arg-type]
        deleted=bool(deleted),
    )


_DOC_COLUMNS = "collection, id, version, data, created_at, updated_at, deleted"
# Below SQLite's smallest default limit on bound parameters (999).
_BODIES_PER_QUERY = 500


def _write_one(
    conn: sqlite3.Connection, collection: str, id: str, mutate: Mutator, now: float
) -> WriteResult:
    """Read the row, run ``mutate``, write the next version and its change row (in the
    caller's transaction)."""
    row = conn.execute(
        f"SELECT {_DOC_COLUMNS} FROM documents WHERE collection=? AND id=?", (collection, id)
    ).fetchone()
    live, new_data, version = mutated(_row_to_doc(row) if row else None, mutate)
    if new_data is None:
        assert live is not None
        conn.execute(
            "UPDATE documents SET version=?, updated_at=?, deleted=1 WHERE collection=? AND id=?",
            (version, now, collection, id),
        )
        doc = Document(collection, id, version, live.data, live.created_at, now, True)
        op = ChangeOp.DELETE
    else:
        created_at = live.created_at if live else now
        conn.execute(
            "INSERT INTO documents (collection, id, version, data, created_at, updated_at,"
            " deleted) VALUES (?, ?, ?, ?, ?, ?, 0) ON CONFLICT (collection, id) DO UPDATE"
            " SET version=excluded.version, data=excluded.data,"
            " created_at=excluded.created_at, updated_at=excluded.updated_at, deleted=0",
            (collection, id, version, new_data, created_at, now),
        )
        doc = Document(collection, id, version, new_data, created_at, now)
        op = ChangeOp.PUT
    cur = conn.execute(
        "INSERT INTO changes (collection, id, version, op, committed_at, data)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (collection, id, version, op.value, now, new_data),
    )
    return WriteResult(document=doc, created=live is None, seq=int(cur.lastrowid or 0))


def _complete_idempotency(
    conn: sqlite3.Connection, scope: str, owner: str, response: StoredResponse
) -> StoredResponse:
    """Store ``response`` as the claim's outcome, if the claim is still ``owner``'s."""
    held = conn.execute("SELECT owner, state FROM idempotency WHERE scope=?", (scope,)).fetchone()
    if held is None or held[0] != owner or held[1] != "in_flight":
        raise IdempotencyLost(f"idempotency claim {scope!r} was lost")
    conn.execute(
        "UPDATE idempotency SET state='done', status=?, headers=?, body=? WHERE scope=?",
        (response.status, encode_headers(response.headers), response.body, scope),
    )
    return response


_JSON_TYPES = {
    "string": "= 'text'",
    "integer": "IN ('integer', 'real')",
    "number": "IN ('integer', 'real')",
    "boolean": "IN ('true', 'false')",
}


def _expr(index: IndexSpec) -> str:
    """The typed value of ``index`` in a row: json_extract, when json_type agrees with the
    index's type (a boolean is 1 or 0); NULL otherwise. The data column is a BLOB, and
    SQLite's JSON functions take text."""
    path = "'$." + ".".join(index.path) + "'"
    j = "CAST(data AS TEXT)"
    value = f"json_extract({j}, {path})"
    short = f" AND length({value}) <= {MAX_INDEXED_CHARS}" if index.type == "string" else ""
    return f"CASE WHEN json_type({j}, {path}) {_JSON_TYPES[index.type]}{short} THEN {value} END"


# A build reads the whole collection: not held to the per-call timeout of reads and writes.
_INDEX_BUILD_TIMEOUT = 3600.0
# How long start-up waits for the write lock another process holds (seconds).
_STARTUP_LOCK_WAIT = 120.0


def _is_locked(exc: BaseException) -> bool:
    """Whether a store error is SQLite's lock contention, which waiting resolves."""
    cause = exc.__cause__
    return isinstance(cause, sqlite3.OperationalError) and (
        "locked" in str(cause) or "busy" in str(cause)
    )


def _value(index: IndexSpec, value: Scalar) -> object:
    return int(value) if isinstance(value, bool) else value


# INDEXED BY: SQLite plans without statistics until an ANALYZE, and then prefers the
# primary key (the whole collection in id order) to any expression index.
SQLITE = Dialect(
    expr=_expr,
    param=lambda n: "?",
    value=_value,
    live="deleted = 0",
    hint=lambda name: f' INDEXED BY "{name}"',
)
# When an index is missing (another process's config dropped it): a correct, slower plan.
SQLITE_UNHINTED = Dialect(expr=_expr, param=lambda n: "?", value=_value, live="deleted = 0")


class SQLiteStore:
    """The embedded primary. ``path`` is a file; its directory is created if needed."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock,
        timeout: float = 5.0,
        readers: int = 4,
        hooks: Hooks | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.timeout = timeout
        self.stats = StoreStats()
        # Test hooks (maxage.hooks): a slow primary.
        self.hooks = hooks
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="maxage-sqlite-w")
        self._readers = ThreadPoolExecutor(
            max_workers=readers, thread_name_prefix="maxage-sqlite-r"
        )
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._opened = False

    # -- connections -------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                conn.close()
                raise
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    async def _run(
        self, op: str, pool: ThreadPoolExecutor, fn: Callable[[], T], timeout: float | None = None
    ) -> T:
        if tracing.TRACER is not None:
            with tracing.span(
                f"sqlite {op}", **{"db.system.name": "sqlite", "db.operation.name": op}
            ):
                return await self._timed(op, pool, fn, timeout)
        return await self._timed(op, pool, fn, timeout)

    async def _timed(
        self, op: str, pool: ThreadPoolExecutor, fn: Callable[[], T], timeout: float | None = None
    ) -> T:
        """``timeout``: this call's, when not the store's (None: the store's)."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        ok = False
        try:
            if self.hooks is not None:
                await self.hooks.before_store_call(op)
            fut = loop.run_in_executor(pool, fn)
            try:
                result = await asyncio.wait_for(asyncio.shield(fut), timeout or self.timeout)
            except TimeoutError as exc:
                raise StoreTimeout(f"sqlite {op} exceeded {self.timeout}s") from exc
            ok = True
            return result
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite {op} failed: {exc}") from exc
        finally:
            self.stats.record(op, time.perf_counter() - started, ok)

    def _read(self, op: str, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        return asyncio.ensure_future(self._run(op, self._readers, lambda: fn(self._conn())))

    def _write(
        self, op: str, fn: Callable[[sqlite3.Connection], T], timeout: float | None = None
    ) -> asyncio.Future[T]:
        def in_txn() -> T:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return asyncio.ensure_future(self._run(op, self._writer, in_txn, timeout))

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)

        def migrate(conn: sqlite3.Connection) -> None:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            # Files from before change rows carried the body (the feed's include=doc).
            columns = {r[1] for r in conn.execute("PRAGMA table_info(changes)")}
            if "data" not in columns:
                conn.execute("ALTER TABLE changes ADD COLUMN data BLOB")

        # Another process on the same file may hold the write lock longer than one call's
        # busy timeout (its own start-up, an index build): start-up waits for it.
        deadline = time.monotonic() + _STARTUP_LOCK_WAIT
        pause = 0.05
        while True:
            try:
                # Each attempt ends by SQLite's busy timeout, not by the call's.
                await self._write("migrate", migrate, timeout=_STARTUP_LOCK_WAIT)
                break
            except StoreError as exc:
                if not _is_locked(exc) or time.monotonic() + pause > deadline:
                    raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        self._opened = True

    async def close(self) -> None:
        def close_all() -> None:
            with self._all_lock:
                for conn in self._all:
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                self._all.clear()

        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        close_all()

    async def ping(self) -> None:
        await self._read("ping", lambda c: c.execute("SELECT 1").fetchone())

    # -- documents ---------------------------------------------------------------------

    async def get(self, collection: str, id: str) -> Document | None:
        def q(conn: sqlite3.Connection) -> Document | None:
            row = conn.execute(
                f"SELECT {_DOC_COLUMNS} FROM documents WHERE collection=? AND id=? AND deleted=0",
                (collection, id),
            ).fetchone()
            return _row_to_doc(row) if row else None

        return await self._read("get", q)

    async def list_query(self, query: ListQuery) -> ListResult:
        statements = page_statements(SQLITE, query, _DOC_COLUMNS, "documents")
        counting = count_statement(SQLITE, query, "documents") if query.count else None

        def q(conn: sqlite3.Connection) -> ListResult:
            try:
                return read(conn, statements)
            except sqlite3.OperationalError as exc:
                if "no such index" not in str(exc):
                    raise
                return read(
                    conn, page_statements(SQLITE_UNHINTED, query, _DOC_COLUMNS, "documents")
                )

        def read(conn: sqlite3.Connection, statements: list[Statement]) -> ListResult:
            conn.execute("BEGIN")  # one snapshot: the page, its count and its version
            try:
                docs: list[Document] = []
                for st in statements:
                    if len(docs) >= query.limit:
                        break
                    rows = conn.execute(st.sql, st.args).fetchall()
                    docs.extend(_row_to_doc(r) for r in rows[: query.limit - len(docs)])
                total = None
                if counting is not None:
                    total = int(conn.execute(counting.sql, counting.args).fetchone()[0])
                version = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE collection=?",
                    (query.collection,),
                ).fetchone()[0]
            finally:
                conn.execute("COMMIT")
            return ListResult(docs, total, int(version))

        return await self._read("list", q)

    async def explain(self, query: ListQuery) -> str:
        """SQLite's query plans of the page's statements, in order (tests, benchmarks)."""
        statements = page_statements(SQLITE, query, _DOC_COLUMNS, "documents")

        def q(conn: sqlite3.Connection) -> str:
            plans = []
            for st in statements:
                rows = conn.execute("EXPLAIN QUERY PLAN " + st.sql, st.args).fetchall()
                plans.append("\n".join(str(r[-1]) for r in rows))
            return "\n\n".join(plans)

        return await self._read("explain", q)

    async def sync_indexes(self, indexes: Mapping[str, Sequence[IndexSpec]]) -> IndexSync:
        """SQLite builds an index while holding the write lock: writes wait for the build
        (seconds for a million documents); reads go on (WAL)."""
        wanted = {
            index_name(c, i): index_statement(SQLITE, c, i, "documents", "IF NOT EXISTS")
            for c, specs in indexes.items()
            for i in specs
        }

        def txn(conn: sqlite3.Connection) -> IndexSync:
            have = {
                str(r[0])
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='documents'"
                    " AND substr(name, 1, ?) = ?",
                    (len(INDEX_PREFIX), INDEX_PREFIX),
                )
            }
            created = tuple(sorted(set(wanted) - have))
            dropped = tuple(sorted(have - set(wanted)))
            for name in dropped:
                conn.execute(f'DROP INDEX IF EXISTS "{name}"')
            for name in created:
                conn.execute(wanted[name])
            return IndexSync(created, dropped)

        return await self._write("sync_indexes", txn, timeout=_INDEX_BUILD_TIMEOUT)

    async def write(self, request: WriteRequest) -> WriteResult:
        def txn(conn: sqlite3.Connection) -> WriteResult:
            result = _write_one(conn, request.collection, request.id, request.mutate, request.now)
            if request.idempotency is not None:
                idem = request.idempotency
                response = _complete_idempotency(conn, idem.scope, idem.owner, idem.render(result))
                result = WriteResult(result.document, result.created, result.seq, response)
            return result

        return await self._write("write", txn)

    async def write_batch(self, request: BatchWriteRequest) -> BatchResult:
        if len(request.items) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_OPERATIONS} items")

        def txn(conn: sqlite3.Connection) -> BatchResult:
            # seq is AUTOINCREMENT under the write lock: the rows get rising seqs in order.
            batch = BatchResult(
                tuple(
                    _write_one(conn, request.collection, item.id, item.mutate, request.now)
                    for item in request.items
                )
            )
            if request.idempotency is not None:
                idem = request.idempotency
                response = _complete_idempotency(conn, idem.scope, idem.owner, idem.render(batch))
                batch = BatchResult(batch.results, response)
            return batch

        return await self._write("write_batch", txn)

    # -- change log --------------------------------------------------------------------

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch:
        def q(conn: sqlite3.Connection) -> ChangeBatch:
            conn.execute("BEGIN")
            try:
                # The read snapshot starts with the first SELECT; take the time before it.
                snapshot_at = self.clock.now()
                rows = conn.execute(
                    "SELECT seq, collection, id, version, op, committed_at FROM changes"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (cursor, limit),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            changes = [
                Change(int(s), str(c), str(i), int(v), CHANGE_OPS[o], float(t))
                for s, c, i, v, o, t in rows
            ]
            new_cursor = changes[-1].seq if changes else cursor
            return ChangeBatch(changes, new_cursor, snapshot_at, complete=len(changes) < limit)

        return await self._read("changes", q)

    async def change_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | None]:
        def q(conn: sqlite3.Connection) -> dict[int, bytes | None]:
            bodies: dict[int, bytes | None] = {}
            for start in range(0, len(seqs), _BODIES_PER_QUERY):
                chunk = list(seqs[start : start + _BODIES_PER_QUERY])
                rows = conn.execute(
                    "SELECT c.seq, COALESCE(c.data, d.data) FROM changes AS c"
                    " LEFT JOIN documents AS d ON c.op = 'put' AND d.collection = c.collection"
                    " AND d.id = c.id AND d.version = c.version AND d.deleted = 0"
                    f" WHERE c.seq IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                bodies.update(
                    (int(seq), None if data is None else bytes(data)) for seq, data in rows
                )
            return bodies

        return await self._read("change_bodies", q)

    async def last_seq(self) -> int:
        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
            return int(row[0])

        return await self._read("last_seq", q)

    async def cursor_at(self, t: float) -> int:
        """A cursor below every change committed at or after ``t`` (seq order = commit order)."""

        def q(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM changes WHERE committed_at < ?", (t,)
            ).fetchone()
            return int(row[0])

        return await self._read("cursor_at", q)

    async def committed_at(self, collection: str, id: str, version: int) -> float | None:
        def q(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT committed_at FROM changes WHERE collection=? AND id=? AND version>?"
                " ORDER BY version LIMIT 1",
                (collection, id, version),
            ).fetchone()
            return None if row is None else float(row[0])

        return await self._read("committed_at", q)

    async def notify(self) -> None:
        """Other processes on this file find changes by polling; nothing to send."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """No cross-process notification for SQLite: the poll interval bounds the delay."""

    # -- idempotency -------------------------------------------------------------------

    async def claim_idempotency(
        self,
        scope: str,
        fingerprint: str,
        owner: str,
        now: float,
        lease_seconds: float,
        keep_seconds: float,
        decide: ClaimDecision,
    ) -> Claim:
        def txn(conn: sqlite3.Connection) -> Claim:
            row = conn.execute(
                "SELECT fingerprint, state, status, headers, body, lease_until, expires_at"
                " FROM idempotency WHERE scope=?",
                (scope,),
            ).fetchone()
            claim = decide(None if row is None else _idempotency_record(row))
            if claim.state is ClaimState.ACQUIRED:
                conn.execute(
                    "INSERT INTO idempotency"
                    " (scope, fingerprint, owner, state, lease_until, expires_at)"
                    " VALUES (?, ?, ?, 'in_flight', ?, ?) ON CONFLICT (scope) DO UPDATE SET"
                    " fingerprint=excluded.fingerprint, owner=excluded.owner, state='in_flight',"
                    " status=NULL, headers=NULL, body=NULL, lease_until=excluded.lease_until,"
                    " expires_at=excluded.expires_at",
                    (scope, fingerprint, owner, now + lease_seconds, now + keep_seconds),
                )
            return claim

        return await self._write("idempotency_claim", txn)

    async def release_idempotency(self, scope: str, owner: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM idempotency WHERE scope=? AND owner=? AND state='in_flight'",
                (scope, owner),
            )

        await self._write("idempotency_release", txn)

    async def purge_idempotency(self, now: float) -> int:
        def txn(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            return int(cur.rowcount)

        return await self._write("idempotency_purge", txn)

    async def secret(self, name: str) -> bytes:
        def txn(conn: sqlite3.Connection) -> bytes:
            row = conn.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
            if row is not None:
                return bytes(row[0])
            value = secrets.token_bytes(32)
            conn.execute("INSERT INTO secrets (name, value) VALUES (?, ?)", (name, value))
            return value

        return await self._write("secret", txn)

    # -- cursors and dead letters --------------------------------------------------------

    async def claim_cursor(
        self, collection: str, name: str, owner: str, now: float, lease: float, ack_delivered: bool
    ) -> CursorRecord:
        def txn(conn: sqlite3.Connection) -> CursorRecord:
            row = conn.execute(
                f"SELECT {_CURSOR_COLUMNS} FROM cursors WHERE collection=? AND name=?",
                (collection, name),
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO cursors VALUES (?, ?, 0, 0, ?, ?, ?)",
                    (collection, name, now, owner, now + lease),
                )
                return CursorRecord(collection, name, 0, 0, now, owner, now + lease)
            cur = _cursor(row)
            if cur.lease_owner not in ("", owner) and cur.lease_until > now:
                return cur
            position, acked_at = cur.position, cur.acked_at
            if ack_delivered and cur.delivered > position:
                position, acked_at = cur.delivered, now
            conn.execute(
                "UPDATE cursors SET position=?, acked_at=?, lease_owner=?, lease_until=?"
                " WHERE collection=? AND name=?",
                (position, acked_at, owner, now + lease, collection, name),
            )
            return CursorRecord(
                collection, name, position, cur.delivered, acked_at, owner, now + lease
            )

        return await self._write("cursor_claim", txn)

    async def move_cursor(
        self,
        collection: str,
        name: str,
        now: float,
        *,
        position: int | None = None,
        delivered: int | None = None,
        owner: str | None = None,
        lease: float = 0.0,
    ) -> CursorRecord | None:
        def txn(conn: sqlite3.Connection) -> CursorRecord | None:
            row = conn.execute(
                f"SELECT {_CURSOR_COLUMNS} FROM cursors WHERE collection=? AND name=?",
                (collection, name),
            ).fetchone()
            if row is None:
                return None
            cur = _cursor(row)
            if owner is not None and cur.lease_owner != owner:
                return None
            new = moved(cur, now, position, delivered, owner, lease)
            conn.execute(
                "UPDATE cursors SET position=?, delivered=?, acked_at=?, lease_until=?"
                " WHERE collection=? AND name=?",
                (new.position, new.delivered, new.acked_at, new.lease_until, collection, name),
            )
            return new

        return await self._write("cursor_move", txn)

    async def release_cursor(self, collection: str, name: str, owner: str) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE cursors SET lease_owner='', lease_until=0"
                " WHERE collection=? AND name=? AND lease_owner=?",
                (collection, name, owner),
            )

        await self._write("cursor_release", txn)

    async def cursors(self) -> list[CursorRecord]:
        def q(conn: sqlite3.Connection) -> list[CursorRecord]:
            rows = conn.execute(
                f"SELECT {_CURSOR_COLUMNS} FROM cursors ORDER BY collection, name"
            ).fetchall()
            return [_cursor(r) for r in rows]

        return await self._read("cursors", q)

    async def drop_cursor(self, collection: str, name: str) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM cursors WHERE collection=? AND name=?", (collection, name)
            )
            return cur.rowcount > 0

        return await self._write("cursor_drop", txn)

    async def changes_behind(self, collection: str, cursor: int, cap: int) -> Backlog:
        def q(conn: sqlite3.Connection) -> Backlog:
            behind = conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM changes WHERE collection=? AND seq>? LIMIT ?)",
                (collection, cursor, cap),
            ).fetchone()[0]
            oldest = conn.execute(
                "SELECT committed_at FROM changes WHERE collection=? AND seq>? ORDER BY seq"
                " LIMIT 1",
                (collection, cursor),
            ).fetchone()
            newest = conn.execute(
                "SELECT committed_at FROM changes WHERE collection=? ORDER BY seq DESC LIMIT 1",
                (collection,),
            ).fetchone()
            return Backlog(
                int(behind),
                float(oldest[0]) if oldest else None,
                float(newest[0]) if newest else None,
            )

        return await self._read("changes_behind", q)

    async def add_deadletter(
        self, letter: DeadLetter, cursor: tuple[str, int] | None = None
    ) -> int:
        c = letter.change

        def txn(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "INSERT INTO deadletters (collection, subscription, seq, doc_id, version, op,"
                " committed_at, attempts, error, failed_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (letter.collection, letter.subscription, c.seq, c.id, c.version, c.op.value,
                 c.committed_at, letter.attempts, letter.error, letter.failed_at),
            )  # fmt: skip
            if cursor is not None:
                conn.execute(
                    "UPDATE cursors SET position=max(position, ?), delivered=max(delivered, ?),"
                    " acked_at=? WHERE collection=? AND name=?",
                    (cursor[1], cursor[1], letter.failed_at, letter.collection, cursor[0]),
                )
            return int(row.lastrowid or 0)

        return await self._write("deadletter_add", txn)

    async def deadletters(
        self, collection: str | None, after_id: int, limit: int
    ) -> list[DeadLetter]:
        def q(conn: sqlite3.Connection) -> list[DeadLetter]:
            where, args = "id > ?", [after_id]
            if collection is not None:
                where += " AND collection = ?"
                args.append(collection)  # type: ignore[arg-type]
            rows = conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM deadletters WHERE {where} ORDER BY id LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [_letter(r) for r in rows]

        return await self._read("deadletters", q)

    async def deadletter(self, id: int) -> DeadLetter | None:
        def q(conn: sqlite3.Connection) -> DeadLetter | None:
            row = conn.execute(
                f"SELECT {_LETTER_COLUMNS} FROM deadletters WHERE id=?", (id,)
            ).fetchone()
            return _letter(row) if row else None

        return await self._read("deadletter", q)

    async def drop_deadletter(self, id: int) -> bool:
        def txn(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM deadletters WHERE id=?", (id,)).rowcount > 0

        return await self._write("deadletter_drop", txn)


_CURSOR_COLUMNS = "collection, name, position, delivered, acked_at, lease_owner, lease_until"
_LETTER_COLUMNS = (
    "id, collection, subscription, seq, doc_id, version, op, committed_at, attempts, error,"
    " failed_at"
)


def _cursor(row: Any) -> CursorRecord:
    return CursorRecord(
        str(row[0]), str(row[1]), int(row[2]), int(row[3]), float(row[4]), str(row[5]),
        float(row[6]),
    )  # fmt: skip


def _letter(row: Any) -> DeadLetter:
    change = Change(
        int(row[3]), str(row[1]), str(row[4]), int(row[5]), CHANGE_OPS[row[6]], float(row[7])
    )
    return DeadLetter(
        int(row[0]), str(row[1]), str(row[2]), change, int(row[8]), str(row[9]), float(row[10])
    )
