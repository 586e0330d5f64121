"""Atomic increments: ``POST /v1/{collection}/{id}:increment`` with ``{"field", "by"}``.

Invariant: an increment is a delta, never an overwrite. It is applied inside
the write transaction (write-through and write-around collections) or at the
flush (write-back, :mod:`maxage.service.writeback`) to the document as that
transaction read it, so increments from any number of processes sum exactly.
Increments commute with each other, and with merge patches of other fields.

The field is a JSON Pointer (RFC 6901) into the document's data; a missing
field counts from 0, missing parent objects are created, and a field that is
there must be a number. ``by`` is a number (default 1); an integer field stays
an integer when ``by`` is one. The result is validated against the schema like
any other write.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import msgspec

from maxage.contracts import CollectionSpec
from maxage.service.errors import DocumentNotFound, ValidationFailed
from maxage.service.writes import PreparedWrite, WriteKind, check_id, check_if_match
from maxage.store.base import Document

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

# JSON numbers that every client can hold exactly (RFC 8259 section 6, I-JSON).
MAX_SAFE = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Increment:
    field: str  # the JSON Pointer as given
    path: tuple[str, ...]  # its reference tokens, unescaped
    by: int | float


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """RFC 6901 reference tokens of a non-empty pointer; ValueError when malformed."""
    if not pointer.startswith("/"):
        raise ValueError("must be a JSON Pointer starting with '/', like '/views'")
    tokens = pointer[1:].split("/")
    out = []
    for token in tokens:
        if "~" in token.replace("~0", "").replace("~1", ""):
            raise ValueError("'~' must be escaped as '~0' in a JSON Pointer")
        out.append(token.replace("~1", "/").replace("~0", "~"))
    return tuple(out)


def parse_increment(body: object) -> Increment:
    """The increment a request body asks for; ValidationFailed (every error) when wrong."""
    if not isinstance(body, dict):
        raise ValidationFailed("an increment is a JSON object", [("", "must be an object")])
    errors: list[tuple[str, str]] = []
    for name in sorted(set(body) - {"field", "by"}):
        errors.append((f"/{name}", "unknown member; an increment has 'field' and 'by'"))
    field = body.get("field")
    path: tuple[str, ...] = ()
    if not isinstance(field, str):
        errors.append(("/field", "is required: a JSON Pointer to a number, like '/views'"))
    else:
        try:
            path = parse_pointer(field)
        except ValueError as exc:
            errors.append(("/field", str(exc)))
    by = body.get("by", 1)
    if isinstance(by, bool) or not isinstance(by, int | float) or not math.isfinite(by):
        errors.append(("/by", "must be a finite number"))
    elif abs(by) > MAX_SAFE:
        errors.append(("/by", f"must be between -{MAX_SAFE} and {MAX_SAFE}"))
    if errors:
        raise ValidationFailed("the increment is not valid", errors)
    assert isinstance(field, str) and isinstance(by, int | float)
    return Increment(field, path, by)


def apply_increment(data: dict[str, Any], inc: Increment) -> dict[str, Any]:
    """``data`` with ``inc`` applied (a copy along the path); ValidationFailed when the
    path crosses a non-object or the field holds something other than a number."""
    out = dict(data)
    node = out
    for depth, token in enumerate(inc.path[:-1]):
        child = node.get(token)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            where = "/" + "/".join(inc.field[1:].split("/")[: depth + 1])
            raise ValidationFailed(
                "the increment's field is not inside an object",
                [(where, "must be an object to increment a field inside it")],
            )
        else:
            child = dict(child)
        node[token] = child
        node = child
    last = inc.path[-1]
    current = node.get(last, 0)
    if isinstance(current, bool) or not isinstance(current, int | float):
        raise ValidationFailed(
            "only a number can be incremented", [(inc.field, "must be a number to increment")]
        )
    node[last] = current + inc.by
    return out


def prepare_increment(
    spec: CollectionSpec, doc_id: str, inc: Increment, if_match: int | None
) -> PreparedWrite:
    """An increment as a write of its own (write-through and write-around collections):
    applied in the transaction to the row it read, answered like a PATCH."""
    check_id(doc_id)

    def increment(current: Document | None) -> bytes | None:
        check_if_match(current, if_match)
        if current is None:
            raise DocumentNotFound(f"{spec.name}/{doc_id} does not exist")
        data = apply_increment(_decode(current.data), inc)
        errors = spec.validate(data)
        if errors:
            raise ValidationFailed("the incremented document does not match the schema", errors)
        return _encode(data)

    return PreparedWrite(spec, WriteKind.PATCH, doc_id, increment)
