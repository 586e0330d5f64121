"""The primary store protocol: documents, the change log and idempotency records.

Every adapter (SQLite, PostgreSQL) implements :class:`Store` and must pass the
contract suite in ``tests/store/``. The rules an adapter keeps:

* **One transaction per write.** ``write()`` reads the current row, calls the
  caller's ``mutate`` (which checks preconditions and validates; raising aborts
  the transaction), bumps ``version`` by one, writes the row, appends exactly one
  change row ``(seq, collection, id, version, op, committed_at)`` and, when an
  idempotency completion is given, stores the rendered response, all before a
  single commit (DESIGN.md P5, P7).
* **Writes expected to create.** ``WriteRequest.expect_absent`` says the caller chose a
  fresh id (a server-generated uuid7) and expects no row: an adapter may then call
  ``mutate(None)`` before it reads and, when that returns data, insert version 1 and
  its change row without reading first. It must still behave exactly as the general
  write: if any row of that id exists (live or deleted) nothing is inserted and the
  write runs as usual, ``mutate`` seeing that row; and the insert serializes with the
  document's other writers as theirs do with each other. Mutators are therefore pure
  (calling one twice is harmless). An adapter may ignore the hint.
* **One transaction per batch.** ``write_batch()`` applies its items in order,
  each exactly as ``write()`` would (read, ``mutate``, bump, one change row), in
  one transaction: one item's ``mutate`` raising aborts all of them. Its change
  rows are in the items' order, each with its own ``seq``; item ids are
  distinct (the caller refuses repeats), and at most :data:`~maxage.contracts.MAX_BATCH_OPERATIONS`.
* **Change rows carry the body.** A put's change row keeps the document's data
  at that version (``change_bodies``: the change feed's ``include=doc``).
* **Versions only rise.** A deleted document keeps its row (``deleted``) so a
  re-create continues the version chain; caches rely on it for tombstones.
* **Change-log completeness.** ``changes_after(cursor)`` returns changes in commit
  order with ``seq > cursor`` and, when ``complete`` is true, a ``snapshot_at``
  time such that every change committed before it is either returned or at or
  below ``cursor``: that time is what a tailer may advance its watermark to.
* **List queries.** ``list_query`` returns live documents matching every
  condition, in ``(sort key, id)`` order, after the keyset position, read in one
  snapshot together with ``total`` and the collection's ``version`` (the highest
  change-log ``seq`` of the collection that snapshot holds). Conditions and sort
  use only declared indexes (:class:`maxage.contracts.IndexSpec`), each compared
  with the same typed expression the adapter's index is built on, so a query is
  never a full scan of the collection. A document whose value at an index's path
  is missing or of another type has no value there: it matches no condition on
  that index and sorts after every value (ascending), before them (descending).
* **Query indexes.** ``sync_indexes`` makes the primary's query indexes exactly
  the declared ones: creates the missing, drops the undeclared, without blocking
  writers where the database allows it.
* **Idempotency claims.** A key is claimed (committed) before the effect runs, so
  a concurrent duplicate, in any process, sees ``in_flight``; the effect's
  transaction completes the claim with the response, only if the claim is still
  held by the same owner; a failure before the effect releases the claim. The
  store only persists: whether a claim is acquired, in flight, done or a
  mismatch is decided by the caller's ``decide`` (``service/idempotency.py``),
  called inside the claim's transaction with the row as it is.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import msgspec

from maxage.contracts import IndexSpec


class StoreError(Exception):
    """The primary failed or is unreachable (maps to 503)."""


class StoreTimeout(StoreError):
    """A primary call exceeded its timeout."""


# The values every request makes (a document, a write's request and result, its response,
# a change and a poll's batch) are frozen msgspec Structs rather than frozen dataclasses:
# just as immutable, but a frozen dataclass's __init__ sets each field through
# object.__setattr__ (a Document: ~11,400 instructions, against ~1,200; callgrind).


class Document(msgspec.Struct, frozen=True):
    collection: str
    id: str
    version: int
    data: bytes  # the user's JSON object, encoded once (canonical msgspec encoding)
    created_at: float
    updated_at: float
    deleted: bool = False


class ChangeOp(enum.Enum):
    PUT = "put"
    DELETE = "delete"


# ChangeOp by its value, for the stores' change-log rows: ``ChangeOp(value)`` (the enum's
# call) costs ~4,900 instructions, a dict look-up ~100 (callgrind).
CHANGE_OPS: dict[str, ChangeOp] = {op._value_: op for op in ChangeOp}


class Change(msgspec.Struct, frozen=True):
    seq: int
    collection: str
    id: str
    version: int
    op: ChangeOp
    committed_at: float


class ChangeBatch(msgspec.Struct, frozen=True):
    changes: Sequence[Change]
    cursor: int  # the seq to pass next time
    snapshot_at: float  # see module docstring; meaningful only when complete
    complete: bool  # False when the batch was cut by the limit: poll again at once


class StoredResponse(msgspec.Struct, frozen=True):
    """The first outcome of an idempotent request, replayed byte for byte."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class WriteResult(msgspec.Struct, frozen=True):
    document: Document  # after the write; for a delete, deleted=True at the new version
    created: bool  # no live document existed before
    seq: int  # change-log sequence number of this write
    response: StoredResponse | None = None


def encode_headers(headers: tuple[tuple[str, str], ...]) -> str:
    """Stored form of an idempotent response's headers (one ``name:value`` per line)."""
    return "\n".join(f"{k}:{v}" for k, v in headers)


def decode_headers(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple((k, v) for k, _, v in (line.partition(":") for line in text.split("\n")))


@dataclass(frozen=True, slots=True)
class BatchResult:
    results: tuple[WriteResult, ...]  # one per item, in the items' order
    response: StoredResponse | None = None


# Returns the new data bytes, or None to delete. Raises to abort the transaction.
Mutator = Callable[[Document | None], bytes | None]
Renderer = Callable[[WriteResult], StoredResponse]


def mutated(
    existing: Document | None, mutate: Mutator
) -> tuple[Document | None, bytes | None, int]:
    """What a write makes of the row its transaction read (``existing``, deleted or not):
    ``(live document or None, new data or None to delete, the next version)``. ``mutate``
    raising aborts the write; deleting what is not live is a LookupError."""
    live = existing if existing is not None and not existing.deleted else None
    new_data = mutate(live)
    if new_data is None and live is None:
        raise LookupError("no live document to delete")
    return live, new_data, (existing.version if existing else 0) + 1


R = TypeVar("R", WriteResult, BatchResult)


@dataclass(frozen=True, slots=True)
class IdempotencyCompletion(Generic[R]):
    scope: str
    owner: str
    render: Callable[[R], StoredResponse]


class WriteRequest(msgspec.Struct, frozen=True):
    collection: str
    id: str
    mutate: Mutator
    now: float
    idempotency: IdempotencyCompletion[WriteResult] | None = None
    # The id is fresh (server-chosen): no row is expected ("Writes expected to create").
    expect_absent: bool = False


@dataclass(frozen=True, slots=True)
class BatchItem:
    id: str
    mutate: Mutator


@dataclass(frozen=True, slots=True)
class BatchWriteRequest:
    """Items of one collection with distinct ids, applied in order in one transaction."""

    collection: str
    items: Sequence[BatchItem]
    now: float
    idempotency: IdempotencyCompletion[BatchResult] | None = None


class ClaimState(enum.Enum):
    ACQUIRED = "acquired"  # the caller now owns the key and must complete or release it
    IN_FLIGHT = "in_flight"  # another request holds it
    DONE = "done"  # completed before: ``response`` is the replay
    MISMATCH = "mismatch"  # same key, different request fingerprint


@dataclass(frozen=True, slots=True)
class Claim:
    state: ClaimState
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A stored idempotency row, as the claim decision sees it."""

    fingerprint: str
    done: bool
    response: StoredResponse | None  # set when done
    lease_until: float
    expires_at: float


# Decides a claim from the current row (None: no row). ACQUIRED makes the store
# (re)write the row as the caller's in-flight claim; anything else writes nothing.
ClaimDecision = Callable[[IdempotencyRecord | None], Claim]


class IdempotencyLost(StoreError):
    """The claim expired and was taken over before the effect committed; nothing written."""


@dataclass(slots=True)
class StoreStats:
    """Cheap counters the API exports: operation counts, errors and latency sums."""

    ops: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def record(self, op: str, seconds: float, ok: bool) -> None:
        self.ops[op] = self.ops.get(op, 0) + 1
        self.seconds[op] = self.seconds.get(op, 0.0) + seconds
        if not ok:
            self.errors[op] = self.errors.get(op, 0) + 1


Scalar = str | int | float | bool


class Op(enum.Enum):
    """A list query's comparison (the API grammar: ``?field=op.value``)."""

    EQ = "eq"
    NE = "ne"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    IN = "in"
    PREFIX = "prefix"


@dataclass(frozen=True, slots=True)
class Condition:
    """``index op values``: one value, except for ``IN`` (one or more); ``PREFIX`` only on
    string indexes. Values have the index's type (str, int, int | float, bool)."""

    index: IndexSpec
    op: Op
    values: tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class ListQuery:
    """Live documents of ``collection`` matching every condition, ordered by ``sort`` (None:
    by id alone) then id, ascending or ``descending``, strictly after the keyset position
    ``after = (sort value or None, id)``, at most ``limit``; ``count`` asks for ``total``."""

    collection: str
    conditions: tuple[Condition, ...] = ()
    sort: IndexSpec | None = None
    descending: bool = False
    after: tuple[Scalar | None, str] | None = None
    limit: int = 20
    count: bool = False


@dataclass(frozen=True, slots=True)
class ListResult:
    documents: list[Document]
    total: int | None  # matching documents (all pages) when asked for
    version: int  # the highest change-log seq of the collection this snapshot holds (0: none)


@dataclass(frozen=True, slots=True)
class IndexSync:
    """What :meth:`Store.sync_indexes` did (index names in the primary)."""

    created: tuple[str, ...]
    dropped: tuple[str, ...]


def prefix_upper(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix``, in code point
    order (SQLite's BINARY, PostgreSQL's "C" collation): ``prefix`` matching is the range
    ``[prefix, prefix_upper(prefix))``; None when there is no upper end."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates are never in a stored string
                nxt = 0xE000
            return "".join(chars) + chr(nxt)
    return None


# Longer strings are not indexed (no value, as if missing): a PostgreSQL btree entry must
# fit in a third of a page (about 2,700 bytes: 500 characters of up to 4 UTF-8 bytes and
# an id of at most 200).
MAX_INDEXED_CHARS = 500


def index_value(data: object, index: IndexSpec) -> Scalar | None:
    """The value ``index`` gives a decoded document, by the rule every adapter's index
    expression follows (missing, of another type, or a string longer than
    :data:`MAX_INDEXED_CHARS`: None)."""
    node = data
    for segment in index.path:
        if not isinstance(node, dict) or segment not in node:
            return None
        node = node[segment]
    if index.type == "string":
        return node if isinstance(node, str) and len(node) <= MAX_INDEXED_CHARS else None
    if index.type == "boolean":
        return node if isinstance(node, bool) else None
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    return node


class Store(Protocol):
    stats: StoreStats

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def get(self, collection: str, id: str) -> Document | None:
        """The live document, or None when absent or deleted."""
        ...

    async def list_query(self, query: ListQuery) -> ListResult:
        """See "List queries" in the module docstring."""
        ...

    async def sync_indexes(self, indexes: Mapping[str, Sequence[IndexSpec]]) -> IndexSync:
        """Make the query indexes exactly ``indexes`` (collection -> its declared indexes)."""
        ...

    async def write(self, request: WriteRequest) -> WriteResult: ...

    async def write_batch(self, request: BatchWriteRequest) -> BatchResult:
        """Every item, in order, in one transaction; an item's ``mutate`` raising writes none."""
        ...

    async def change_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | None]:
        """The document data each change row recorded (None for a delete), by ``seq``.

        A put recorded before change rows carried bodies falls back to the document
        if it is still at that version, else None."""
        ...

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch: ...

    async def last_seq(self) -> int: ...

    async def cursor_at(self, t: float) -> int:
        """A cursor below every change committed at or after ``t`` (for start-up replays)."""
        ...

    async def committed_at(self, collection: str, id: str, version: int) -> float | None:
        """The change-log commit time of the first version of the document newer than
        ``version``, or None when there is none (the consistency monitor's question)."""
        ...

    async def notify(self) -> None:
        """After a local commit: wake other processes' tailers early (best effort)."""
        ...

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` when another process commits (best effort; polling is the truth)."""
        ...

    async def claim_idempotency(
        self,
        scope: str,
        fingerprint: str,
        owner: str,
        now: float,
        lease_seconds: float,
        keep_seconds: float,
        decide: ClaimDecision,
    ) -> Claim: ...

    async def release_idempotency(self, scope: str, owner: str) -> None: ...

    async def purge_idempotency(self, now: float) -> int: ...

    async def secret(self, name: str) -> bytes:
        """A random 32-byte secret shared by every process on this primary (created once)."""
        ...

    # -- cursors (named consumers, webhook subscriptions) and dead letters ----------------

    async def claim_cursor(
        self, collection: str, name: str, owner: str, now: float, lease: float, ack_delivered: bool
    ) -> CursorRecord:
        """In one transaction: create the cursor (at 0) if new; take its lease for ``owner``
        unless another owner holds an unexpired one (then return the row unchanged: the
        caller compares ``lease_owner``); with ``ack_delivered``, first move ``position``
        up to ``delivered`` (auto-ack of what the previous reader was sent)."""
        ...

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
        """Raise ``position`` / ``delivered`` (never lower them). With ``owner``, only while
        that owner holds the lease, which is renewed for ``lease`` seconds. None when the
        cursor does not exist (or ``owner`` lost the lease)."""
        ...

    async def release_cursor(self, collection: str, name: str, owner: str) -> None:
        """End ``owner``'s lease now (a reader that goes away)."""
        ...

    async def cursors(self) -> list[CursorRecord]: ...

    async def drop_cursor(self, collection: str, name: str) -> bool: ...

    async def changes_behind(self, collection: str, cursor: int, cap: int) -> Backlog:
        """How far ``cursor`` is behind the change log of ``collection`` (counted up to
        ``cap``)."""
        ...

    async def add_deadletter(
        self, letter: DeadLetter, cursor: tuple[str, int] | None = None
    ) -> int:
        """Store ``letter`` (its id is assigned) and, in the same transaction, raise the
        cursor ``(name, position)`` of its collection past it; returns the id."""
        ...

    async def deadletters(
        self, collection: str | None, after_id: int, limit: int
    ) -> list[DeadLetter]:
        """Dead letters with id > ``after_id`` in id order (all collections when None)."""
        ...

    async def deadletter(self, id: int) -> DeadLetter | None: ...

    async def drop_deadletter(self, id: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class CursorRecord:
    """A server-side position in one collection's change log: a named consumer
    (``name``), or a webhook subscription (``_webhook.<name>``)."""

    collection: str
    name: str
    position: int  # acknowledged: every change at or below it is done with
    delivered: int  # the highest cursor handed out (>= position once anything was sent)
    acked_at: float  # when position last moved (created_at until then)
    lease_owner: str  # "" when nobody reads it
    lease_until: float


@dataclass(frozen=True, slots=True)
class Backlog:
    behind: int  # changes after the cursor (at most the cap asked for)
    oldest_at: float | None  # commit time of the first change after the cursor
    newest_at: float | None  # commit time of the collection's newest change


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A change a webhook subscription gave up on: kept until replayed or dropped."""

    id: int  # 0 until stored
    collection: str
    subscription: str
    change: Change
    attempts: int
    error: str  # the last failure, as the deliverer saw it
    failed_at: float


def moved(
    cur: CursorRecord,
    now: float,
    position: int | None,
    delivered: int | None,
    owner: str | None,
    lease: float,
) -> CursorRecord:
    """``cur`` after a :meth:`Store.move_cursor` (the one rule both adapters apply):
    positions only rise; an owner's move renews its lease."""
    new_position = cur.position if position is None else max(cur.position, position)
    new_delivered = max(cur.delivered, new_position, delivered or 0)
    return CursorRecord(
        cur.collection,
        cur.name,
        new_position,
        new_delivered,
        now if new_position > cur.position else cur.acked_at,
        cur.lease_owner,
        now + lease if owner is not None else cur.lease_until,
    )
