"""Sending responses: the headers every response carries, plain bodies, problems,
stored (idempotent) responses and reads."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from maxage.api.http import continue_trace
from maxage.api.problems import PROBLEM_CONTENT_TYPE, render_problem
from maxage.api.types import Headers, Request, Send
from maxage.contracts import ReadMode
from maxage.etags import if_none_match
from maxage.logs import trace_id
from maxage.service import (
    DomainError,
    IdempotencyKeyInUse,
    MinVersionUnavailable,
    PreconditionFailed,
    ReadResult,
    Source,
    StoredResponse,
    Unauthenticated,
)
from maxage.service.consumers import ConsumerBusy

log = logging.getLogger("maxage.api")
# The problem code of the request this task answers, for its access-log line (App._observe
# reads and clears it; a ContextVar because each request runs in its own task).
problem_code: ContextVar[str | None] = ContextVar("maxage_problem_code", default=None)


def log_fields(req: Request, status: int, code: str) -> dict[str, Any]:
    """The ``extra=`` fields of a log line about ``req`` (see :mod:`maxage.logs`)."""
    return {
        "request_id": req.request_id,
        "trace_id": trace_id(req.traceparent),
        "method": req.method,
        "route": req.route,
        "status": status,
        "code": code,
    }


JSON = b"application/json"
CT = b"content-type"
CL = b"content-length"
RID = b"x-request-id"
ETAG = b"etag"
AGE = b"age"
CC = b"cache-control"
CSTATUS = b"cache-status"
HIT_L1 = b"maxage; hit; detail=l1"
_STRONG = b"maxage; fwd=request; detail=strong"
_MISS = b"maxage; fwd=miss; stored"
_HITS = {s: b"maxage; hit; detail=" + str(s.value).encode() for s in Source}


def base_headers(req: Request) -> Headers:
    headers = [(RID, req.request_id.encode())]
    if req.trace_out is not None:
        headers.append((b"traceparent", req.trace_out))
    elif req.traceparent is not None:
        headers.append((b"traceparent", continue_trace(req.traceparent)))
    if req.extra_headers:
        headers.extend(req.extra_headers)
    return headers


async def plain(
    req: Request,
    send: Send,
    status: int,
    ctype: bytes,
    body: bytes,
    extra: Headers | None = None,
) -> int:
    headers = base_headers(req)
    headers.append((CT, ctype))
    headers.append((CL, b"%d" % len(body)))
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})
    return status


async def problem(
    req: Request,
    send: Send,
    code: str,
    detail: str,
    headers: Headers | None = None,
    **extra: Any,
) -> int:
    status, body = render_problem(code, detail, req.path, req.request_id, **extra)
    problem_code.set(code)
    if status >= 500 or code == "deadline_exceeded":
        log.warning(
            "request %s %s failed: %s", req.method, req.route, code,
            extra=log_fields(req, status, code),
        )  # fmt: skip
    return await plain(req, send, status, PROBLEM_CONTENT_TYPE, body, headers)


async def stored(req: Request, send: Send, r: StoredResponse, *, replayed: bool) -> int:
    headers = base_headers(req)
    headers.extend((k.encode(), v.encode()) for k, v in r.headers)
    if replayed:
        headers.append((b"idempotent-replayed", b"true"))
    if r.status != 204:
        headers.append((CL, b"%d" % len(r.body)))
    await send({"type": "http.response.start", "status": r.status, "headers": headers})
    await send({"type": "http.response.body", "body": r.body})
    req.source = "primary"
    return r.status


def cache_status(r: ReadResult) -> bytes:
    """RFC 9211 ``Cache-Status`` of a read."""
    if r.mode is ReadMode.STRONG:
        return _STRONG
    if r.source is Source.PRIMARY:
        return (
            _MISS
            if r.detail == "miss"
            else b"maxage; fwd=bypass; detail=%s; stored" % (r.detail.encode())
        )
    return _HITS[r.source]


async def read(req: Request, send: Send, r: ReadResult, *, etag: bool = True) -> int:
    """A read's response; ``etag`` False for a list page (it has no one version)."""
    req.source = r.source._value_  # .value is a Python-level property
    tag = b'"%d"' % r.version if etag else None
    headers = [
        (RID, req.request_id.encode()),
        (AGE, b"%d" % int(r.age)),
        (CC, b"max-age=%d" % r.budget),
        (CSTATUS, cache_status(r)),
    ]
    if tag is not None:
        headers.insert(1, (ETAG, tag))
    if req.trace_out is not None:
        headers.append((b"traceparent", req.trace_out))
    elif req.traceparent is not None:
        headers.append((b"traceparent", continue_trace(req.traceparent)))
    if req.extra_headers:
        headers.extend(req.extra_headers)
    if tag is not None and req.if_none_match is not None and if_none_match(req.if_none_match, tag):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 304
    body = r.body
    headers.append((CT, JSON))
    headers.append((CL, b"%d" % len(body)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})
    return 200


def refusal_headers(e: DomainError) -> list[tuple[bytes, bytes]]:
    """The HTTP headers a refusal implies."""
    if isinstance(e, PreconditionFailed) and e.current_version is not None:
        return [(ETAG, b'"%d"' % e.current_version)]
    if isinstance(e, IdempotencyKeyInUse | MinVersionUnavailable):
        return [(b"retry-after", b"1")]
    if isinstance(e, ConsumerBusy):
        return [(b"retry-after", b"5")]
    if isinstance(e, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="maxage"')]
    return []
