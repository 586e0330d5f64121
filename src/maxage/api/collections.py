"""``GET /v1/{collection}``: a list read (filters, sort, fields, count, keyset pages),
under the collection's contract like any read: the rules are the service's
(``service/listing.py``); here only HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxage.api import responses
from maxage.api.documents import read_mode
from maxage.api.types import Receive, Request, Send

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match


async def list_page(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    spec = match.spec
    assert spec is not None
    rest: list[tuple[str, str]] = []
    mode, min_version = read_mode(req, spec, rest)
    listing = app.service.listing
    request = listing.parse(spec, rest)
    result = await app.awaited(req, listing.read(spec, request, mode, min_version), receive)
    # No ETag: a page depends on the query and the snapshot, not on one version.
    return await responses.read(req, send, result, etag=False)
