"""The ASGI application: the entry point, the hot path, dispatch, and the lifespan.

One class, no middleware stack (aiohttp's protocol/app split: granian is the
protocol, this is the app, :mod:`maxage.api.routes` the route table).
:meth:`App.__call__` scans the request headers once; a bounded ``GET`` of a
cached document (the hot path) is answered synchronously from the in-process
cache with precomputed header values and a pre-encoded body prefix, under the
service's one bounded-read rule (:meth:`maxage.service.reads.Reads.l1`). Anything
that awaits the primary runs under the request's deadline and is cancelled when
the client disconnects. Contract decisions are the service's; this module maps
their refusals (:class:`maxage.service.DomainError`) to problem responses.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import re
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import msgspec

from maxage import __version__, docs_page, status, tracing
from maxage.api import exposition, guard, openapi, responses, routes
from maxage.api.http import accepts, scan_headers
from maxage.api.problems import PROBLEM_CONTENT_TYPE, render_problem
from maxage.api.responses import AGE, CC, CL, CSTATUS, CT, ETAG, HIT_L1, JSON, RID
from maxage.api.shedding import Shedder
from maxage.api.types import (
    ClientDisconnected,
    FaultControl,
    HTTPProblem,
    Receive,
    Request,
    Scope,
    Send,
    Settings,
)
from maxage.contracts import CollectionSpec, Cors
from maxage.core.metrics import Histogram
from maxage.core.wake import expire_task
from maxage.logs import trace_id
from maxage.service import (
    LAGGING,
    DomainError,
    Service,
    StoreError,
    read_scope,
)
from maxage.service.reads import hot_collections
from maxage.service.representation import hot_suffixes

T = TypeVar("T")
S = TypeVar("S", bytes, str)  # a header's spelling: ASGI's bytes or RSGI's str
access_log = logging.getLogger("maxage.access")
log = logging.getLogger("maxage.api")

# Request headers that take a request off the hot path (the general path reads them).
UNUSUAL_HEADERS = frozenset(
    {
        b"if-none-match",
        b"cache-control",
        b"traceparent",
        b"x-request-timeout",
        b"if-match",
        b"origin",
    }
)
AUTHORIZATION = b"authorization"
ACCEPT = b"accept"
_JSON_ONLY = (b"application/json",)


def accepts_json(accept: bytes) -> bool:
    """Whether an ``Accept`` value admits the hot path's JSON (any other goes the general
    way: 406)."""
    return accept == b"*/*" or accepts(accept, _JSON_ONLY)


# Never shed: a balancer must see liveness and readiness, an operator the metrics and status.
_NEVER_SHED = frozenset({"/livez", "/readyz", "/metrics", "/status", "/status.json"})
_RETRY_AFTER_1 = [(b"retry-after", b"1")]
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_encode = msgspec.json.Encoder().encode
_OVERLOADED = "the server is overloaded; retry after Retry-After"
# The overloaded problem, rendered once around its two per-request members.
_SHED_HEAD = render_problem("overloaded", _OVERLOADED, "\x00", "\x01")[1].split(b'"\\u0000"')[0]
_SHED_TAIL = b',"request_id":"%s","code":"overloaded"}'
_SAFE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")
# Work awaited for a request (App.awaited) is cancelled when its client disconnects, once it
# has run this long: what ends sooner is not worth watching for (seconds).
WATCH_DISCONNECT_AFTER = 0.05
# Reasons App.hot_answer gives for not answering (identity-compared sentinels).
HOT_NOT_TRIED, HOT_MISSED = object(), object()


class _HotRoute:
    """Everything about one collection's cached GET that can be computed before requests."""

    __slots__ = ("bound", "histogram", "route", "scope", "suffixes")

    def __init__(self, spec: CollectionSpec, histograms: dict[tuple[str, str, str], Histogram]):
        self.bound = spec.max_staleness
        self.scope = read_scope(spec.name)
        self.route = f"/v1/{spec.name}/{{id}}"
        self.suffixes = hot_suffixes(spec.max_staleness)
        self.histogram = histograms.setdefault(("GET", self.route, "200"), Histogram())


class HitFields(Generic[S]):
    """The hot path's response fields and request ids in one server interface's spelling:
    bytes for ASGI (``App.asgi_fields``), str for RSGI (``App.rsgi_fields``).

    Invariant: :meth:`App.hot_answer` builds a hit's answer from these alone, so both
    interfaces send the same seven fields in the same order with the same values; every
    (name, value) pair that does not depend on the request is built once, here (a budget's
    ``Cache-Control``, an ``Age`` below 100 s, ``Cache-Status``, ``Content-Type``, and the
    ``Content-Length`` of each body length seen)."""

    __slots__ = ("age", "ages", "cache_control", "cache_status", "content_length",
                 "content_type", "etag", "lengths", "number", "rid", "rid_format",
                 "safe_rid", "text")  # fmt: skip

    def __init__(
        self,
        spell: Callable[[bytes], S],
        number: Callable[[int], S],
        max_budget: int,
        rid_prefix: bytes,
    ) -> None:
        self.text: Callable[[bytes], S] = spell  # an ASCII value (the ETag's)
        self.number: Callable[[int], S] = number  # an int's decimal digits
        self.rid: S = spell(RID)
        self.etag: S = spell(ETAG)
        self.age: S = spell(AGE)
        self.content_length: S = spell(CL)
        self.ages: list[tuple[S, S]] = [(self.age, spell(b"%d" % i)) for i in range(100)]
        cc = spell(CC)
        self.cache_control: list[tuple[S, S]] = [
            (cc, spell(b"max-age=%d" % b)) for b in range(max_budget + 1)
        ]
        self.cache_status: tuple[S, S] = (spell(CSTATUS), spell(HIT_L1))
        self.content_type: tuple[S, S] = (spell(CT), spell(JSON))
        self.safe_rid: Callable[[S], re.Match[S] | None] = re.compile(
            spell(_SAFE_REQUEST_ID.pattern)
        ).fullmatch
        # A fresh request id: the worker's prefix and a counter in hex (`%` with one
        # argument: a bound __mod__ costs more than the operator).
        self.rid_format: S = spell(rid_prefix + b"%x")
        # Content-Length pairs by length, filled as lengths are first seen (length_field).
        self.lengths: dict[int, tuple[S, S]] = {}

    def length_field(self, length: int) -> tuple[S, S]:
        """The ``Content-Length`` pair for ``length``, kept for the next body of that
        length while fewer than MAX_LENGTHS are kept (bodies of a collection's documents
        come in few lengths; past the cap each is built per request)."""
        field = (self.content_length, self.number(length))
        if len(self.lengths) < MAX_LENGTHS:
            self.lengths[length] = field
        return field


MAX_LENGTHS = 4096  # Content-Length pairs kept per spelling (~0.5 MB at most)


class App:
    """``build_app`` returns one of these; it is the whole ASGI application."""

    def __init__(
        self,
        service: Service,
        settings: Settings,
        *,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        faults: FaultControl | None = None,
        cors: Cors | None = None,
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
        self._rid_counter = itertools.count(1)
        self.histograms: dict[tuple[str, str, str], Histogram] = {}
        self.openapi_bytes = openapi.render(
            routes.ROUTES, self.collections, settings, auth=service.access.enabled
        )
        self.docs_bytes = docs_page.render(msgspec.json.decode(self.openapi_bytes))
        self._hot = {
            s.name: _HotRoute(s, self.histograms) for s in hot_collections(self.collections)
        }
        max_budget = max((len(h.suffixes) - 1 for h in self._hot.values()), default=0)
        rid_prefix = os.urandom(4).hex().encode() + b"-"
        # bytes(b) is b itself; bytes.decode: the values are ASCII (UTF-8 = Latin-1 there)
        self.asgi_fields = HitFields(bytes, b"%d".__mod__, max_budget, rid_prefix)
        self.rsgi_fields = HitFields(bytes.decode, str, max_budget, rid_prefix)
        self._l1 = service.reads.l1
        self._now = service.clock.now
        self._access = service.access
        # The hot path serves only what needs no await before the answer: with shared or
        # per-process rate limits the general path answers (it carries the RateLimit fields).
        # With tracing on, every request takes the general path (it records the span).
        hot_ok = not service.limits.enabled and tracing.TRACER is None
        self._hot_routes = self._hot if hot_ok else {}  # what hot_answer may serve
        self.cors = guard.CorsPolicy(cors) if cors is not None else None
        self.shedder = Shedder(
            settings.max_concurrency, settings.queue_deadline, settings.max_loop_lag
        )
        self._max_concurrency = settings.max_concurrency
        self._shed_histogram = self.histograms.setdefault(("GET", "shed", "503"), Histogram())
        self._sample = random.Random()
        self._log_every_hit = settings.access_log in ("all", "sampled")
        # A hit's elapsed time at or above this is logged (never, unless errors-and-slow).
        self._log_slow_hit = (
            settings.slow_request if settings.access_log == "errors-and-slow" else float("inf")
        )
        # /status: the last minutes of this server's own /metrics, reduced (maxage.status).
        self.status = status.Recorder(self.render_metrics)
        self._status_task: asyncio.Task[None] | None = None

    # -- ASGI entry and lifespan ---------------------------------------------------------

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
        self.shedder.start()
        exposition.start_sharing(self)
        self._status_task = asyncio.get_running_loop().create_task(
            self._record_status(), name="maxage-status"
        )
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
        await self.shedder.stop()
        if self._status_task is not None:
            self._status_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._status_task
        await exposition.stop_sharing(self)
        if self.on_shutdown is not None:
            await self.on_shutdown()

    # -- requests ----------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        rid: bytes | None = None
        authorization: bytes | None = None
        unusual = False  # any header that takes the request off the hot path
        for name, value in scope["headers"]:
            if name == RID:
                rid = value
            elif name == AUTHORIZATION:
                authorization = value
            elif name == ACCEPT:
                unusual = unusual or not accepts_json(value)
            elif name in UNUSUAL_HEADERS:
                unusual = True
        spelled = self.asgi_fields
        rid = self.request_id(rid, spelled)
        path = scope["path"]
        if self.in_flight >= self.shedder.full_at and await self.refused(path):  # full()
            await self.shed(path, rid, send, started)
            return
        answer = self.hot_answer(
            spelled, scope["method"], path, scope["query_string"], unusual, authorization, rid
        )
        if type(answer) is tuple:
            hot, headers, body = answer
            self.in_flight += 1
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
            finally:
                self.finished()
            self.hot_served(hot, path, rid, started)
            return
        await self.general(scope, receive, send, rid, authorization, answer, started)

    def request_id(self, sent: S | None, spelled: HitFields[S]) -> S:
        """The client's ``X-Request-Id`` when safe to echo and log, else a fresh one."""
        if sent is None or len(sent) > 128 or not spelled.safe_rid(sent):
            return spelled.rid_format % next(self._rid_counter)
        return sent

    async def refused(self, path: str) -> bool:
        """Whether to shed this request (call only when ``shedder.full``: the fast test)."""
        return path not in _NEVER_SHED and not await self.shedder.admit(self.in_flight)

    def hot_answer(
        self,
        spelled: HitFields[S],
        method: str,
        path: str,
        query: bytes | str,
        unusual: bool,
        authorization: bytes | None,
        rid: S,
    ) -> tuple[_HotRoute, list[tuple[S, S]], bytes] | object:
        """The hot path's answer to a request, in ``spelled``'s spelling: ``(route, headers,
        body)`` of a 200 when L1 answers a bounded GET (the one builder both interfaces
        send), else the reason to take the general path: HOT_NOT_TRIED (not a plain GET of
        a hot collection's document, holder lagging, or a key the in-process cache cannot
        vouch for) or HOT_MISSED (L1 miss, already counted). The rules are the service's
        (``Reads.l1``, ``Access.cached``); this only renders precomputed HTTP."""
        if method != "GET" or unusual or query or not path.startswith("/v1/"):
            return HOT_NOT_TRIED
        key = path[4:]  # the cache key: collection/id
        col, _, id = key.partition("/")
        hot = self._hot_routes.get(col)
        if hot is None or not id or id == "changes" or "/" in id:
            return HOT_NOT_TRIED
        now = self._now()
        if self._access.enabled:
            secret = guard.bearer(authorization)
            principal = self._access.cached(secret, now) if secret is not None else None
            if principal is None or not principal.allows(hot.scope):
                return HOT_NOT_TRIED
        hit = self._l1(key, hot.bound, 0, now)
        if hit is None:
            return HOT_MISSED
        if hit is LAGGING:
            return HOT_NOT_TRIED
        entry, age, budget = hit
        body = entry.body + hot.suffixes[budget]
        etag = entry.meta or b'"%d"' % entry.version  # meta: the ETag Reads filled in
        return (
            hot,
            [
                (spelled.rid, rid),
                (spelled.etag, spelled.text(etag)),  # type: ignore[arg-type]
                spelled.ages[int(age)] if age < 100 else (spelled.age, spelled.number(int(age))),
                spelled.cache_control[budget],
                spelled.cache_status,
                spelled.content_type,
                spelled.lengths.get(len(body)) or spelled.length_field(len(body)),
            ],
            body,
        )

    def finished(self) -> None:
        """A request counted in ``in_flight`` is done: free its slot."""
        self.in_flight -= 1
        if self.shedder.waiting:
            self.shedder.release()

    def hot_served(self, hot: _HotRoute, path: str, rid: bytes | str, started: float) -> None:
        """Count (and maybe log) a hot-path answer once it is sent."""
        elapsed = time.perf_counter() - started
        hot.histogram.observe(elapsed)
        if elapsed >= self._log_slow_hit or (
            self._log_every_hit
            and (
                self.settings.access_log == "all"
                or self._sample.random() < self.settings.access_log_sample
            )
        ):
            text = rid if type(rid) is str else rid.decode("latin-1")  # type: ignore[union-attr]
            req = Request("GET", path, b"", text, started)
            req.route, req.source = hot.route, "l1"
            self._log(req, 200, elapsed)

    async def general(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        rid: bytes,
        authorization: bytes | None,
        hot_result: object,
        started: float,
        refusal: HTTPProblem | None = None,
    ) -> None:
        """Everything the hot path did not answer: routing, the contract, the problems
        (``refusal``: a problem found before routing, the answer)."""
        req = Request(
            scope["method"], scope["path"], scope["query_string"], rid.decode("latin-1"), started
        )
        req.authorization = authorization
        # The hot path already counted this read's L1 miss: the general path must not look again.
        req.l1_missed = hot_result is HOT_MISSED
        req.client = scope.get("client")
        scan_headers(req, scope["headers"])
        limit = self.settings.deadline
        req.deadline = started + (min(req.deadline, limit) if req.deadline > 0 else limit)
        self.in_flight += 1
        status = 500
        try:
            if refusal is not None:
                status = await responses.problem(
                    req, send, refusal.code, refusal.detail, refusal.headers, **refusal.extra
                )
            elif tracing.TRACER is None:
                status = await self._dispatch(req, receive, send)
            else:
                status = await self._traced(req, receive, send)
        finally:
            self.finished()
            self._observe(req, status, time.perf_counter() - started)

    async def _traced(self, req: Request, receive: Receive, send: Send) -> int:
        """``_dispatch`` inside the request's server span (OpenTelemetry HTTP conventions)."""
        attributes = {"http.request.method": req.method, "url.path": req.path}
        with tracing.server_span(req.method, req.traceparent, attributes) as span:
            req.trace_out = tracing.traceparent_of(span)
            status = await self._dispatch(req, receive, send)
            span.update_name(f"{req.method} {req.route}")
            span.set_attribute("http.route", req.route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_attribute("error.type", str(status))
            return status

    async def _dispatch(self, req: Request, receive: Receive, send: Send) -> int:
        try:
            if self.cors is not None and req.origin is not None:
                if req.method == "OPTIONS" and req.cors_method is not None:
                    return await self._preflight(req, send)
                req.extra_headers.extend(self.cors.response_headers(req.origin))
            match = routes.match(req.path, req.method, self.collections, req)
            if req.accept is not None and not accepts(req.accept, match.route.produces):
                raise HTTPProblem(
                    "not_acceptable",
                    "this route answers with "
                    + ", ".join(m.decode() for m in match.route.produces),
                    accepted=[m.decode() for m in match.route.produces],
                )
            await guard.admit(self.service, req, match)
            return await match.handler(self, req, match, receive, send)
        except HTTPProblem as p:
            return await responses.problem(req, send, p.code, p.detail, p.headers, **p.extra)
        except DomainError as e:
            return await responses.problem(
                req, send, e.code, e.detail, responses.refusal_headers(e), **e.extra
            )
        except TimeoutError:
            self.deadline_exceeded += 1
            return await responses.problem(
                req, send, "deadline_exceeded", "the request did not finish within its deadline"
            )
        except StoreError as e:
            log.warning(
                "store error: %s", e, extra=responses.log_fields(req, 503, "store_unavailable")
            )
            return await responses.problem(
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
            log.exception("internal error", extra=responses.log_fields(req, 500, "internal_error"))
            return await responses.problem(
                req, send, "internal_error", "an unexpected error occurred; it has been logged"
            )

    async def _preflight(self, req: Request, send: Send) -> int:
        """A CORS preflight (no credentials: browsers send none): 204 with what may follow."""
        assert self.cors is not None and req.origin is not None and req.cors_method is not None
        wanted = req.cors_method.decode("latin-1").strip().upper()
        match = routes.match(req.path, wanted, self.collections, req)
        headers = responses.base_headers(req)
        headers.extend(self.cors.preflight_headers(req.origin, match.route.allow))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 204

    # -- load shedding -----------------------------------------------------------------

    async def shed(self, path: str, rid: bytes, send: Send, started: float) -> None:
        """A fast 503: a pre-rendered problem with this request's id, no logging, no
        access-log line (sheds come in floods; ``maxage_shed_total`` counts them)."""
        body = b"%s%s%s" % (_SHED_HEAD, _encode(path[:200]), _SHED_TAIL % rid)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (RID, rid),
                    (CT, PROBLEM_CONTENT_TYPE),
                    (CL, b"%d" % len(body)),
                    (b"retry-after", b"1"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
        self._shed_histogram.observe(time.perf_counter() - started)

    # -- deadlines and disconnects -----------------------------------------------------

    async def awaited(self, req: Request, work: Awaitable[T], receive: Receive | None = None) -> T:
        """Await ``work`` under the request's deadline (TimeoutError → 504); with ``receive``,
        also cancel it when the client disconnects (ClientDisconnected, counted)."""
        remaining = req.deadline - time.perf_counter()
        if remaining <= 0:
            if asyncio.iscoroutine(work):
                work.close()
            raise TimeoutError
        if receive is None:
            async with asyncio.timeout(remaining):
                return await work
        # The work runs in this task; a watcher, started once the work has run for
        # WATCH_DISCONNECT_AFTER, cancels it when the client disconnects. Most work ends
        # sooner and never pays for the watcher (a task and a pending receive(): measured
        # in docs/benchmarks.md). The deadline is a timer that cancels the task, what
        # asyncio.timeout does, without its Timeout object (``core.wake.expire_task``).
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deadline: list[Any] = [task, task.cancelling(), False]
        disconnected: list[bool] = []
        watchers: list[asyncio.Task[None]] = []
        timers: list[asyncio.TimerHandle] = []
        if remaining <= WATCH_DISCONNECT_AFTER:
            timers.append(loop.call_at(loop.time() + remaining, expire_task, deadline))
            when = None
        else:
            # One timer instead of two: the deadline's is armed (at the same instant) only
            # when the watcher starts; most work has ended by then.
            when = loop.time() + remaining

        def watch() -> None:
            if when is not None:
                timers.append(loop.call_at(when, expire_task, deadline))
            coro = _cancel_on_disconnect(receive, task, disconnected)
            watchers.append(loop.create_task(coro))

        later = loop.call_later(WATCH_DISCONNECT_AFTER, watch)
        try:
            result = await work
        except BaseException as exc:
            # Each cancellation we made is undone whatever came out (the work may have
            # turned it into another error), and is ours only if no one else cancelled
            # this task too (then it stays cancelled): the deadline's becomes a
            # TimeoutError (504), as asyncio.timeout's would, the disconnect's a
            # ClientDisconnected.
            cancelled = isinstance(exc, asyncio.CancelledError)
            if deadline[2] and task.uncancel() <= deadline[1] and cancelled:
                raise TimeoutError from exc
            if disconnected and task.uncancel() == 0 and cancelled:
                self.cancelled_requests += 1
                raise ClientDisconnected from None
            raise
        finally:
            later.cancel()
            if timers:
                timers[0].cancel()
            if watchers:
                watchers[0].cancel()
        if deadline[2]:  # expired as the work ended: its cancel is not for the caller
            task.uncancel()
        return result

    # -- observation -------------------------------------------------------------------

    def _observe(self, req: Request, status: int, elapsed: float) -> None:
        # Every label is bounded: any method token may arrive, so unknown ones share one
        # series (OpenTelemetry's "_OTHER"); routes are templates; statuses are few.
        method = req.method if req.method in _METHODS else "_OTHER"
        hkey = (method, req.route, str(status))
        hist = self.histograms.get(hkey)
        if hist is None:
            hist = self.histograms[hkey] = Histogram()
        hist.observe(elapsed)
        # The problem code this request answered with (set by responses.problem).
        code = responses.problem_code.get() if status >= 400 else None
        if code is not None:
            responses.problem_code.set(None)
        mode = self.settings.access_log
        if mode != "off" and (
            mode == "all"
            or (
                mode == "errors-and-slow"
                and (status >= 500 or elapsed >= self.settings.slow_request)
            )
            or (mode == "sampled" and self._sample.random() < self.settings.access_log_sample)
        ):
            self._log(req, status, elapsed, code)

    def _log(self, req: Request, status: int, elapsed: float, code: str | None = None) -> None:
        """One access line: a record of logger ``maxage.access`` whose fields the
        formatter (:mod:`maxage.logs`) writes as one JSON object."""
        access_log.info(
            "%s %s %d",
            req.method,
            req.route,
            status,
            extra={
                "method": req.method,
                "route": req.route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": req.request_id,
                "trace_id": trace_id(req.traceparent),
                "cache_source": req.source,
                "code": code,
            },
        )

    def render_metrics(self) -> bytes:
        return exposition.render(self)

    async def _record_status(self) -> None:
        while True:
            with contextlib.suppress(OSError):  # the workers' directory gone at shutdown
                self.status.tick()
            await asyncio.sleep(status.INTERVAL)

    def status_model(self) -> dict[str, Any]:
        """``/status.json``: the recorded minutes, the collections' contracts, the page."""
        self.status.tick()
        contracts = [
            status.CollectionContract(
                s.name,
                s.max_staleness,
                tuple(sorted(m.value for m in s.read_modes)),
                s.write_policy.value,
                s.ttl,
            )
            for s in self.collections.values()
        ]
        model = status.api_model(
            self.status.current(), contracts, version=__version__, started=self.status.started
        )
        model["html"] = status.body_html(model)
        return model


async def _cancel_on_disconnect(
    receive: Receive, task: asyncio.Task[Any], disconnected: list[bool]
) -> None:
    """Cancel ``task`` when the client disconnects, noting it in ``disconnected`` (any
    request body is read before this runs)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    disconnected.append(True)
    task.cancel()


def build_app(service: Service, settings: Settings | None = None, **kwargs: Any) -> App:
    return App(service, settings or Settings(), **kwargs)


__all__ = ["App", "Settings", "build_app"]
