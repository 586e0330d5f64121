"""``GET /v1/{collection}/changes``: the change feed as NDJSON or server-sent events.

``?after=<cursor>&limit=N[&follow=true]``. Each change is ``{"cursor", "id",
"version", "op", "committedAt"}`` in commit order; resume with ``after=<cursor
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
from typing import TYPE_CHECKING

from maxage.api import guard, responses
from maxage.api.http import parse_cursor, query_items, unknown_parameter
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.service import DomainError

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

MAX_LIMIT = 10000
NDJSON = b"application/x-ndjson"
EVENT_STREAM = b"text/event-stream"


def _parse(req: Request) -> tuple[int, int, bool]:
    after = 0
    if req.last_event_id is not None:
        with contextlib.suppress(HTTPProblem):  # an SSE reconnect resumes after its last event
            after = parse_cursor(req.last_event_id.decode("latin-1"), "Last-Event-ID", "a cursor")
    limit = MAX_LIMIT // 10
    follow = False
    for key, value in query_items(req.query):
        if key == "after":
            after = parse_cursor(value, "after", "a cursor (a non-negative integer)")
        elif key == "limit":
            limit = parse_cursor(value, "limit", f"1..{MAX_LIMIT}")
            if not 1 <= limit <= MAX_LIMIT:
                raise HTTPProblem(
                    "invalid_parameter", f"limit must be 1..{MAX_LIMIT}", parameter="limit"
                )
        elif key == "follow":
            if value not in ("true", "false", "1", "0"):
                raise HTTPProblem(
                    "invalid_parameter", "follow must be true or false", parameter="follow"
                )
            follow = value in ("true", "1")
        else:
            raise unknown_parameter(key)
    return after, limit, follow


async def stream(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    after, limit, follow = _parse(req)
    sse = req.accept is not None and EVENT_STREAM in req.accept
    follow = (follow or sse) and req.method != "HEAD"
    feed = app.service.changes
    # The first read runs under the deadline so its errors can still be a problem response.
    lines, cursor, drained = await app.awaited(req, feed.read(spec, after, limit))
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
    checked_at = time.monotonic()
    try:
        while True:
            if lines:
                chunk = [b"id: %d\ndata: %s\n\n" % (s, x) if sse else x + b"\n" for s, x in lines]
                await send(
                    {"type": "http.response.body", "body": b"".join(chunk), "more_body": True}
                )
                sent += len(lines)
            if sent >= limit or (drained and not follow):
                break
            if drained:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(feed.poll_interval):
                        await disconnected.wait()
                if disconnected.is_set() or app.draining:
                    break
                if access.enabled and time.monotonic() - checked_at >= access.bound:
                    # A long stream re-checks its key every A: a revoke ends it too.
                    checked_at = time.monotonic()
                    try:
                        await guard.authenticate(app.service, req, match)
                    except DomainError:
                        break
            lines, cursor, drained = await feed.read(spec, cursor, limit - sent)
    finally:
        if watcher is not None:
            watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    req.source = "primary"
    return 200
