"""PostgreSQL primary (scale-out), on asyncpg (docs/adr/0004-asyncpg-vs-psycopg.md).

Same semantics as :mod:`maxage.store.sqlite`, for any number of processes and
hosts sharing one database. Everything lives in one schema (``schema=``),
created and migrated on :meth:`PostgresStore.open` under a transaction-scoped
advisory lock, so several processes may start at once.

Write path (one transaction, READ COMMITTED), four round trips::

    BEGIN; SELECT pg_advisory_xact_lock(<hash of schema, collection, id>)  -- one message; no xid yet
    SELECT pg_current_xact_id(), <current document row>              -- xid assigned now
    mutate() in Python; INSERT/UPDATE documents + INSERT changes      -- one statement
    [idempotency: SELECT ... FOR UPDATE; check owner; UPDATE ... 'done']
    COMMIT

A write expected to create (``WriteRequest.expect_absent``: a POST's server-chosen
uuid7, no Idempotency-Key) whose ``mutate(None)`` gives data is one round trip, one
statement in its own (implicit) transaction::

    WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock(<the same hash>)),
         d AS (INSERT INTO documents ... version 1 ... FROM l ON CONFLICT (collection, id) DO NOTHING RETURNING 1)
    INSERT INTO changes (seq = pg_current_xact_id() * POSITIONS, ..., version 1) SELECT ... FROM d RETURNING seq

and when it returns no row (a row of the id exists, live or deleted: nothing was
written) the general path above runs on the same connection. See "Fresh ids" below
for why it keeps every guarantee.

Pool connections carry no session state (no ``SET``, no session advisory locks, no
``LISTEN``, no cursors: the listener and the index builder use connections of their
own), so a connection goes back to the pool without a reset query (one round trip per
call, measured in docs/benchmarks.md); one that may be inside a transaction is
terminated instead. The pool is the store's own (:class:`_Pool`, not asyncpg's: its
machinery cost more instructions than the query's own, docs/benchmarks.md): calls get a
connection in arrival order (asyncpg's pool lets a newcomer pass callers already
waiting, which set the tail latency under load; tests/store/test_postgres_fair_pool.py).

Change-log completeness (DESIGN.md "Tailing", P7; the argument in full is in
docs/adr/0003-postgres-change-log-completeness.md). A sequence value is taken
before commit, so with ``seq`` from a sequence a poll ``seq > last`` can pass
a row that commits later with a lower number. Here the change row's ``seq`` is
its transaction's 64-bit id (``xid8``, never wraps) times :data:`POSITIONS`
plus the row's position in the transaction (0 for a single write; a batch's
rows in order), so it is unique, and every comparison with ``xmin`` below is
made with ``xmin * POSITIONS``. PostgreSQL hands out transaction ids in
increasing order, and a snapshot's ``xmin`` is the oldest transaction id still
running when the snapshot was taken: every transaction with an id below
``xmin`` has finished (committed or aborted) and every future transaction gets
an id at or above it. So a poll that, in one snapshot, returns only rows with
``cursor < seq < pg_snapshot_xmin(pg_current_snapshot())`` sees the *final* set
of change rows below that bound; advancing the cursor to the last returned
``seq`` can never pass a row that commits later. Visible rows at or above
``xmin`` (committed while an older transaction is still running) are held back
until the older one ends, and ``snapshot_at`` is lowered below their
``committed_at`` so a tailer's watermark does not claim them.

Order: the log is in transaction-id order. Per document that is version order,
because the xid is assigned only after the per-document advisory lock is held
(the next writer of the document waits for the lock, which is released after
the previous one has committed, and then gets a larger xid). Across documents,
a write that committed before another one started comes first; two overlapping
writes of different documents may appear in either order.

Fresh ids (the one-statement create above). Each step of the statement takes its
rows from the one before (the insert selects from ``l``, the change row from ``d``'s
``RETURNING``), so the executor takes the document's lock before it inserts, and the
transaction's xid is assigned by the document insert, after the lock.

* Completeness: the statement is one transaction writing exactly one change row, with
  ``seq = xid * POSITIONS``, as every other write; the argument above uses nothing
  else. It commits when the statement ends (``Sync``), so the lock is held to commit.
* Exactly one change per committed version (P7): the document row and its change row
  are inserted together or not at all; ``ON CONFLICT DO NOTHING`` inserts neither when
  any row of the id exists (the check is not by the statement's snapshot: a row
  committed after it, or still being inserted, counts; PostgreSQL waits for an
  in-progress inserter's outcome). The write is then the general path's, reading that
  row under the lock, so version 1 is never written twice.
* No lost update against a concurrent writer of the same id (a PUT of the same id, an
  older process): the lock is the general path's, so the two serialize. If the PUT
  holds it first, it read, wrote and committed before the insert runs, which then
  finds its row and falls back; the fallback's read, after the lock, sees the PUT's
  version. If the create holds it first, the PUT's read, a statement after its lock,
  sees version 1, so it writes version 2. Without the lock a PUT could read no row,
  the create commit version 1, and the PUT then write version 1 again
  (tests/store/test_postgres_fresh_ids.py forces both orders).
* Per-document version order: version 1 is the first version, written only when no
  row exists; every later version's writer read a row, hence committed version 1
  before its read's snapshot, and took its xid after that snapshot: a larger xid.

``Hooks.seq_tailer`` (test only) plants a deliberately broken mutant for the checker: it polls
``seq > cursor`` with no completeness proof and skips late-committing rows.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg

from maxage import tracing
from maxage.contracts import MAX_BATCH_OPERATIONS, IndexSpec
from maxage.core.types import Clock
from maxage.core.wake import expire_task
from maxage.hooks import Hooks
from maxage.store.base import (
    CHANGE_OPS,
    MAX_INDEXED_CHARS,
    Backlog,
    BatchResult,
    BatchWriteRequest,
    Change,
    ChangeBatch,
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
    index_name,
    index_statement,
    page_statement,
)

T = TypeVar("T")


def _idempotency_record(row: Any) -> IdempotencyRecord:
    done = row["state"] == "done"
    response = (
        StoredResponse(int(row["status"]), decode_headers(row["headers"]), bytes(row["body"]))
        if done
        else None
    )
    return IdempotencyRecord(
        row["fingerprint"], done, response, float(row["lease_until"]), float(row["expires_at"])
    )


def _change(r: Any) -> Change:
    """A change-log row (``seq, collection, id, version, op, committed_at``) as a Change."""
    return Change(
        int(r["seq"]),
        r["collection"],
        r["id"],
        int(r["version"]),
        CHANGE_OPS[r["op"]],
        float(r["committed_at"]),
    )


_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

# Versioned migrations: (version, description, statements). ``{s}`` is the quoted
# schema. Append only; never edit a released migration.
MIGRATIONS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        1,
        "documents, change log keyed by xid8, idempotency, secrets",
        (
            """CREATE TABLE {s}.documents (
                collection text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                version bigint NOT NULL,
                data bytea NOT NULL,
                created_at double precision NOT NULL,
                updated_at double precision NOT NULL,
                deleted boolean NOT NULL DEFAULT false,
                PRIMARY KEY (collection, id)
            )""",
            # seq = the writing transaction's xid8 (see the module docstring).
            """CREATE TABLE {s}.changes (
                seq bigint PRIMARY KEY,
                collection text COLLATE "C" NOT NULL,
                id text COLLATE "C" NOT NULL,
                version bigint NOT NULL,
                op text NOT NULL CHECK (op IN ('put', 'delete')),
                committed_at double precision NOT NULL,
                UNIQUE (collection, id, version)
            )""",
            """CREATE TABLE {s}.idempotency (
                scope text PRIMARY KEY,
                fingerprint text NOT NULL,
                owner text NOT NULL,
                state text NOT NULL,
                status integer,
                headers text,
                body bytea,
                lease_until double precision NOT NULL,
                expires_at double precision NOT NULL
            )""",
            "CREATE INDEX idempotency_expires ON {s}.idempotency (expires_at)",
            "CREATE TABLE {s}.secrets (name text PRIMARY KEY, value bytea NOT NULL)",
        ),
    ),
    (
        2,
        "index the change log by commit time (start-up replay into shared tiers)",
        ("CREATE INDEX changes_committed_at ON {s}.changes (committed_at)",),
    ),
    (
        3,
        "list queries: the documents as jsonb (query indexes are built on it); the change"
        " log by collection and seq (a list's collection version)",
        (
            # data stays the exact bytes every response embeds (P0); body is what the query
            # indexes read. convert_from is only STABLE, so body cannot be a generated column.
            "ALTER TABLE {s}.documents ADD COLUMN body jsonb",
            "UPDATE {s}.documents SET body = convert_from(data, 'UTF8')::jsonb",
            "CREATE INDEX changes_collection_seq ON {s}.changes (collection, seq)",
        ),
    ),
    (
        4,
        "cursors (named consumers, webhook subscriptions) and dead letters",
        (
            """CREATE TABLE {s}.cursors (
                collection text COLLATE "C" NOT NULL,
                name text COLLATE "C" NOT NULL,
                position bigint NOT NULL,
                delivered bigint NOT NULL,
                acked_at double precision NOT NULL,
                lease_owner text NOT NULL,
                lease_until double precision NOT NULL,
                PRIMARY KEY (collection, name)
            )""",
            """CREATE TABLE {s}.deadletters (
                id bigserial PRIMARY KEY,
                collection text COLLATE "C" NOT NULL,
                subscription text NOT NULL,
                seq bigint NOT NULL,
                doc_id text NOT NULL,
                version bigint NOT NULL,
                op text NOT NULL,
                committed_at double precision NOT NULL,
                attempts integer NOT NULL,
                error text NOT NULL,
                failed_at double precision NOT NULL
            )""",
        ),
    ),
    (
        5,
        "change rows carry the body; seq = xid * 1024 + position (batch writes)",
        (
            "ALTER TABLE {s}.changes ADD COLUMN data bytea",
            # Rows from before keep seq = xid (all below the new ones). A process of the
            # older version still running would write seq = xid above them and a tailer
            # past it would skip it: its writes are refused instead.
            """DO $$ DECLARE m bigint := pg_current_xact_id()::text::bigint; BEGIN
                EXECUTE format('ALTER TABLE {s}.changes ADD CONSTRAINT changes_seq_positioned'
                    ' CHECK (seq <= %s OR seq >= %s)', m, m * 1024);
            END $$""",
        ),
    ),
)

# A transaction's change rows are numbered xid * POSITIONS + position (0 for a single
# write), so seq order is xid order and, within a batch, the items' order.
POSITIONS = 1024
INDEX_LOCK_POLL = 0.05  # seconds between tries for the index-build lock (sync_indexes)
assert MAX_BATCH_OPERATIONS <= POSITIONS

_DOC_COLUMNS = "collection, id, version, data, created_at, updated_at, deleted"

_CASTS = {"string": "", "integer": "::numeric", "number": "::numeric", "boolean": "::boolean"}
_JSONB_TYPES = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean"}


def _expr(index: IndexSpec) -> str:
    """The typed value of ``index`` in a row, read from the jsonb ``body``: NULL unless
    jsonb_typeof agrees with the index's type, so a document of another shape never
    breaks the index build or a write; strings compare in "C" (code point) order, like
    ids and SQLite."""
    path = "'{" + ",".join(index.path) + "}'"
    value = f"CASE WHEN jsonb_typeof(body #> {path}) = '{_JSONB_TYPES[index.type]}'"
    if index.type == "string":
        value += f" AND length(body #>> {path}) <= {MAX_INDEXED_CHARS}"
    value += f" THEN (body #>> {path}){_CASTS[index.type]} END"
    return f'({value}) COLLATE "C"' if index.type == "string" else f"({value})"


def _value(index: IndexSpec, value: Scalar) -> object:
    if isinstance(value, bool | str):
        return value
    return Decimal(repr(value))  # numeric: exact, as the JSON text was


POSTGRES = Dialect(expr=_expr, param=lambda n: f"${n}", value=_value, live="NOT deleted")

# Errors of the driver and the network that mean "the primary failed" (503).
_DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
_CLOSE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *_DB_ERRORS)


def _text_literal(value: str) -> str:
    """``value`` as an SQL escape-string literal (``E'...'``): its meaning does not depend
    on ``standard_conforming_strings``. For statements sent as simple queries, which
    take no parameters. Text cannot hold NUL: refused, as a parameter would be."""
    if "\x00" in value:
        raise StoreError("postgres text cannot contain NUL characters")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _lock_statement(keys: Sequence[str]) -> str:
    """The advisory locks of the documents with lock keys ``keys`` (``_doc_lock_key``),
    taken in one global order (by hash) so that two writers never deadlock."""
    if len(keys) == 1:
        return f"SELECT pg_advisory_xact_lock(hashtextextended({_text_literal(keys[0])}, 0))"
    return (
        "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT DISTINCT hashtextextended(t, 0)"
        f" AS k FROM unnest(ARRAY[{', '.join(_text_literal(k) for k in keys)}]::text[]) AS t"
        " ORDER BY k OFFSET 0) AS o"
    )


# A call that raised one of these may have left its connection mid-statement (asyncpg
# cancels a statement interrupted by a cancellation or its command timeout, and the
# connection is busy until the server answers) or out of step with the protocol.
_UNCLEAN = (asyncio.CancelledError, TimeoutError, asyncpg.InterfaceError,
            asyncpg.InternalClientError)  # fmt: skip
_CANCELLED = (asyncio.CancelledError, TimeoutError)  # asyncpg may have a cancel in flight
CANCEL_WAIT = 5.0  # seconds a pool connection waits for the server to answer its cancel


class _Pool:
    """The store's connections: at most ``max_size``, handed out in arrival order.

    What the store needs of a pool, without asyncpg's (its acquire and release cost
    ~117,000 instructions per call against ~0 here, measured by callgrind: a proxy object, a
    shielded task per release, an inactivity timer re-armed every time; docs/benchmarks.md):

    * first come, first served: a caller that arrives as a connection is released never
      passes those already waiting (a release hands the connection to the oldest waiter);
    * ``min_size`` connections opened by :meth:`start`, more on demand up to ``max_size``;
    * a call cancelled or timed out mid-statement has asyncpg send the server a cancel
      request, on a connection of its own, by a task of its own: the connection is kept
      (its slot with it) until the server has answered it, as asyncpg's pool does, and
      then released as below. Terminating it at once cancelled that task: the server
      never heard of the cancel and ran the statement to its end -- a write waiting on
      a lock committed seconds after its caller was told it timed out (and retried it),
      and the process held more backends than ``max_size``;
    * no reset query on release: pool connections carry no session state (module
      docstring). A connection that may not be clean -- still inside a transaction, its
      cancel unanswered within ``CANCEL_WAIT``, or its call failed in the driver -- is
      terminated, as asyncpg's pool terminates one whose reset fails: the server rolls
      back its transaction and frees its locks, and the slot is opened again on demand.
      A closed one is dropped the same way. A call that failed with the server's error
      (a constraint, a serialization failure, its own cancel) leaves its connection
      clean: asyncpg reads up to the server's ready-for-query;
    * :meth:`close` closes the idle connections and waits (within its timeout) for those
      in use, which are terminated as they come back.
    """

    __slots__ = (
        "_all", "_closed", "_connect", "_idle", "_max", "_min", "_released", "_settling",
        "_size", "_waiters",
    )  # fmt: skip

    def __init__(self, connect: Callable[[], Awaitable[Any]], min_size: int, max_size: int) -> None:
        self._connect = connect
        self._min = min_size
        self._max = max_size
        self._idle: list[Any] = []  # usable connections, the last released at the end
        self._all: set[Any] = set()  # every open connection, idle or in use
        # Callers waiting, oldest first: each gets a connection, or None (a slot to open).
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._size = 0  # connections open or being opened, idle or in use
        self._closed = False
        self._settling: set[asyncio.Task[None]] = set()  # waits for a cancel's answer
        self._released = asyncio.Event()  # set when a connection is dropped after close

    async def start(self) -> None:
        while self._size < self._min:
            self._idle.append(await self._open())

    def get_idle_size(self) -> int:
        return len(self._idle)

    async def _open(self) -> Any:
        self._size += 1
        try:
            conn = await self._connect()
        except BaseException:
            self._free_slot()
            raise
        self._all.add(conn)
        return conn

    async def acquire(self) -> Any:
        if self._closed:
            raise StoreError("postgres store is not open")
        idle = self._idle
        while idle:  # (never with callers waiting: a release hands to them first)
            conn = idle.pop()
            if not conn.is_closed():
                return conn
            self._drop(conn)
        if self._size < self._max and not self._waiters:
            return await self._open()
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection (or a slot) as this caller was cancelled: pass it on.
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed)
            raise
        if conn is None:  # a connection was dropped: its slot is this caller's to open
            self._size -= 1
            if self._closed:
                raise StoreError("postgres store is not open")
            return await self._open()
        return conn

    def release(self, conn: Any, failed: BaseException | None = None) -> None:
        """``conn`` back from a call; ``failed``: what the call raised, if anything."""
        if conn.is_closed():
            self._drop(conn)
        elif isinstance(failed, _CANCELLED) and conn._protocol._is_cancelling():
            task = asyncio.ensure_future(self._settle(conn))
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        elif self._closed or conn.is_in_transaction() or isinstance(failed, _UNCLEAN):
            conn.terminate()
            self._drop(conn)
        else:
            self._hand(conn)

    async def _settle(self, conn: Any) -> None:
        """Wait for the server's answer to the cancel asyncpg sent for ``conn``'s
        statement (at most ``CANCEL_WAIT``), then release it: clean, or terminated."""
        try:
            async with asyncio.timeout(CANCEL_WAIT):
                await conn._protocol._wait_for_cancellation()
        except BaseException as exc:  # no answer in time (or cancelled itself): not clean
            conn.terminate()
            self._drop(conn)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.release(conn)

    def _hand(self, conn: Any) -> None:
        """A usable connection to the oldest waiter, else to the idle list."""
        if not self._to_oldest_waiter(conn):
            self._idle.append(conn)

    def _to_oldest_waiter(self, handed: Any) -> bool:
        """Hand ``handed`` (a connection, or None: a slot to open) to the oldest caller
        still waiting; False if none is."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(handed)
                return True
        return False

    def _drop(self, conn: Any) -> None:
        self._all.discard(conn)
        self._free_slot()
        if self._closed:
            self._released.set()

    def _free_slot(self) -> None:
        """One connection fewer: the oldest waiter may open one in its place."""
        if not self._to_oldest_waiter(None):
            self._size -= 1

    async def close(self, timeout: float) -> None:
        """Close the idle connections, then wait for those in use (terminated when they
        come back); TimeoutError if some are still out after ``timeout``."""
        self._closed = True
        self._fail_waiters()
        idle, self._idle = self._idle, []
        for conn in idle:
            self._all.discard(conn)
            self._size -= 1
            try:
                await conn.close(timeout=timeout)
            except _CLOSE_ERRORS:
                conn.terminate()
        async with asyncio.timeout(timeout):
            while self._all:
                self._released.clear()
                await self._released.wait()

    def terminate(self) -> None:
        self._closed = True
        self._fail_waiters()
        for task in list(self._settling):
            task.cancel()
        self._idle = []
        for conn in self._all:
            conn.terminate()
        self._all.clear()
        self._size = 0

    def _fail_waiters(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(StoreError("postgres store is not open"))


def _row_to_doc(row: Any) -> Document:
    return Document(
        collection=row["collection"],
        id=row["id"],
        version=int(row["version"]),
        data=bytes(row["data"]),
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        deleted=bool(row["deleted"]),
    )


class PostgresStore:
    """The scale-out primary. ``dsn`` is a ``postgresql://`` URL (libpq keywords work too).

    ``timeout`` bounds every call (pool acquire and all statements of it);
    ``schema`` is created and migrated on :meth:`open`. ``drop_schema_on_close``
    is for tests: the schema and everything in it is dropped by :meth:`close`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock,
        timeout: float = 5.0,
        min_size: int = 1,
        max_size: int = 10,
        schema: str = "maxage",
        hooks: Hooks | None = None,
        drop_schema_on_close: bool = False,
        frontier_wait: float = 0.25,
    ) -> None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema must match {_SCHEMA_NAME.pattern}: {schema!r}")
        self.dsn = dsn
        self.clock = clock
        self.timeout = timeout
        self.min_size = min_size
        self.max_size = max_size
        self.schema = schema
        self.stats = StoreStats()
        # Test hooks (maxage.hooks): a slow primary, a slow commit (fault ``slow-commit``:
        # a later, shorter write commits first, out of seq order), the seq-tailer mutant.
        self.hooks = hooks
        # The broken mutant: poll ``seq > cursor`` with no completeness proof.
        self.seq_tailer = hooks is not None and hooks.seq_tailer
        self.drop_schema_on_close = drop_schema_on_close
        # A poll that finds committed rows held back by an older running transaction
        # re-polls, sleeping up to this many seconds in all, before returning without them.
        self.frontier_wait = frontier_wait
        # The frontier a whole wait ended at without moving: an open long transaction.
        # Polls that find the same frontier do not wait for it again (one wait per long
        # transaction and process, not one per poll of the tailer and every feed read).
        self._stuck_frontier: int | None = None
        self._pool: _Pool | None = None
        self._listener: Any = None
        s = f'"{schema}"'
        self._s = s
        self._sql_read_for_write = (
            f"SELECT pg_current_xact_id()::text::bigint * {POSITIONS} AS seq,"
            f" d.collection, d.id, d.version, d.data, d.created_at, d.updated_at, d.deleted"
            f" FROM (SELECT 1) AS one"
            f" LEFT JOIN {s}.documents AS d ON d.collection = $1 AND d.id = $2"
        )
        self._sql_put = (
            f"WITH d AS (INSERT INTO {s}.documents"
            f" (collection, id, version, data, body, created_at, updated_at, deleted)"
            f" VALUES ($1, $2, $3, $4, convert_from($4, 'UTF8')::jsonb, $5, $6, false)"
            f" ON CONFLICT (collection, id) DO UPDATE"
            f" SET version = EXCLUDED.version, data = EXCLUDED.data, body = EXCLUDED.body,"
            f" created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at,"
            f" deleted = false)"
            f" INSERT INTO {s}.changes (seq, collection, id, version, op, committed_at, data)"
            f" VALUES ($7, $1, $2, $3, 'put', $6, $4)"
        )
        self._sql_delete = (
            f"WITH d AS (UPDATE {s}.documents SET version = $3, updated_at = $4, deleted = true"
            f" WHERE collection = $1 AND id = $2)"
            f" INSERT INTO {s}.changes (seq, collection, id, version, op, committed_at)"
            f" VALUES ($5, $1, $2, $3, 'delete', $4)"
        )
        # A write expected to create (see "Fresh ids" in the module docstring): the
        # document's lock, then the document row unless any row of the id exists, then its
        # change row, in one statement. Each step takes its rows from the one before, so
        # the lock is held before the insert and the xid is taken by the insert.
        self._sql_create = (
            f"WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock(hashtextextended($5, 0))),"
            f" d AS (INSERT INTO {s}.documents"
            f" (collection, id, version, data, body, created_at, updated_at, deleted)"
            f" SELECT $1::text, $2::text, 1, $3::bytea, convert_from($3::bytea, 'UTF8')::jsonb,"
            f" $4::float8, $4::float8, false FROM l"
            f" ON CONFLICT (collection, id) DO NOTHING RETURNING 1)"
            f" INSERT INTO {s}.changes (seq, collection, id, version, op, committed_at, data)"
            f" SELECT pg_current_xact_id()::text::bigint * {POSITIONS}, $1::text, $2::text, 1,"
            f" 'put', $4::float8, $3::bytea FROM d"
            f" RETURNING seq"
        )
        self._sql_get = (
            f"SELECT {_DOC_COLUMNS} FROM {s}.documents"
            " WHERE collection = $1 AND id = $2 AND NOT deleted"
        )
        self._sql_first_seq = f"SELECT pg_current_xact_id()::text::bigint * {POSITIONS}"
        self._sql_read_batch = (
            f"SELECT {_DOC_COLUMNS} FROM {s}.documents WHERE collection = $1 AND id = ANY($2)"
        )
        self._sql_bodies = (
            f"SELECT c.seq, COALESCE(c.data, d.data) AS data FROM {s}.changes AS c"
            f" LEFT JOIN {s}.documents AS d ON c.op = 'put' AND d.collection = c.collection"
            f" AND d.id = c.id AND d.version = c.version AND NOT d.deleted"
            f" WHERE c.seq = ANY($1::bigint[])"
        )
        # One statement, one snapshot: the frontier (xmin), the rows below it, and
        # the earliest committed_at and the highest seq of visible rows held back at or
        # above it.
        self._sql_changes = (
            f"SELECT f.frontier, h.held_since, h.held_top,"
            f" c.seq, c.collection, c.id, c.version, c.op, c.committed_at"
            f" FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {POSITIONS}"
            f"   AS frontier) AS f"
            f" CROSS JOIN LATERAL (SELECT min(committed_at) AS held_since, max(seq) AS held_top"
            f"   FROM {s}.changes WHERE seq >= f.frontier AND seq > $1) AS h"
            f" LEFT JOIN LATERAL (SELECT * FROM {s}.changes AS x"
            f"   WHERE x.seq > $1 AND x.seq < f.frontier ORDER BY x.seq LIMIT $2) AS c ON true"
            f" ORDER BY c.seq"
        )
        self._sql_changes_naive = (
            f"SELECT seq, collection, id, version, op, committed_at FROM {s}.changes"
            f" WHERE seq > $1 ORDER BY seq LIMIT $2"
        )

    # -- plumbing ----------------------------------------------------------------------

    def _doc_lock_key(self, collection: str, id: str) -> str:
        # Length-prefixed, so distinct (collection, id) pairs give distinct strings; a
        # hash collision only serializes two writers, it never breaks correctness.
        return f"{len(self.schema)}:{self.schema}{len(collection)}:{collection}{id}"

    def _run(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> Awaitable[T]:
        """``fn`` on a pool connection, timed (and traced with tracing on); not a coroutine
        itself when untraced: one frame fewer for every resumption of the call."""
        if tracing.TRACER is not None:
            return self._traced(op, fn)
        return self._timed(op, fn)

    async def _traced(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        attributes = {"db.system.name": "postgresql", "db.operation.name": op}
        with tracing.span(f"postgresql {op}", **attributes):
            return await self._timed(op, fn)

    async def _timed(self, op: str, fn: Callable[[Any], Awaitable[T]]) -> T:
        started = time.perf_counter()
        ok = False
        try:
            if self.hooks is not None:
                await self.hooks.before_store_call(op)
            pool = self._pool
            if pool is None:
                raise StoreError("postgres store is not open")
            # The call's deadline: what ``asyncio.timeout(self.timeout)`` does (cancel the
            # task when it passes; that cancellation, and only that one, becomes a
            # timeout), with one timer and a list instead of its Timeout object (~29,000
            # instructions a call against ~11,000, callgrind; docs/benchmarks.md).
            loop = asyncio.get_running_loop()
            task = asyncio.current_task()
            assert task is not None
            deadline: list[Any] = [task, task.cancelling(), False]  # task, its cancels, expired
            timer = loop.call_at(loop.time() + self.timeout, expire_task, deadline)
            try:
                try:
                    # First come, first served (_Pool): asyncpg's pool let a caller that
                    # arrived as a connection was released take it ahead of those already
                    # waiting, who went to the back of the line (the tail of busy periods).
                    conn = await pool.acquire()
                    try:
                        result = await fn(conn)
                    except BaseException as failed:
                        pool.release(conn, failed)
                        raise
                    pool.release(conn)
                finally:
                    timer.cancel()
            except BaseException as exc:
                # The timer's cancel is undone whatever came out (the call may have turned
                # it into another error), as asyncio.timeout does; only a CancelledError
                # that no one else asked for becomes the timeout.
                if (
                    deadline[2]
                    and task.uncancel() <= deadline[1]
                    and isinstance(exc, asyncio.CancelledError)
                ):
                    raise StoreTimeout(f"postgres {op} exceeded {self.timeout}s") from exc
                raise
            if deadline[2]:  # expired as the call ended: its cancel is not for the caller
                task.uncancel()
            ok = True
            return result
        except _DB_ERRORS as exc:
            raise StoreError(f"postgres {op} failed: {exc}") from exc
        finally:
            self.stats.record(op, time.perf_counter() - started, ok)

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        started = time.perf_counter()
        ok = False
        try:
            server_settings = {
                "application_name": "maxage",
                # A client that dies inside a transaction must not hold an
                # xid (and so every tailer's frontier) for long.
                "idle_in_transaction_session_timeout": str(max(1000, int(self.timeout * 2000))),
            }

            # No command_timeout: every statement on a pool connection runs in _timed,
            # whose timeout (the same seconds, started before the statement) always ends
            # first; asyncpg's would arm and cancel a timer of its own per statement.
            async def connect() -> Any:
                return await asyncpg.connect(self.dsn, server_settings=server_settings)

            pool = _Pool(connect, self.min_size, self.max_size)
            try:
                async with asyncio.timeout(self.timeout):
                    await pool.start()
            except BaseException:
                pool.terminate()
                raise
            self._pool = pool
            ok = True
        except TimeoutError as exc:
            raise StoreTimeout(f"postgres connect exceeded {self.timeout}s") from exc
        except _DB_ERRORS as exc:
            raise StoreError(f"postgres connect failed: {exc}") from exc
        finally:
            self.stats.record("connect", time.perf_counter() - started, ok)
        try:
            # Several processes may start at once: the others wait on the migration lock
            # longer than one statement's timeout, so a timed-out attempt is retried.
            deadline = time.monotonic() + max(60.0, 4 * self.timeout)
            while True:
                try:
                    await self._run("migrate", self._migrate)
                    break
                except StoreTimeout:
                    if time.monotonic() > deadline:
                        raise
        except BaseException:
            await self._close_pool()
            raise

    async def _migrate(self, conn: Any) -> None:
        s = self._s
        async with conn.transaction():
            # Two-int advisory key space: never collides with the per-document locks.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('maxage.migrate'), hashtext($1))",
                self.schema,
            )
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_migrations ("
                " version integer PRIMARY KEY, description text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {
                int(r["version"])
                for r in await conn.fetch(f"SELECT version FROM {s}.schema_migrations")
            }
            for version, description, statements in MIGRATIONS:
                if version in applied:
                    continue
                for stmt in statements:
                    await conn.execute(stmt.format(s=s))
                await conn.execute(
                    f"INSERT INTO {s}.schema_migrations (version, description) VALUES ($1, $2)",
                    version,
                    description,
                )

    async def schema_version(self) -> int:
        async def q(conn: Any) -> int:
            v = await conn.fetchval(
                f"SELECT COALESCE(max(version), 0) FROM {self._s}.schema_migrations"
            )
            return int(v)

        return await self._run("schema_version", q)

    async def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await pool.close(self.timeout)
        except _CLOSE_ERRORS:
            pool.terminate()

    async def close(self) -> None:
        if self.drop_schema_on_close and self._pool is not None:

            async def drop(conn: Any) -> None:
                await conn.execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")

            with contextlib.suppress(StoreError):
                await self._run("drop_schema", drop)
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=self.timeout)
        await self._close_pool()

    async def ping(self) -> None:
        async def q(conn: Any) -> None:
            await conn.fetchval("SELECT 1")

        await self._run("ping", q)

    async def cursor_at(self, t: float) -> int:
        """A cursor below every change committed at or after ``t``.

        ``seq // POSITIONS`` is an xid, taken at most ``timeout`` after the write's ``committed_at``
        stamp; so rows stamped before ``t - 2 * timeout`` got smaller xids than any
        row stamped at or after ``t``.
        """
        bound = t - 2 * self.timeout

        async def q(conn: Any) -> int:
            return int(
                await conn.fetchval(
                    f"SELECT COALESCE(max(seq), 0) FROM {self._s}.changes WHERE committed_at < $1",
                    bound,
                )
            )

        return await self._run("cursor_at", q)

    async def committed_at(self, collection: str, id: str, version: int) -> float | None:
        """Uses the (collection, id, version) unique index of the change log."""
        sql = (
            f"SELECT committed_at FROM {self._s}.changes"
            " WHERE collection = $1 AND id = $2 AND version > $3 ORDER BY version LIMIT 1"
        )

        async def q(conn: Any) -> float | None:
            value = await conn.fetchval(sql, collection, id, version)
            return None if value is None else float(value)

        return await self._run("committed_at", q)

    @property
    def _channel(self) -> str:
        return f"maxage_changes_{self.schema}"

    async def notify(self) -> None:
        """Wake the tailers of every process (LISTEN/NOTIFY); polling stays the source of truth."""

        async def q(conn: Any) -> None:
            await conn.execute("SELECT pg_notify($1, '')", self._channel)

        await self._run("notify", q)

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` on every change notification, on a dedicated connection."""
        conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
        await conn.add_listener(self._channel, lambda *_: wake())
        self._listener = conn

    # -- documents ---------------------------------------------------------------------

    async def get(self, collection: str, id: str) -> Document | None:
        sql = self._sql_get

        async def q(conn: Any) -> Document | None:
            row = await conn.fetchrow(sql, collection, id)
            return _row_to_doc(row) if row is not None else None

        return await self._run("get", q)

    async def list_query(self, query: ListQuery) -> ListResult:
        st = page_statement(
            POSTGRES, query, _DOC_COLUMNS, f"{self._s}.documents", f"{self._s}.changes"
        )

        async def q(conn: Any) -> ListResult:
            # One statement: the page, its count and its version in one snapshot.
            rows = await conn.fetch(st.sql, *st.args)
            docs = [_row_to_doc(r) for r in rows[: query.limit] if r["id"] is not None]
            total = rows[0]["list_total"]
            return ListResult(docs, None if total is None else int(total), rows[0]["list_version"])

        return await self._run("list", q)

    async def explain(self, query: ListQuery, analyze: bool = False) -> str:
        """PostgreSQL's plan of the page's statement (tests, benchmarks)."""
        st = page_statement(
            POSTGRES, query, _DOC_COLUMNS, f"{self._s}.documents", f"{self._s}.changes"
        )
        how = "(ANALYZE, BUFFERS) " if analyze else ""

        async def q(conn: Any) -> str:
            rows = await conn.fetch(f"EXPLAIN {how}{st.sql}", *st.args)
            return "\n".join(r[0] for r in rows)

        return await self._run("explain", q)

    async def _sync_statistics(self, conn: Any, expressions: Mapping[str, str]) -> bool:
        """One statistics object per query index expression (PostgreSQL ignores the
        expression statistics of a *partial* index when it estimates a condition, and
        would then plan a filter on a common value like a rare one). True when one was
        created: the caller ANALYZEs (a sample, seconds at most)."""
        rows = await conn.fetch(
            "SELECT s.stxname AS name FROM pg_statistic_ext AS s"
            " JOIN pg_namespace AS n ON n.oid = s.stxnamespace"
            " WHERE n.nspname = $1 AND left(s.stxname, $2) = $3",
            self.schema,
            len(INDEX_PREFIX),
            INDEX_PREFIX,
        )
        have = {r["name"] for r in rows}
        for name in have - set(expressions):
            await conn.execute(f'DROP STATISTICS IF EXISTS {self._s}."{name}"')
        missing = set(expressions) - have
        for name in sorted(missing):
            await conn.execute(
                f'CREATE STATISTICS IF NOT EXISTS {self._s}."{name}"'
                f" ON ({expressions[name]}) FROM {self._s}.documents"
            )
        return bool(missing)

    async def sync_indexes(self, indexes: Mapping[str, Sequence[IndexSpec]]) -> IndexSync:
        """CREATE / DROP INDEX CONCURRENTLY, each outside a transaction: writers and
        readers go on while an index is built or dropped. One process at a time (a
        session advisory lock), so processes starting together build each index once; an
        index a crashed build left invalid is dropped and built again. Not bounded by the
        store's timeout: a build takes as long as the table needs."""
        table = f"{self._s}.documents"
        wanted = {
            index_name(c, i): index_statement(POSTGRES, c, i, table, "CONCURRENTLY IF NOT EXISTS")
            for c, specs in indexes.items()
            for i in specs
        }
        expressions = {index_name(c, i): _expr(i) for c, specs in indexes.items() for i in specs}
        try:
            conn = await asyncpg.connect(self.dsn, timeout=self.timeout)
        except _CLOSE_ERRORS as exc:  # the driver, the network, or the connect timeout
            raise StoreError(f"postgres sync_indexes could not connect: {exc}") from exc
        try:
            key = "maxage.indexes"
            # Polled, not waited for: a session blocked in pg_advisory_lock is in a
            # statement, whose snapshot the holder's CREATE INDEX CONCURRENTLY waits out
            # (PostgreSQL reported the deadlock when two workers started on a new schema).
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", key, self.schema
            ):
                await asyncio.sleep(INDEX_LOCK_POLL)
            rows = await conn.fetch(
                "SELECT c.relname AS name, i.indisvalid AS valid FROM pg_index AS i"
                " JOIN pg_class AS c ON c.oid = i.indexrelid"
                " JOIN pg_class AS t ON t.oid = i.indrelid"
                " JOIN pg_namespace AS n ON n.oid = t.relnamespace"
                " WHERE n.nspname = $1 AND t.relname = 'documents'"
                " AND left(c.relname, $2) = $3",
                self.schema,
                len(INDEX_PREFIX),
                INDEX_PREFIX,
            )
            valid = {r["name"] for r in rows if r["valid"]}
            have = {r["name"] for r in rows}
            dropped = tuple(sorted(have - set(wanted)))
            rebuild = sorted((have & set(wanted)) - valid)
            for name in (*dropped, *rebuild):
                await conn.execute(f'DROP INDEX CONCURRENTLY IF EXISTS {self._s}."{name}"')
            created = tuple(sorted(set(wanted) - valid))
            for name in created:
                await conn.execute(wanted[name])
            if await self._sync_statistics(conn, expressions):
                await conn.execute(f"ANALYZE {table}")
            return IndexSync(created, dropped)
        except _DB_ERRORS as exc:
            raise StoreError(f"postgres sync_indexes failed: {exc}") from exc
        finally:
            with contextlib.suppress(*_CLOSE_ERRORS):
                await conn.close(timeout=self.timeout)

    @contextlib.asynccontextmanager
    async def _locked_transaction(self, conn: Any, keys: Sequence[str]) -> AsyncIterator[None]:
        """A write transaction holding the advisory locks of ``keys``: ``BEGIN`` and the
        locks in one round trip (one simple-query message), ``COMMIT`` at the end of the
        block, ``ROLLBACK`` when it raises (as ``conn.transaction()`` would)."""
        try:
            await conn.execute("BEGIN; " + _lock_statement(keys))
            yield
            await conn.execute("COMMIT")
        except BaseException:
            if not conn.is_closed() and conn.is_in_transaction():
                # Failing here leaves it to the pool, which rolls back or drops the connection.
                with contextlib.suppress(*_DB_ERRORS):
                    await conn.execute("ROLLBACK")
            raise

    async def write(self, request: WriteRequest) -> WriteResult:
        key = self._doc_lock_key(request.collection, request.id)
        data = None
        if request.expect_absent and request.idempotency is None:
            # Fresh ids (module docstring): mutate(None) now, and the one-statement insert.
            # If mutate refuses no row, the general path below gives it the row there is.
            # (try, not contextlib.suppress: its object costs more than the mutator.)
            try:
                data = request.mutate(None)
            except Exception:
                data = None

        async def txn(conn: Any) -> WriteResult:
            if data is not None:
                result = await self._create(conn, request, data, key)
                if result is not None:
                    return result
                # A row of this id exists: nothing was written; the general path.
            async with self._locked_transaction(conn, [key]):
                # A new statement, so a new snapshot taken after the lock: it sees the
                # previous writer's commit; and the xid is assigned only now.
                row = await conn.fetchrow(self._sql_read_for_write, request.collection, request.id)
                existing = _row_to_doc(row) if row["version"] is not None else None
                result = await self._apply(
                    conn,
                    request.collection,
                    request.id,
                    existing,
                    request.mutate,
                    request.now,
                    int(row["seq"]),
                )
                if request.idempotency is not None:
                    idem = request.idempotency
                    response = await self._complete_idempotency(
                        conn, idem.scope, idem.owner, idem.render(result)
                    )
                    result = WriteResult(result.document, result.created, result.seq, response)
                await self._commit_delay()
                return result

        return await self._run("write", txn)

    async def _create(
        self, conn: Any, request: WriteRequest, data: bytes, key: str
    ) -> WriteResult | None:
        """Version 1 of a document expected absent, ``data`` its body, in one statement
        (its own transaction); None, and nothing written, when any row of the id exists.
        With test hooks it runs inside an explicit transaction, so that a slow commit
        (``commit_delay``) still delays this write's COMMIT after its change row."""
        args = (request.collection, request.id, data, request.now, key)
        if self.hooks is None:
            seq = await conn.fetchval(self._sql_create, *args)
        else:
            async with conn.transaction():
                seq = await conn.fetchval(self._sql_create, *args)
                if seq is not None:
                    await self._commit_delay()
        if seq is None:
            return None
        doc = Document(request.collection, request.id, 1, data, request.now, request.now)
        return WriteResult(document=doc, created=True, seq=int(seq))

    async def write_batch(self, request: BatchWriteRequest) -> BatchResult:
        """Like :meth:`write` for every item, in one transaction. The documents' locks are
        taken in one global order (by lock key), so two batches, or a batch and single
        writes, never deadlock; the xid is assigned after all of them are held."""
        if len(request.items) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_OPERATIONS} items")
        collection = request.collection
        ids = [item.id for item in request.items]

        async def txn(conn: Any) -> BatchResult:
            keys = [self._doc_lock_key(collection, id) for id in ids]
            async with self._locked_transaction(conn, keys):
                first_seq = int(await conn.fetchval(self._sql_first_seq))
                rows = await conn.fetch(self._sql_read_batch, collection, ids)
                existing = {r["id"]: _row_to_doc(r) for r in rows}
                results = []
                for position, item in enumerate(request.items):
                    results.append(
                        await self._apply(
                            conn,
                            collection,
                            item.id,
                            existing.get(item.id),
                            item.mutate,
                            request.now,
                            first_seq + position,
                        )
                    )
                batch = BatchResult(tuple(results))
                if request.idempotency is not None:
                    idem = request.idempotency
                    response = await self._complete_idempotency(
                        conn, idem.scope, idem.owner, idem.render(batch)
                    )
                    batch = BatchResult(batch.results, response)
                await self._commit_delay()
                return batch

        return await self._run("write_batch", txn)

    async def _apply(
        self,
        conn: Any,
        collection: str,
        id: str,
        existing: Document | None,
        mutate: Mutator,
        now: float,
        seq: int,
    ) -> WriteResult:
        """Run ``mutate`` on the row the transaction read (``existing``, deleted or not);
        write the next version and its change row ``seq``."""
        live, new_data, version = mutated(existing, mutate)
        if new_data is None:
            assert live is not None
            await conn.execute(self._sql_delete, collection, id, version, now, seq)
            doc = Document(collection, id, version, live.data, live.created_at, now, True)
        else:
            created_at = live.created_at if live else now
            await conn.execute(
                self._sql_put, collection, id, version, new_data, created_at, now, seq
            )
            doc = Document(collection, id, version, new_data, created_at, now)
        return WriteResult(document=doc, created=live is None, seq=seq)

    async def _complete_idempotency(
        self, conn: Any, scope: str, owner: str, response: StoredResponse
    ) -> StoredResponse:
        """Store ``response`` as the claim's outcome, if the claim is still ``owner``'s."""
        s = self._s
        held = await conn.fetchrow(
            f"SELECT owner, state FROM {s}.idempotency WHERE scope = $1 FOR UPDATE", scope
        )
        if held is None or held["owner"] != owner or held["state"] != "in_flight":
            raise IdempotencyLost(f"idempotency claim {scope!r} was lost")
        await conn.execute(
            f"UPDATE {s}.idempotency SET state = 'done', status = $1, headers = $2,"
            " body = $3 WHERE scope = $4",
            response.status,
            encode_headers(response.headers),
            response.body,
            scope,
        )
        return response

    async def _commit_delay(self) -> None:
        delay = self.hooks.commit_delay() if self.hooks is not None else 0.0
        if delay > 0:
            await asyncio.sleep(delay)

    # -- change log --------------------------------------------------------------------

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch:
        """Changes after ``cursor`` below the frontier (module docstring). Rows already
        committed but held back by an older running transaction are waited for, up to
        :attr:`frontier_wait` seconds of sleep, so that a read made after a write was
        acknowledged contains it unless the cluster has a long transaction open; rows
        that commit during the wait are not waited for (a busy log would never settle),
        nor, by later polls, a frontier a whole wait could not move (a long
        transaction: one wait per such transaction, not one per poll)."""
        if self.seq_tailer:
            return await self._changes_naive(cursor, limit)

        async def q(conn: Any) -> tuple[ChangeBatch, int, int | None]:
            # Taken before the statement's snapshot: every commit before it is visible.
            snapshot_at = self.clock.now()
            rows = await conn.fetch(self._sql_changes, cursor, limit)
            held_since, held_top = rows[0]["held_since"], rows[0]["held_top"]
            changes = [_change(r) for r in rows if r["seq"] is not None]
            if held_since is not None:
                # Those rows committed no earlier than their committed_at: the watermark
                # must stay below it until they are returned.
                snapshot_at = min(snapshot_at, float(held_since))
            new_cursor = changes[-1].seq if changes else cursor
            batch = ChangeBatch(changes, new_cursor, snapshot_at, complete=len(changes) < limit)
            return batch, int(rows[0]["frontier"]), None if held_top is None else int(held_top)

        waited, nap = 0.0, 0.001
        target: int | None = None  # the highest seq held back at the first look
        first: int | None = None  # the frontier at the first look
        while True:
            batch, frontier, held_top = await self._run("changes", q)
            if held_top is None or not batch.complete:
                return batch
            if target is None:
                target, first = held_top, frontier
                if frontier == self._stuck_frontier:
                    return batch
            if frontier > target:
                return batch
            if waited >= self.frontier_wait:
                if frontier == first:
                    self._stuck_frontier = frontier
                return batch
            # Writes are short, so the older transaction usually ends within milliseconds;
            # under load (a descheduled backend) tens of them. Each try is a fresh
            # statement (a fresh snapshot) on a connection taken again: none is held
            # while sleeping.
            nap = min(nap, self.frontier_wait - waited)
            await asyncio.sleep(nap)
            waited += nap
            nap = min(2 * nap, 0.032)

    async def _changes_naive(self, cursor: int, limit: int) -> ChangeBatch:
        async def q(conn: Any) -> ChangeBatch:
            snapshot_at = self.clock.now()
            rows = await conn.fetch(self._sql_changes_naive, cursor, limit)
            changes = [_change(r) for r in rows]
            new_cursor = changes[-1].seq if changes else cursor
            return ChangeBatch(changes, new_cursor, snapshot_at, complete=len(changes) < limit)

        return await self._run("changes", q)

    async def change_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | None]:
        async def q(conn: Any) -> dict[int, bytes | None]:
            rows = await conn.fetch(self._sql_bodies, list(seqs))
            return {int(r["seq"]): None if r["data"] is None else bytes(r["data"]) for r in rows}

        return await self._run("change_bodies", q)

    async def last_seq(self) -> int:
        """A cursor from which polling skips nothing: the last seq below the frontier.

        Rows at or above the frontier (committed while an older writer still runs)
        are not counted: a tailer starting here returns them once they are final.
        """
        if self.seq_tailer:
            sql = f"SELECT COALESCE(max(seq), 0) FROM {self._s}.changes"
        else:
            sql = (
                f"SELECT COALESCE(max(seq), 0) FROM {self._s}.changes"
                " WHERE seq < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
                f" * {POSITIONS}"
            )

        async def q(conn: Any) -> int:
            return int(await conn.fetchval(sql))

        return await self._run("last_seq", q)

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
        s = self._s

        async def txn(conn: Any) -> Claim:
            async with conn.transaction():
                inserted = await conn.fetchval(
                    f"INSERT INTO {s}.idempotency"
                    " (scope, fingerprint, owner, state, lease_until, expires_at)"
                    " VALUES ($1, $2, $3, 'in_flight', $4, $5)"
                    " ON CONFLICT (scope) DO NOTHING RETURNING true",
                    scope,
                    fingerprint,
                    owner,
                    now + lease_seconds,
                    now + keep_seconds,
                )
                if inserted:  # no row was there: the claim is ours if the rule says so
                    claim = decide(None)
                    if claim.state is not ClaimState.ACQUIRED:
                        raise AssertionError("a claim on no record must be acquired")
                    return claim
                row = await conn.fetchrow(
                    "SELECT fingerprint, state, status, headers, body, lease_until, expires_at"
                    f" FROM {s}.idempotency WHERE scope = $1 FOR UPDATE",
                    scope,
                )
                record = None if row is None else _idempotency_record(row)
                claim = decide(record)
                if claim.state is not ClaimState.ACQUIRED:
                    return claim
                # Absent (released meanwhile), expired, or a lapsed lease: take it over.
                await conn.execute(
                    f"INSERT INTO {s}.idempotency"
                    " (scope, fingerprint, owner, state, lease_until, expires_at)"
                    " VALUES ($1, $2, $3, 'in_flight', $4, $5) ON CONFLICT (scope) DO UPDATE SET"
                    " fingerprint = EXCLUDED.fingerprint, owner = EXCLUDED.owner,"
                    " state = 'in_flight', status = NULL, headers = NULL, body = NULL,"
                    " lease_until = EXCLUDED.lease_until, expires_at = EXCLUDED.expires_at",
                    scope,
                    fingerprint,
                    owner,
                    now + lease_seconds,
                    now + keep_seconds,
                )
                return claim

        return await self._run("idempotency_claim", txn)

    async def release_idempotency(self, scope: str, owner: str) -> None:
        sql = (
            f"DELETE FROM {self._s}.idempotency"
            " WHERE scope = $1 AND owner = $2 AND state = 'in_flight'"
        )

        async def q(conn: Any) -> None:
            await conn.execute(sql, scope, owner)

        await self._run("idempotency_release", q)

    async def purge_idempotency(self, now: float) -> int:
        sql = f"DELETE FROM {self._s}.idempotency WHERE expires_at <= $1"

        async def q(conn: Any) -> int:
            status: str = await conn.execute(sql, now)
            return int(status.rsplit(" ", 1)[-1])

        return await self._run("idempotency_purge", q)

    async def secret(self, name: str) -> bytes:
        s = self._s

        async def q(conn: Any) -> bytes:
            value = await conn.fetchval(
                f"WITH ins AS (INSERT INTO {s}.secrets (name, value) VALUES ($1, $2)"
                " ON CONFLICT (name) DO NOTHING RETURNING value)"
                f" SELECT value FROM ins UNION ALL SELECT value FROM {s}.secrets WHERE name = $1",
                name,
                secrets.token_bytes(32),
            )
            if value is None:  # a concurrent inserter committed after our snapshot
                value = await conn.fetchval(f"SELECT value FROM {s}.secrets WHERE name = $1", name)
            return bytes(value)

        return await self._run("secret", q)

    # -- cursors and dead letters --------------------------------------------------------

    async def claim_cursor(
        self, collection: str, name: str, owner: str, now: float, lease: float, ack_delivered: bool
    ) -> CursorRecord:
        s = self._s

        async def txn(conn: Any) -> CursorRecord:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {s}.cursors VALUES ($1, $2, 0, 0, $3, '', 0)"
                    " ON CONFLICT DO NOTHING",
                    collection,
                    name,
                    now,
                )
                row = await conn.fetchrow(
                    f"SELECT {_CURSOR_COLUMNS} FROM {s}.cursors"
                    " WHERE collection = $1 AND name = $2 FOR UPDATE",
                    collection,
                    name,
                )
                cur = _cursor(row)
                if cur.lease_owner not in ("", owner) and cur.lease_until > now:
                    return cur
                position, acked_at = cur.position, cur.acked_at
                if ack_delivered and cur.delivered > position:
                    position, acked_at = cur.delivered, now
                await conn.execute(
                    f"UPDATE {s}.cursors SET position = $3, acked_at = $4, lease_owner = $5,"
                    " lease_until = $6 WHERE collection = $1 AND name = $2",
                    collection, name, position, acked_at, owner, now + lease,
                )  # fmt: skip
                return CursorRecord(
                    collection, name, position, cur.delivered, acked_at, owner, now + lease
                )

        return await self._run("cursor_claim", txn)

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
        s = self._s

        async def txn(conn: Any) -> CursorRecord | None:
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"SELECT {_CURSOR_COLUMNS} FROM {s}.cursors"
                    " WHERE collection = $1 AND name = $2 FOR UPDATE",
                    collection,
                    name,
                )
                if row is None:
                    return None
                cur = _cursor(row)
                if owner is not None and cur.lease_owner != owner:
                    return None
                new = moved(cur, now, position, delivered, owner, lease)
                await conn.execute(
                    f"UPDATE {s}.cursors SET position = $3, delivered = $4, acked_at = $5,"
                    " lease_until = $6 WHERE collection = $1 AND name = $2",
                    collection, name, new.position, new.delivered, new.acked_at,
                    new.lease_until,
                )  # fmt: skip
                return new

        return await self._run("cursor_move", txn)

    async def release_cursor(self, collection: str, name: str, owner: str) -> None:
        s = self._s

        async def q(conn: Any) -> None:
            await conn.execute(
                f"UPDATE {s}.cursors SET lease_owner = '', lease_until = 0"
                " WHERE collection = $1 AND name = $2 AND lease_owner = $3",
                collection,
                name,
                owner,
            )

        await self._run("cursor_release", q)

    async def cursors(self) -> list[CursorRecord]:
        s = self._s

        async def q(conn: Any) -> list[CursorRecord]:
            rows = await conn.fetch(
                f"SELECT {_CURSOR_COLUMNS} FROM {s}.cursors ORDER BY collection, name"
            )
            return [_cursor(r) for r in rows]

        return await self._run("cursors", q)

    async def drop_cursor(self, collection: str, name: str) -> bool:
        s = self._s

        async def q(conn: Any) -> bool:
            done = await conn.execute(
                f"DELETE FROM {s}.cursors WHERE collection = $1 AND name = $2", collection, name
            )
            return bool(done != "DELETE 0")

        return await self._run("cursor_drop", q)

    async def changes_behind(self, collection: str, cursor: int, cap: int) -> Backlog:
        s = self._s

        async def q(conn: Any) -> Backlog:
            row = await conn.fetchrow(
                f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {s}.changes WHERE collection = $1"
                " AND seq > $2 LIMIT $3) x) AS behind,"
                f" (SELECT committed_at FROM {s}.changes WHERE collection = $1 AND seq > $2"
                " ORDER BY seq LIMIT 1) AS oldest,"
                f" (SELECT committed_at FROM {s}.changes WHERE collection = $1"
                " ORDER BY seq DESC LIMIT 1) AS newest",
                collection,
                cursor,
                cap,
            )
            oldest, newest = row["oldest"], row["newest"]
            return Backlog(
                int(row["behind"]),
                float(oldest) if oldest is not None else None,
                float(newest) if newest is not None else None,
            )

        return await self._run("changes_behind", q)

    async def add_deadletter(
        self, letter: DeadLetter, cursor: tuple[str, int] | None = None
    ) -> int:
        s, c = self._s, letter.change

        async def txn(conn: Any) -> int:
            async with conn.transaction():
                id_ = await conn.fetchval(
                    f"INSERT INTO {s}.deadletters (collection, subscription, seq, doc_id,"
                    " version, op, committed_at, attempts, error, failed_at)"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
                    letter.collection, letter.subscription, c.seq, c.id, c.version, c.op.value,
                    c.committed_at, letter.attempts, letter.error, letter.failed_at,
                )  # fmt: skip
                if cursor is not None:
                    await conn.execute(
                        f"UPDATE {s}.cursors SET position = greatest(position, $3),"
                        " delivered = greatest(delivered, $3), acked_at = $4"
                        " WHERE collection = $1 AND name = $2",
                        letter.collection, cursor[0], cursor[1], letter.failed_at,
                    )  # fmt: skip
                return int(id_)

        return await self._run("deadletter_add", txn)

    async def deadletters(
        self, collection: str | None, after_id: int, limit: int
    ) -> list[DeadLetter]:
        s = self._s

        async def q(conn: Any) -> list[DeadLetter]:
            rows = await conn.fetch(
                f"SELECT {_LETTER_COLUMNS} FROM {s}.deadletters WHERE id > $1"
                " AND ($2::text IS NULL OR collection = $2) ORDER BY id LIMIT $3",
                after_id,
                collection,
                limit,
            )
            return [_letter(r) for r in rows]

        return await self._run("deadletters", q)

    async def deadletter(self, id: int) -> DeadLetter | None:
        s = self._s

        async def q(conn: Any) -> DeadLetter | None:
            row = await conn.fetchrow(
                f"SELECT {_LETTER_COLUMNS} FROM {s}.deadletters WHERE id = $1", id
            )
            return _letter(row) if row is not None else None

        return await self._run("deadletter", q)

    async def drop_deadletter(self, id: int) -> bool:
        s = self._s

        async def q(conn: Any) -> bool:
            done = await conn.execute(f"DELETE FROM {s}.deadletters WHERE id = $1", id)
            return bool(done != "DELETE 0")

        return await self._run("deadletter_drop", q)


_CURSOR_COLUMNS = "collection, name, position, delivered, acked_at, lease_owner, lease_until"
_LETTER_COLUMNS = (
    "id, collection, subscription, seq, doc_id, version, op, committed_at, attempts, error,"
    " failed_at"
)


def _cursor(row: Any) -> CursorRecord:
    return CursorRecord(
        row["collection"], row["name"], int(row["position"]), int(row["delivered"]),
        float(row["acked_at"]), row["lease_owner"], float(row["lease_until"]),
    )  # fmt: skip


def _letter(row: Any) -> DeadLetter:
    change = Change(
        int(row["seq"]), row["collection"], row["doc_id"], int(row["version"]),
        CHANGE_OPS[row["op"]], float(row["committed_at"]),
    )  # fmt: skip
    return DeadLetter(
        int(row["id"]), row["collection"], row["subscription"], change, int(row["attempts"]),
        row["error"], float(row["failed_at"]),
    )  # fmt: skip
