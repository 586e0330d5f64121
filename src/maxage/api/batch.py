"""``POST /v1/{collection}:batch``: many writes of one collection, all or nothing.

HTTP in, HTTP out: the body's operations are judged, and committed in one
primary transaction, by the service (``maxage.service.batch``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxage.api.documents import committed, judged
from maxage.api.http import JSON, json_body, read_body
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.service import PreparedBatch, prepare_batch

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match


async def write(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    if req.query:
        raise HTTPProblem("invalid_parameter", "a batch takes no query parameters")
    if req.if_match is not None or req.if_none_match is not None:
        raise HTTPProblem(
            "invalid_parameter",
            "a batch takes its preconditions per operation (if_match), not as headers",
        )
    body = await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout)
    service = app.service

    def parse_and_prepare() -> PreparedBatch:
        return prepare_batch(spec, json_body(req, body, (JSON,)), service.max_batch_operations)

    prepared = await judged(body, parse_and_prepare)
    writes = service.writes
    return await committed(
        app,
        req,
        receive,
        send,
        body,
        prepared.response,
        lambda completion: writes.commit_batch(spec, prepared.writes, completion),
    )
