"""An in-memory primary: the store protocol kept in dictionaries, for ``maxage sim``.

It keeps every rule of :mod:`maxage.store.base` and passes the same contract
suite as SQLite and PostgreSQL (``tests/store/test_contract.py``):

* **One transaction per write.** ``write()`` takes the document's lock, reads
  the row, runs ``mutate`` (raising aborts: nothing written), bumps the
  version, and commits the row, its one change row and the idempotency
  completion together. ``write_batch()`` does the same for every item at once
  (locks in sorted order, every ``mutate`` before anything is written). Without a commit delay nothing is awaited between the
  read and the commit, so the write is atomic on its event loop.
* **Late commits, as on PostgreSQL.** When ``hooks.commit_delay()`` is
  positive, the change row's ``seq`` is taken first and the commit becomes
  visible only after the delay (other writers of the same document wait on its
  lock), so change rows commit out of ``seq`` order. ``changes_after`` then
  returns only rows below the *frontier* (the lowest ``seq`` still uncommitted)
  and lowers ``snapshot_at`` below the commit time of a committed row it holds
  back: the same argument as ``store/postgres.py``. ``hooks.seq_tailer`` (the
  ``seq-tailer`` mutant) polls ``seq > cursor`` instead and skips late commits.
* **Versions only rise**: a delete keeps its row (``deleted``).

Times: ``committed_at`` is the write's ``now`` (as SQLite and PostgreSQL stamp
it: the start of the write, never after its commit); ``snapshot_at`` is this
store's clock when the poll runs.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
from collections.abc import Callable, Mapping, Sequence

import msgspec

from maxage.contracts import MAX_BATCH_OPERATIONS, IndexSpec
from maxage.core.types import Clock
from maxage.hooks import Hooks
from maxage.store.base import (
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
    Op,
    Scalar,
    StoredResponse,
    StoreStats,
    WriteRequest,
    WriteResult,
    index_value,
    moved,
    mutated,
)


def _matches(data: object, query: ListQuery) -> bool:
    for c in query.conditions:
        v = index_value(data, c.index)
        if v is None:
            return False
        x = c.values[0]
        if c.op is Op.IN:
            ok = v in c.values
        elif c.op is Op.PREFIX:
            ok = isinstance(v, str) and isinstance(x, str) and v.startswith(x)
        elif c.op is Op.EQ:
            ok = v == x
        elif c.op is Op.NE:
            ok = v != x
        elif c.op is Op.LT:
            ok = v < x  # type: ignore[operator]
        elif c.op is Op.LTE:
            ok = v <= x  # type: ignore[operator]
        elif c.op is Op.GT:
            ok = v > x  # type: ignore[operator]
        else:
            ok = v >= x  # type: ignore[operator]
        if not ok:
            return False
    return True


def _position(value: Scalar | None, id: str, descending: bool) -> tuple[object, ...]:
    """An ascending sort key of the documented order (missing values last ascending,
    first descending); ``descending`` flips value and id but not the missing rule."""
    if value is None:
        return (1 if not descending else 0, _Flip(id) if descending else id)
    if descending:
        return (1, _Flip(value), _Flip(id))
    return (0, value, id)


class _Flip:
    __slots__ = ("v",)

    def __init__(self, v: object) -> None:
        self.v = v

    def __lt__(self, other: _Flip) -> bool:
        return bool(other.v < self.v)  # type: ignore[operator]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Flip) and bool(self.v == other.v)

    def __hash__(self) -> int:
        return hash(self.v)


class _Idem:
    __slots__ = ("expires_at", "fingerprint", "lease_until", "owner", "response")

    def __init__(self, fingerprint: str, owner: str, lease_until: float, expires_at: float) -> None:
        self.fingerprint = fingerprint
        self.owner = owner
        self.lease_until = lease_until
        self.expires_at = expires_at
        self.response: StoredResponse | None = None  # set when done


class MemoryStore:
    """The primary in this process's memory (one event loop; not shared across processes)."""

    def __init__(self, *, clock: Clock, hooks: Hooks | None = None, seed: int = 0) -> None:
        self.clock = clock
        self.hooks = hooks
        self.stats = StoreStats()
        self.seed = seed
        self.docs: dict[tuple[str, str], Document] = {}
        self.changes: list[Change] = []  # committed, ordered by seq
        self._seqs: list[int] = []  # seq of each entry of ``changes`` (for bisect)
        self._next_seq = 1
        self._uncommitted: dict[int, None] = {}  # seq -> running late commit (ordered)
        self._commit_times: dict[int, float] = {}  # seq -> this clock at commit (held rows)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._idem: dict[str, _Idem] = {}
        self._secrets: dict[str, bytes] = {}
        self._cursors: dict[tuple[str, str], CursorRecord] = {}
        self._letters: dict[int, DeadLetter] = {}
        self._bodies: dict[int, bytes | None] = {}  # seq -> the data its change row recorded
        self.seq_tailer = hooks is not None and hooks.seq_tailer

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        await self._enter("ping")

    async def _enter(self, op: str) -> None:
        self.stats.ops[op] = self.stats.ops.get(op, 0) + 1
        if self.hooks is not None:
            await self.hooks.before_store_call(op)

    # -- documents ---------------------------------------------------------------------

    async def get(self, collection: str, id: str) -> Document | None:
        if self.hooks is not None:
            await self._enter("get")
        doc = self.docs.get((collection, id))
        return None if doc is None or doc.deleted else doc

    async def list_query(self, query: ListQuery) -> ListResult:
        """A scan of the collection, kept to the same order and rules as the SQL stores."""
        await self._enter("list")
        sort, desc = query.sort, query.descending
        rows = []
        for (c, _), d in self.docs.items():
            if c != query.collection or d.deleted:
                continue
            data = msgspec.json.decode(d.data)
            if _matches(data, query):
                value = index_value(data, sort) if sort is not None else None
                rows.append((_position(value, d.id, desc), d))
        rows.sort(key=lambda r: r[0])
        total = len(rows) if query.count else None
        if query.after is not None:
            start = _position(query.after[0], query.after[1], desc)
            rows = [r for r in rows if start < r[0]]
        version = max(
            (ch.seq for ch in self.changes if ch.collection == query.collection), default=0
        )
        return ListResult([d for _, d in rows[: query.limit]], total, version)

    async def sync_indexes(self, indexes: Mapping[str, Sequence[IndexSpec]]) -> IndexSync:
        """A scan needs no index."""
        return IndexSync((), ())

    async def write(self, request: WriteRequest) -> WriteResult:
        if self.hooks is not None:
            await self._enter("write")
        idem = request.idempotency
        completion = None
        if idem is not None:
            render = idem.render
            completion = (idem.scope, idem.owner, lambda results: render(results[0]))
        results, response = await self._transaction(
            request.collection, [(request.id, request.mutate)], request.now, completion
        )
        r = results[0]
        return WriteResult(r.document, r.created, r.seq, response)

    async def write_batch(self, request: BatchWriteRequest) -> BatchResult:
        if len(request.items) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_OPERATIONS} items")
        if self.hooks is not None:
            await self._enter("write_batch")
        idem = request.idempotency
        completion = None
        if idem is not None:
            render = idem.render
            completion = (idem.scope, idem.owner, lambda rs: render(BatchResult(tuple(rs))))
        results, response = await self._transaction(
            request.collection, [(i.id, i.mutate) for i in request.items], request.now, completion
        )
        return BatchResult(tuple(results), response)

    async def _transaction(
        self,
        collection: str,
        items: Sequence[tuple[str, Mutator]],
        now: float,
        completion: tuple[str, str, Callable[[list[WriteResult]], StoredResponse]] | None,
    ) -> tuple[list[WriteResult], StoredResponse | None]:
        """Every item (distinct ids) under its document's lock, taken in sorted order so
        crossing transactions never deadlock: all mutators run before anything is
        written (one raising writes nothing); then the rows, change rows (consecutive
        seqs, in the items' order) and the idempotency completion commit together."""
        async with contextlib.AsyncExitStack() as held_locks:
            for key in sorted({(collection, id) for id, _ in items}):
                lock = self._locks.get(key)
                if lock is None:
                    lock = self._locks[key] = asyncio.Lock()
                await held_locks.enter_async_context(lock)
            staged: list[tuple[Document, ChangeOp, bool, bytes | None]] = []
            for id, mutate in items:
                live, new_data, version = mutated(self.docs.get((collection, id)), mutate)
                if new_data is None:
                    assert live is not None
                    doc = Document(collection, id, version, live.data, live.created_at, now, True)
                    staged.append((doc, ChangeOp.DELETE, False, None))
                else:
                    created_at = live.created_at if live is not None else now
                    doc = Document(collection, id, version, new_data, created_at, now)
                    staged.append((doc, ChangeOp.PUT, live is None, new_data))
            if completion is not None:
                claim = self._idem.get(completion[0])
                if claim is None or claim.owner != completion[1] or claim.response is not None:
                    raise IdempotencyLost(f"idempotency claim {completion[0]!r} was lost")
            first = self._next_seq
            self._next_seq += len(staged)
            results = [
                WriteResult(document=doc, created=created, seq=first + n)
                for n, (doc, _, created, _) in enumerate(staged)
            ]
            response = completion[2](results) if completion is not None else None
            delay = self.hooks.commit_delay() if self.hooks is not None else 0.0
            if delay > 0:
                seqs = [r.seq for r in results]
                self._uncommitted.update(dict.fromkeys(seqs))
                try:
                    await asyncio.sleep(delay)
                finally:  # committed, or aborted by a cancellation: no longer running
                    for seq in seqs:
                        del self._uncommitted[seq]
            if self._uncommitted:  # committed above the frontier: held back until it moves
                committed = self.clock.now()
                self._commit_times.update(dict.fromkeys((r.seq for r in results), committed))
            for result, (doc, op, _, data) in zip(results, staged, strict=True):
                self.docs[(collection, doc.id)] = doc
                change = Change(result.seq, collection, doc.id, doc.version, op, now)
                self._bodies[result.seq] = data
                if self._seqs and result.seq < self._seqs[-1]:
                    i = bisect.bisect_left(self._seqs, result.seq)
                    self._seqs.insert(i, result.seq)
                    self.changes.insert(i, change)
                else:
                    self._seqs.append(result.seq)
                    self.changes.append(change)
            if completion is not None:
                self._idem[completion[0]].response = response
            return results, response

    # -- change log --------------------------------------------------------------------

    def _frontier(self) -> int:
        """The lowest seq still running (every later transaction gets a higher one)."""
        return next(iter(self._uncommitted), self._next_seq)

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch:
        if self.hooks is not None:
            await self._enter("changes")
        snapshot_at = self.clock.now()
        i = bisect.bisect_right(self._seqs, cursor)
        frontier = self._next_seq if self.seq_tailer else self._frontier()
        j = bisect.bisect_left(self._seqs, frontier, lo=i)
        changes = self.changes[i : min(j, i + limit)]
        complete = j - i <= limit
        if complete and j < len(self._seqs):
            # committed rows held back behind a running transaction: claim nothing past
            # the earliest of their commits until they are returned
            held = min(self._commit_times[s] for s in self._seqs[j:])
            snapshot_at = min(snapshot_at, held - 1e-6)
        new_cursor = changes[-1].seq if changes else cursor
        return ChangeBatch(changes, new_cursor, snapshot_at, complete=complete)

    async def change_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | None]:
        await self._enter("change_bodies")
        return {seq: self._bodies[seq] for seq in seqs if seq in self._bodies}

    async def last_seq(self) -> int:
        if self.hooks is not None:
            await self._enter("last_seq")
        frontier = self._next_seq if self.seq_tailer else self._frontier()
        j = bisect.bisect_left(self._seqs, frontier)
        return self._seqs[j - 1] if j else 0

    async def cursor_at(self, t: float) -> int:
        await self._enter("cursor_at")
        below = [c.seq for c in self.changes if c.committed_at < t]
        return max(below, default=0)

    async def committed_at(self, collection: str, id: str, version: int) -> float | None:
        await self._enter("committed_at")
        newer = [
            c
            for c in self.changes
            if c.collection == collection and c.id == id and c.version > version
        ]
        return min(newer, key=lambda c: c.version).committed_at if newer else None

    async def notify(self) -> None:
        """One process: its own tailer is woken directly; nothing to send."""

    async def listen(self, wake: Callable[[], None]) -> None:
        """One process: no other writers to hear from."""

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
        await self._enter("idempotency_claim")
        row = self._idem.get(scope)
        record = None
        if row is not None:
            done = row.response is not None
            record = IdempotencyRecord(
                row.fingerprint,
                done,
                row.response,
                row.lease_until,
                row.expires_at,
            )
        claim = decide(record)
        if claim.state is ClaimState.ACQUIRED:
            self._idem[scope] = _Idem(fingerprint, owner, now + lease_seconds, now + keep_seconds)
        return claim

    async def release_idempotency(self, scope: str, owner: str) -> None:
        await self._enter("idempotency_release")
        row = self._idem.get(scope)
        if row is not None and row.owner == owner and row.response is None:
            del self._idem[scope]

    async def purge_idempotency(self, now: float) -> int:
        await self._enter("idempotency_purge")
        gone = [s for s, r in self._idem.items() if r.expires_at <= now]
        for s in gone:
            del self._idem[s]
        return len(gone)

    async def secret(self, name: str) -> bytes:
        """Derived from the seed, so a seeded run is reproducible (never for production)."""
        value = self._secrets.get(name)
        if value is None:
            value = hashlib.sha256(
                b"maxage-memory-store:%d:%s" % (self.seed, name.encode())
            ).digest()
            self._secrets[name] = value
        return value

    # -- cursors and dead letters --------------------------------------------------------

    async def claim_cursor(
        self, collection: str, name: str, owner: str, now: float, lease: float, ack_delivered: bool
    ) -> CursorRecord:
        await self._enter("cursor_claim")
        cur = self._cursors.get((collection, name))
        if cur is None:
            cur = CursorRecord(collection, name, 0, 0, now, "", 0.0)
        elif cur.lease_owner not in ("", owner) and cur.lease_until > now:
            return cur
        position, acked_at = cur.position, cur.acked_at
        if ack_delivered and cur.delivered > position:
            position, acked_at = cur.delivered, now
        new = CursorRecord(collection, name, position, cur.delivered, acked_at, owner, now + lease)
        self._cursors[(collection, name)] = new
        return new

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
        await self._enter("cursor_move")
        cur = self._cursors.get((collection, name))
        if cur is None or (owner is not None and cur.lease_owner != owner):
            return None
        new = self._cursors[(collection, name)] = moved(cur, now, position, delivered, owner, lease)
        return new

    async def release_cursor(self, collection: str, name: str, owner: str) -> None:
        cur = self._cursors.get((collection, name))
        if cur is not None and cur.lease_owner == owner:
            self._cursors[(collection, name)] = CursorRecord(
                collection, name, cur.position, cur.delivered, cur.acked_at, "", 0.0
            )

    async def cursors(self) -> list[CursorRecord]:
        return [self._cursors[k] for k in sorted(self._cursors)]

    async def drop_cursor(self, collection: str, name: str) -> bool:
        return self._cursors.pop((collection, name), None) is not None

    async def changes_behind(self, collection: str, cursor: int, cap: int) -> Backlog:
        mine = [c for c in self.changes if c.collection == collection]
        after = [c for c in mine if c.seq > cursor]
        return Backlog(
            min(len(after), cap),
            after[0].committed_at if after else None,
            mine[-1].committed_at if mine else None,
        )

    async def add_deadletter(
        self, letter: DeadLetter, cursor: tuple[str, int] | None = None
    ) -> int:
        id_ = max(self._letters, default=0) + 1
        self._letters[id_] = DeadLetter(
            id_, letter.collection, letter.subscription, letter.change, letter.attempts,
            letter.error, letter.failed_at,
        )  # fmt: skip
        if cursor is not None:
            await self.move_cursor(
                letter.collection, cursor[0], letter.failed_at, position=cursor[1]
            )
        return id_

    async def deadletters(
        self, collection: str | None, after_id: int, limit: int
    ) -> list[DeadLetter]:
        found = [
            d
            for i, d in sorted(self._letters.items())
            if i > after_id and (collection is None or d.collection == collection)
        ]
        return found[:limit]

    async def deadletter(self, id: int) -> DeadLetter | None:
        return self._letters.get(id)

    async def drop_deadletter(self, id: int) -> bool:
        return self._letters.pop(id, None) is not None
