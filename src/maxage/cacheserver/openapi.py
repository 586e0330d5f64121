"""The cache server's OpenAPI 3.1 document, encoded once at import."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .problems import KINDS


def _problem_ref(*codes: str) -> dict[str, Any]:
    return {
        "description": "Problem details; code one of: " + ", ".join(codes),
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _errors(*codes: str) -> dict[str, Any]:
    by_status: dict[int, list[str]] = {}
    for c in (*codes, "unauthorized", "internal_error"):
        by_status.setdefault(KINDS[c].status, []).append(c)
    return {str(s): _problem_ref(*cs) for s, cs in sorted(by_status.items())}


_KEY_PARAM = {
    "name": "key",
    "in": "path",
    "required": True,
    "description": "The key (percent-encoded UTF-8; may contain '/').",
    "schema": {"type": "string", "minLength": 1},
}

_WRITE_RESULT = {
    "type": "object",
    "required": ["key", "version", "outcome"],
    "properties": {
        "key": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "outcome": {"type": "string", "enum": ["stored", "unchanged"]},
    },
}

_VERSION: Final[dict[str, Any]] = {
    "name": "version",
    "in": "query",
    "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
}

DOC: Final[dict[str, Any]] = {
    "openapi": "3.1.0",
    "info": {
        "title": "maxage cache server",
        "version": "1",
        "description": "Versioned, byte-bounded HTTP cache with tags, tombstones and read-through.",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail", "instance", "code"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "instance": {"type": "string"},
                    "code": {"type": "string", "enum": sorted(KINDS)},
                    "current_version": {"type": ["integer", "null"]},
                    "tombstone_version": {"type": ["integer", "null"]},
                },
            },
            "WriteResult": _WRITE_RESULT,
        },
    },
    "security": [{}, {"bearer": []}],
    "paths": {
        "/v1/keys/{key}": {
            "parameters": [_KEY_PARAM],
            "get": {
                "summary": "Read a value (read-through to the upstream on a miss, if configured)",
                "parameters": [
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}}
                ],
                "responses": {
                    "200": {
                        "description": "The stored bytes with the stored content type.",
                        "headers": {
                            "ETag": {"schema": {"type": "string"}, "description": '"<version>"'},
                            "Age": {"schema": {"type": "integer"}},
                            "Cache-Control": {
                                "schema": {"type": "string"},
                                "description": "max-age=<remaining TTL seconds> (absent: no TTL)",
                            },
                            "Cache-Status": {"schema": {"type": "string"}},
                        },
                        "content": {"*/*": {"schema": {}}},
                    },
                    "304": {"description": "Not modified (If-None-Match matched)."},
                    **_errors(
                        "invalid_key",
                        "key_too_long",
                        "key_not_found",
                        "upstream_error",
                        "upstream_timeout",
                        "deadline_exceeded",
                    ),
                },
            },
            "put": {
                "summary": "Store a value (optionally only if its version is newer)",
                "parameters": [
                    {
                        "name": "ttl",
                        "in": "query",
                        "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 31536000},
                    },
                    _VERSION,
                    {
                        "name": "tags",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "comma-separated; at most 64 distinct, 256 characters each",
                    },
                ],
                "requestBody": {"required": False, "content": {"*/*": {"schema": {}}}},
                "responses": {
                    "201": {
                        "description": "Stored.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/WriteResult"}
                            }
                        },
                    },
                    "200": {
                        "description": "Replay of the stored version: nothing changed.",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/WriteResult"}
                            }
                        },
                    },
                    **_errors(
                        "invalid_key",
                        "key_too_long",
                        "invalid_parameter",
                        "version_conflict",
                        "tombstoned",
                        "value_too_large",
                        "too_many_tags",
                    ),
                },
            },
            "delete": {
                "summary": "Delete a value; with ?version=N invalidate versions below N",
                "parameters": [_VERSION],
                "responses": {
                    "200": {"description": "{key, deleted, tombstone}"},
                    **_errors("invalid_key", "key_too_long", "invalid_parameter"),
                },
            },
        },
        "/v1/invalidate": {
            "post": {
                "summary": "Invalidate by tags and/or key prefix",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "tags": {
                                        "type": "array",
                                        "maxItems": 1024,
                                        "items": {
                                            "type": "string",
                                            "minLength": 1,
                                            "maxLength": 256,
                                        },
                                    },
                                    "prefix": {"type": "string", "minLength": 1},
                                },
                                "additionalProperties": False,
                            }
                        }
                    }
                },
                "responses": {
                    "200": {"description": "{invalidated, tags, prefix}"},
                    **_errors(
                        "malformed_json",
                        "invalid_body",
                        "invalid_parameter",
                        "unsupported_media_type",
                        "too_many_tags",
                    ),
                },
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
        "/livez": {
            "get": {"summary": "Liveness (no I/O)", "responses": {"200": {"description": "ok"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness (503 while draining)",
                "responses": {"200": {"description": "ready"}, **_errors("not_ready")},
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": {"description": "JSON"}}}
        },
        "/status": {
            "get": {
                "summary": "The status page (HTML): memory against the bound, entries, hit "
                "ratio, evictions by reason, top tags, traffic over the last minutes",
                "responses": {"200": {"description": "HTML"}},
            }
        },
        "/docs": {
            "get": {
                "summary": "This document in Swagger UI (served by the cache server itself)",
                "responses": {"200": {"description": "HTML"}},
            }
        },
        "/status.json": {
            "get": {
                "summary": "The status page's data (and its rendered main section as html)",
                "responses": {"200": {"description": "JSON"}},
            }
        },
    },
}

OPENAPI_JSON: Final[bytes] = msgspec.json.encode(DOC)
