"""The primary store protocol: documents, the change log and idempotency records.

Every adapter (SQLite, PostgreSQL) implements :class:`Store` and must pass the
contract suite in ``tests/store/``. The rules an adapter keeps:

* **One transaction per write.** ``write()`` reads the current row, calls the
  caller's ``mutate`` (which checks preconditions and validates; raising aborts
  the transaction), bumps ``version`` by one, writes the row, appends exactly one
  change row ``(seq, collection, id, version, op, committed_at)`` and, when an
  idempotency completion is given, stores the rendered response, all before a
  single commit (DESIGN.md P5, P7).
* **Versions only rise.** A deleted document keeps its row (``deleted``) so a
  re-create continues the version chain; caches rely on it for tombstones.
* **Change-log completeness.** ``changes_after(cursor)`` returns changes in commit
  order with ``seq > cursor`` and, when ``complete`` is true, a ``snapshot_at``
  time such that every change committed before it is either returned or at or
  below ``cursor``: that time is what a tailer may advance its watermark to.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class StoreError(Exception):
    """The primary failed or is unreachable (maps to 503)."""


class StoreTimeout(StoreError):
    """A primary call exceeded its timeout."""


@dataclass(frozen=True, slots=True)
class Document:
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


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    collection: str
    id: str
    version: int
    op: ChangeOp
    committed_at: float


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    changes: Sequence[Change]
    cursor: int  # the seq to pass next time
    snapshot_at: float  # see module docstring; meaningful only when complete
    complete: bool  # False when the batch was cut by the limit: poll again at once


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first outcome of an idempotent request, replayed byte for byte."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


@dataclass(frozen=True, slots=True)
class WriteResult:
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


# Returns the new data bytes, or None to delete. Raises to abort the transaction.
Mutator = Callable[[Document | None], bytes | None]
Renderer = Callable[[WriteResult], StoredResponse]


@dataclass(frozen=True, slots=True)
class IdempotencyCompletion:
    scope: str
    owner: str
    render: Renderer


@dataclass(frozen=True, slots=True)
class WriteRequest:
    collection: str
    id: str
    mutate: Mutator
    now: float
    idempotency: IdempotencyCompletion | None = None


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


class Store(Protocol):
    stats: StoreStats

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None: ...

    async def get(self, collection: str, id: str) -> Document | None:
        """The live document, or None when absent or deleted."""
        ...

    async def list_page(self, collection: str, after_id: str | None, limit: int) -> list[Document]:
        """Live documents with id > after_id, ordered by id, at most ``limit``."""
        ...

    async def write(self, request: WriteRequest) -> WriteResult: ...

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
