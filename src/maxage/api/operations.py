"""The OpenAPI operations of each route family, as data: one function per family
builds the path item for one collection (or for key management). ``openapi.build``
walks the route table and calls them; nothing here knows the table."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maxage.api.problems import CATALOG
from maxage.contracts import CollectionSpec, ReadMode, WritePolicy
from maxage.schema import example, openapi_schema
from maxage.service.increments import MAX_SAFE

if TYPE_CHECKING:
    from maxage.api.types import Settings

JSON = "application/json"
PROBLEM = "application/problem+json"


def problem_response(description: str, codes: list[str]) -> dict[str, Any]:
    return {
        "description": description + " Codes: " + ", ".join(f"`{c}`" for c in codes) + ".",
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def errors(*statuses: int) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for t in CATALOG.values():
        by_status.setdefault(t.status, []).append(t.code)
    out: dict[str, Any] = {}
    for status in statuses:
        codes = by_status.get(status, [])
        title = next((CATALOG[c].title for c in codes), "Error")
        out[str(status)] = problem_response(title + ".", codes)
    return out


def doc_schema(spec: CollectionSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "version", "createdAt", "updatedAt", "data", "meta"],
        "properties": {
            "id": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
            "data": {"$ref": f"#/components/schemas/{capitalized(spec.name)}Data"},
            "meta": {"$ref": "#/components/schemas/ReadMeta"},
        },
    }


EXAMPLE_TIME = "2026-01-31T12:00:00Z"


def data_examples(spec: CollectionSpec) -> tuple[Any, Any]:
    """A document body and a merge patch for the examples, generated from the schema
    (:func:`maxage.schema.example`, which honours a schema's own ``examples``) and kept
    only when the server's own validators accept them (optional properties it could not
    satisfy are left out); ``None`` for one that could not be made valid."""
    ok, data = example(spec.schema)
    if not ok:
        return None, None
    required = set(spec.schema.get("required", ()))
    while errors := spec.validate(data):
        # Leave out the optional properties the generator could not satisfy (a pattern).
        bad = {p.split("/")[1] for p, _ in errors if p.count("/") >= 1} - required
        if not isinstance(data, dict) or not bad & set(data):
            return None, None
        for name in bad:
            data.pop(name, None)
    patch = next(
        ({k: v} for k, v in data.items() if not spec.validate_patch({k: v})),
        None,
    )
    return data, patch


def document_example(spec: CollectionSpec, data: Any) -> dict[str, Any]:
    """What a read of a document holding ``data`` returns (version 1, from the primary)."""
    return {
        "id": "0f3c9a1e2b7d4c58",
        "version": 1,
        "createdAt": EXAMPLE_TIME,
        "updatedAt": EXAMPLE_TIME,
        "data": data,
        "meta": {
            "version": 1,
            "cachedAt": EXAMPLE_TIME,
            "maxAgeSeconds": int(spec.max_staleness),
            "consistency": spec.default_mode.value,
            "source": "primary",
        },
    }


def capitalized(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))


def read_headers() -> dict[str, Any]:
    return {
        "ETag": {"$ref": "#/components/headers/ETag"},
        "Age": {
            "description": "Seconds since the body was known current.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "Cache-Control": {
            "description": "max-age=<remaining staleness budget in seconds>",
            "schema": {"type": "string"},
        },
        "Cache-Status": {
            "description": "RFC 9211 cache status (hit, fwd=miss, fwd=bypass, fwd=request).",
            "schema": {"type": "string"},
        },
        "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
    }


COMMON = [
    {"$ref": "#/components/parameters/RequestID"},
    {"$ref": "#/components/parameters/RequestTimeout"},
]
WRITE_PARAMS = [*COMMON, {"$ref": "#/components/parameters/IdempotencyKey"}]


@dataclass(frozen=True)
class Context:
    """What the operations of one collection refer to (built once per collection)."""

    spec: CollectionSpec
    settings: Settings
    cap: str
    doc_ok: dict[str, Any]
    write_ok: dict[str, Any]
    created: dict[str, Any]
    body: dict[str, Any]
    patch_body: dict[str, Any]
    modes: list[str]


def collection_context(
    spec: CollectionSpec, settings: Settings, schemas: dict[str, Any]
) -> Context:
    """Add the collection's schemas; return the context its operations are built from."""
    name = spec.name
    cap = capitalized(name)
    # Exactly what the server enforces (strict included); only $ref strings are rewritten.
    schemas[f"{cap}Data"] = openapi_schema(spec.schema, f"{cap}Data")
    schemas[cap] = doc_schema(spec)
    schemas[f"{cap}Page"] = {
        "type": "object",
        "required": ["data", "next_page_token", "meta"],
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "next_page_token": {
                "type": "string",
                "description": "Opaque; empty on the last page. Valid only with the same"
                " filters and sort (fields, count and page_size may change).",
            },
            "total": {
                "type": "integer",
                "description": "With count=exact: the documents matching the filters.",
            },
            "meta": {
                "type": "object",
                "properties": {
                    "collectionVersion": {
                        "type": "integer",
                        "description": "The highest change-log position of the collection"
                        " the page reflects (min_version compares with it).",
                    },
                    "cachedAt": {"type": "string", "format": "date-time"},
                    "shortened": {"type": "boolean"},
                    "maxAgeSeconds": {"type": "integer"},
                    "consistency": {"type": "string"},
                    "source": {"type": "string", "enum": ["l1", "primary"]},
                },
            },
        },
    }
    modes = sorted(m.value for m in spec.read_modes)
    doc_ok: dict[str, Any] = {
        "description": "The document.",
        "headers": read_headers(),
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{cap}"}}},
    }
    write_ok: dict[str, Any] = {
        "description": "The document after the write.",
        "headers": {
            "ETag": {"$ref": "#/components/headers/ETag"},
            "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
        },
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{cap}"}}},
    }
    created: dict[str, Any] = copy.deepcopy(write_ok)
    created["description"] = "Created."
    created["headers"]["Location"] = {"schema": {"type": "string"}}
    body: dict[str, Any] = {
        "required": True,
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{cap}Data"}}},
    }
    patch_body: dict[str, Any] = {
        "required": True,
        "content": {
            "application/merge-patch+json": {
                "schema": openapi_schema(spec.patch_schema, f"{cap}Data", drop_defs=True)
            }
        },
    }
    data, patch = data_examples(spec)
    if data is not None:
        body["content"][JSON]["example"] = data
        doc = document_example(spec, data)
        for response in (doc_ok, write_ok, created):
            response["content"][JSON]["example"] = doc
    if patch is not None:
        patch_body["content"]["application/merge-patch+json"]["example"] = patch
    return Context(spec, settings, cap, doc_ok, write_ok, created, body, patch_body, modes)


LIST_GRAMMAR = (
    "Filters: `FIELD=[OP.]VALUE` on a declared index (`indexes` in the config), with OP one"
    ' of `eq` (the default), `ne`, `lt`, `lte`, `gt`, `gte`, `in.(a,b,"c,d")` (at most'
    " 100 values; double quotes hold commas) and `prefix` (string fields); write `eq.` before"
    " a value that itself starts with an operator. Values are parsed by the field's schema type"
    " (numbers compare as numbers, booleans are true/false, integers are 64-bit) and are at"
    " most 500 characters (a document's string longer than that is not indexed). Filters on"
    " the same or several fields are ANDed. A document without a value of the field's type"
    " matches no filter on it (`ne` included) and sorts last ascending, first descending."
    " `sort=[-]FIELD` on an index or `id` (ties by id);"
    " `fields=a,b` keeps those top-level data fields (at most 64); `count=exact` adds `total`."
    " At most 32 query parameters. Errors: 400 `invalid_parameter` naming the parameter"
    " (undeclared field, bad value or operator), 400 `invalid_page_token`, 409"
    " `min_version_unavailable`. Reads are bounded by the collection's max staleness like"
    " document reads; `consistency=strong` or `Cache-Control: no-cache` reads the primary."
)


def list_parameters(c: Context) -> list[dict[str, Any]]:
    """The query parameters of a list read: read mode, sort, fields, count, one per index."""
    spec = c.spec
    sorts = ["id", "-id"] + [f"{p}{i.name}" for i in spec.indexes for p in ("", "-")]
    out: list[dict[str, Any]] = [
        {
            "name": "consistency",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": c.modes},
        },
        {
            "name": "sort",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": sorts},
        },
        {
            "name": "fields",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "pattern": "^[^,]+(,[^,]+)*$"},
        },
        {
            "name": "count",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["exact"]},
        },
    ]
    if ReadMode.SESSION in spec.read_modes:
        out.append(
            {
                "name": "min_version",
                "in": "query",
                "required": False,
                "description": "Session read: never a page of a collection version below this.",
                "schema": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
            }
        )
    for index in spec.indexes:
        out.append(
            {
                "name": index.name,
                "in": "query",
                "required": False,
                "description": f"Filter on the {index.type} field"
                f" /{'/'.join(index.path)}: [OP.]VALUE (see the operation's description).",
                "schema": {"type": "string", "maxLength": 1100},
            }
        )
    return out


def collection_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}``: list and create."""
    name, cap = c.spec.name, c.cap
    common, write_params = COMMON, WRITE_PARAMS
    settings, body, created = c.settings, c.body, c.created
    return {
        "get": {
            "operationId": f"list_{name}",
            "summary": f"List {name}: filter and sort on declared indexes, keyset pages."
            f" Contract: max staleness {c.spec.max_staleness}s, modes {', '.join(c.modes)}.",
            "description": LIST_GRAMMAR,
            "parameters": [
                *common,
                *list_parameters(c),
                {
                    "name": "page_size",
                    "in": "query",
                    "required": False,
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "description": f"Capped at {settings.max_page_size}.",
                    },
                },
                {
                    "name": "page_token",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "A page.",
                    "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{cap}Page"}}},
                },
                **errors(400, 404, 406, 409, 503, 504),
            },
        },
        "post": {
            "operationId": f"create_{name}",
            "summary": f"Create a document in {name} (server-assigned, time-ordered id).",
            "parameters": write_params,
            "requestBody": body,
            "responses": {"201": created, **errors(400, 406, 408, 409, 413, 415, 422, 503, 504)},
        },
    }


def document_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/{id}``: read, replace, patch, delete.

    (Long: one literal, the OpenAPI path item of a document: data, not logic.)
    """
    name = c.spec.name
    common, write_params = COMMON, WRITE_PARAMS
    spec, modes, doc_ok, write_ok = c.spec, c.modes, c.doc_ok, c.write_ok
    body, patch_body, created = c.body, c.patch_body, c.created
    return write_back_notes(spec, {
        "parameters": [{"$ref": "#/components/parameters/Id"}],
        "get": {
            "operationId": f"get_{name}",
            "summary": f"Read a document of {name}. Contract: max staleness {spec.max_staleness}s, modes {', '.join(modes)}.",
            "parameters": [
                *common,
                {
                    "name": "consistency",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": modes},
                },
                *(
                    [
                        {
                            "name": "min_version",
                            "in": "query",
                            "required": False,
                            "description": "Session read: never return a version older than this.",
                            "schema": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 10**18 - 1,
                            },
                        }
                    ]
                    if ReadMode.SESSION in spec.read_modes
                    else []
                ),
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
                {
                    "name": "Cache-Control",
                    "in": "header",
                    "required": False,
                    "description": "no-cache asks for a strong read.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": doc_ok,
                "304": {
                    "description": "Not modified (If-None-Match matched).",
                    "headers": read_headers(),
                },
                **errors(400, 404, 406, 409, 503, 504),
            },
        },
        "put": {
            "operationId": f"put_{name}",
            "summary": "Create or replace. If-None-Match: * creates only.",
            "parameters": [
                *write_params,
                {"$ref": "#/components/parameters/IfMatch"},
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "enum": ["*"]},
                },
            ],
            "requestBody": body,
            "responses": {
                "200": write_ok,
                "201": created,
                **errors(400, 406, 408, 409, 412, 413, 415, 422, 503, 504),
            },
        },
        "patch": {
            "operationId": f"patch_{name}",
            "summary": "JSON Merge Patch (RFC 7396), re-validated against the schema.",
            "parameters": [*write_params, {"$ref": "#/components/parameters/IfMatch"}],
            "requestBody": patch_body,
            "responses": {
                "200": write_ok,
                **errors(400, 404, 406, 408, 409, 412, 413, 415, 422, 428, 503, 504),
            },
        },
        "delete": {
            "operationId": f"delete_{name}",
            "summary": "Delete a document.",
            "parameters": [*write_params, {"$ref": "#/components/parameters/IfMatch"}],
            "responses": {
                "204": {
                    "description": "Deleted.",
                    "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
                },
                **errors(400, 404, 406, 409, 412, 428, 503, 504),
            },
        },
    })  # fmt: skip


def changes_ack_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/changes/ack``: a named consumer acknowledges a cursor."""
    name = c.spec.name
    ack = {
        "type": "object",
        "required": ["consumer", "cursor"],
        "additionalProperties": False,
        "properties": {
            "consumer": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
            "cursor": {
                "type": "string",
                "pattern": "^[0-9]{1,19}$",
                "description": "A cursor this consumer was sent; everything up to it is done.",
            },
        },
    }
    acked = {
        "type": "object",
        "required": ["consumer", "cursor", "delivered", "ackedAt"],
        "properties": {
            "consumer": {"type": "string"},
            "cursor": {"type": "string", "description": "The acknowledged position."},
            "delivered": {"type": "string", "description": "The last cursor it was sent."},
            "ackedAt": {"type": "string", "format": "date-time"},
        },
    }
    return {
        "post": {
            "operationId": f"changes_ack_{name}",
            "summary": "Acknowledge a named consumer's position: a later read with "
            "consumer=NAME resumes after it (positions never move back).",
            "parameters": COMMON,
            "requestBody": {"required": True, "content": {JSON: {"schema": ack}}},
            "responses": {
                "200": {"description": "Acknowledged.", "content": {JSON: {"schema": acked}}},
                **errors(400, 404, 406, 413, 415, 422, 503, 504),
            },
        }
    }


_IF_MATCH_MEMBER = {
    "description": 'The version the document must currently have, or "*": it must exist.',
    "oneOf": [{"type": "integer", "minimum": 1}, {"const": "*"}],
}
_ID_MEMBER = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[A-Za-z0-9._~-]+$"}


def _operation(op: str, members: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["op", *required],
        "properties": {"op": {"const": op}, **members},
        "additionalProperties": False,
    }


def batch_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}:batch``: many writes of one collection in one transaction."""
    name, cap, settings = c.spec.name, c.cap, c.settings
    data = {"$ref": f"#/components/schemas/{cap}Data"}
    patch = c.patch_body["content"]["application/merge-patch+json"]["schema"]
    operation = {
        "oneOf": [
            _operation("create", {"id": _ID_MEMBER, "data": data}, ["data"]),
            _operation(
                "replace",
                {"id": _ID_MEMBER, "if_match": _IF_MATCH_MEMBER, "data": data},
                ["id", "data"],
            ),
            _operation(
                "patch",
                {"id": _ID_MEMBER, "if_match": _IF_MATCH_MEMBER, "data": patch},
                ["id", "data"],
            ),
            _operation("delete", {"id": _ID_MEMBER, "if_match": _IF_MATCH_MEMBER}, ["id"]),
        ]
    }
    request = {
        "type": "object",
        "required": ["operations"],
        "properties": {
            "operations": {
                "type": "array",
                "minItems": 1,
                "maxItems": settings.max_batch_operations,
                "items": operation,
            }
        },
        "additionalProperties": False,
    }
    result = {
        "type": "object",
        "required": ["op", "status", "id", "version"],
        "properties": {
            "op": {"type": "string", "enum": ["create", "replace", "patch", "delete"]},
            "status": {
                "type": "integer",
                "enum": [200, 201, 204],
                "description": "What the operation's single write would have answered.",
            },
            "id": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
            "data": data,
        },
    }
    response = {
        "type": "object",
        "required": ["results"],
        "properties": {"results": {"type": "array", "items": result}},
    }
    doc, patch_example = data_examples(c.spec)
    doc = {} if doc is None else doc  # a schema the example generator cannot satisfy
    example = {
        "operations": [
            {"op": "create", "data": doc},
            {"op": "replace", "id": "a1", "data": doc},
            {"op": "patch", "id": "b2", "if_match": 3, "data": patch_example or {}},
            {"op": "delete", "id": "c3"},
        ]
    }
    at = EXAMPLE_TIME
    answer = {
        "results": [
            {"op": "create", "status": 201, "id": "0190a0b4-8a00-7000-8000-000000000001",
             "version": 1, "createdAt": at, "updatedAt": at, "data": doc},
            {"op": "replace", "status": 200, "id": "a1", "version": 2, "createdAt": at,
             "updatedAt": at, "data": doc},
            {"op": "patch", "status": 200, "id": "b2", "version": 4, "createdAt": at,
             "updatedAt": at, "data": doc},
            {"op": "delete", "status": 204, "id": "c3", "version": 5},
        ]
    }  # fmt: skip
    return {
        "post": {
            "operationId": f"batch_{name}",
            "summary": f"Apply up to {settings.max_batch_operations} writes to {name} in one "
            "transaction: all of them, in order, or none.",
            "description": "Each operation is judged as its single write would be (schema, "
            "require_if_match, if_match). When one is refused nothing is written, and the "
            "problem carries that refusal's status and code, `operation` (its index) and "
            "`errors` pointing into it, such as `/operations/2/data/price`; a 422 lists the "
            "errors of every operation. An id may appear once per batch. `create` with an "
            "`id` creates only (409 `document_exists` if it exists). The Idempotency-Key "
            "covers the whole batch. Not on a write-back collection (400 "
            "`write_back_unsupported`).",
            "parameters": WRITE_PARAMS,
            "requestBody": {
                "required": True,
                "content": {JSON: {"schema": request, "example": example}},
            },
            "responses": {
                "200": {
                    "description": "Every operation committed; one result per operation, in order.",
                    "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
                    "content": {JSON: {"schema": response, "example": answer}},
                },
                **errors(400, 404, 406, 408, 409, 412, 413, 415, 422, 428, 503, 504),
            },
        }
    }


def changes_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/changes``: the change feed."""
    name, common = c.spec.name, COMMON
    return {
        "get": {
            "operationId": f"changes_{name}",
            "summary": "Committed changes in commit order (NDJSON, or SSE with Accept: text/event-stream).",
            "parameters": [
                *common,
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "description": "Resume after this cursor (the seq of the last change seen).",
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 10000},
                },
                {
                    "name": "consumer",
                    "in": "query",
                    "required": False,
                    "description": "A named consumer: read after its acknowledged position "
                    "(kept by the server; not with `after`). One reader per name at a time "
                    "(409 consumer_busy otherwise).",
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
                },
                {
                    "name": "ack",
                    "in": "query",
                    "required": False,
                    "description": "With consumer: `auto` first acknowledges everything the "
                    "previous read under this name was sent; `manual` (default) waits for "
                    "POST .../changes/ack.",
                    "schema": {"type": "string", "enum": ["auto", "manual"]},
                },
                {
                    "name": "follow",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean"},
                },
                {
                    "name": "include",
                    "in": "query",
                    "required": False,
                    "description": "doc: each change also carries `data`, the document's body "
                    "at that version (null for a delete).",
                    "schema": {"type": "string", "enum": ["doc"]},
                },
            ],
            "responses": {
                "200": {
                    "description": "One JSON object per line.",
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **errors(400, 406, 409, 503, 504),
            },
        }
    }


OPS = {
    "livez": "Liveness (no I/O).",
    "readyz": "Readiness: 503 when the store is unreachable or the server drains.",
    "metrics": "Prometheus metrics.",
    "openapi": "This document.",
    "status": "The status page (HTML): each collection's contract and what was kept, hit "
    "ratios, tailer lag, traffic and latency over the last minutes. With --auth keys it needs "
    "an admin key; without one it answers 401 with a page that asks for it.",
    "status_json": "The status page's data (and its rendered main section as `html`).",
}


_OPS_MEDIA = {"/metrics": "text/plain", "/status": "text/html"}


def ops_item(path: str, op_id: str) -> dict[str, Any]:
    """An operational route (``/livez``, ``/readyz``, ``/metrics``, ``/openapi.json``)."""
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {_OPS_MEDIA.get(path, JSON): {"schema": {}}},
        }
    }
    if path == "/readyz":
        responses.update(errors(503))
    return {
        "get": {
            "operationId": op_id,
            "summary": OPS[op_id],
            "parameters": COMMON,
            "responses": responses,
        }
    }


def write_back_contract(spec: CollectionSpec) -> str:
    """The loss window of a write-back collection, as published (docs/consistency.md)."""
    window = f"{spec.flush_interval:g}s"
    return (
        f"Write-back collection (flush_interval {window}): PATCH and :increment are "
        'acknowledged from the serving process\'s buffer (meta.consistency "write-back", '
        f"no ETag) and committed to the primary at most {window} later, coalesced per "
        "document; increments from every process sum exactly. On SIGTERM everything "
        f"buffered is flushed before exit; a crash (kill -9) loses at most {window} of "
        "acknowledged writes per process. Reads on the same process see its buffered "
        f"writes; other processes see them within {window} + max_staleness "
        f"({spec.max_staleness:g}s). If-Match, If-None-Match and Idempotency-Key are refused "
        "(write_back_unsupported); PUT, POST and DELETE go to the primary at once."
    )


def write_back_notes(spec: CollectionSpec, item: dict[str, Any]) -> dict[str, Any]:
    """A write-back collection's operations carry its loss window."""
    if spec.write_policy is WritePolicy.WRITE_BACK:
        note = write_back_contract(spec)
        for op in item.values():
            if isinstance(op, dict) and "responses" in op:
                op["description"] = note
    return item


def increment_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/{id}:increment``: an atomic increment of one numeric field."""
    name, spec = c.spec.name, c.spec
    body = {
        "required": True,
        "content": {
            JSON: {
                "schema": {
                    "type": "object",
                    "required": ["field"],
                    "additionalProperties": False,
                    "properties": {
                        "field": {
                            "type": "string",
                            "pattern": "^/",
                            "description": "JSON Pointer to a number; missing counts as 0.",
                        },
                        "by": {
                            "type": "number",
                            "default": 1,
                            "minimum": -MAX_SAFE,
                            "maximum": MAX_SAFE,
                        },
                    },
                }
            }
        },
    }
    return write_back_notes(spec, {
        "parameters": [{"$ref": "#/components/parameters/Id"}],
        "post": {
            "operationId": f"increment_{name}",
            "summary": "Add `by` to the number at `field`, atomically (a delta, never an "
            "overwrite: increments from every client and process sum exactly).",
            "parameters": [*WRITE_PARAMS, {"$ref": "#/components/parameters/IfMatch"}],
            "requestBody": body,
            "responses": {
                "200": c.write_ok,
                **errors(400, 404, 406, 408, 409, 412, 413, 415, 422, 503, 504),
            },
        },
    })  # fmt: skip


COLLECTION_ITEMS = {
    "collection": collection_item,
    "document": document_item,
    "increment": increment_item,
    "changes_ack": changes_ack_item,
    "changes": changes_item,
    "batch": batch_item,
}


KEY_SCHEMA = {
    "type": "object",
    "required": ["id", "name", "scopes", "revoked", "createdAt"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "revoked": {"type": "boolean"},
        "createdAt": {"type": "string", "format": "date-time"},
        "secret": {"type": "string", "description": "Only in the response to its creation."},
    },
}


def _key_body(collections: Mapping[str, CollectionSpec], *, named: bool) -> dict[str, Any]:
    scopes = ["admin", "read:*", "write:*"]
    for name in collections:
        scopes += [f"read:{name}", f"write:{name}"]
    properties: dict[str, Any] = {
        "scopes": {
            "type": "array",
            "items": {"type": "string", "enum": scopes},
            "minItems": 1,
            "maxItems": 64,
        }
    }
    if named:
        properties["name"] = {"type": "string", "maxLength": 200}
    schema = {
        "type": "object",
        "required": ["scopes"],
        "properties": properties,
        "additionalProperties": False,
    }
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def keys_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_keys``: list and create API keys (``admin``)."""
    key = {"$ref": "#/components/schemas/ApiKey"}
    listed = {"type": "object", "properties": {"data": {"type": "array", "items": key}}}
    return {
        "get": {
            "operationId": "list_keys",
            "summary": "List API keys (never their secrets).",
            "parameters": COMMON,
            "responses": {"200": _json_response("The keys.", listed), **errors(503, 504)},
        },
        "post": {
            "operationId": "create_key",
            "summary": "Create an API key; its secret is in this response only.",
            "parameters": COMMON,
            "requestBody": _key_body(collections, named=True),
            "responses": {
                "201": _json_response("Created.", key),
                **errors(400, 406, 408, 415, 422, 503),
            },
        },
    }


def key_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_keys/{id}``: re-scope or revoke (answered once no process accepts the old key)."""
    return {
        "parameters": [{"$ref": "#/components/parameters/Id"}],
        "patch": {
            "operationId": "rescope_key",
            "summary": "Replace a key's scopes; answered once no server accepts the old ones.",
            "parameters": COMMON,
            "requestBody": _key_body(collections, named=False),
            "responses": {
                "200": _json_response("The key.", {"$ref": "#/components/schemas/ApiKey"}),
                **errors(400, 404, 406, 408, 415, 422, 503),
            },
        },
        "delete": {
            "operationId": "revoke_key",
            "summary": "Revoke a key; answered once no server accepts it any more.",
            "parameters": COMMON,
            "responses": {"204": {"description": "Revoked."}, **errors(404, 406, 503)},
        },
    }


DEADLETTER_SCHEMA = {
    "type": "object",
    "required": ["id", "collection", "subscription", "change", "attempts", "error", "failedAt"],
    "properties": {
        "id": {"type": "string"},
        "collection": {"type": "string"},
        "subscription": {"type": "string", "description": "The webhook's name."},
        "change": {
            "type": "object",
            "required": ["cursor", "id", "version", "op", "committedAt"],
            "properties": {
                "cursor": {"type": "string"},
                "id": {"type": "string"},
                "version": {"type": "integer"},
                "op": {"type": "string", "enum": ["put", "delete"]},
                "committedAt": {"type": "string", "format": "date-time"},
            },
        },
        "attempts": {"type": "integer"},
        "error": {"type": "string", "description": "The last failure (HTTP status or error)."},
        "failedAt": {"type": "string", "format": "date-time"},
    },
}


DEADLETTER_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
}


def deadletters_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_deadletters``: webhook deliveries that exhausted their attempts (``admin``)."""
    letter = {"$ref": "#/components/schemas/DeadLetter"}
    listed = {
        "type": "object",
        "properties": {
            "data": {"type": "array", "items": letter},
            "next_after": {"type": "string", "description": "Pass as after; empty at the end."},
        },
    }
    return {
        "get": {
            "operationId": "list_deadletters",
            "summary": "List dead letters, oldest first.",
            "parameters": [
                *COMMON,
                {
                    "name": "collection",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": sorted(collections)},
                },
                {
                    "name": "after",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
            "responses": {"200": _json_response("Dead letters.", listed), **errors(400, 404, 503)},
        }
    }


def deadletter_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_deadletters/{id}``: inspect or drop one."""
    letter = {"$ref": "#/components/schemas/DeadLetter"}
    return {
        "parameters": [DEADLETTER_ID],
        "get": {
            "operationId": "get_deadletter",
            "summary": "One dead letter.",
            "parameters": COMMON,
            "responses": {
                "200": _json_response("The dead letter.", letter),
                **errors(400, 404, 503),
            },
        },
        "delete": {
            "operationId": "drop_deadletter",
            "summary": "Drop a dead letter without delivering it.",
            "parameters": COMMON,
            "responses": {"204": {"description": "Dropped."}, **errors(400, 404, 503)},
        },
    }


def deadletter_replay_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_deadletters/{id}:replay``: deliver it once more, now."""
    done = {
        "type": "object",
        "required": ["delivered", "deadletter"],
        "properties": {
            "delivered": {"type": "boolean"},
            "deadletter": {"$ref": "#/components/schemas/DeadLetter"},
        },
    }
    return {
        "parameters": [DEADLETTER_ID],
        "post": {
            "operationId": "replay_deadletter",
            "summary": "Deliver a dead letter again (same Webhook-Id); dropped once the "
            "receiver answers 2xx, kept otherwise (502 replay_failed).",
            "parameters": COMMON,
            "responses": {
                "200": _json_response("Delivered.", done),
                **errors(400, 404, 502, 503),
            },
        },
    }


ADMIN_ITEMS = {
    "keys": keys_item,
    "key": key_item,
    "deadletters": deadletters_item,
    "deadletter": deadletter_item,
    "deadletter_replay": deadletter_replay_item,
}
