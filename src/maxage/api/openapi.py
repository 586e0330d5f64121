"""OpenAPI 3.1 document generated from the collections' real schemas, and the offline /docs page."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from maxage.api.operations import (
    ADMIN_ITEMS,
    COLLECTION_ITEMS,
    DEADLETTER_SCHEMA,
    KEY_SCHEMA,
    OPS,
    collection_context,
    errors,
    ops_item,
)
from maxage.api.problems import CATALOG, problem_type_uri
from maxage.contracts import CollectionSpec

if TYPE_CHECKING:
    from maxage.api.routes import Route
    from maxage.api.types import Settings

_JSON = "application/json"
_PROBLEM = "application/problem+json"


def _base_schemas() -> dict[str, Any]:
    return {
        "Problem": {
            "type": "object",
            "required": ["type", "title", "status", "detail", "instance", "code", "request_id"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "request_id": {"type": "string"},
                "code": {"type": "string", "enum": sorted(CATALOG)},
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["pointer", "detail"],
                        "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                    },
                },
            },
        },
        "ReadMeta": {
            "type": "object",
            "required": ["version", "cachedAt", "maxAgeSeconds", "consistency", "source"],
            "properties": {
                "version": {"type": "integer", "minimum": 1},
                "cachedAt": {"type": "string", "format": "date-time"},
                "maxAgeSeconds": {"type": "integer", "minimum": 0},
                "consistency": {
                    "type": "string",
                    "enum": ["bounded", "session", "strong", "write-back"],
                    "description": "write-back: the body includes writes this process has "
                    "acknowledged but not yet flushed to the primary (version is the "
                    "primary's; see the collection's loss window).",
                },
                "source": {"type": "string", "enum": ["l1", "l2", "primary", "buffer"]},
                "pendingWrites": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "write-back: acknowledged writes not yet flushed.",
                },
                "flushBy": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "write-back: when their flush starts at the latest.",
                },
            },
        },
    }


def _parameters(settings: Settings) -> dict[str, Any]:
    return {
        "Id": {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": 200,
                "pattern": "^[A-Za-z0-9._~-]+$",
            },
        },
        "IdempotencyKey": {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "Makes a retried write safe: one key, one effect; a replay returns the first response with Idempotent-Replayed: true.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!#-~]+$"},
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "required": False,
            "description": 'Strong ETag ("<version>") the document must currently have.',
            "schema": {"type": "string", "pattern": '^"[0-9]{1,18}"$'},
        },
        "RequestTimeout": {
            "name": "X-Request-Timeout",
            "in": "header",
            "required": False,
            "description": f"Shortens the request deadline: seconds, such as 2.5 (default and "
            f"maximum {settings.deadline}); a value that is not a positive number is ignored.",
            "schema": {"type": "string"},
        },
        "RequestID": {
            "name": "X-Request-ID",
            "in": "header",
            "required": False,
            "description": "Echoed back when it is 1-128 of A-Z a-z 0-9 . _ : / + = @ -; "
            "otherwise replaced by a generated id (never rejected).",
            "schema": {"type": "string"},
        },
        "Traceparent": {
            "name": "traceparent",
            "in": "header",
            "required": False,
            "description": "W3C trace context; continued (a new span id) or replaced when invalid.",
            "schema": {"type": "string"},
        },
    }


_READS = ("get", "head")


def _secure(item: dict[str, Any], route: Route, spec: CollectionSpec | None, auth: bool) -> None:
    """Declare who may call each operation, and the refusals access and limits add."""
    for method, op in item.items():
        if method == "parameters":
            continue
        op["responses"].update(errors(429, 503))
        if not auth:
            continue
        if route.access == "admin":
            scope = "admin"
        elif route.access == "read":
            assert spec is not None
            scope = f"read:{spec.name}"
        else:
            assert spec is not None
            scope = f"{'read' if method in _READS else 'write'}:{spec.name}"
        op["security"] = [{"apiKey": [scope]}]
        op["responses"].update(errors(401, 403))


def build(
    routes: Sequence[Route],
    collections: Mapping[str, CollectionSpec],
    settings: Settings,
    *,
    auth: bool = False,
) -> dict[str, Any]:
    """The document for ``routes`` (the one route table): each collection's routes in
    table order, then key management, then the operational ones. Routes without an
    operation are not listed. ``auth``: the server requires API keys (``--auth keys``)."""
    schemas = _base_schemas()
    schemas["ApiKey"] = KEY_SCHEMA
    schemas["DeadLetter"] = DEADLETTER_SCHEMA
    paths: dict[str, Any] = {}
    for spec in collections.values():
        context = collection_context(spec, settings, schemas)
        for route in routes:
            item = COLLECTION_ITEMS.get(route.operation)
            if item is not None:
                built = paths[route.label(spec)] = item(context)
                _secure(built, route, spec, auth)
    for route in routes:
        make = ADMIN_ITEMS.get(route.operation)
        if make is not None:
            built = paths[route.template] = make(collections)
            _secure(built, route, None, auth)
        elif route.operation in OPS:
            built = paths[route.template] = ops_item(route.template, route.operation)
            if route.access == "admin":
                _secure(built, route, None, auth)
    params = _parameters(settings)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "maxage API",
            "version": "1",
            "description": "Collections of JSON documents with a declared consistency contract. "
            "Errors are application/problem+json (RFC 9457) with a stable `code`; type URIs are "
            + problem_type_uri("<code>")
            + ".",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (`maxage keys create`, or POST /v1/_keys) as "
                    "`Authorization: Bearer <secret>`. Scopes: read:<collection>, "
                    "write:<collection>, read:*, write:*, admin.",
                }
            },
            "schemas": schemas,
            "parameters": params,
            "headers": {
                "ETag": {"description": 'Strong ETag: "<version>".', "schema": {"type": "string"}},
                "X-Request-ID": {
                    "description": "The request id (echoed or generated).",
                    "schema": {"type": "string"},
                },
            },
        },
    }


def render(
    routes: Sequence[Route],
    collections: Mapping[str, CollectionSpec],
    settings: Settings,
    *,
    auth: bool = False,
) -> bytes:
    document = build(routes, collections, settings, auth=auth)
    return msgspec.json.format(msgspec.json.encode(document), indent=2)
