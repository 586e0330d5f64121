"""OpenAPI 3.1 document generated from the collections' real schemas, and the offline /docs page."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from maxage.api.problems import CATALOG, problem_type_uri
from maxage.contracts import CollectionSpec, ReadMode, patch_schema

if TYPE_CHECKING:
    from maxage.api.routes import Route
    from maxage.api.types import Settings

_JSON = "application/json"
_PROBLEM = "application/problem+json"


def _problem_response(description: str, codes: list[str]) -> dict[str, Any]:
    return {
        "description": description + " Codes: " + ", ".join(f"`{c}`" for c in codes) + ".",
        "headers": {"X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"}},
        "content": {_PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _errors(*statuses: int) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for t in CATALOG.values():
        by_status.setdefault(t.status, []).append(t.code)
    out: dict[str, Any] = {}
    for status in statuses:
        codes = by_status.get(status, [])
        title = next((CATALOG[c].title for c in codes), "Error")
        out[str(status)] = _problem_response(title + ".", codes)
    return out


def _doc_schema(spec: CollectionSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["id", "version", "createdAt", "updatedAt", "data", "meta"],
        "properties": {
            "id": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "createdAt": {"type": "string", "format": "date-time"},
            "updatedAt": {"type": "string", "format": "date-time"},
            "data": {"$ref": f"#/components/schemas/{_cap(spec.name)}Data"},
            "meta": {"$ref": "#/components/schemas/ReadMeta"},
        },
    }


def _cap(name: str) -> str:
    return "".join(p.capitalize() for p in name.replace("-", "_").split("_"))


def _read_headers() -> dict[str, Any]:
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


_COMMON = [
    {"$ref": "#/components/parameters/RequestID"},
    {"$ref": "#/components/parameters/RequestTimeout"},
]
_WRITE_PARAMS = [*_COMMON, {"$ref": "#/components/parameters/IdempotencyKey"}]


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
                "consistency": {"type": "string", "enum": ["bounded", "session", "strong"]},
                "source": {"type": "string", "enum": ["l1", "l2", "primary"]},
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


def _collection_context(
    spec: CollectionSpec, settings: Settings, schemas: dict[str, Any]
) -> Context:
    """Add the collection's schemas; return the context its operations are built from."""
    name = spec.name
    cap = _cap(name)
    data_schema = copy.deepcopy(dict(spec.schema))
    data_schema.pop("$schema", None)
    schemas[f"{cap}Data"] = data_schema
    schemas[cap] = _doc_schema(spec)
    schemas[f"{cap}Page"] = {
        "type": "object",
        "required": ["data", "next_page_token"],
        "properties": {
            "data": {"type": "array", "items": {"type": "object"}},
            "next_page_token": {"type": "string"},
            "meta": {"type": "object"},
        },
    }
    modes = sorted(m.value for m in spec.read_modes)
    doc_ok = {
        "description": "The document.",
        "headers": _read_headers(),
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{cap}"}}},
    }
    write_ok = {
        "description": "The document after the write.",
        "headers": {
            "ETag": {"$ref": "#/components/headers/ETag"},
            "X-Request-ID": {"$ref": "#/components/headers/X-Request-ID"},
        },
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{cap}"}}},
    }
    created: dict[str, Any] = copy.deepcopy(write_ok)
    created["description"] = "Created."
    created["headers"]["Location"] = {"schema": {"type": "string"}}
    body = {
        "required": True,
        "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{cap}Data"}}},
    }
    patch_body = {
        "required": True,
        "content": {"application/merge-patch+json": {"schema": patch_schema(spec.schema)}},
    }
    return Context(spec, settings, cap, doc_ok, write_ok, created, body, patch_body, modes)


def collection_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}``: list and create."""
    name, cap = c.spec.name, c.cap
    common, write_params = _COMMON, _WRITE_PARAMS
    settings, body, created = c.settings, c.body, c.created
    return {
        "get": {
            "operationId": f"list_{name}",
            "summary": f"List {name} (keyset pagination, read from the primary).",
            "parameters": [
                *common,
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
                    "content": {_JSON: {"schema": {"$ref": f"#/components/schemas/{cap}Page"}}},
                },
                **_errors(400, 404, 503, 504),
            },
        },
        "post": {
            "operationId": f"create_{name}",
            "summary": f"Create a document in {name} (server-assigned, time-ordered id).",
            "parameters": write_params,
            "requestBody": body,
            "responses": {"201": created, **_errors(400, 409, 413, 415, 422, 503, 504)},
        },
    }


def document_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/{id}``: read, replace, patch, delete."""
    name = c.spec.name
    common, write_params = _COMMON, _WRITE_PARAMS
    spec, modes, doc_ok, write_ok = c.spec, c.modes, c.doc_ok, c.write_ok
    body, patch_body, created = c.body, c.patch_body, c.created
    return {
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
                    "headers": _read_headers(),
                },
                **_errors(400, 404, 503, 504),
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
                **_errors(400, 409, 412, 413, 415, 422, 503, 504),
            },
        },
        "patch": {
            "operationId": f"patch_{name}",
            "summary": "JSON Merge Patch (RFC 7396), re-validated against the schema.",
            "parameters": [*write_params, {"$ref": "#/components/parameters/IfMatch"}],
            "requestBody": patch_body,
            "responses": {
                "200": write_ok,
                **_errors(400, 404, 409, 412, 413, 415, 422, 503, 504),
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
                **_errors(400, 404, 409, 412, 503, 504),
            },
        },
    }


def changes_item(c: Context) -> dict[str, Any]:
    """``/v1/{collection}/changes``: the change feed."""
    name, common = c.spec.name, _COMMON
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
                    "name": "follow",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean"},
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
                **_errors(400, 503, 504),
            },
        }
    }


_OPS = {
    "livez": "Liveness (no I/O).",
    "readyz": "Readiness: 503 when the store is unreachable or the server drains.",
    "metrics": "Prometheus metrics.",
    "openapi": "This document.",
}


def ops_item(path: str, op_id: str) -> dict[str, Any]:
    """An operational route (``/livez``, ``/readyz``, ``/metrics``, ``/openapi.json``)."""
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": {"text/plain" if path == "/metrics" else _JSON: {"schema": {}}},
        }
    }
    if path == "/readyz":
        responses.update(_errors(503))
    return {
        "get": {
            "operationId": op_id,
            "summary": _OPS[op_id],
            "parameters": _COMMON,
            "responses": responses,
        }
    }


_COLLECTION_ITEMS = {
    "collection": collection_item,
    "document": document_item,
    "changes": changes_item,
}


_KEY_SCHEMA = {
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
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def keys_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_keys``: list and create API keys (``admin``)."""
    key = {"$ref": "#/components/schemas/ApiKey"}
    listed = {"type": "object", "properties": {"data": {"type": "array", "items": key}}}
    return {
        "get": {
            "operationId": "list_keys",
            "summary": "List API keys (never their secrets).",
            "parameters": _COMMON,
            "responses": {"200": _json_response("The keys.", listed), **_errors(503, 504)},
        },
        "post": {
            "operationId": "create_key",
            "summary": "Create an API key; its secret is in this response only.",
            "parameters": _COMMON,
            "requestBody": _key_body(collections, named=True),
            "responses": {"201": _json_response("Created.", key), **_errors(400, 415, 422, 503)},
        },
    }


def key_item(collections: Mapping[str, CollectionSpec]) -> dict[str, Any]:
    """``/v1/_keys/{id}``: re-scope or revoke (answered once no process accepts the old key)."""
    return {
        "parameters": [{"$ref": "#/components/parameters/Id"}],
        "patch": {
            "operationId": "rescope_key",
            "summary": "Replace a key's scopes; answered once no server accepts the old ones.",
            "parameters": _COMMON,
            "requestBody": _key_body(collections, named=False),
            "responses": {
                "200": _json_response("The key.", {"$ref": "#/components/schemas/ApiKey"}),
                **_errors(400, 404, 415, 422, 503),
            },
        },
        "delete": {
            "operationId": "revoke_key",
            "summary": "Revoke a key; answered once no server accepts it any more.",
            "parameters": _COMMON,
            "responses": {"204": {"description": "Revoked."}, **_errors(404, 503)},
        },
    }


_READS = ("get", "head")


def _secure(item: dict[str, Any], route: Route, spec: CollectionSpec | None, auth: bool) -> None:
    """Declare who may call each operation, and the refusals access and limits add."""
    for method, op in item.items():
        if method == "parameters":
            continue
        op["responses"].update(_errors(429, 503))
        if not auth:
            continue
        if route.access == "admin":
            scope = "admin"
        else:
            assert spec is not None
            scope = f"{'read' if method in _READS else 'write'}:{spec.name}"
        op["security"] = [{"apiKey": [scope]}]
        op["responses"].update(_errors(401, 403))


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
    schemas["ApiKey"] = _KEY_SCHEMA
    paths: dict[str, Any] = {}
    for spec in collections.values():
        context = _collection_context(spec, settings, schemas)
        for route in routes:
            item = _COLLECTION_ITEMS.get(route.operation)
            if item is not None:
                built = paths[route.label(spec)] = item(context)
                _secure(built, route, spec, auth)
    for route in routes:
        if route.operation in ("keys", "key"):
            make = keys_item if route.operation == "keys" else key_item
            built = paths[route.template] = make(collections)
            _secure(built, route, None, auth)
        elif route.operation in _OPS:
            paths[route.template] = ops_item(route.template, route.operation)
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


DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>maxage API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.op{margin:.6rem 0;padding:.5rem .8rem;border:1px solid #e3e3e3;border-radius:6px}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:monospace}
.get{color:#0a7}.post{color:#07c}.put{color:#a60}.patch{color:#a0a}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f6f6;padding:.6rem;overflow:auto}
details summary{cursor:pointer}
</style></head><body><h1>maxage API</h1><p id="desc">Loading /openapi.json\xe2\x80\xa6</p>
<div id="ops"></div><script src="/docs/app.js"></script></body></html>
"""

DOCS_JS = b"""(async function(){
const spec = await (await fetch('/openapi.json')).json();
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
document.getElementById('desc').textContent = spec.info.description || '';
const out = [];
for (const [path, item] of Object.entries(spec.paths)) {
  out.push('<h2><code>' + esc(path) + '</code></h2>');
  for (const [method, op] of Object.entries(item)) {
    if (method === 'parameters') continue;
    const params = [...(item.parameters||[]), ...(op.parameters||[])].map(p => p.$ref ? p.$ref.split('/').pop() : p.name + ' (' + p.in + ')');
    const responses = Object.entries(op.responses||{}).map(([s, r]) => '<li><b>' + esc(s) + '</b> ' + esc(r.description||'') + '</li>').join('');
    let body = '';
    if (op.requestBody) { body = '<details><summary>request body</summary><pre>' + esc(JSON.stringify(op.requestBody.content, null, 2)) + '</pre></details>'; }
    out.push('<div class="op"><span class="m ' + method + '">' + method.toUpperCase() + '</span> ' + esc(op.summary||'') +
      '<div>parameters: ' + esc(params.join(', ') || 'none') + '</div>' + body + '<ul>' + responses + '</ul></div>');
  }
}
out.push('<h2>Schemas</h2><pre>' + esc(JSON.stringify(spec.components.schemas, null, 2)) + '</pre>');
document.getElementById('ops').innerHTML = out.join('');
})();
"""
