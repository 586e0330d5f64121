"""``GET /v1/{collection}/changes``: the change feed as NDJSON or server-sent events.

``?after=<cursor>&limit=N[&follow=true][&include=doc]``. Each change is
``{"cursor", "id", "version", "op", "committedAt"}`` in commit order (with
``include=doc`` also ``"data"``: the document's body at that version, null for
a delete); resume with ``after=<cursor
of the last change processed>`` (delivery is at-least-once across reconnects).
Without ``follow`` the response ends when the log is drained (or ``limit`` is
reached); with ``follow=true`` (or ``Accept: text/event-stream``) it stays open
until the client goes away; SSE events carry ``id: <cursor>`` so
``Last-Event-ID`` resumes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from maxage.api import guard, responses
from maxage.api.http import (
    JSON,
    json_body,
    parse_cursor,
    parse_limit,
    query_items,
    read_body,
    unknown_parameter,
)
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.service import DomainError
from maxage.service.consumers import LEASE
from maxage.service.representation import iso

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

_encode = msgspec.json.Encoder().encode
MAX_LIMIT = 10000
NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"


@dataclass(slots=True)
class FeedQuery:
    after: int
    limit: int
    follow: bool
    consumer: str | None = None  # a named consumer: the position is the server's
    auto_ack: bool = False
    with_data: bool = False  # include=doc: each change carries the body at its version


def _parse(req: Request) -> FeedQuery:
    after = 0
    if req.last_event_id is not None:
        with contextlib.suppress(HTTPProblem):  # an SSE reconnect resumes after its last event
            after = parse_cursor(req.last_event_id.decode("latin-1"), "Last-Event-ID", "a cursor")
    limit = MAX_LIMIT // 10
    follow = False
    consumer: str | None = None
    auto_ack = False
    given_after = False
    with_data = False
    for key, value in query_items(req.query):
        if key == "consumer":
            consumer = value
        elif key == "ack":
            if value not in ("auto", "manual"):
                raise HTTPProblem(
                    "invalid_parameter", "ack must be auto or manual", parameter="ack"
                )
            auto_ack = value == "auto"
        elif key == "after":
            given_after = True
            after = parse_cursor(value, "after", "a cursor (a non-negative integer)")
        elif key == "limit":
            limit = parse_limit(value, MAX_LIMIT)
        elif key == "follow":
            if value not in ("true", "false", "1", "0"):
                raise HTTPProblem(
                    "invalid_parameter", "follow must be true or false", parameter="follow"
                )
            follow = value in ("true", "1")
        elif key == "include":
            if value != "doc":
                raise HTTPProblem(
                    "invalid_parameter",
                    "include must be doc (each change carries the document's body)",
                    parameter="include",
                )
            with_data = True
        else:
            raise unknown_parameter(key)
    if consumer is None:
        if auto_ack:
            raise HTTPProblem("invalid_parameter", "ack applies to consumer=NAME", parameter="ack")
        return FeedQuery(after, limit, follow, with_data=with_data)
    if given_after:
        raise HTTPProblem(
            "invalid_parameter",
            "a named consumer reads from its acknowledged position: give consumer or after, "
            "not both",
            parameter="after",
        )
    return FeedQuery(0, limit, follow, consumer, auto_ack, with_data)


async def stream(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    query = _parse(req)
    limit = query.limit
    sse = req.accept is not None and EVENT_STREAM in req.accept
    follow = (query.follow or sse) and req.method != "HEAD"
    consumers = app.service.consumers
    name = query.consumer
    owner = ""
    after = query.after
    if name is not None:  # one reader per name: take its lease, read after its position
        owner, after = await app.awaited(req, consumers.open(spec, name, query.auto_ack))
    try:
        where = (after, limit, follow, sse, query.with_data)
        return await _stream(app, req, match, receive, send, where, name, owner)
    finally:
        if name is not None:
            await consumers.close(spec, name, owner)


async def _stream(
    app: App,
    req: Request,
    match: Match,
    receive: Receive,
    send: Send,
    where: tuple[int, int, bool, bool, bool],
    name: str | None,
    owner: str,
) -> int:
    """The stream from ``after`` (``where``: after, limit, follow, sse, with_data); a named consumer's
    reader (``name``, holding the lease as ``owner``) records what it was sent."""
    spec = match.spec
    assert spec is not None
    after, limit, follow, sse, with_data = where
    feed = app.service.changes
    consumers = app.service.consumers
    # The first read runs under the deadline so its errors can still be a problem response.
    lines, cursor, drained = await app.awaited(
        req, feed.read(spec, feed.resume(after), limit, with_data)
    )
    headers = responses.base_headers(req)
    headers.append((responses.CT, EVENT_STREAM if sse else NDJSON))
    headers.append((responses.CC, b"no-cache"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if req.method == "HEAD":
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200
    sent = 0
    disconnected = asyncio.Event()

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        disconnected.set()

    watcher = asyncio.ensure_future(watch()) if follow else None
    access = app.service.access
    checked_at = renewed = time.monotonic()
    try:
        while True:
            if lines:
                chunk = [b"id: %d\ndata: %s\n\n" % (s, x) if sse else x + b"\n" for s, x in lines]
                await send(
                    {"type": "http.response.body", "body": b"".join(chunk), "more_body": True}
                )
                sent += len(lines)
                if name is not None and not await consumers.sent(spec, name, owner, lines[-1][0]):
                    break  # the lease was lost (this reader stalled past it): another reads now
                renewed = time.monotonic()
            if sent >= limit or (drained and not follow):
                break
            if drained:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(feed.poll_interval):
                        await disconnected.wait()
                if disconnected.is_set() or app.draining:
                    break
                if name is not None and time.monotonic() - renewed >= LEASE / 3:
                    renewed = time.monotonic()  # an idle follower keeps its name
                    if not await consumers.sent(spec, name, owner, after):
                        break
                if access.enabled and time.monotonic() - checked_at >= access.bound:
                    # A long stream re-checks its key every A: a revoke ends it too.
                    checked_at = time.monotonic()
                    try:
                        await guard.authenticate(app.service, req, match)
                    except DomainError:
                        break
            lines, cursor, drained = await feed.read(spec, cursor, limit - sent, with_data)
    finally:
        if watcher is not None:
            watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    req.source = "primary"
    return 200


async def ack(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """``POST /v1/{collection}/changes/ack`` ``{"consumer": NAME, "cursor": C}``: everything
    up to ``C`` (a cursor that consumer was sent) is processed; it resumes after it."""
    spec = match.spec
    assert spec is not None
    if req.query:
        raise HTTPProblem("invalid_parameter", "ack takes no query parameters")
    body = await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout)
    data = json_body(req, body, (JSON,))
    if not isinstance(data, dict):
        raise HTTPProblem("validation_failed", "the body must be a JSON object",
                          errors=[{"pointer": "", "detail": "must be an object"}])  # fmt: skip
    errors = [
        {"pointer": f"/{k}", "detail": "unknown member; an ack has 'consumer' and 'cursor'"}
        for k in sorted(set(data) - {"consumer", "cursor"})
    ]
    name, raw = data.get("consumer"), data.get("cursor")
    if not isinstance(name, str):
        errors.append({"pointer": "/consumer", "detail": "is required: the consumer's name"})
    cursor = -1
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        cursor = raw
    elif isinstance(raw, str) and raw.isdigit() and len(raw) <= 19:
        cursor = int(raw)
    else:
        errors.append({"pointer": "/cursor", "detail": "is required: a cursor from the feed"})
    if errors:
        raise HTTPProblem("validation_failed", "the ack is not valid", errors=errors)
    assert isinstance(name, str)
    record = await app.awaited(req, app.service.consumers.ack(spec, name, cursor), receive)
    out = {
        "consumer": record.name,
        "cursor": str(record.position),
        "delivered": str(record.delivered),
        "ackedAt": iso(record.acked_at),
    }
    return await responses.plain(req, send, 200, JSON, _encode(out))
