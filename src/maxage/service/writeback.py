"""Write-back: writes acknowledged from this process's buffer and flushed to the primary
in batches, coalesced per document, at most ``flush_interval`` after they were acknowledged.

Only operations whose effects commute are buffered: merge patches and increments
(:mod:`maxage.service.increments`). Invariants:

* **Deltas, not overwrites.** A flush is one primary transaction per collection
  (``Store.write_batch``, up to MAX_BATCH_OPERATIONS documents) that applies each
  document's buffered operations, in the order they were acknowledged, to the row
  that transaction read (under the store's per-document lock). If one document no
  longer takes its writes (deleted meanwhile) the batch aborts as a whole and each
  document is flushed in a transaction of its own. Increments from any
  number of processes therefore sum exactly; a patch applies to whatever the
  document is at the flush.
* **The loss window.** A write is acknowledged only once it is in the buffer, and
  its flush starts at most ``flush_interval`` later (``Buffered.due``). A stop
  (SIGTERM) flushes everything before the process exits; a crash loses what was
  acknowledged since the last flush began: at most ``flush_interval`` of writes per
  process (plus the one flush transaction then in flight).
* **Validated when acknowledged.** An operation is acknowledged only if the
  document exists and the result of applying it to what this process sees (the
  primary's document, at most ``max_staleness`` old, plus its own buffered
  operations) matches the schema. At the flush the primary's document may differ
  (another process patched or deleted it): an operation that then no longer
  applies is dropped, counted (``maxage_writeback_dropped_total``) and logged;
  the others are applied.
* **Read-your-writes on this process.** A read of a document with buffered
  operations answers with the primary's document plus those operations
  (``meta.consistency = "write-back"``, no ETag: that body is no committed
  version); after this process's flush, reads never go below the flushed version.
  A strong read flushes the document's buffer first, then reads the primary.
* A PUT, POST or DELETE is not commuting: it goes to the primary at once, after
  this document's buffer was flushed (so this process's order holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from maxage.contracts import MAX_BATCH_OPERATIONS, CollectionSpec, ReadMode, WritePolicy
from maxage.core.types import Clock
from maxage.core.wake import wait_woken
from maxage.invalidation.tailer import doc_key
from maxage.service import representation
from maxage.service.errors import DocumentNotFound, DomainError, ValidationFailed
from maxage.service.increments import Increment, apply_increment
from maxage.service.reads import ReadResult, Reads
from maxage.service.writes import PreparedWrite, WriteKind, Writes, merge_patch
from maxage.store.base import Document, Mutator, Store, StoredResponse, WriteResult

log = logging.getLogger("maxage.service")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# Flushes that run at once (each is one primary transaction).
FLUSH_CONCURRENCY = 16
# A failed flush is retried after this long (the buffer keeps its writes meanwhile).
RETRY_AFTER = 0.2
# On stop: how long to keep retrying flushes the primary refuses before giving up.
STOP_RETRY_SECONDS = 5.0


class WriteBackRefused(DomainError):
    """A request that needs the primary (a precondition, an Idempotency-Key) on a
    write-back collection, which acknowledges before the primary commits."""

    code = "write_back_unsupported"


@dataclass(frozen=True, slots=True)
class Patch:
    """An RFC 7396 merge patch, already checked against the derived patch schema."""

    patch: dict[str, Any]


Op = Patch | Increment


def apply_op(data: dict[str, Any], op: Op) -> dict[str, Any]:
    if isinstance(op, Increment):
        return apply_increment(data, op)
    merged = merge_patch(data, op.patch)
    assert isinstance(merged, dict)
    return merged


class NothingToFlush(Exception):
    """Every buffered operation of a document was dropped: no new version is written."""


@dataclass(eq=False, slots=True)
class Buffered:
    """One document's buffer. ``view`` is ``base`` + ``flushing`` + ``ops`` (what this
    process answers with); ``ops`` entries are ``(operation, acknowledged writes)``."""

    spec: CollectionSpec
    id: str
    base: Document
    base_at: float  # when base was known current (start of the read or flush that gave it)
    view: dict[str, Any]
    ops: list[tuple[Op, int]] = field(default_factory=list)
    flushing: list[tuple[Op, int]] = field(default_factory=list)
    due: float = math.inf  # when the oldest buffered write's flush must start
    floor: int = 0  # the version this process's last flush committed
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def pending(self) -> int:
        return sum(n for _, n in self.ops) + sum(n for _, n in self.flushing)

    def rebuild(self) -> None:
        view = _decode(self.base.data)
        for op, _ in (*self.flushing, *self.ops):
            with contextlib.suppress(ValidationFailed):  # dropped at the flush as well
                view = apply_op(view, op)
        self.view = view


@dataclass(slots=True)
class WriteBackStats:
    acknowledged: dict[str, int] = field(default_factory=dict)  # per collection
    flushed: dict[str, int] = field(default_factory=dict)  # writes committed by flushes
    flushes: dict[str, int] = field(default_factory=dict)  # flush transactions
    failures: dict[str, int] = field(default_factory=dict)  # flushes the primary refused
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (collection, reason)
    flush_seconds: float = 0.0


def _bump(d: dict[Any, int], k: Any, n: int = 1) -> None:
    d[k] = d.get(k, 0) + n


class WriteBack:
    """This process's write-back buffers and their flusher (one per service)."""

    def __init__(
        self,
        store: Store,
        reads: Reads,
        writes: Writes,
        clock: Clock,
        collections: Mapping[str, CollectionSpec],
    ) -> None:
        self.store = store
        self.reads = reads
        self.writes = writes
        self.clock = clock
        self.specs = [c for c in collections.values() if c.write_policy is WritePolicy.WRITE_BACK]
        self.entries: dict[str, Buffered] = {}
        self.stats = WriteBackStats()
        self.accepting = True
        self._wake = asyncio.Event()
        self._task: asyncio.Future[None] | None = None
        self._slots = asyncio.Semaphore(FLUSH_CONCURRENCY)

    @property
    def enabled(self) -> bool:
        return bool(self.specs)

    def pending(self, collection: str) -> int:
        """Acknowledged writes of ``collection`` not yet committed by a flush."""
        return sum(e.pending for e in self.entries.values() if e.spec.name == collection)

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.enabled:
            self._task = asyncio.ensure_future(self._run())

    def kill(self) -> None:
        """What a crash does to it: its flusher cancelled, the buffered writes lost (a
        crash loses them; :meth:`stop` flushes them)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Flush everything buffered (SIGTERM: nothing acknowledged is lost), retrying what
        the primary refuses for up to ``STOP_RETRY_SECONDS``; whatever is still unflushed
        then is logged as lost."""
        self.accepting = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        deadline = asyncio.get_running_loop().time() + STOP_RETRY_SECONDS
        while True:
            # Also the buffers a flush is still running for (their lock is held): wait for it.
            waiting = [e for e in self.entries.values() if e.ops or e.flushing or e.lock.locked()]
            if not waiting:
                return
            await self._flush_due(waiting)
            if not any(e.ops for e in self.entries.values()):
                return
            if asyncio.get_running_loop().time() >= deadline:
                lost = sum(e.pending for e in self.entries.values())
                log.error("write-back: %d acknowledged write(s) could not be flushed: lost", lost)
                return
            await asyncio.sleep(RETRY_AFTER)

    async def _run(self) -> None:
        while True:
            now = self.clock.now()
            due = [e for e in self.entries.values() if e.due <= now]
            if due:
                # Early is allowed ("at most" flush_interval): the documents that fall due
                # within half a window more join this flush's transaction.
                soon = [e for e in self.entries.values()
                        if now < e.due <= now + e.spec.flush_interval / 2]  # fmt: skip
                due += soon
            if due:
                # Shielded: stop() cancels this loop, never a flush half-way.
                await asyncio.shield(self._flush_due(due))
            self._sweep(self.clock.now())
            self._wake.clear()  # before computing the next deadline: no wake-up is missed
            next_due = min((e.due for e in self.entries.values()), default=math.inf)
            timeout = None if next_due == math.inf else max(0.0, next_due - self.clock.now())
            await wait_woken(self._wake, timeout)

    def _sweep(self, now: float) -> None:
        """Forget idle buffers whose base is too old to be used again anyway."""
        for key in [
            k
            for k, e in self.entries.items()
            if not e.ops and not e.flushing and now - e.base_at > e.spec.max_staleness
        ]:
            entry = self.entries[key]
            if not entry.lock.locked():
                del self.entries[key]

    # -- writes --------------------------------------------------------------------------

    def refuse_preconditions(
        self, spec: CollectionSpec, precondition: bool, idempotency_key: bool
    ) -> None:
        """If-Match / If-None-Match and Idempotency-Key need the primary's answer."""
        if precondition:
            raise WriteBackRefused(
                f"collection {spec.name!r} is write-back: writes are acknowledged before "
                "the primary commits them, so a precondition (If-Match, If-None-Match) cannot "
                "be checked; send the write without it"
            )
        if idempotency_key:
            raise WriteBackRefused(
                f"collection {spec.name!r} is write-back: an Idempotency-Key needs the "
                "primary's commit; send the write without it (increments and merge patches "
                "are acknowledged from the buffer, at most once per request)"
            )

    async def write(self, spec: CollectionSpec, id: str, op: Op) -> StoredResponse:
        """Acknowledge ``op`` from the buffer (see the module docstring)."""
        entry = await self._entry(spec, id)
        new = apply_op(entry.view, op)  # ValidationFailed: nothing buffered
        errors = spec.validate(new)
        if errors:
            raise ValidationFailed("the document after the write does not match the schema", errors)
        entry.view = new
        last = entry.ops[-1] if entry.ops else None
        if (
            last is not None
            and isinstance(op, Increment)
            and isinstance(last[0], Increment)
            and last[0].path == op.path
        ):
            # Coalesced: two increments of one field are one increment of their sum.
            entry.ops[-1] = (Increment(op.field, op.path, last[0].by + op.by), last[1] + 1)
        else:
            entry.ops.append((op, 1))
        _bump(self.stats.acknowledged, spec.name)
        now = self.clock.now()
        if entry.due == math.inf:
            entry.due = now + spec.flush_interval
            self._wake.set()
        if not self.accepting:  # stopping: nobody flushes later, so flush now
            await self._flush(entry)
        return self._response(entry, now)

    async def commit_direct(self, prepared: PreparedWrite) -> WriteResult:
        """A PUT, POST or DELETE on a write-back collection: after this document's buffer
        is flushed, one ordinary primary write."""
        key = doc_key(prepared.spec.name, prepared.id)
        entry = self.entries.get(key)
        if entry is None:
            return await self.writes.commit(prepared)
        # Shielded: a client that goes away does not cut a flush short.
        return await asyncio.shield(self._commit_after_flush(key, entry, prepared))

    async def _commit_after_flush(
        self, key: str, entry: Buffered, prepared: PreparedWrite
    ) -> WriteResult:
        async with entry.lock:
            await self._flush_locked(entry)
            result = await self.writes.commit(prepared)
            if result.document.deleted:
                self.entries.pop(key, None)
            else:
                entry.base, entry.base_at = result.document, self.clock.now()
                entry.floor = result.document.version
                entry.rebuild()
            return result

    def _response(self, entry: Buffered, now: float) -> StoredResponse:
        body = representation.buffered(
            entry.base, _encode(entry.view), entry.pending, entry.base_at, entry.due
        )
        return StoredResponse(
            200, (("content-type", "application/json"), ("cache-control", "no-store")), body
        )

    async def _entry(self, spec: CollectionSpec, id: str) -> Buffered:
        """The document's buffer, its base no older than the collection's bound."""
        key = doc_key(spec.name, id)
        entry = self.entries.get(key)
        if entry is not None and self.clock.now() - entry.base_at <= spec.max_staleness:
            return entry
        if entry is None:
            started = self.clock.now()
            doc = await self.store.get(spec.name, id)
            if doc is None:
                raise DocumentNotFound(f"{spec.name}/{id} does not exist")
            entry = self.entries.get(key)  # another request may have made it meanwhile
            if entry is None:
                entry = Buffered(spec, id, doc, started, _decode(doc.data))
                self.entries[key] = entry
                return entry
        await self._refresh(entry)
        return entry

    async def _refresh(self, entry: Buffered) -> None:
        async with entry.lock:  # not during a flush: base + flushing would count twice
            if self.clock.now() - entry.base_at <= entry.spec.max_staleness:
                return  # a flush just gave it a fresh base
            started = self.clock.now()
            doc = await self.store.get(entry.spec.name, entry.id)
            if doc is None:
                if not entry.ops:
                    self.entries.pop(doc_key(entry.spec.name, entry.id), None)
                raise DocumentNotFound(f"{entry.spec.name}/{entry.id} does not exist")
            entry.base, entry.base_at = doc, started
            entry.rebuild()

    # -- flushes -------------------------------------------------------------------------

    async def flush_document(self, spec: CollectionSpec, id: str) -> None:
        """Flush one document's buffer now (before a strong read)."""
        entry = self.entries.get(doc_key(spec.name, id))
        if entry is not None and entry.ops:
            await asyncio.shield(self._flush(entry))

    async def _flush_due(self, due: list[Buffered]) -> None:
        """Flush ``due``: per collection, one transaction for up to MAX_BATCH_OPERATIONS
        documents (``Store.write_batch``)."""
        by_collection: dict[str, list[Buffered]] = {}
        for entry in due:
            by_collection.setdefault(entry.spec.name, []).append(entry)
        chunks = [
            entries[i : i + MAX_BATCH_OPERATIONS]
            for entries in by_collection.values()
            for i in range(0, len(entries), MAX_BATCH_OPERATIONS)
        ]
        await asyncio.gather(*(self._flush_batch(chunk) for chunk in chunks))

    async def _flush_batch(self, entries: list[Buffered]) -> None:
        """One transaction applying every buffered write of ``entries`` (one collection).
        When one of them no longer applies (its document is gone, or every write of it was
        dropped) the batch aborts as a whole, and each document is flushed on its own."""
        async with self._slots, contextlib.AsyncExitStack() as held:
            for entry in sorted(entries, key=lambda e: e.id):  # one lock order: no deadlock
                await held.enter_async_context(entry.lock)
            entries = [e for e in entries if e.ops]
            if len(entries) == 1:
                await self._flush_locked(entries[0])
                return
            if not entries:
                return
            spec = entries[0].spec
            taken = [self._take(e) for e in entries]
            dropped: list[list[tuple[str, int]]] = [[] for _ in entries]
            started = self.clock.now()
            prepared = [
                PreparedWrite(spec, WriteKind.PATCH, e.id, self._mutator(e, ops, d))
                for e, ops, d in zip(entries, taken, dropped, strict=True)
            ]
            try:
                batch = await self.writes.commit_batch(spec, prepared)
            except (NothingToFlush, DocumentNotFound):
                for entry, ops in zip(entries, taken, strict=True):
                    self._restore(entry, ops, retry_now=True)
                for entry in entries:
                    await self._flush_locked(entry)
                return
            except BaseException as exc:
                for entry, ops in zip(entries, taken, strict=True):
                    self._restore(entry, ops)
                _bump(self.stats.failures, spec.name)
                if not isinstance(exc, Exception):
                    raise
                log.warning("write-back flush of %d %s documents failed (kept): %s",
                            len(entries), spec.name, exc)  # fmt: skip
                return
            finally:
                self.stats.flush_seconds += self.clock.now() - started
            _bump(self.stats.flushes, spec.name)
            for entry, ops, d, result in zip(entries, taken, dropped, batch.results, strict=True):
                self._settle(entry, ops, d, result.document, started)

    def _take(self, entry: Buffered) -> list[tuple[Op, int]]:
        """Move the entry's buffered writes to ``flushing`` (still shown by its reads)."""
        ops = entry.ops
        entry.flushing, entry.ops, entry.due = ops, [], math.inf
        return ops

    def _restore(self, entry: Buffered, ops: list[tuple[Op, int]], retry_now: bool = False) -> None:
        """A flush that did not commit: its writes go back, in order, ahead of newer ones."""
        entry.ops = ops + entry.ops
        entry.flushing = []
        entry.due = (
            self.clock.now() if retry_now else min(entry.due, self.clock.now() + RETRY_AFTER)
        )

    def _mutator(
        self, entry: Buffered, ops: list[tuple[Op, int]], dropped: list[tuple[str, int]]
    ) -> Mutator:
        spec, id = entry.spec, entry.id

        def mutate(current: Document | None) -> bytes | None:
            return self._apply(spec, id, current, ops, dropped)

        return mutate

    def _settle(
        self,
        entry: Buffered,
        ops: list[tuple[Op, int]],
        dropped: list[tuple[str, int]],
        doc: Document,
        started: float,
    ) -> None:
        """After a committed flush: the document as committed is the new base."""
        spec = entry.spec
        entry.flushing = []
        entry.base, entry.base_at = doc, started
        entry.floor = doc.version
        entry.rebuild()
        _bump(self.stats.flushed, spec.name, sum(n for _, n in ops) - sum(n for _, n in dropped))
        if dropped:
            self._dropped(spec, entry.id, dropped)

    async def _flush(self, entry: Buffered) -> None:
        async with self._slots, entry.lock:
            await self._flush_locked(entry)

    async def _flush_locked(self, entry: Buffered) -> None:
        if not entry.ops:
            return
        spec = entry.spec
        ops = self._take(entry)
        dropped: list[tuple[str, int]] = []
        started = self.clock.now()
        mutate = self._mutator(entry, ops, dropped)
        try:
            result = await self.writes.commit(
                PreparedWrite(spec, WriteKind.PATCH, entry.id, mutate)
            )
        except (NothingToFlush, DocumentNotFound):
            if not dropped:  # the document is gone: every write is dropped
                dropped = [("not_found", sum(n for _, n in ops))]
            self._dropped(spec, entry.id, dropped)
            entry.flushing = []
            if entry.ops:
                entry.rebuild()
            else:
                self.entries.pop(doc_key(spec.name, entry.id), None)
            return
        except BaseException as exc:  # StoreError, mostly
            # Kept, in order, ahead of what arrived meanwhile; retried shortly.
            self._restore(entry, ops)
            _bump(self.stats.failures, spec.name)
            if not isinstance(exc, Exception):
                raise
            log.warning("write-back flush of %s/%s failed (kept): %s", spec.name, entry.id, exc)
            return
        finally:
            self.stats.flush_seconds += self.clock.now() - started
        _bump(self.stats.flushes, spec.name)
        self._settle(entry, ops, dropped, result.document, started)

    @staticmethod
    def _apply(
        spec: CollectionSpec,
        id: str,
        current: Document | None,
        ops: list[tuple[Op, int]],
        dropped: list[tuple[str, int]],
    ) -> bytes:
        """The flush's mutator: ``ops`` applied in order to the row the transaction read.
        Runs in the store's transaction (a worker thread on SQLite): touches only its
        arguments."""
        if current is None:
            raise DocumentNotFound(f"{spec.name}/{id} does not exist")
        data = _decode(current.data)
        out = data
        try:
            for op, _ in ops:
                out = apply_op(out, op)
            if not spec.validate(out):
                return _encode(out)
        except ValidationFailed:
            pass
        # Some write no longer applies: apply one at a time and drop the ones that fail.
        out = data
        for op, n in ops:
            try:
                candidate = apply_op(out, op)
            except ValidationFailed:
                dropped.append(("not_applicable", n))
                continue
            if spec.validate(candidate):
                dropped.append(("invalid", n))
                continue
            out = candidate
        if len(dropped) == len(ops):
            raise NothingToFlush
        return _encode(out)

    def _dropped(self, spec: CollectionSpec, id: str, dropped: list[tuple[str, int]]) -> None:
        for reason, n in dropped:
            _bump(self.stats.dropped, (spec.name, reason), n)
            log.warning(
                "write-back: %d acknowledged write(s) to %s/%s dropped at the flush: %s",
                n,
                spec.name,
                id,
                reason.replace("_", " "),
            )

    # -- reads ---------------------------------------------------------------------------

    async def read(
        self, spec: CollectionSpec, id: str, mode: ReadMode, min_version: int
    ) -> ReadResult | bytes:
        """A read of a write-back collection: the buffered view when this process has
        writes of the document in its buffer (bytes), else the ordinary read held at or
        above this process's last flush of it."""
        key = doc_key(spec.name, id)
        entry = self.entries.get(key)
        if mode is ReadMode.STRONG:
            await self.flush_document(spec, id)
            return await self.reads.read(spec, id, mode, min_version)
        if entry is not None and (entry.ops or entry.flushing):
            if self.clock.now() - entry.base_at > spec.max_staleness:
                await self._refresh(entry)
            return representation.buffered(
                entry.base, _encode(entry.view), entry.pending, entry.base_at, entry.due
            )
        floor = entry.floor if entry is not None else 0
        return await self.reads.read(spec, id, mode, max(min_version, floor))
