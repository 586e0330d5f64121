"""``GET /v1/{collection}``: a page of documents (read from the primary)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxage.api import responses
from maxage.api.http import query_items, unknown_parameter
from maxage.api.types import HTTPProblem, Receive, Request, Send

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

_NO_CACHE = [(responses.CC, b"no-cache")]


async def list_page(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    size: int | None = None
    token = ""
    for key, value in query_items(req.query):
        if key == "page_size":
            try:
                if not value.isascii() or len(value) > 18:
                    raise ValueError(value)
                size = int(value)
            except ValueError:
                raise HTTPProblem(
                    "invalid_parameter", "page_size must be an integer", parameter="page_size"
                ) from None
        elif key == "page_token":
            token = value
        elif key == "consistency":
            if value != "strong":
                raise HTTPProblem(
                    "invalid_parameter",
                    "lists are always read from the primary (consistency=strong)",
                    parameter="consistency",
                )
        else:
            raise unknown_parameter(key)
    body = await app.awaited(req, app.service.listing.page(spec, size, token), receive)
    req.source = "primary"
    return await responses.plain(req, send, 200, responses.JSON, body, _NO_CACHE)
