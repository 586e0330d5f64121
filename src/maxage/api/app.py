"""The ASGI application: routing, the contract's headers, problem details, limits.

One class, no middleware stack: ``App.__call__`` scans the request headers once,
routes by splitting the path, and answers the hot path (a bounded ``GET`` of a
cached document) synchronously from the in-process cache with precomputed
header names and a pre-encoded body prefix; only the per-request tail of
``meta`` is formatted. Anything that awaits the primary runs under the
request's deadline and is cancelled when the client disconnects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import os
import random
import re
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from maxage.api import openapi
from maxage.api.metrics import Exposition, Histogram, labels
from maxage.api.problems import CATALOG, PROBLEM_CONTENT_TYPE, render_problem
from maxage.contracts import CollectionSpec, ReadMode
from maxage.core.types import MISSING
from maxage.service import (
    NotFound,
    PreconditionFailed,
    ReadResult,
    Service,
    ValidationFailed,
    decode_data,
    iso,
    merge_patch,
    render_document,
)
from maxage.store.base import (
    ClaimState,
    Document,
    IdempotencyCompletion,
    StoredResponse,
    StoreError,
    WriteResult,
)

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("maxage.access")
_encode = msgspec.json.Encoder().encode
_json_decoder = msgspec.json.Decoder()

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# The rest of an oversized body is never read: the connection cannot be reused.
_CLOSE = [(b"connection", b"close")]
_DOC_ID = re.compile(r"^[A-Za-z0-9._~-]{1,200}$")  # as documented in the OpenAPI spec
_IDEMPOTENCY_KEY = re.compile(r"^[!#-~]{1,255}$")
_ETAG = re.compile(r'^(?:W/)?"(\d{1,18})"$')

JSON = b"application/json"
CT = b"content-type"
CL = b"content-length"
RID = b"x-request-id"
ETAG = b"etag"
AGE = b"age"
CC = b"cache-control"
CSTATUS = b"cache-status"
ACCESS_LOG_MODES = ("all", "sampled", "errors-and-slow", "off")
DEADLINE_HEADER = "x-request-timeout"


@dataclass(frozen=True)
class Settings:
    body_limit: int = 1024 * 1024
    deadline: float = 10.0
    default_page_size: int = 20
    max_page_size: int = 100
    idempotency_keep: float = 24 * 3600.0
    access_log: str = "errors-and-slow"
    access_log_sample: float = 0.01
    slow_request: float = 1.0
    drain_grace: float = 10.0
    fault_injection: bool = False


class Request:
    """What the handlers need of one request; built by one scan of the headers."""

    __slots__ = (
        "accept",
        "cache_control",
        "client",
        "content_length",
        "content_type",
        "deadline",
        "idempotency_key",
        "if_match",
        "if_none_match",
        "l1_missed",
        "last_event_id",
        "method",
        "path",
        "query",
        "request_id",
        "route",
        "source",
        "started",
        "traceparent",
    )

    def __init__(self, method: str, path: str, query: bytes, request_id: str, started: float):
        self.method = method
        self.path = path
        self.query = query
        self.request_id = request_id
        self.started = started
        self.route = "unmatched"
        self.source = "-"
        self.cache_control: bytes | None = None
        self.accept: bytes | None = None
        self.last_event_id: bytes | None = None
        self.l1_missed = False
        self.content_type: bytes | None = None
        self.content_length: int | None = None
        self.if_match: bytes | None = None
        self.if_none_match: bytes | None = None
        self.idempotency_key: str | None = None
        self.traceparent: bytes | None = None
        self.deadline = 0.0
        self.client: tuple[str, int] | None = None  # (host, port) from the ASGI scope


class ClientDisconnected(Exception):
    """The client went away while its request waited on the primary; its work was cancelled."""


class HTTPProblem(Exception):
    def __init__(
        self, code: str, detail: str, headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or []
        self.extra = extra


_UNUSUAL_HEADERS = frozenset(
    {b"if-none-match", b"cache-control", b"traceparent", b"x-request-timeout", b"if-match"}
)
_SAFE_REQUEST_ID_B = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")
_HIT_L1 = b"maxage; hit; detail=l1"
# Outcomes of App._hot_get (identity-compared sentinels).
_HOT_SERVED, _HOT_NOT_TRIED, _HOT_MISSED = object(), object(), object()
_AGES = [b"%d" % i for i in range(100)]


class _HotRoute:
    """Everything about one collection's cached GET that can be computed before requests."""

    __slots__ = ("bound", "cache_control", "histogram", "route", "suffixes")

    def __init__(self, spec: CollectionSpec, histograms: dict[tuple[str, str, str], Histogram]):
        self.bound = spec.max_staleness
        self.route = f"/v1/{spec.name}/{{id}}"
        top = int(spec.max_staleness) + 1
        self.suffixes = [
            b'"maxAgeSeconds":%d,"consistency":"bounded","source":"l1"}}' % b for b in range(top)
        ]
        self.cache_control = [b"max-age=%d" % b for b in range(top)]
        self.histogram = histograms.setdefault(("GET", self.route, "200"), Histogram())


class App:
    """``build_app`` returns one of these; it is the whole ASGI application."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        faults: Any = None,
    ) -> None:
        self.service = service
        self.settings = settings
        self.collections = service.collections
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        self.faults = faults
        self.draining = False
        self.in_flight = 0
        self.cancelled_requests = 0
        self.deadline_exceeded = 0
        self._rid_prefix_b = os.urandom(4).hex().encode() + b"-"
        self._rid_counter = itertools.count(1)
        self._histograms: dict[tuple[str, str, str], Histogram] = {}
        self._page_secret = b""
        self.openapi_bytes = openapi.render(self.collections, settings)
        self._doc_routes = {name: f"/v1/{name}/{{id}}" for name in self.collections}
        self._col_routes = {name: f"/v1/{name}" for name in self.collections}
        self._changes_routes = {name: f"/v1/{name}/changes" for name in self.collections}
        self._suffix_cache: dict[tuple[int, str, str], bytes] = {}
        self._hot = {
            name: _HotRoute(spec, self._histograms)
            for name, spec in self.collections.items()
            if spec.default_mode is ReadMode.BOUNDED
        }
        self._sample = random.Random()
        self._log_every_hit = settings.access_log in ("all", "sampled")
        self._purger: asyncio.Future[None] | None = None

    # -- ASGI entry --------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def startup(self) -> None:
        if self.on_startup is not None:
            await self.on_startup()
        self._page_secret = await self.service.store.secret("page_token")
        self._purger = asyncio.ensure_future(self._purge_idempotency_keys())
        with contextlib.suppress(RuntimeError, ValueError):  # ValueError: not the main thread
            prior = signal.getsignal(signal.SIGTERM)

            def on_term(signum: int, frame: Any) -> None:
                # Readiness fails at once so balancers stop sending; in-flight requests finish.
                # signal.signal, not loop.add_signal_handler: that would replace the ASGI
                # server's own loop handler (granian never stopped, was killed after its
                # kill timeout); the loop still sees SIGTERM through its wakeup fd.
                self.draining = True
                if callable(prior):
                    prior(signum, frame)
                elif prior == signal.SIG_DFL:
                    # No server handler to defer to: terminate as if we had not looked.
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    os.kill(os.getpid(), signal.SIGTERM)

            signal.signal(signal.SIGTERM, on_term)

    async def shutdown(self) -> None:
        self.draining = True
        deadline = time.monotonic() + self.settings.drain_grace
        while self.in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._purger is not None:
            self._purger.cancel()
        if self.on_shutdown is not None:
            await self.on_shutdown()

    async def _purge_idempotency_keys(self) -> None:
        """Delete idempotency records older than ``idempotency_keep``, every keep/4 (<= 5 min)."""
        every = min(300.0, max(0.25, self.settings.idempotency_keep / 4))
        while True:
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(30.0):
                    await self.service.store.purge_idempotency(self.service.clock.now())
            except (StoreError, TimeoutError) as exc:
                logging.getLogger("maxage.api").warning("idempotency purge failed: %s", exc)

    # -- request handling --------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        rid: bytes | None = None
        unusual = False  # any header that takes the request off the hot path
        headers_in = scope["headers"]
        for name, value in headers_in:
            if name == RID:
                rid = value
            elif name in _UNUSUAL_HEADERS:
                unusual = True
        if rid is None or len(rid) > 128 or not _SAFE_REQUEST_ID_B.match(rid):
            rid = b"%s%x" % (self._rid_prefix_b, next(self._rid_counter))
        method = scope["method"]
        hot_result = _HOT_NOT_TRIED
        if method == "GET" and not unusual and not scope["query_string"]:
            path = scope["path"]
            if path.startswith("/v1/"):
                col, _, id = path[4:].partition("/")
                hot = self._hot.get(col)
                if hot is not None and id and id != "changes" and "/" not in id:
                    hot_result = await self._hot_get(hot, col + "/" + id, rid, send, started)
                    if hot_result is _HOT_SERVED:
                        return
        req = Request(method, scope["path"], scope["query_string"], rid.decode("latin-1"), started)
        # The hot path already counted this read's L1 miss: the general path must not look again.
        req.l1_missed = hot_result is _HOT_MISSED
        req.client = scope.get("client")
        for name, value in headers_in:
            if name == b"if-none-match":
                req.if_none_match = value
            elif name == b"cache-control":
                req.cache_control = value
            elif name == CT:
                req.content_type = value
            elif name == CL:
                try:
                    req.content_length = int(value)
                except ValueError:
                    req.content_length = -1
            elif name == b"if-match":
                req.if_match = value
            elif name == b"idempotency-key":
                req.idempotency_key = value.decode("latin-1")
            elif name == b"accept":
                req.accept = value
            elif name == b"last-event-id":
                req.last_event_id = value
            elif name == b"traceparent":
                req.traceparent = value
            elif name == b"x-request-timeout":
                req.deadline = _parse_timeout(value)
        limit = self.settings.deadline
        req.deadline = started + (min(req.deadline, limit) if req.deadline > 0 else limit)
        self.in_flight += 1
        status = 500
        try:
            status = await self._dispatch(req, scope, receive, send)
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - started
            hkey = (req.method, req.route, str(status))
            hist = self._histograms.get(hkey)
            if hist is None:
                hist = self._histograms[hkey] = Histogram()
            hist.observe(elapsed)
            mode = self.settings.access_log
            if mode != "off" and (
                mode == "all"
                or (
                    mode == "errors-and-slow"
                    and (status >= 500 or elapsed >= self.settings.slow_request)
                )
                or (mode == "sampled" and self._sample.random() < self.settings.access_log_sample)
            ):
                self._log(req, status, elapsed)

    async def _hot_get(
        self, hot: _HotRoute, key: str, rid: bytes, send: Send, started: float
    ) -> object:
        """A bounded GET answered from the in-process cache (_HOT_SERVED), or the reason to
        take the general path: _HOT_NOT_TRIED (holder lagging) or _HOT_MISSED (L1 miss).

        Same rules as ``Service.read_cached`` (watermark within the bound, entry live),
        inlined: no Request object, no coroutine per layer, precomputed header values.
        """
        service = self.service
        now = service.clock.now()
        watermark = service.l1_holder.watermark
        if now - watermark > hot.bound:
            return _HOT_NOT_TRIED
        entry = service.cache.get(key)
        if entry is MISSING:
            return _HOT_MISSED
        known = entry.filled_at if entry.filled_at > watermark else watermark
        age = now - known
        if age < 0:  # the wall clock stepped back: never claim more budget than the bound
            age = 0.0
        budget = int(hot.bound - age)
        if budget < 0:
            budget = 0
        body = entry.body + hot.suffixes[budget]
        service.stats.hits["l1"] += 1
        monitor = service.monitor
        if monitor is not None:
            monitor.countdown -= 1
            if monitor.countdown <= 0:
                monitor.hit(key, entry.version, now, hot.bound)
        self.in_flight += 1
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (RID, rid),
                        (ETAG, entry.meta or b'"%d"' % entry.version),
                        (AGE, _AGES[int(age)] if age < 100 else b"%d" % age),
                        (CC, hot.cache_control[budget]),
                        (CSTATUS, _HIT_L1),
                        (CT, JSON),
                        (CL, b"%d" % len(body)),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            self.in_flight -= 1
        elapsed = time.perf_counter() - started
        hot.histogram.observe(elapsed)
        mode = self.settings.access_log
        if (
            self._log_every_hit
            and (mode == "all" or self._sample.random() < self.settings.access_log_sample)
        ) or (elapsed >= self.settings.slow_request and mode == "errors-and-slow"):
            req = Request("GET", "/v1/" + key, b"", rid.decode("latin-1"), started)
            req.route, req.source = hot.route, "l1"
            self._log(req, 200, elapsed)
        return _HOT_SERVED

    def _log(self, req: Request, status: int, elapsed: float) -> None:
        log.info(
            json.dumps(
                {
                    "ts": iso(time.time()),
                    "method": req.method,
                    "route": req.route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": req.request_id,
                    "cache_source": req.source,
                }
            )
        )

    async def _dispatch(self, req: Request, scope: Scope, receive: Receive, send: Send) -> int:
        path = req.path
        try:
            if path.startswith("/v1/"):
                parts = path[4:].split("/")
                spec = self.collections.get(parts[0])
                if len(parts) == 2 and spec is not None and parts[1] and parts[1] != "changes":
                    req.route = self._doc_routes[spec.name]
                    if req.method == "GET" or req.method == "HEAD":
                        return await self._get_document(req, spec, parts[1], receive, send)
                    return await self._write_document(req, spec, parts[1], receive, send)
                if len(parts) == 1 and spec is not None:
                    req.route = self._col_routes[spec.name]
                    if req.method == "GET" or req.method == "HEAD":
                        return await self._slow(req, receive, send, self._list(req, spec, send))
                    if req.method == "POST":
                        return await self._write_document(req, spec, None, receive, send)
                    raise HTTPProblem(
                        "method_not_allowed",
                        f"{req.method} is not allowed here",
                        [(b"allow", b"GET, HEAD, POST")],
                    )
                if len(parts) == 2 and spec is not None and parts[1] == "changes":
                    req.route = self._changes_routes[spec.name]
                    if req.method != "GET":
                        raise HTTPProblem(
                            "method_not_allowed",
                            f"{req.method} is not allowed here",
                            [(b"allow", b"GET")],
                        )
                    return await self._changes(req, spec, receive, send)
                if spec is None and parts[0]:
                    req.route = "/v1/{collection}" if len(parts) == 1 else "/v1/{collection}/{id}"
                    raise HTTPProblem("collection_not_found", f"no collection named {parts[0]!r}")
                raise HTTPProblem("not_found", f"no route for {path}")
            return await self._ops(req, receive, send)
        except HTTPProblem as p:
            return await self._problem(req, send, p.code, p.detail, p.headers, **p.extra)
        except NotFound as e:
            return await self._problem(req, send, "document_not_found", str(e))
        except TimeoutError:
            self.deadline_exceeded += 1
            return await self._problem(
                req, send, "deadline_exceeded", "the request did not finish within its deadline"
            )
        except StoreError as e:
            logging.getLogger("maxage.api").warning("store error: %s", e)
            return await self._problem(
                req,
                send,
                "store_unavailable",
                "the primary store is unavailable; retry with backoff",
            )
        except ClientDisconnected:
            return 499  # nothing to send: counted in maxage_requests_cancelled_total
        except asyncio.CancelledError:
            raise
        except Exception:
            logging.getLogger("maxage.api").exception(
                "internal error (request_id=%s)", req.request_id
            )
            return await self._problem(
                req, send, "internal_error", "an unexpected error occurred; it has been logged"
            )

    async def _ops(self, req: Request, receive: Receive, send: Send) -> int:
        path = req.path
        routes: dict[str, tuple[str, Callable[[], Coroutine[Any, Any, int]]]] = {
            "/livez": ("GET", lambda: self._plain(req, send, 200, JSON, b'{"status":"ok"}')),
            "/readyz": ("GET", lambda: self._readyz(req, send)),
            "/metrics": (
                "GET",
                lambda: self._plain(
                    req,
                    send,
                    200,
                    b"text/plain; version=0.0.4; charset=utf-8",
                    self.render_metrics(),
                ),
            ),
            "/openapi.json": ("GET", lambda: self._plain(req, send, 200, JSON, self.openapi_bytes)),
            "/docs": (
                "GET",
                lambda: self._plain(req, send, 200, b"text/html; charset=utf-8", openapi.DOCS_HTML),
            ),
            "/docs/app.js": (
                "GET",
                lambda: self._plain(
                    req, send, 200, b"text/javascript; charset=utf-8", openapi.DOCS_JS
                ),
            ),
        }
        if path == "/_maxage/faults":
            req.route = path
            if self.faults is None:
                raise HTTPProblem("fault_injection_disabled", "fault injection is not enabled")
            return int(await self.faults.handle(self, req, receive, send))
        entry = routes.get(path)
        if entry is None:
            raise HTTPProblem("not_found", f"no route for {path}")
        req.route = path
        if req.method not in (entry[0], "HEAD"):
            raise HTTPProblem(
                "method_not_allowed",
                f"{req.method} is not allowed here",
                [(b"allow", b"GET, HEAD")],
            )
        return await entry[1]()

    async def _readyz(self, req: Request, send: Send) -> int:
        if self.draining:
            raise HTTPProblem("draining", "the server is shutting down")
        try:
            async with asyncio.timeout(min(2.0, max(0.05, req.deadline - time.perf_counter()))):
                await self.service.store.ping()
        except (StoreError, TimeoutError):
            raise HTTPProblem("store_unavailable", "the primary store does not answer") from None
        return await self._plain(req, send, 200, JSON, b'{"status":"ready"}')

    # -- responses ---------------------------------------------------------------------

    def _base_headers(self, req: Request) -> list[tuple[bytes, bytes]]:
        headers = [(RID, req.request_id.encode())]
        if req.traceparent is not None:
            headers.append((b"traceparent", _continue_trace(req.traceparent)))
        return headers

    async def _plain(
        self,
        req: Request,
        send: Send,
        status: int,
        ctype: bytes,
        body: bytes,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        headers = self._base_headers(req)
        headers.append((CT, ctype))
        headers.append((CL, b"%d" % len(body)))
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})
        return status

    async def _problem(
        self,
        req: Request,
        send: Send,
        code: str,
        detail: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        **extra: Any,
    ) -> int:
        status, body = render_problem(code, detail, req.path, req.request_id, **extra)
        if status >= 500 or code in ("deadline_exceeded",):
            logging.getLogger("maxage.api").warning(
                "request %s %s failed: %s (%s)", req.method, req.route, code, req.request_id
            )
        return await self._plain(req, send, status, PROBLEM_CONTENT_TYPE, body, headers)

    # -- reads -------------------------------------------------------------------------

    def _mode(self, req: Request, spec: CollectionSpec) -> tuple[ReadMode, int]:
        mode: ReadMode | None = None
        min_version = 0
        if req.query:
            for key, value in _query_items(req.query):
                if key == "consistency":
                    try:
                        mode = ReadMode(value)
                    except ValueError:
                        raise HTTPProblem(
                            "invalid_parameter",
                            f"consistency must be one of {spec.allowed_modes_text()}",
                            parameter="consistency",
                        ) from None
                elif key == "min_version":
                    if not value.isdigit() or len(value) > 18:
                        raise HTTPProblem(
                            "invalid_parameter",
                            "min_version must be a non-negative integer",
                            parameter="min_version",
                        )
                    min_version = int(value)
                    if mode is None:
                        mode = ReadMode.SESSION
                else:
                    raise HTTPProblem(
                        "invalid_parameter", f"unknown query parameter {key!r}", parameter=key
                    )
        if req.cache_control is not None and b"no-cache" in req.cache_control.lower():
            if mode is not None and mode is not ReadMode.STRONG:
                raise HTTPProblem(
                    "invalid_parameter",
                    "Cache-Control: no-cache asks for a strong read; it conflicts "
                    f"with consistency={mode.value}",
                )
            mode = ReadMode.STRONG
        if mode is None:
            mode = spec.default_mode
        if mode not in spec.read_modes:
            raise HTTPProblem(
                "read_mode_not_allowed",
                f"collection {spec.name!r} allows read modes: {spec.allowed_modes_text()}",
                allowed_modes=[m.value for m in spec.read_modes],
            )
        if mode is ReadMode.SESSION and not min_version:
            mode = ReadMode.SESSION
        return mode, min_version

    async def _get_document(
        self, req: Request, spec: CollectionSpec, id: str, receive: Receive, send: Send
    ) -> int:
        if req.query or req.cache_control is not None:
            mode, min_version = self._mode(req, spec)
        else:
            mode, min_version = spec.default_mode, 0
        result = await self._slow_value(
            req, self.service.read(spec, id, mode, min_version, l1_checked=req.l1_missed), receive
        )
        return await self._send_read(req, spec, result, send)

    async def _send_read(
        self, req: Request, spec: CollectionSpec, r: ReadResult, send: Send
    ) -> int:
        now = self.service.clock.now()
        source = r.source.value
        req.source = source
        if r.source.value == "primary":
            known = r.known_at
        else:
            # Current as of the later of the fill and the holder's watermark.
            holder = self.service.l1_holder if source == "l1" else self.service.l2_holder
            known = max(r.known_at, holder.watermark if holder is not None else r.known_at)
        age = max(0, int(now - known))
        if r.mode is ReadMode.STRONG:
            budget = 0
            status_value = b"maxage; fwd=request; detail=strong"
        else:
            budget = max(0, int(spec.max_staleness - (now - known)))
            if source == "primary":
                status_value = b"maxage; fwd=%s; stored" % (
                    b"miss" if r.detail == "miss" else b"bypass; detail=" + r.detail.encode()
                )
            else:
                status_value = b"maxage; hit; detail=" + source.encode()
        etag = b'"%d"' % r.version
        headers = [
            (RID, req.request_id.encode()),
            (ETAG, etag),
            (AGE, b"%d" % age),
            (CC, b"max-age=%d" % budget),
            (CSTATUS, status_value),
        ]
        if req.traceparent is not None:
            headers.append((b"traceparent", _continue_trace(req.traceparent)))
        if req.if_none_match is not None and _etag_matches(req.if_none_match, r.version):
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 304
        skey = (budget, r.mode.value, source)
        suffix = self._suffix_cache.get(skey)
        if suffix is None:
            suffix = b'"maxAgeSeconds":%d,"consistency":"%s","source":"%s"}}' % (
                budget,
                r.mode.value.encode(),
                source.encode(),
            )
            if len(self._suffix_cache) < 4096:
                self._suffix_cache[skey] = suffix
        body = r.prefix + suffix
        headers.append((CT, JSON))
        headers.append((CL, b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else body})
        return 200

    async def _list(self, req: Request, spec: CollectionSpec, send: Send) -> int:
        page_size = self.settings.default_page_size
        after: str | None = None
        for key, value in _query_items(req.query):
            if key == "page_size":
                try:
                    page_size = int(value)
                except ValueError:
                    raise HTTPProblem(
                        "invalid_parameter", "page_size must be an integer", parameter="page_size"
                    ) from None
                if page_size < 1:
                    raise HTTPProblem(
                        "invalid_parameter", "page_size must be >= 1", parameter="page_size"
                    )
                page_size = min(page_size, self.settings.max_page_size)
            elif key == "page_token":
                if value:
                    after = self._open_token(spec.name, value)
            elif key == "consistency":
                if value != "strong":
                    raise HTTPProblem(
                        "invalid_parameter",
                        "lists are always read from the primary (consistency=strong)",
                        parameter="consistency",
                    )
            else:
                raise HTTPProblem(
                    "invalid_parameter", f"unknown query parameter {key!r}", parameter=key
                )
        started = self.service.clock.now()
        docs = await self.service.store.list_page(spec.name, after, page_size + 1)
        more = len(docs) > page_size
        docs = docs[:page_size]
        token = self._seal_token(spec.name, docs[-1].id) if more and docs else ""
        body = (
            b'{"data":['
            + b",".join(render_document(d) + b"}" for d in docs)
            + b'],"next_page_token":%s,"meta":{"consistency":"strong","source":"primary","cachedAt":"%s"}}'
            % (_encode(token), iso(started).encode())
        )
        req.source = "primary"
        return await self._plain(req, send, 200, JSON, body, [(CC, b"no-cache")])

    def _seal_token(self, collection: str, after_id: str) -> str:
        payload = _encode([1, collection, after_id])
        mac = hmac.new(self._page_secret, payload, hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def _open_token(self, collection: str, token: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, payload = raw[:16], raw[16:]
            good = hmac.new(self._page_secret, payload, hashlib.sha256).digest()[:16]
            if len(mac) != 16 or not hmac.compare_digest(mac, good):
                raise ValueError("bad mac")
            version, col, after = msgspec.json.decode(payload)
            if version != 1 or col != collection or not isinstance(after, str):
                raise ValueError("wrong token")
        except (ValueError, TypeError, msgspec.DecodeError):
            raise HTTPProblem(
                "invalid_page_token",
                "page_token is not a token this server issued for this collection",
                parameter="page_token",
            ) from None
        return after

    # -- change feed -------------------------------------------------------------------

    async def _changes(
        self, req: Request, spec: CollectionSpec, receive: Receive, send: Send
    ) -> int:
        from maxage.api.changes import stream_changes

        return await stream_changes(self, req, spec, receive, send)

    # -- writes ------------------------------------------------------------------------

    async def _read_body(self, req: Request, receive: Receive) -> bytes:
        limit = self.settings.body_limit
        if req.content_length is not None and req.content_length > limit:
            raise HTTPProblem(
                "payload_too_large",
                f"the body is {req.content_length} bytes; the limit is {limit}",
                _CLOSE,
                limit=limit,
            )
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise asyncio.CancelledError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HTTPProblem(
                    "payload_too_large",
                    f"the body exceeds the limit of {limit} bytes",
                    _CLOSE,
                    limit=limit,
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _json_body(self, req: Request, body: bytes, media: tuple[bytes, ...]) -> object:
        ctype = (req.content_type or b"").split(b";")[0].strip().lower()
        if ctype not in media:
            raise HTTPProblem(
                "unsupported_media_type",
                f"Content-Type must be {' or '.join(m.decode() for m in media)}",
                accepted=[m.decode() for m in media],
            )
        try:
            value = _json_decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise HTTPProblem("malformed_json", f"the body is not valid JSON: {exc}") from None
        return value

    async def _write_document(
        self, req: Request, spec: CollectionSpec, id: str | None, receive: Receive, send: Send
    ) -> int:
        method = req.method
        if method not in ("POST", "PUT", "PATCH", "DELETE"):
            allow = b"GET, HEAD, POST" if id is None else b"GET, HEAD, PUT, PATCH, DELETE"
            raise HTTPProblem(
                "method_not_allowed", f"{method} is not allowed here", [(b"allow", allow)]
            )
        if id is not None and method == "POST":
            raise HTTPProblem(
                "method_not_allowed",
                "POST creates in the collection; use PUT for an id",
                [(b"allow", b"GET, HEAD, PUT, PATCH, DELETE")],
            )
        if req.query:
            raise HTTPProblem("invalid_parameter", "writes take no query parameters")
        if_match = _parse_if_match(req.if_match)
        create_only = False
        if req.if_none_match is not None:
            if method != "PUT" or req.if_none_match.strip() != b"*":
                raise HTTPProblem(
                    "invalid_parameter",
                    "If-None-Match on writes is only supported as 'If-None-Match: *' on PUT",
                )
            create_only = True
        body = await self._read_body(req, receive)
        data: object = None
        if method in ("POST", "PUT"):
            data = self._json_body(req, body, (JSON,))
            errors = spec.validate(data)
            if errors:
                raise HTTPProblem(
                    "validation_failed",
                    "the document does not match the collection's schema",
                    errors=[{"pointer": p, "detail": d} for p, d in errors],
                )
        elif method == "PATCH":
            data = self._json_body(req, body, (b"application/merge-patch+json",))
            if not isinstance(data, dict):
                raise HTTPProblem(
                    "validation_failed",
                    "a merge patch for a document must be a JSON object",
                    errors=[{"pointer": "", "detail": "must be an object"}],
                )
            errors = spec.validate_patch(data)
            if errors:  # wrong whatever the document: 422 before any precondition
                raise HTTPProblem(
                    "validation_failed",
                    "the merge patch does not match the collection's schema",
                    errors=[{"pointer": p, "detail": d} for p, d in errors],
                )
        elif body:
            raise HTTPProblem("bad_request", "DELETE takes no body")
        doc_id = id if id is not None else str(_uuid7())
        if id is not None and not _DOC_ID.match(id):
            raise HTTPProblem("invalid_parameter", "document ids are 1-200 of A-Z a-z 0-9 . _ ~ -")
        service = self.service
        encoded = service.encode_valid(spec, data) if method in ("POST", "PUT") else b""

        def mutate(current: Document | None) -> bytes | None:
            if method == "POST":
                if current is not None:
                    raise PreconditionFailed("an id collision occurred; retry", current.version)
                return encoded
            if create_only and current is not None:
                raise PreconditionFailed(
                    "If-None-Match: * but the document exists", current.version
                )
            service.check_if_match(current, if_match)
            if method == "PUT":
                return encoded
            if current is None:
                raise NotFound(f"{spec.name}/{doc_id} does not exist")
            if method == "DELETE":
                return None
            merged = merge_patch(decode_data(current.data), data)
            return service.encode_valid(spec, merged)

        status_ok = {"POST": 201, "PUT": 200, "PATCH": 200, "DELETE": 204}[method]

        def render(result: WriteResult) -> StoredResponse:
            doc = result.document
            status = 201 if method == "PUT" and result.created else status_ok
            headers: list[tuple[str, str]] = [("etag", f'"{doc.version}"')]
            if status == 204:
                return StoredResponse(status, tuple(headers), b"")
            if status == 201:
                headers.append(("location", f"/v1/{spec.name}/{doc.id}"))
            body = (
                render_document(doc)
                + b',"meta":{"version":%d,"cachedAt":"%s","maxAgeSeconds":%d,"consistency":"strong","source":"primary"}}'
                % (
                    doc.version,
                    iso(doc.updated_at).encode(),
                    int(spec.max_staleness),
                )
            )
            headers.append(("content-type", "application/json"))
            return StoredResponse(status, tuple(headers), body)

        key = req.idempotency_key
        if key is None:
            result = await self._slow_value(req, self._do_write(spec, doc_id, mutate), receive)
            response = render(result)
            return await self._send_stored(req, send, response, replayed=False)
        return await self._idempotent(req, spec, doc_id, key, body, mutate, render, receive, send)

    async def _do_write(
        self,
        spec: CollectionSpec,
        doc_id: str,
        mutate: Callable[[Document | None], bytes | None],
        idem: IdempotencyCompletion | None = None,
    ) -> WriteResult:
        try:
            return await self.service.write(spec, doc_id, mutate, idem)
        except PreconditionFailed as e:
            extra = {} if e.current_version is None else {"current_version": e.current_version}
            hdrs = [] if e.current_version is None else [(ETAG, b'"%d"' % e.current_version)]
            raise HTTPProblem("precondition_failed", str(e), hdrs, **extra) from None
        except ValidationFailed as e:
            raise HTTPProblem(
                "validation_failed",
                str(e),
                errors=[{"pointer": p, "detail": d} for p, d in e.errors],
            ) from None

    async def _idempotent(
        self,
        req: Request,
        spec: CollectionSpec,
        doc_id: str,
        key: str,
        body: bytes,
        mutate: Callable[[Document | None], bytes | None],
        render: Callable[[WriteResult], StoredResponse],
        receive: Receive,
        send: Send,
    ) -> int:
        key = _parse_idempotency_key(key)
        scope = f"{req.method} {req.path} {key}"
        fingerprint = hashlib.sha256(
            b"\0".join(
                [
                    req.method.encode(),
                    req.path.encode(),
                    req.if_match or b"",
                    req.if_none_match or b"",
                    body,
                ]
            )
        ).hexdigest()
        owner = uuid.uuid4().hex
        now = self.service.clock.now()
        lease = max(1.0, req.deadline - time.perf_counter()) + 5.0
        claim = await self._slow_value(
            req,
            self.service.store.claim_idempotency(
                scope, fingerprint, owner, now, lease, self.settings.idempotency_keep
            ),
        )
        if claim.state is ClaimState.DONE:
            assert claim.response is not None
            return await self._send_stored(req, send, claim.response, replayed=True)
        if claim.state is ClaimState.IN_FLIGHT:
            raise HTTPProblem(
                "idempotency_key_in_use",
                "a request with this Idempotency-Key is still being processed",
                [(b"retry-after", b"1")],
            )
        if claim.state is ClaimState.MISMATCH:
            raise HTTPProblem(
                "idempotency_key_reused", "this Idempotency-Key was used for a different request"
            )
        try:
            result = await self._slow_value(
                req,
                self._do_write(spec, doc_id, mutate, IdempotencyCompletion(scope, owner, render)),
                receive,
            )
        except BaseException:
            release = asyncio.ensure_future(self.service.store.release_idempotency(scope, owner))
            with contextlib.suppress(Exception):
                await asyncio.shield(release)
            raise
        assert result.response is not None
        return await self._send_stored(req, send, result.response, replayed=False)

    async def _send_stored(
        self, req: Request, send: Send, r: StoredResponse, *, replayed: bool
    ) -> int:
        headers = self._base_headers(req)
        headers.extend((k.encode(), v.encode()) for k, v in r.headers)
        if replayed:
            headers.append((b"idempotent-replayed", b"true"))
        if r.status != 204:
            headers.append((CL, b"%d" % len(r.body)))
        await send({"type": "http.response.start", "status": r.status, "headers": headers})
        await send({"type": "http.response.body", "body": r.body})
        if r.status >= 200:
            req.source = "primary"
        return r.status

    # -- deadlines and disconnects -----------------------------------------------------

    async def _slow_value(
        self, req: Request, coro: Awaitable[Any], receive: Receive | None = None
    ) -> Any:
        """Await ``coro`` under the request's deadline (TimeoutError → 504); with ``receive``,
        also cancel it when the client disconnects (ClientDisconnected, counted)."""
        remaining = req.deadline - time.perf_counter()
        if remaining <= 0:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise TimeoutError
        if receive is None:
            async with asyncio.timeout(remaining):
                return await coro
        work = asyncio.ensure_future(coro)
        gone = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            async with asyncio.timeout(remaining):
                await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            work.cancel()
            raise
        finally:
            gone.cancel()
        if work.done():
            return work.result()
        work.cancel()
        self.cancelled_requests += 1
        raise ClientDisconnected

    async def _slow(self, req: Request, receive: Receive, send: Send, coro: Awaitable[int]) -> int:
        return int(await self._slow_value(req, coro, receive))

    # -- metrics -----------------------------------------------------------------------

    def render_metrics(self) -> bytes:
        from maxage.api.exposition import collect

        out = Exposition()
        out.family(
            "http_server_request_duration_seconds",
            "histogram",
            "Duration of HTTP requests by method, route template and status.",
        )
        out.histogram(
            "http_server_request_duration_seconds",
            (
                (labels(method=m, route=r, status=s), h)
                for (m, r, s), h in sorted(self._histograms.items())
            ),
        )
        out.family("http_server_active_requests", "gauge", "Requests in flight.")
        out.sample("http_server_active_requests", self.in_flight)
        collect(self, out)
        return out.render()


async def _wait_disconnect(receive: Receive) -> None:
    """Return when the client disconnects (any request body is read before this runs)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def _parse_timeout(value: bytes) -> float:
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if 0 < seconds < 1e6 else 0.0


def _query_items(query: bytes) -> list[tuple[str, str]]:
    from urllib.parse import parse_qsl

    try:
        return parse_qsl(
            query.decode("latin-1"), keep_blank_values=True, strict_parsing=False, max_num_fields=32
        )
    except ValueError:
        raise HTTPProblem("invalid_parameter", "too many query parameters") from None


def _etag_matches(header: bytes, version: int) -> bool:
    text = header.decode("latin-1").strip()
    if text == "*":
        return True
    for part in text.split(","):
        m = _ETAG.match(part.strip())
        if m and int(m.group(1)) == version:
            return True
    return False


def _parse_if_match(header: bytes | None) -> int | None:
    if header is None:
        return None
    m = _ETAG.match(header.decode("latin-1").strip())
    if not m or header.strip().startswith(b"W/"):
        raise HTTPProblem(
            "invalid_parameter",
            'If-Match must be one strong ETag such as "3" (weak ETags never match)',
            parameter="If-Match",
        )
    return int(m.group(1))


def _parse_idempotency_key(raw: str) -> str:
    key = raw.strip()
    if len(key) >= 2 and key[0] == '"' and key[-1] == '"':
        key = key[1:-1]  # structured-field string form
    if not _IDEMPOTENCY_KEY.match(key):
        raise HTTPProblem(
            "invalid_parameter",
            "Idempotency-Key must be 1-255 visible ASCII characters other than '\"' "
            "(bare or quoted)",
            parameter="Idempotency-Key",
        )
    return key


def _continue_trace(value: bytes) -> bytes:
    m = _TRACEPARENT.match(value.decode("latin-1").strip().lower())
    span = os.urandom(8).hex()
    if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
        return f"00-{m.group(1)}-{span}-{m.group(3)}".encode()
    return f"00-{os.urandom(16).hex()}-{span}-01".encode()


def _uuid7() -> uuid.UUID:
    """A time-ordered UUIDv7 (RFC 9562): 48-bit ms timestamp, then random bits."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return uuid.UUID(int=value)


def build_app(service: Service, settings: Settings | None = None, **kwargs: Any) -> App:
    return App(service, settings or Settings(), **kwargs)


__all__ = ["CATALOG", "App", "Settings", "build_app"]
