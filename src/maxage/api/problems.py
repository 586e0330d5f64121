"""Problem details (RFC 9457): the catalog of stable error codes and their rendering.

Every error the API returns is ``application/problem+json`` with ``type``,
``title``, ``status``, ``detail``, ``instance``, ``request_id`` and ``code``.
``docs/errors.md`` documents each code; ``tests/api`` checks the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class ProblemType:
    code: str
    status: int
    title: str
    retry: str  # whether and how a client may retry (documented in docs/errors.md)


_TYPES = [
    ProblemType("malformed_json", 400, "Malformed JSON", "no: fix the body"),
    ProblemType("invalid_parameter", 400, "Invalid parameter", "no: fix the query or header"),
    ProblemType("read_mode_not_allowed", 400, "Read mode not allowed", "no: use an allowed mode"),
    ProblemType("invalid_page_token", 400, "Invalid page token", "no: restart from the first page"),
    ProblemType("bad_request", 400, "Bad request", "no"),
    ProblemType(
        "write_back_unsupported",
        400,
        "Not supported on a write-back collection",
        "no: send the write without If-Match, If-None-Match or Idempotency-Key",
    ),
    ProblemType(
        "unauthenticated", 401, "Unauthenticated", "no: send Authorization: Bearer <API key>"
    ),
    ProblemType("forbidden", 403, "Forbidden", "no: use a key with the scope named in `scope`"),
    ProblemType("not_found", 404, "Not found", "no"),
    ProblemType("key_not_found", 404, "API key not found", "no"),
    ProblemType("deadletter_not_found", 404, "Dead letter not found", "no"),
    ProblemType("collection_not_found", 404, "Collection not found", "no"),
    ProblemType(
        "consumer_not_found", 404, "Consumer not found", "no: read the feed with consumer=NAME"
    ),
    ProblemType("document_not_found", 404, "Document not found", "no (unless it is being created)"),
    ProblemType("method_not_allowed", 405, "Method not allowed", "no: see the Allow header"),
    ProblemType("not_acceptable", 406, "Not acceptable", "no: accept application/json"),
    ProblemType("request_timeout", 408, "Request timeout", "yes: send the body promptly"),
    ProblemType(
        "min_version_unavailable",
        409,
        "Version not available",
        "yes, after Retry-After: the version is not visible here yet",
    ),
    ProblemType(
        "consumer_busy",
        409,
        "Consumer busy",
        "yes, after Retry-After: another connection reads this consumer name",
    ),
    ProblemType(
        "idempotency_key_in_use",
        409,
        "Idempotency key in use",
        "yes, with the same key, after the first request finishes",
    ),
    ProblemType(
        "document_exists",
        409,
        "Document exists",
        "no: replace it, or create under another id",
    ),
    ProblemType(
        "precondition_failed",
        412,
        "Precondition failed",
        "after re-reading the document and its current ETag",
    ),
    ProblemType("payload_too_large", 413, "Payload too large", "no: send a smaller body"),
    ProblemType(
        "unsupported_media_type",
        415,
        "Unsupported media type",
        "no: use the documented Content-Type",
    ),
    ProblemType("validation_failed", 422, "Validation failed", "no: fix the fields in errors[]"),
    ProblemType(
        "idempotency_key_reused",
        422,
        "Idempotency key reused",
        "no: a key names one request; use a new key for a different payload",
    ),
    ProblemType(
        "precondition_required", 428, "Precondition required", "no: send If-Match with the ETag"
    ),
    ProblemType("rate_limited", 429, "Rate limited", "yes, after Retry-After seconds"),
    ProblemType("internal_error", 500, "Internal error", "yes, with backoff"),
    ProblemType(
        "replay_failed",
        502,
        "Replay failed",
        "yes, once the webhook receiver accepts deliveries (the dead letter is kept)",
    ),
    ProblemType("store_unavailable", 503, "Store unavailable", "yes, with backoff"),
    ProblemType("draining", 503, "Server draining", "yes, on another instance"),
    ProblemType("overloaded", 503, "Overloaded", "yes, after Retry-After seconds, with backoff"),
    ProblemType(
        "deadline_exceeded",
        504,
        "Deadline exceeded",
        "yes; for writes use an Idempotency-Key so the retry is safe",
    ),
    ProblemType("fault_injection_disabled", 404, "Not found", "no"),
]

CATALOG: dict[str, ProblemType] = {t.code: t for t in _TYPES}

PROBLEM_CONTENT_TYPE = b"application/problem+json"


def problem_type_uri(code: str) -> str:
    return f"urn:maxage:problem:{code}"


def render_problem(
    code: str, detail: str, instance: str, request_id: str, **extra: Any
) -> tuple[int, bytes]:
    """Return (status, body) for a catalogued problem code."""
    t = CATALOG[code]
    body: dict[str, Any] = {
        "type": problem_type_uri(code),
        "title": t.title,
        "status": t.status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
        "code": code,
    }
    body.update(extra)
    return t.status, _encode(body)
