"""``/v1/_keys``: API key management for an ``admin`` key.

``POST /v1/_keys`` ``{"scopes": [...], "name": "..."}`` → 201 ``{"id", "secret",
"scopes", "name"}`` (the only time the secret is shown); ``GET /v1/_keys`` lists
keys (never secrets); ``PATCH /v1/_keys/{key_id}`` ``{"scopes": [...]}`` re-scopes;
``DELETE /v1/_keys/{key_id}`` revokes (204). A revoke or re-scope is answered only
when no process of the deployment can still accept the old key (the service's
commit-wait; see ``maxage.service.access``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from maxage.api import responses
from maxage.api.http import JSON, json_body, read_body
from maxage.api.types import HTTPProblem, Receive, Request, Send

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

_NO_STORE = [(responses.CC, b"no-store")]


def _object(req: Request, body: bytes, allowed: set[str]) -> dict[str, object]:
    data = json_body(req, body, (JSON,))
    if not isinstance(data, dict):
        raise HTTPProblem("bad_request", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise HTTPProblem("bad_request", f"unknown fields {unknown}; expected {sorted(allowed)}")
    return data


async def create(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    data = _object(
        req,
        await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout),
        {"scopes", "name"},
    )
    info, secret = await app.awaited(
        req, app.service.access.create(data.get("scopes"), data.get("name", ""))
    )
    body = json.dumps({**info.to_json(), "secret": secret}).encode()
    extra = [*_NO_STORE, (b"location", f"/v1/_keys/{info.id}".encode())]
    return await responses.plain(req, send, 201, JSON, body, extra)


async def list_keys(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    keys = await app.awaited(req, app.service.access.list())
    body = json.dumps({"data": [k.to_json() for k in keys]}).encode()
    return await responses.plain(req, send, 200, JSON, body, _NO_STORE)


async def rescope(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    data = _object(
        req,
        await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout),
        {"scopes"},
    )
    info = await app.service.access.set_scopes(match.id, data.get("scopes"))
    return await responses.plain(req, send, 200, JSON, json.dumps(info.to_json()).encode())


async def revoke(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    # Not under the request deadline: a revoke that committed must finish its commit-wait.
    await app.service.access.revoke(match.id)
    headers = responses.base_headers(req)
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
    return 204
