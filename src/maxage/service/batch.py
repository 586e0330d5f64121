"""Batch writes: many operations on one collection, all or nothing.

Invariant: a batch is applied in ONE primary transaction (``Store.write_batch``):
every operation commits, in the order given, or none does. Each operation is
judged exactly as the single write it stands for (:func:`writes.prepare`: the
same validation, ``require_if_match``, ids and preconditions, checked inside
the transaction against the row it read); the first refusal aborts the
transaction and becomes the batch's problem (:class:`OperationRefused`), with
the refusal's own status and ``errors`` pointing into that operation
(``/operations/2/data/price``). Everything that can be judged without the
primary (the shape of the body, every document against the schema) is judged
first, for all operations at once, and reported together.

Rules a client can rely on (docs/architecture.md, "Batch writes"):

* 1 to ``max_operations`` operations; each is an object with ``op`` (``create``,
  ``replace``, ``patch``, ``delete``) and only the members that op takes.
* A document id appears at most once in a batch (a repeat is a 422 pointing at
  it): each operation's ``if_match`` then names a version the client saw, and
  each result is that document's one new version.
* ``create`` without ``id`` picks a new id; with ``id`` it creates only, and an
  existing live document is a 409 ``document_exists``.
* Not on a write-back collection (400 ``write_back_unsupported``): its writes are
  acknowledged before the primary commits them, which a batch cannot be.
"""

from __future__ import annotations

from dataclasses import dataclass

from maxage.contracts import MAX_BATCH_OPERATIONS, CollectionSpec, WritePolicy
from maxage.service import representation
from maxage.service.errors import (
    DocumentExists,
    DocumentNotFound,
    DomainError,
    InvalidParameter,
    OperationRefused,
    PreconditionFailed,
    PreconditionRequired,
    ValidationFailed,
)
from maxage.service.writeback import WriteBackRefused
from maxage.service.writes import (
    ANY_VERSION,
    PreparedWrite,
    WriteIntent,
    WriteKind,
    prepare,
)
from maxage.store.base import BatchResult, Document, Mutator, StoredResponse

OPS = {
    "create": WriteKind.CREATE,
    "replace": WriteKind.REPLACE,
    "patch": WriteKind.PATCH,
    "delete": WriteKind.DELETE,
}
_OP_NAMES = {kind: name for name, kind in OPS.items()}
# The members each op takes (and which of them it requires).
_MEMBERS = {
    WriteKind.CREATE: ({"op", "data", "id"}, ("data",)),
    WriteKind.REPLACE: ({"op", "id", "data", "if_match"}, ("id", "data")),
    WriteKind.PATCH: ({"op", "id", "data", "if_match"}, ("id", "data")),
    WriteKind.DELETE: ({"op", "id", "if_match"}, ("id",)),
}
# Which member of the operation a refusal is about.
_MEMBER_OF: tuple[tuple[type[DomainError], str], ...] = (
    (ValidationFailed, "data"),
    (PreconditionFailed, "if_match"),
    (PreconditionRequired, "if_match"),
    (DocumentNotFound, "id"),
    (DocumentExists, "id"),
    (InvalidParameter, "id"),
)


def _member(error: DomainError) -> str:
    for kind, member in _MEMBER_OF:
        if isinstance(error, kind):
            return member
    return ""


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Validated operations, each with its transaction-time mutator, and how to answer."""

    spec: CollectionSpec
    writes: tuple[PreparedWrite, ...]

    def response(self, batch: BatchResult) -> StoredResponse:
        return representation.batch_response(
            [
                (_OP_NAMES[w.kind], w.status(r), r)
                for w, r in zip(self.writes, batch.results, strict=True)
            ]
        )


def _refused_at(index: int, mutate: Mutator) -> Mutator:
    """``mutate``, with its refusal re-pointed at operation ``index``."""

    def at(current: Document | None) -> bytes | None:
        try:
            return mutate(current)
        except DomainError as e:
            raise OperationRefused(index, _member(e), e) from e

    return at


def _if_match(value: object) -> int:
    if value == "*":
        return ANY_VERSION
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's integer: 3.0 is 3
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    raise ValueError


def _intent(index: int, op: object, errors: list[tuple[str, str]]) -> WriteIntent | None:
    """The intent operation ``index`` stands for, or None after appending its shape errors."""
    at = f"/operations/{index}"
    if not isinstance(op, dict):
        errors.append((at, "must be an object with an op"))
        return None
    name = op.get("op")
    kind = OPS.get(name) if isinstance(name, str) else None
    if kind is None:
        errors.append((at + "/op", f"must be one of {', '.join(OPS)}"))
        return None
    allowed, required = _MEMBERS[kind]
    before = len(errors)
    for member in sorted(set(op) - allowed):
        errors.append((f"{at}/{member}", f"is not a member of a {name} operation"))
    for member in required:
        if member not in op:
            errors.append((f"{at}/{member}", f"is required for {name}"))
    id = op.get("id")
    if "id" in op and not isinstance(id, str):
        errors.append((at + "/id", "must be a string"))
    if_match = None
    if "if_match" in op:
        try:
            if_match = _if_match(op["if_match"])
        except ValueError:
            errors.append((at + "/if_match", 'must be a version (an integer >= 1) or "*"'))
    if len(errors) > before:
        return None
    return WriteIntent(kind, id if isinstance(id, str) else None, op.get("data"), if_match)


def prepare_batch(spec: CollectionSpec, body: object, max_operations: int) -> PreparedBatch:
    """Judge every operation as far as possible without the primary.

    Raises :class:`ValidationFailed` with every shape and schema error of every
    operation, else the first other refusal as :class:`OperationRefused`."""
    if spec.write_policy is WritePolicy.WRITE_BACK:
        raise WriteBackRefused(
            f"collection {spec.name!r} is write-back: its writes are acknowledged before the "
            "primary commits them, so a batch (one primary transaction, all or nothing) "
            "cannot be; send single writes"
        )
    if not isinstance(body, dict):
        raise ValidationFailed("a batch is an object with operations", [("", "must be an object")])
    errors: list[tuple[str, str]] = [
        (f"/{member}", "is not a member of a batch")
        for member in sorted(set(body) - {"operations"})
    ]
    operations = body.get("operations")
    wrong = ""
    if not isinstance(operations, list):
        wrong = f"must be a list of 1 to {max_operations} operations"
    elif not operations:
        wrong = "is empty: send at least one operation"
    elif len(operations) > max_operations:
        wrong = f"has {len(operations)} operations; a batch holds at most {max_operations}"
    if wrong or not isinstance(operations, list):
        errors.append(("/operations", wrong))
        raise ValidationFailed("the batch is not well-formed; nothing was written", errors)
    writes: list[PreparedWrite] = []
    first_other: DomainError | None = None
    seen: dict[str, int] = {}
    for index, op in enumerate(operations):
        intent = _intent(index, op, errors)
        if intent is None:
            continue
        if intent.id is not None:
            if intent.id in seen:
                errors.append(
                    (
                        f"/operations/{index}/id",
                        f"operation {seen[intent.id]} is on the same document; "
                        "a batch names each document once",
                    )
                )
                continue
            seen[intent.id] = index
        try:
            prepared = prepare(spec, intent)
        except (ValidationFailed, InvalidParameter) as e:
            refused = OperationRefused(index, _member(e), e)
            errors.extend((x["pointer"], x["detail"]) for x in refused.extra["errors"])
            continue
        except DomainError as e:
            first_other = first_other or OperationRefused(index, _member(e), e)
            continue
        writes.append(
            PreparedWrite(
                prepared.spec, prepared.kind, prepared.id, _refused_at(index, prepared.mutate)
            )
        )
    if errors:
        raise ValidationFailed("the batch does not validate; nothing was written", errors)
    if first_other is not None:
        raise first_other
    return PreparedBatch(spec, tuple(writes))


def check_max_operations(value: int) -> int:
    """The configured batch size limit, checked against what the stores can hold."""
    if not 1 <= value <= MAX_BATCH_OPERATIONS:
        raise ValueError(f"the batch size limit must be 1..{MAX_BATCH_OPERATIONS}, not {value}")
    return value
