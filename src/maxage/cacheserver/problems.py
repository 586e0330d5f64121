"""Problem details (RFC 9457) for the cache server: the stable error catalog.

Every error the server sends is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``, ``instance`` and a stable snake_case ``code``.
The catalog below is the single source of truth; ``docs/cache-server.md`` lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import msgspec

TYPE_PREFIX: Final = "urn:maxage:problem:"


@dataclass(frozen=True, slots=True)
class ProblemKind:
    code: str
    status: int
    title: str
    retry: bool  # whether retrying the same request later may succeed


_KINDS: Final[tuple[ProblemKind, ...]] = (
    ProblemKind("malformed_request", 400, "Malformed HTTP request", False),
    ProblemKind("invalid_key", 400, "Invalid key", False),
    ProblemKind("key_too_long", 400, "Key too long", False),
    ProblemKind("invalid_parameter", 400, "Invalid query parameter", False),
    ProblemKind("malformed_json", 400, "Malformed JSON body", False),
    ProblemKind("invalid_body", 422, "Invalid request body", False),
    ProblemKind("unauthorized", 401, "Missing or wrong bearer token", False),
    ProblemKind("key_not_found", 404, "Key not found", False),
    ProblemKind("route_not_found", 404, "No such route", False),
    ProblemKind("method_not_allowed", 405, "Method not allowed", False),
    ProblemKind("request_timeout", 408, "Request not received in time", True),
    ProblemKind("version_conflict", 409, "Older version refused", False),
    ProblemKind("tombstoned", 409, "Version refused by a tombstone", False),
    ProblemKind("value_too_large", 413, "Value too large", False),
    ProblemKind("body_too_large", 413, "Request body too large", False),
    ProblemKind("too_many_tags", 413, "Too many tags", False),
    ProblemKind("url_too_long", 414, "URL too long", False),
    ProblemKind("unsupported_media_type", 415, "Unsupported media type", False),
    ProblemKind("headers_too_large", 431, "Request headers too large", False),
    ProblemKind("internal_error", 500, "Internal server error", True),
    ProblemKind("upstream_error", 502, "Upstream failed", True),
    ProblemKind("not_ready", 503, "Server is shutting down", True),
    ProblemKind("upstream_timeout", 504, "Upstream did not answer in time", True),
    ProblemKind("deadline_exceeded", 504, "Request deadline exceeded", True),
)

KINDS: Final[dict[str, ProblemKind]] = {k.code: k for k in _KINDS}

_HEAD: Final = b"content-type: application/problem+json\r\ncache-control: no-store\r\n"

_encoder = msgspec.json.Encoder()


def problem(
    code: str,
    detail: str,
    instance: str = "",
    *,
    extra_headers: bytes = b"",
    **extra: object,
) -> tuple[int, bytes, bytes]:
    """Build ``(status, header_lines, body)`` for the catalogued ``code``."""
    kind = KINDS[code]
    doc: dict[str, object] = {
        "type": TYPE_PREFIX + code,
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "instance": instance,
        "code": code,
    }
    if extra:
        doc.update(extra)
    return kind.status, _HEAD + extra_headers, _encoder.encode(doc)
