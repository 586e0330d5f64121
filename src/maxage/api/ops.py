"""Operational routes: liveness, readiness, metrics, the OpenAPI document, the docs
page, and the test-only fault-control endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from maxage import docs_page, status
from maxage.api import guard, responses
from maxage.api.http import read_body
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.service import DomainError, StoreError

if TYPE_CHECKING:
    from maxage.api.app import App
    from maxage.api.routes import Match

METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")
# Readiness answers within this even when the request's own deadline is longer.
READY_TIMEOUT = 2.0
L2_DEGRADED = b'{"status":"ready","l2":"degraded"}'


async def livez(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    return await responses.plain(req, send, 200, responses.JSON, b'{"status":"ok"}')


async def readyz(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    if app.draining:
        raise HTTPProblem("draining", "the server is shutting down")
    try:
        timeout = min(READY_TIMEOUT, max(0.05, req.deadline - time.perf_counter()))
        async with asyncio.timeout(timeout):
            await app.service.ping()
    except (StoreError, TimeoutError):
        raise HTTPProblem("store_unavailable", "the primary store does not answer") from None
    l2 = app.service.l2
    if l2 is None:
        return await responses.plain(req, send, 200, responses.JSON, b'{"status":"ready"}')
    if not l2.available:  # let a Redis that came back be seen without other traffic
        probe = getattr(l2, "ping", None)
        if probe is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(READY_TIMEOUT):
                    await probe()
    # Ready either way: without the shared tier reads go to the primary and the contract
    # holds; "degraded" tells the operator (and maxage_l2_available is 0).
    body = b'{"status":"ready","l2":"ok"}' if l2.available else L2_DEGRADED
    return await responses.plain(req, send, 200, responses.JSON, body)


async def metrics(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    return await responses.plain(req, send, 200, METRICS_CONTENT_TYPE, app.render_metrics())


async def openapi_json(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    return await responses.plain(req, send, 200, responses.JSON, app.openapi_bytes)


async def docs(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    return await responses.plain(req, send, 200, b"text/html; charset=utf-8", app.docs_bytes)


async def docs_asset(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """The viewer's script and stylesheet (docs_page.ASSETS), from the installed package."""
    name = req.path.rpartition("/")[2]
    body = docs_page.asset(name)
    if body is None:
        raise HTTPProblem("not_found", f"no route for {req.path}")
    cache = [(b"cache-control", b"public, max-age=86400")]
    return await responses.plain(req, send, 200, docs_page.ASSETS[name], body, cache)


HTML = b"text/html; charset=utf-8"
_NO_STORE = [(b"cache-control", b"no-store")]


async def status_page(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """The status page (maxage.status). With ``--auth keys`` it needs an admin key: without
    one the answer is 401 with a page that asks for the key and then fetches status.json."""
    access = app.service.access
    if access.enabled:
        try:
            access.authorize(await access.authenticate(guard.bearer(req.authorization)), "admin")
        except DomainError as refused:
            page = status.render_page(None, locked=f"{refused.detail} (the admin scope).")
            return await responses.plain(req, send, 401, HTML, page, _NO_STORE)
    model = app.status_model()
    return await responses.plain(req, send, 200, HTML, status.render_page(model), _NO_STORE)


async def status_json(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    body = json.dumps(app.status_model(), separators=(",", ":")).encode()
    return await responses.plain(req, send, 200, responses.JSON, body, _NO_STORE)


async def faults(app: App, req: Request, match: Match, receive: Receive, send: Send) -> int:
    """TEST ONLY: read or replace the fault-injection state (loopback clients only)."""
    control = app.faults
    host = str(req.client[0]) if req.client else ""
    if control is None or not (host.startswith(LOOPBACK_PREFIXES) or host == "localhost"):
        raise HTTPProblem(
            "fault_injection_disabled",
            "fault injection is not enabled"
            if control is None
            else "the fault control endpoint only answers loopback clients",
        )
    if req.method in ("PUT", "POST"):
        raw = await read_body(req, receive, app.settings.body_limit, app.settings.body_timeout)
        try:
            control.replace(json.loads(raw or b"{}"))
        except (ValueError, TypeError) as exc:
            raise HTTPProblem("bad_request", f"bad fault request: {exc}") from None
    elif req.method == "DELETE":
        control.heal()
    body = json.dumps(control.describe()).encode()
    return await responses.plain(req, send, 200, responses.JSON, body)
