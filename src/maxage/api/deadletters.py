"""``/v1/_deadletters``: the webhook dead-letter queue (admin): list, inspect, replay, drop.

Decisions (what a replay does, which subscription a letter belongs to) are the
service's (``maxage.service.webhooks``); here only HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from maxage.api import responses
from maxage.api.http import JSON, parse_cursor, parse_limit, query_items, unknown_parameter
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.service import DeadLetter
from maxage.service.representation import iso

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

_encode = msgspec.json.Encoder().encode
MAX_LIMIT = 1000


def letter_json(d: DeadLetter) -> dict[str, Any]:
    c = d.change
    return {
        "id": str(d.id),
        "collection": d.collection,
        "subscription": d.subscription,
        "change": {
            "cursor": str(c.seq),
            "id": c.id,
            "version": c.version,
            "op": c.op.value,
            "committedAt": iso(c.committed_at),
        },
        "attempts": d.attempts,
        "error": d.error,
        "failedAt": iso(d.failed_at),
    }


def _id(match: Match) -> int:
    return parse_cursor(match.id, "id", "a dead letter's id")


async def list_letters(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    collection: str | None = None
    after, limit = 0, 100
    for key, value in query_items(req.query):
        if key == "collection":
            if value not in app.collections:
                raise HTTPProblem("collection_not_found", f"no collection named {value!r}")
            collection = value
        elif key == "after":
            after = parse_cursor(value, "after", "a dead letter's id")
        elif key == "limit":
            limit = parse_limit(value, MAX_LIMIT)
        else:
            raise unknown_parameter(key)
    webhooks = app.service.webhooks
    letters = await app.awaited(req, webhooks.letters(collection, after, limit), receive)
    body = {
        "data": [letter_json(d) for d in letters],
        "next_after": str(letters[-1].id) if len(letters) == limit else "",
    }
    return await responses.plain(req, send, 200, JSON, _encode(body))


async def get_letter(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    letter = await app.awaited(req, app.service.webhooks.letter(_id(match)), receive)
    return await responses.plain(req, send, 200, JSON, _encode(letter_json(letter)))


async def drop_letter(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    await app.awaited(req, app.service.webhooks.drop(_id(match)), receive)
    headers = responses.base_headers(req)
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    return 204


async def replay_letter(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """One delivery attempt now: 200 and the letter is gone, or 502 ``replay_failed``
    with the receiver's answer (the letter stays)."""
    letter, error = await app.awaited(req, app.service.webhooks.replay(_id(match)))
    if error:
        raise HTTPProblem(
            "replay_failed", f"the receiver did not take it: {error}", deadletter=str(letter.id)
        )
    out = {"delivered": True, "deadletter": letter_json(letter)}
    return await responses.plain(req, send, 200, JSON, _encode(out))
