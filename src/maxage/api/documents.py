"""``/v1/{collection}/{id}`` and ``POST /v1/{collection}``: read and write documents.

HTTP in, HTTP out: the read mode, preconditions, validation and idempotency
decisions are the service's (``maxage.service``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from maxage.api import responses
from maxage.api.http import (
    JSON,
    MERGE_PATCH,
    json_body,
    parse_cursor,
    parse_idempotency_key,
    parse_if_match,
    query_items,
    read_body,
    unknown_parameter,
)
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.contracts import CollectionSpec, ReadMode, WritePolicy
from maxage.service import (
    BatchResult,
    IdempotencyCompletion,
    PreparedWrite,
    StoredResponse,
    WriteIntent,
    WriteKind,
    WriteResult,
    prepare,
    resolve_mode,
)
from maxage.service.idempotency import fingerprint
from maxage.service.increments import parse_increment, prepare_increment
from maxage.service.writeback import Patch
from maxage.service.writes import check_id

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

# What a committed write or batch returns (the store's results).
R = TypeVar("R", WriteResult, BatchResult)
P = TypeVar("P")

# Bodies above this are decoded and validated in a worker thread (measured: docs/benchmarks.md).
OFFLOAD_BYTES = 64 * 1024

# A write-back body is no committed version: never stored by a cache, no ETag.
WRITE_BACK_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"cache-status", b"maxage; hit; detail=write-back"),
]

# ReadMode(value) for a query parameter's text (the enum's call is Python-level).
_MODES = {m.value: m for m in ReadMode}

_KINDS = {
    "POST": WriteKind.CREATE,
    "PUT": WriteKind.REPLACE,
    "PATCH": WriteKind.PATCH,
    "DELETE": WriteKind.DELETE,
}


def read_mode(
    req: Request, spec: CollectionSpec, rest: list[tuple[str, str]] | None = None
) -> tuple[ReadMode, int]:
    """The requested mode and ``min_version`` (``consistency``, ``min_version``,
    ``Cache-Control: no-cache``), resolved against the collection's contract. Other
    query parameters go to ``rest`` when given (a list read's), else are refused."""
    mode: ReadMode | None = None
    min_version = 0
    for key, value in query_items(req.query) if req.query else ():
        if key == "consistency":
            mode = _MODES.get(value)
            if mode is None:
                raise HTTPProblem(
                    "invalid_parameter",
                    f"consistency must be one of {spec.allowed_modes_text()}",
                    parameter="consistency",
                )
        elif key == "min_version":
            min_version = parse_cursor(value, "min_version", "a non-negative integer")
        elif rest is not None:
            rest.append((key, value))
        else:
            raise unknown_parameter(key)
    if req.cache_control is not None and b"no-cache" in req.cache_control.lower():
        if mode is not None and mode is not ReadMode.STRONG:
            raise HTTPProblem(
                "invalid_parameter",
                "Cache-Control: no-cache asks for a strong read; it conflicts "
                f"with consistency={mode.value}",
            )
        mode = ReadMode.STRONG
    return resolve_mode(spec, mode, min_version), min_version


async def get(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec, id = match.spec, match.id
    assert spec is not None
    if req.query or req.cache_control is not None:
        mode, min_version = read_mode(req, spec)
    else:
        mode, min_version = spec.default_mode, 0
    if spec.write_policy is WritePolicy.WRITE_BACK:
        answer = await app.awaited(
            req, app.service.writeback.read(spec, id, mode, min_version), receive
        )
        if isinstance(answer, bytes):  # this process's buffered writes on the primary's document
            req.source = "buffer"
            return await responses.plain(req, send, 200, JSON, answer, WRITE_BACK_HEADERS)
        return await responses.read(req, send, answer)
    result = await app.awaited(
        req,
        app.service.reads.read(spec, id, mode, min_version, l1_checked=req.l1_missed),
        receive,
    )
    return await responses.read(req, send, result)


async def write(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    kind = _KINDS[req.method]
    if req.query:
        raise HTTPProblem("invalid_parameter", "writes take no query parameters")
    if_match = parse_if_match(req.if_match)
    create_only = False
    if req.if_none_match is not None:
        if req.method != "PUT" or req.if_none_match.strip() != b"*":
            raise HTTPProblem(
                "invalid_parameter",
                "If-None-Match on writes is only supported as 'If-None-Match: *' on PUT",
            )
        create_only = True
    body = await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout)
    if kind is WriteKind.DELETE and body:
        raise HTTPProblem("bad_request", "DELETE takes no body")

    write_back = spec.write_policy is WritePolicy.WRITE_BACK
    if write_back:
        app.service.writeback.refuse_preconditions(
            spec, if_match is not None or create_only, req.idempotency_key is not None
        )

    def parse_and_prepare() -> tuple[object, PreparedWrite]:
        data: object = None
        if kind is WriteKind.PATCH:
            data = json_body(req, body, (MERGE_PATCH,))
        elif kind is not WriteKind.DELETE:
            data = json_body(req, body, (JSON,))
        intent = WriteIntent(kind, match.id or None, data, if_match, create_only)
        return data, prepare(spec, intent)

    data, prepared = await judged(body, parse_and_prepare)
    if write_back:
        writeback = app.service.writeback
        if kind is WriteKind.PATCH:
            assert isinstance(data, dict)  # prepare() refused anything else
            ack = await app.awaited(req, writeback.write(spec, prepared.id, Patch(data)), receive)
            req.source = "buffer"
            return await responses.stored(req, send, ack, replayed=False)
        result = await app.awaited(req, writeback.commit_direct(prepared), receive)
        return await responses.stored(req, send, prepared.response(result), replayed=False)
    return await commit(app, req, receive, send, prepared, body)


async def increment(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """``POST /v1/{collection}/{id}:increment``: ``{"field": "/views", "by": 1}``. On a
    write-back collection acknowledged from the buffer; otherwise one primary write."""
    spec = match.spec
    assert spec is not None
    if req.query:
        raise HTTPProblem("invalid_parameter", "writes take no query parameters")
    if_match = parse_if_match(req.if_match)
    if req.if_none_match is not None:
        raise HTTPProblem("invalid_parameter", "an increment takes no If-None-Match")
    body = await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout)
    inc = parse_increment(json_body(req, body, (JSON,)))
    if spec.write_policy is WritePolicy.WRITE_BACK:
        writeback = app.service.writeback
        writeback.refuse_preconditions(spec, if_match is not None, req.idempotency_key is not None)
        check_id(match.id)
        ack = await app.awaited(req, writeback.write(spec, match.id, inc), receive)
        req.source = "buffer"
        return await responses.stored(req, send, ack, replayed=False)
    return await commit(
        app, req, receive, send, prepare_increment(spec, match.id, inc, if_match), body
    )


async def commit(
    app: App, req: Request, receive: Receive, send: Send, prepared: PreparedWrite, body: bytes
) -> int:
    """One primary write, with its Idempotency-Key when the request has one."""
    writes = app.service.writes
    return await committed(
        app,
        req,
        receive,
        send,
        body,
        prepared.response,
        lambda completion: writes.commit(prepared, completion),
    )


async def judged(body: bytes, parse_and_prepare: Callable[[], P]) -> P:
    """``parse_and_prepare()``: decoding and validating a large body takes tens of
    milliseconds (40 ms for 0.9 MB), so above OFFLOAD_BYTES it runs off the event loop and
    other requests keep being served meanwhile."""
    try:
        if len(body) > OFFLOAD_BYTES:
            return await asyncio.to_thread(parse_and_prepare)
        return parse_and_prepare()
    except RecursionError:
        raise HTTPProblem("malformed_json", "the body is nested too deeply") from None


async def committed(
    app: App,
    req: Request,
    receive: Receive,
    send: Send,
    body: bytes,
    render: Callable[[R], StoredResponse],
    commit: Callable[[IdempotencyCompletion[R] | None], Awaitable[R]],
) -> int:
    """Run ``commit`` (under the request's ``Idempotency-Key`` when it has one: the key
    names this method, path, preconditions and body) and send what it rendered."""
    if req.idempotency_key is None:
        result = await app.awaited(req, commit(None), receive)
        return await responses.stored(req, send, render(result), replayed=False)
    key = parse_idempotency_key(req.idempotency_key)
    print_ = fingerprint(
        req.method.encode(), req.path.encode(), req.if_match or b"", req.if_none_match or b"", body
    )
    lease = max(1.0, req.deadline - time.perf_counter())
    outcome = await app.awaited(
        req,
        app.service.idempotency.run(
            # Scoped per API key: one key can never replay (or block) another's request.
            f"{req.principal.key_id or '-'} {req.method} {req.path} {key}",
            print_,
            lease,
            render,
            commit,
        ),
        receive,
    )
    return await responses.stored(req, send, outcome.response, replayed=outcome.replayed)
