"""The change feed: committed changes of one collection, in commit order, resumable.

``GET /v1/{collection}/changes?after=<cursor>&limit=N[&follow=true]``

* Order: commit order (the change log's ``seq``; on PostgreSQL only rows proven
  complete are returned, so a later poll never reveals an older ``seq``).
* Each change is ``{"cursor", "id", "version", "op", "committedAt"}``; resume with
  ``after=<cursor of the last change you processed>``. Delivery is at-least-once
  across reconnects (re-reading from a cursor replays what follows it); use
  ``(id, version)`` to make processing idempotent.
* Without ``follow`` the response ends when the log is drained (or ``limit`` is
  reached). With ``follow=true`` (or ``Accept: text/event-stream``) it stays open and
  streams new changes until the client goes away; SSE events carry ``id: <cursor>``
  so ``Last-Event-ID`` resumes too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import msgspec

from maxage.contracts import CollectionSpec
from maxage.service import iso
from maxage.store.base import Change

if TYPE_CHECKING:
    from maxage.api.app import App, Receive, Request, Send

_encode = msgspec.json.Encoder().encode


def _line(c: Change) -> bytes:
    return _encode(
        {
            "cursor": str(c.seq),
            "id": c.id,
            "version": c.version,
            "op": c.op.value,
            "committedAt": iso(c.committed_at),
        }
    )


async def stream_changes(
    app: App, req: Request, spec: CollectionSpec, receive: Receive, send: Send
) -> int:
    from maxage.api.app import HTTPProblem, _query_items

    after = 0
    if (
        req.last_event_id is not None
        and req.last_event_id.isdigit()
        and len(req.last_event_id) <= 18
    ):
        after = int(req.last_event_id)  # an SSE reconnect resumes after the last event it saw
    limit = 1000
    follow = False
    sse = False
    for key, value in _query_items(req.query):
        if key == "after":
            if not value.isdigit() or len(value) > 18:
                raise HTTPProblem(
                    "invalid_parameter",
                    "after must be a cursor (a non-negative integer)",
                    parameter="after",
                )
            after = int(value)
        elif key == "limit":
            if not value.isdigit() or not 1 <= int(value) <= 10000:
                raise HTTPProblem("invalid_parameter", "limit must be 1..10000", parameter="limit")
            limit = int(value)
        elif key == "follow":
            if value not in ("true", "false", "1", "0"):
                raise HTTPProblem(
                    "invalid_parameter", "follow must be true or false", parameter="follow"
                )
            follow = value in ("true", "1")
        else:
            raise HTTPProblem(
                "invalid_parameter", f"unknown query parameter {key!r}", parameter=key
            )
    if req.accept is not None and b"text/event-stream" in req.accept:
        sse = follow = True
    store = app.service.store
    # Validate the first read under the deadline so errors can still be a problem response.
    batch = await app._slow_value(req, store.changes_after(after, 1000))
    headers = app._base_headers(req)
    headers.append((b"content-type", b"text/event-stream" if sse else b"application/x-ndjson"))
    headers.append((b"cache-control", b"no-cache"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    sent = 0
    disconnected = asyncio.Event()

    async def watch() -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                disconnected.set()
                return

    watcher = asyncio.ensure_future(watch()) if follow else None
    try:
        while True:
            chunk: list[bytes] = []
            for c in batch.changes:
                if c.collection != spec.name:
                    continue
                if sent >= limit:
                    break
                line = _line(c)
                chunk.append(b"id: %d\ndata: %s\n\n" % (c.seq, line) if sse else line + b"\n")
                sent += 1
            cursor = batch.cursor
            if chunk:
                await send(
                    {"type": "http.response.body", "body": b"".join(chunk), "more_body": True}
                )
            if sent >= limit:
                break
            if batch.complete and not follow:
                break
            if batch.complete:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(app.service.tailer.poll_interval):
                        await disconnected.wait()
                if disconnected.is_set() or app.draining:
                    break
            batch = await store.changes_after(cursor, 1000)
    finally:
        if watcher is not None:
            watcher.cancel()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
    req.source = "primary"
    return 200
