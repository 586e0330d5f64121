"""Writes: preconditions, validation (once), the primary transaction, and what the
caches learn after the commit.

Invariant (P5): every precondition is checked inside the store's write
transaction, against the row the transaction read, by :func:`mutator`; a
precondition that fails aborts the transaction and nothing is written. A
document is validated exactly once before it is stored: a POST or PUT body
before the transaction (so a 422 costs no primary round trip), a PATCH's merged
result inside it (the patch itself is checked up front so a patch that is wrong
whatever the document is a 422 before any precondition).

After the commit, write-through (and write-back flushes) ``set_if_newer`` the new body into
the holders and write-around ones invalidate; either way the tailer is woken
and applies the change log too (the direct update is an optimisation: the
change log is the truth, so the fault hooks may drop, delay or repeat it).
"""

from __future__ import annotations

import enum
import logging
import os
import re
import time
import uuid
from collections.abc import Sequence
from functools import partial

import msgspec

from maxage.contracts import CollectionSpec, WritePolicy
from maxage.hooks import Hooks
from maxage.invalidation.tailer import Tailer, doc_key
from maxage.service import representation
from maxage.service.errors import (
    DocumentExists,
    DocumentNotFound,
    InvalidParameter,
    PreconditionFailed,
    PreconditionRequired,
    ValidationFailed,
)
from maxage.service.reads import Reads
from maxage.store.base import (
    BatchItem,
    BatchResult,
    BatchWriteRequest,
    Document,
    IdempotencyCompletion,
    Mutator,
    Store,
    StoredResponse,
    WriteRequest,
    WriteResult,
)

log = logging.getLogger("maxage.service")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# As documented in the OpenAPI document: ids are safe in a URL path segment as they are.
DOC_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")


class WriteKind(enum.Enum):
    CREATE = "POST"  # a new document under a server-chosen id
    REPLACE = "PUT"
    PATCH = "PATCH"  # RFC 7396 merge patch
    DELETE = "DELETE"


_STATUS = {
    WriteKind.CREATE: 201,
    WriteKind.REPLACE: 200,
    WriteKind.PATCH: 200,
    WriteKind.DELETE: 204,
}


# Frozen msgspec Structs, not frozen dataclasses: made for every write, and a frozen
# dataclass sets each field through object.__setattr__ (store/base.py says how much).


class WriteIntent(msgspec.Struct, frozen=True):
    """What a client asked for, parsed but not yet judged."""

    kind: WriteKind
    id: str | None  # None for CREATE
    data: object = None  # the document (CREATE, REPLACE) or the merge patch (PATCH)
    if_match: int | None = None  # ANY_VERSION for If-Match: * (the document must exist)
    create_only: bool = False  # If-None-Match: * (REPLACE only)


class PreparedWrite(msgspec.Struct, frozen=True):
    """A validated intent: what runs inside the transaction, and how to answer."""

    spec: CollectionSpec
    kind: WriteKind
    id: str
    mutate: Mutator
    fresh: bool = False  # ``id`` was generated here (uuid7): no row is expected

    def status(self, result: WriteResult) -> int:
        if self.kind is WriteKind.REPLACE and result.created:
            return 201
        return _STATUS[self.kind]

    def response(self, result: WriteResult) -> StoredResponse:
        return representation.write_response(self.spec, result, self.status(result))


def merge_patch(target: object, patch: object) -> object:
    """RFC 7396 JSON Merge Patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def _valid_document(spec: CollectionSpec, data: object, what: str) -> bytes:
    errors = spec.validate(data)
    if errors:
        raise ValidationFailed(f"the {what} does not match the collection's schema", errors)
    return _encode(data)


# If-Match: * (RFC 9110 13.1.1): any current version, as long as the document exists.
ANY_VERSION = -1


def check_if_match(current: Document | None, if_match: int | None) -> None:
    if if_match is None:
        return
    if current is None:
        raise PreconditionFailed("If-Match given but the document does not exist", None)
    if if_match != ANY_VERSION and current.version != if_match:
        raise PreconditionFailed(
            f"If-Match {if_match} does not match the current version {current.version}",
            current.version,
        )


def check_id(doc_id: str) -> None:
    """Raise InvalidParameter unless ``doc_id`` is a valid document id."""
    if not DOC_ID.fullmatch(doc_id) or doc_id in (".", ".."):
        raise InvalidParameter(
            "document ids are 1-200 of A-Z a-z 0-9 . _ ~ -, other than '.' and '..'"
        )


def prepare(spec: CollectionSpec, intent: WriteIntent) -> PreparedWrite:
    """Judge everything that does not need the current row; return the transaction's mutator.

    Raises :class:`InvalidParameter` or :class:`ValidationFailed` (nothing is written)."""
    kind = intent.kind
    if intent.id is not None:
        check_id(intent.id)
    if (
        spec.require_if_match
        and kind in (WriteKind.PATCH, WriteKind.DELETE)
        and intent.if_match is None
    ):
        raise PreconditionRequired(
            f"collection {spec.name!r} requires If-Match on PATCH and DELETE "
            "(read the document and send its ETag)"
        )
    if kind is WriteKind.CREATE and intent.if_match is not None:
        raise InvalidParameter("POST creates a new document: If-Match does not apply")
    if intent.create_only and kind is not WriteKind.REPLACE:
        raise InvalidParameter(
            "If-None-Match on writes is only supported as 'If-None-Match: *' on PUT"
        )
    doc_id = intent.id if intent.id is not None else uuid7_str()
    if_match = intent.if_match

    if kind is WriteKind.CREATE:
        encoded = _valid_document(spec, intent.data, "document")

        chosen = intent.id is not None

        def create(current: Document | None) -> bytes | None:
            if current is not None:
                if chosen:
                    raise DocumentExists(f"{spec.name}/{doc_id} already exists")
                raise PreconditionFailed("an id collision occurred; retry", current.version)
            return encoded

        return PreparedWrite(spec, kind, doc_id, create, fresh=not chosen)

    if kind is WriteKind.REPLACE:
        encoded = _valid_document(spec, intent.data, "document")
        create_only = intent.create_only

        def replace(current: Document | None) -> bytes | None:
            if create_only and current is not None:
                raise PreconditionFailed(
                    "If-None-Match: * but the document exists", current.version
                )
            check_if_match(current, if_match)
            return encoded

        return PreparedWrite(spec, kind, doc_id, replace)

    if kind is WriteKind.PATCH:
        patch = intent.data
        if not isinstance(patch, dict):
            raise ValidationFailed(
                "a merge patch for a document must be a JSON object", [("", "must be an object")]
            )
        errors = spec.validate_patch(patch)
        if errors:  # wrong whatever the document: 422 before any precondition
            raise ValidationFailed("the merge patch does not match the collection's schema", errors)

        def patch_current(current: Document | None) -> bytes | None:
            check_if_match(current, if_match)
            if current is None:
                raise DocumentNotFound(f"{spec.name}/{doc_id} does not exist")
            return _valid_document(spec, merge_patch(_decode(current.data), patch), "document")

        return PreparedWrite(spec, kind, doc_id, patch_current)

    def delete(current: Document | None) -> bytes | None:
        check_if_match(current, if_match)
        if current is None:
            raise DocumentNotFound(f"{spec.name}/{doc_id} does not exist")
        return None

    return PreparedWrite(spec, kind, doc_id, delete)


class Writes:
    def __init__(self, store: Store, reads: Reads, tailer: Tailer, hooks: Hooks | None) -> None:
        self.store = store
        self.reads = reads
        self.tailer = tailer
        self.hooks = hooks
        # Notifications are coalesced: one in flight at a time, and one more after it when
        # a commit ended meanwhile (see _notify_soon).
        self._notifying = False
        self._notify_again = False

    async def commit(
        self,
        prepared: PreparedWrite,
        idempotency: IdempotencyCompletion[WriteResult] | None = None,
    ) -> WriteResult:
        """One primary transaction; then the caches learn of it (see the module docstring)."""
        spec = prepared.spec
        now = self.reads.clock.now()
        result = await self.store.write(
            WriteRequest(spec.name, prepared.id, prepared.mutate, now, idempotency, prepared.fresh)
        )
        if self.hooks is None:
            self._after_commit(spec, result, now)
        else:
            key = doc_key(spec.name, result.document.id)
            self.hooks.deliver_after_commit(key, lambda: self._after_commit(spec, result, now))
        self.tailer.wake()
        self._notify_soon()
        return result

    async def commit_batch(
        self,
        spec: CollectionSpec,
        writes: Sequence[PreparedWrite],
        idempotency: IdempotencyCompletion[BatchResult] | None = None,
    ) -> BatchResult:
        """One primary transaction for every write, in order (all or none); then the caches
        learn of each, exactly as after :meth:`commit`."""
        now = self.reads.clock.now()
        items = [BatchItem(w.id, w.mutate) for w in writes]
        batch = await self.store.write_batch(BatchWriteRequest(spec.name, items, now, idempotency))
        for result in batch.results:
            if self.hooks is None:
                self._after_commit(spec, result, now)
            else:
                key = doc_key(spec.name, result.document.id)
                self.hooks.deliver_after_commit(key, partial(self._after_commit, spec, result, now))
        self.tailer.wake()
        self._notify_soon()
        return batch

    def _after_commit(self, spec: CollectionSpec, result: WriteResult, started: float) -> None:
        doc = result.document
        key = doc_key(spec.name, doc.id)
        # write-back fills too: its flushes are the hottest writes, read right after.
        if not doc.deleted and spec.write_policy is not WritePolicy.WRITE_AROUND:
            self.reads.fill(
                spec, key, doc.version, representation.read_prefix(doc, started), started
            )
        else:
            self.reads.invalidate(key, doc.version)

    def _notify_soon(self) -> None:
        """Wake the other processes' tailers after a commit (an optimisation: they poll).

        Invariant: a notification starts after every commit that called this. One in
        flight at a time: a commit that ends while one is in flight (it may have started
        before that commit) gets one more after it, shared with every other commit that
        ended meanwhile; so under load a notification costs a round trip per round trip,
        not per write."""
        if self._notifying:
            self._notify_again = True
            return
        self._notifying = True
        self.reads.background(self._notify())

    async def _notify(self) -> None:
        try:
            again = True
            while again:
                self._notify_again = False
                try:
                    await self.store.notify()
                except Exception as exc:
                    log.debug("change notification failed: %s", exc)
                again = self._notify_again
        finally:
            self._notifying = False


def uuid7() -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562): 48-bit ms timestamp, then random bits."""
    return uuid.UUID(int=_uuid7_int())


def uuid7_str() -> str:
    """``str(uuid7())``, built from bytes: the same bits (48-bit ms timestamp, version 7,
    12 random bits, variant 0b10, 62 random bits) for a third of the instructions of
    ``uuid.UUID``'s checks and ``__str__`` (callgrind)."""
    b = bytearray(os.urandom(16))
    b[0:6] = (time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF).to_bytes(6, "big")
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _uuid7_int() -> int:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return value
