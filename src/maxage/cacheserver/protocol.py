"""The cache server's HTTP/1.1 transport: an ``asyncio.Protocol`` over httptools.

Why not ASGI: measured on the reference machine, a Protocol server on uvloop
with httptools parsing served GET hits at 1.3-1.8x a Go ``net/http`` server,
ASGI on granian at about 0.6x. The price is that this module owns HTTP/1.1
correctness itself. What it does, per connection:

* **Parsing.** Bytes go to ``httptools.HttpRequestParser`` (llhttp). The
  callbacks collect the URL, the few headers the server uses, and the body.
  Any parser error answers ``400 malformed_request`` and closes the
  connection: after a framing error the byte stream cannot be trusted.
  A whole request of the plain shape ``_plain`` matches, at a message
  boundary, is parsed by ``data_received`` itself (the same fields, no
  callbacks); anything else goes to llhttp.
* **Keep-alive.** ``parser.should_keep_alive()`` decides (HTTP/1.1 default on,
  HTTP/1.0 only with ``Connection: keep-alive``); an ``Upgrade``/``CONNECT``
  request is answered (we never switch protocols) and the connection closed.
  A client half-close (EOF) gets every queued answer, then the close. A response that will close the
  connection says ``connection: close``. Idle connections are closed after
  ``keepalive_timeout``.
* **Pipelining.** Requests are answered strictly in order. Synchronous handlers
  (every cache operation) answer inside ``on_message_complete``, so order is
  the parse order. An asynchronous handler (read-through to an upstream) marks
  the connection busy; requests parsed meanwhile wait in a queue and are
  answered after it, in order. The same queue holds requests while the client
  is not reading its answers (transport write back-pressure), so a pipelined
  burst cannot pile responses up in memory. A queue longer than
  ``MAX_PIPELINE`` pauses reading (back-pressure instead of unbounded buffering).
* **Bodies.** ``Content-Length`` and ``chunked`` bodies are both accepted
  (llhttp de-chunks). The body limit depends on the route (``max_value_bytes``
  for PUT, 64 KiB otherwise). A declared length over the limit is refused with
  413 as soon as the headers are parsed; a chunked body is refused as soon as
  it crosses the limit; no byte past the limit is buffered. After a 413 the
  connection is half-closed and further input is read and discarded for a
  short while (lingering close), so the client sees the 413 rather than a reset.
  ``Expect: 100-continue`` gets ``100 Continue`` only when the body is acceptable.
* **Size limits.** URL over ``max_url_bytes`` → 414; header section over
  ``max_header_bytes`` or more than ``MAX_HEADERS`` fields → 431. Bytes of an
  unfinished head are counted on arrival, so a never-ending header line is cut
  off too (memory held is bounded by the limit plus one read buffer); only the
  bytes up to the head's end count, so a head split across reads followed by a
  large body is not mistaken for a large head. A header the server reads that
  must appear once (``Authorization``, ``Content-Type``, ``Content-Length``,
  ``Expect``, ``X-Request-ID``) appearing twice → 400 and close (two
  ``Authorization`` headers could mean different things to a proxy and to
  us); repeated ``If-None-Match`` lines are joined, as HTTP allows.
* **Connections.** At most ``max_connections`` are open; one more is closed
  at once (``maxage_connections_refused_total``). Requests queued on a
  connection hold at most ``MAX_PIPELINE`` requests and ``queued_body_bytes``
  of bodies before reading pauses, so the memory one connection holds is
  bounded by about two values plus its small requests.
* **Slow clients and deadlines.** A once-per-tick sweeper (``TICK`` seconds)
  closes connections whose request has not fully arrived within
  ``request_timeout`` (408), connections that never sent a request within
  ``request_timeout``, idle keep-alive connections, and connections whose
  client stopped reading for longer than ``request_timeout`` (write
  back-pressure pauses reading first). Asynchronous handlers run under the
  per-request deadline and answer ``504 deadline_exceeded`` when it passes.
* **Responses.** Status lines are precomputed; the ``date`` header is refreshed
  once per tick; handlers return ``(status, header_lines, body)`` with header
  lines already encoded, so the hot path is a few byte joins and one write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from email.utils import formatdate
from http import HTTPStatus
from types import MethodType
from typing import Any, Final, TypeAlias, cast

import httptools

from maxage.logs import trace_id

from .problems import problem

log = logging.getLogger("maxage.cacheserver")
_perf_counter: Final = time.perf_counter
_join: Final = b"".join

Result: TypeAlias = tuple[int, bytes, bytes]
Handled: TypeAlias = Result | Coroutine[Any, Any, Result]

TICK: Final = 0.5
MAX_PIPELINE: Final = 64
QUEUED_BODY_BYTES: Final = 1024 * 1024  # queued bodies (beyond one value) that pause reading
MAX_HEADERS: Final = 100
SMALL_BODY_LIMIT: Final = 64 * 1024
_SMALL_LIMIT_DIGITS: Final = len(str(SMALL_BODY_LIMIT))
LINGER_SECONDS: Final = 2.0

_STATUS: Final[dict[int, bytes]] = {
    s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus
}
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE: Final = b"connection: close\r\n"
_SERVER: Final = b"server: maxage\r\n"

# Headers that must not repeat (a repeat is 400): lower-case name → attribute.
_SINGLE: Final = frozenset(
    {"content_type", "authorization", "request_id", "content_length", "expect"}
)

# Header names the server reads (lower-case) → Request attribute.
_WANTED: Final[dict[bytes, str]] = {
    b"content-type": "content_type",
    b"authorization": "authorization",
    b"if-none-match": "if_none_match",
    b"x-request-id": "request_id",
    b"content-length": "content_length",
    b"expect": "expect",
    b"traceparent": "traceparent",
    b"x-request-timeout": "request_timeout",
}
# The same lookup without ``bytes.lower()`` for the spellings clients send (``""``: a
# header the server ignores); any other spelling falls back to ``_WANTED``.
_WANTED_AS_SENT: Final[dict[bytes, str]] = {
    **_WANTED,
    **{name.title(): attr for name, attr in _WANTED.items()},
    b"X-Request-ID": "request_id",
    **dict.fromkeys((b"Host", b"host", b"User-Agent", b"user-agent", b"Accept", b"accept"), ""),
}
# The plain request ``data_received`` parses itself (the shape wrk, curl and most
# clients send): origin-form target of visible ASCII, HTTP/1.1, then at most ``Host``,
# ``Content-Type`` and ``Content-Length``, in that order or with ``Content-Type`` last
# (as wrk sends them; twice is llhttp's path's 400), spelt so, one space after the
# colon, values of visible ASCII and inner spaces (Content-Type not starting with a
# space, Content-Length digits only), and the whole body in the same read. llhttp
# accepts every such request with the same meaning (keep-alive, no upgrade, the body
# by Content-Length); anything else goes to llhttp. No repeated group (sre's repeat
# machinery cost ~8,000 instructions a request when tried); ``(?:X|)`` rather than
# ``(?:X)?`` and possessive ``*+`` (no character class can match the byte that follows
# it, so neither changes what matches): 4,200 instead of 6,300 instructions (callgrind).
# ``tests/cacheserver/test_plain_parse.py`` checks both paths answer alike.
_plain: Final = re.compile(
    rb"(GET|PUT|HEAD|DELETE|POST) (/[!-~]*+) HTTP/1\.1\r\n"
    rb"(?:Host: [ -~]*+\r\n|)"
    rb"(?:Content-Type: ([!-~][ -~]*+)\r\n|)"
    rb"(?:Content-Length: ([0-9]{1,12}+)\r\n|)"
    rb"(?:Content-Type: ([!-~][ -~]*+)\r\n|)"
    rb"\r\n"
).match
# ``content-length: N`` plus the blank line, for the small bodies of the hot path
# (a list index instead of formatting an int per response).
_CONTENT_LENGTH_END: Final = tuple(b"content-length: %d\r\n\r\n" % n for n in range(4096))
# --access-log: (lowest status logged, shortest duration logged, sample rate).
ACCESS_LOG_MODES: Final[dict[str, tuple[int, float, float]]] = {
    "all": (0, 0.0, 1.0),
    "sampled": (0, 0.0, 0.01),
    "errors-and-slow": (500, 1.0, 1.0),  # status >= 500 or slower than 1 s
    "off": (1000, float("inf"), 0.0),
}
access_log = logging.getLogger("maxage.cacheserver.access")


class Limits:
    """Transport limits (bytes and seconds)."""

    __slots__ = (
        "header_count",
        "keepalive_timeout",
        "max_connections",
        "max_header_bytes",
        "max_url_bytes",
        "max_value_bytes",
        "request_timeout",
    )

    def __init__(
        self,
        *,
        max_value_bytes: int,
        request_timeout: float,
        max_url_bytes: int = 8192,
        max_header_bytes: int = 16384,
        keepalive_timeout: float = 30.0,
        max_connections: int = 4096,
    ) -> None:
        self.max_value_bytes = max_value_bytes
        self.request_timeout = request_timeout
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes
        self.keepalive_timeout = keepalive_timeout
        self.max_connections = max_connections


class CacheRequest:
    """One parsed request. Header fields hold the raw bytes or ``None``."""

    __slots__ = (
        "authorization",
        "body",
        "content_length",
        "content_type",
        "deadline",
        "error",
        "expect",
        "if_none_match",
        "keep_alive",
        "method",
        "request_id",
        "request_timeout",
        "route",
        "traceparent",
        "url",
    )

    def __init__(self) -> None:
        self.method: bytes = b""
        self.url: bytes = b""
        self.content_type: bytes | None = None
        self.authorization: bytes | None = None
        self.if_none_match: bytes | None = None
        self.request_id: bytes | None = None
        self.content_length: bytes | None = None
        self.expect: bytes | None = None
        self.traceparent: bytes | None = None
        self.request_timeout: bytes | None = None  # X-Request-Timeout: the caller's deadline
        self.deadline = 0.0  # time.perf_counter() by which an async answer must be written
        self.body: bytes = b""
        self.keep_alive: bool = True
        self.route: str = "other"
        # A transport-level error to answer instead of dispatching (then close).
        self.error: Result | None = None


Handler: TypeAlias = Callable[[CacheRequest], Handled]


class _NewRequest(CacheRequest):
    """A ``CacheRequest`` made without a Python ``__init__`` (C-level ``object.__init__``):
    ``on_message_begin`` sets every field itself, ~540 instructions less per request than
    ``CacheRequest()`` (callgrind)."""

    __slots__ = ()
    __init__ = object.__init__


class _Reject(Exception):
    """Raised inside a parser callback to stop parsing with an error response."""

    def __init__(self, result: Result, linger: bool = False) -> None:
        super().__init__(result[0])
        self.result = result
        self.linger = linger


class ServerState:
    """What all connections share: the handler, limits, open connections, the tick."""

    __slots__ = (
        "_sample",
        "_sweeper",
        "connections",
        "date_header",
        "draining",
        "handler",
        "limits",
        "log_slow",
        "log_status",
        "loop",
        "metrics",
        "now",
        "on_tick",
        "put_limit_digits",
    )

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        metrics: Any,
        loop: asyncio.AbstractEventLoop,
        on_tick: Callable[[], object] | None = None,
        access_log: str = "errors-and-slow",
    ) -> None:
        # An object's own ``__call__``, bound once: calling it skips the type's
        # ``__call__`` slot look-up on every request.
        call = getattr(handler, "__call__", None)  # noqa: B004 - not a callable() test
        self.handler: Handler = call if isinstance(call, MethodType) else handler
        # _write logs a request when status >= log_status or duration >= log_slow (two
        # comparisons on the hot path); access() then applies the sample rate.
        self.log_status, self.log_slow, self._sample = ACCESS_LOG_MODES[access_log]
        self.on_tick = on_tick
        self.limits = limits
        self.put_limit_digits = len(str(limits.max_value_bytes))
        self.metrics = metrics
        self.loop = loop
        self.connections: set[HttpProtocol] = set()
        self.draining = False
        self.now = loop.time()
        self.date_header = b""
        self._refresh_date()
        self._sweeper: asyncio.TimerHandle | None = None

    def _refresh_date(self) -> None:
        self.date_header = b"date: " + formatdate(usegmt=True).encode() + b"\r\n" + _SERVER

    def start(self) -> None:
        self._sweeper = self.loop.call_later(TICK, self._sweep)

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _sweep(self) -> None:
        self.now = now = self.loop.time()
        self._refresh_date()
        for conn in list(self.connections):
            conn.check_timeouts(now)
        if self.on_tick is not None:
            try:
                self.on_tick()
            except Exception:  # pragma: no cover - a housekeeping bug must not stop the sweeper
                log.exception("tick hook failed")
        self._sweeper = self.loop.call_later(TICK, self._sweep)

    def drain(self) -> None:
        """Stop keep-alive: idle connections close now, busy ones after their response."""
        self.draining = True
        for conn in list(self.connections):
            conn.close_when_idle()

    def factory(self) -> HttpProtocol:
        return HttpProtocol(self)

    def access(self, req: CacheRequest, status: int, elapsed: float, body: bytes) -> None:
        """One access-log line (see :mod:`maxage.logs`), like the API server's."""
        if self._sample < 1.0 and random.random() >= self._sample:
            return
        code = None
        if status >= 400 and body[:1] == b"{":
            try:
                doc = json.loads(body)
                code = doc.get("code") if isinstance(doc, dict) else None
            except ValueError:
                code = None
        rid = req.request_id
        method = req.method.decode("latin-1")
        access_log.info(
            "%s %s %d",
            method,
            req.route,
            status,
            extra={
                "method": method,
                "route": req.route,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": rid.decode("latin-1") if rid and valid_request_id(rid) else None,
                "trace_id": trace_id(req.traceparent),
                "code": code if isinstance(code, str) else None,
            },
        )


class HttpProtocol(asyncio.Protocol):
    """One client connection. See the module docstring for the rules it keeps."""

    __slots__ = (
        "body_limit",
        "body_parts",
        "body_size",
        "busy",
        "closing",
        "discarding",
        "fast",
        "head_bytes",
        "header_bytes",
        "header_count",
        "in_head",
        "last_active",
        "max_header_bytes",
        "max_url_bytes",
        "msg_seq",
        "msg_started",
        "parser",
        "paused_by_queue",
        "paused_writing",
        "paused_writing_since",
        "put_limit",
        "put_limit_digits",
        "queue",
        "queued_bytes",
        "req",
        "served",
        "state",
        "task",
        "transport",
    )

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.req = CacheRequest()
        self.body_parts: list[bytes] | None = None
        self.body_size = 0
        limits = state.limits
        self.max_url_bytes = limits.max_url_bytes
        self.max_header_bytes = limits.max_header_bytes
        self.body_limit = SMALL_BODY_LIMIT
        self.put_limit = limits.max_value_bytes
        self.put_limit_digits = state.put_limit_digits
        self.fast = True  # data_received parses plain requests itself (False: all to llhttp)
        self.header_bytes = 0
        self.header_count = 0
        self.head_bytes = 0
        self.in_head = False
        self.msg_seq = 0
        self.msg_started: float | None = None
        self.last_active = state.now
        self.served = False
        self.queue: deque[CacheRequest] = deque()
        self.queued_bytes = 0
        self.busy = False
        self.closing = False
        self.discarding = False
        self.paused_by_queue = False
        self.paused_writing = False
        self.paused_writing_since = 0.0
        self.task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport implements the Transport interface without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        m = self.state.metrics
        if len(self.state.connections) >= self.state.limits.max_connections:
            m.connections_refused += 1
            self.closing = True
            self.discarding = True
            self.transport.abort()  # no goodbye: this is the cheap way out under a flood
            return
        self.state.connections.add(self)
        m.connections_open += 1
        m.connections_total += 1
        if self.state.draining:
            self.closing = True
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.state.connections:
            self.state.connections.discard(self)
            self.state.metrics.connections_open -= 1
        self.closing = True
        self.discarding = True
        self.queue.clear()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        # Break the protocol <-> parser reference cycle (the parser holds our bound
        # callbacks), so a closed connection is freed by reference counting at once
        # instead of waiting for (and feeding) the cyclic garbage collector.
        self.parser = _DEAD_PARSER

    def pause_writing(self) -> None:
        self.paused_writing = True
        self.paused_writing_since = self.state.now
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused_writing = False
        self._drain_queue()
        self._update_reading()

    def data_received(self, data: bytes) -> None:
        if self.discarding or self.closing:
            return
        if self.msg_started is None and self.fast:
            # At a message boundary: a whole request of the plain shape ``_plain``
            # matches is parsed here, without llhttp's seven Python callbacks; the first
            # one that is not goes to llhttp with the rest of the read.
            pos = 0
            while True:
                m = _plain(data, pos)
                if m is None:
                    break
                method, url, ct, cl, ct_last = m.groups()
                if ct_last is not None:
                    if ct is not None:
                        break  # a repeated Content-Type: llhttp's path answers 400
                    ct = ct_last
                end = m.end()
                if len(url) > self.max_url_bytes or end - pos - len(url) > self.max_header_bytes:
                    break
                if cl is None:
                    stop = end
                else:
                    stop = end + int(cl)
                    if stop - end > (self.put_limit if method == b"PUT" else SMALL_BODY_LIMIT):
                        break
                    if stop > len(data):
                        break
                # on_message_begin .. on_message_complete, for this shape.
                self.msg_seq += 1
                self.req = req = _NewRequest()
                req.method = method
                req.url = url
                req.body = data[end:stop] if stop > end else b""
                req.content_type = ct
                req.content_length = cl
                req.authorization = req.if_none_match = req.request_id = None
                req.expect = req.traceparent = req.request_timeout = None
                req.deadline = 0.0
                req.keep_alive = True
                req.route = "other"
                req.error = None
                self._complete(req)
                if stop == len(data):
                    return
                pos = stop
            if pos:
                data = data[pos:]
        if not self.in_head:
            # The common case: a read that starts at a message boundary or in a body
            # (``_feed``, inlined: one Python frame less per request).
            try:
                self.parser.feed_data(data)
            except _Reject as rej:  # pragma: no cover - httptools wraps callback errors
                self._fail(rej.result, rej.linger)
            except httptools.HttpParserUpgrade:
                self.close_when_idle()  # see _feed
            except httptools.HttpParserError as exc:
                self._parse_failed(exc)
            return
        while self.in_head:
            # An unfinished head: count its bytes on arrival (a never-ending header
            # line), but only those up to the limit; what follows the head in the
            # same read (a body, pipelined requests) is not head.
            room = self.max_header_bytes + self.max_url_bytes - self.head_bytes
            if len(data) <= room:
                self.head_bytes += len(data)
                break
            seq = self.msg_seq
            self.head_bytes += room
            self._feed(data[:room])
            if self.discarding or self.closing:
                return
            if self.in_head and self.msg_seq == seq:
                self._fail(
                    problem("headers_too_large", "request head exceeds the size limit"), False
                )
                return
            data = data[room:]  # the head ended within the limit: go on with the rest
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except _Reject as rej:  # pragma: no cover - httptools wraps callback errors
            self._fail(rej.result, rej.linger)
        except httptools.HttpParserUpgrade:
            # An Upgrade/CONNECT request was parsed; we never switch protocols.
            # Answer what was parsed, then close.
            self.close_when_idle()
        except httptools.HttpParserError as exc:
            self._parse_failed(exc)

    def _parse_failed(self, exc: httptools.HttpParserError) -> None:
        cause = exc.__context__
        if isinstance(cause, _Reject):
            result, linger = cause.result, cause.linger
        else:
            self.state.metrics.parse_errors += 1
            result, linger = problem("malformed_request", _parser_detail(exc)), False
        # Drop the references: the exceptions' tracebacks hold the frames that
        # raised them, and a frame <-> exception cycle would wait for the cyclic GC.
        cause = exc = None  # type: ignore[assignment]
        self._fail(result, linger)

    def eof_received(self) -> bool | None:
        # Client half-closed: answer what is queued, then close.
        if not self.busy and not self.queue:
            return None  # transport closes itself
        self.closing_after_queue()
        return True

    # -- httptools callbacks ----------------------------------------------

    def on_message_begin(self) -> None:
        self.msg_seq += 1
        # CacheRequest.__init__, inlined (keep the two alike).
        self.req = req = _NewRequest()
        req.method = req.url = req.body = b""
        req.content_type = req.authorization = req.if_none_match = req.request_id = None
        req.content_length = req.expect = req.traceparent = req.request_timeout = None
        req.deadline = 0.0
        req.keep_alive = True
        req.route = "other"
        req.error = None
        self.body_parts = None
        self.body_size = 0
        self.header_bytes = 0
        self.header_count = 0
        self.head_bytes = 0
        self.in_head = True
        self.msg_started = self.state.now

    def on_url(self, url: bytes) -> None:
        req = self.req
        req.url += url
        if len(req.url) > self.max_url_bytes:
            raise _Reject(problem("url_too_long", "request URL exceeds the size limit"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        self.header_count += 1
        if self.header_bytes > self.max_header_bytes or self.header_count > MAX_HEADERS:
            raise _Reject(problem("headers_too_large", "request headers exceed the size limit"))
        # The headers wrk, curl and the client send on every request, compared before
        # the dict look-up (a bytes compare rejects on length first; the look-up hashes a
        # new bytes object every time): ~400 instructions less per header (callgrind).
        if name == b"Host":
            return
        attr: str | None
        if name == b"Content-Type":
            attr = "content_type"
        elif name == b"Content-Length":
            attr = "content_length"
        else:
            attr = _WANTED_AS_SENT.get(name)
            if attr is None:
                attr = _WANTED.get(name.lower())
        if attr:
            req = self.req
            # The headers of every PUT first, without getattr/setattr (~0.2 µs each).
            if attr == "content_type":
                if req.content_type is None:
                    req.content_type = value
                    return
            elif attr == "content_length" and req.content_length is None:
                req.content_length = value
                return
            prev = getattr(req, attr)
            if prev is None:
                setattr(req, attr, value)
            elif attr in _SINGLE:
                if req.error is None:
                    header = name.decode("latin-1")
                    req.error = problem(
                        "malformed_request", f"the {header} header must not be repeated"
                    )
            else:  # If-None-Match: a list header, lines combine
                setattr(req, attr, prev + b", " + value)

    def on_headers_complete(self) -> None:
        self.in_head = False
        req = self.req
        method = self.parser.get_method()
        req.method = method
        if method == b"PUT":
            limit = self.put_limit
            digits = self.put_limit_digits
        else:
            limit = SMALL_BODY_LIMIT
            digits = _SMALL_LIMIT_DIGITS
        self.body_limit = limit
        cl = req.content_length
        # A length with fewer digits than the limit cannot exceed it (no int() for
        # those; llhttp has checked that the value is digits).
        if cl is not None and len(cl) >= digits:
            try:
                n = int(cl)
            except ValueError:
                n = -1  # llhttp validates; unreachable in practice
            if n > limit:
                code = "value_too_large" if method == b"PUT" else "body_too_large"
                raise _Reject(
                    problem(code, f"body of {n} bytes exceeds the limit of {limit} bytes"),
                    linger=True,
                )
        if req.expect is not None and req.expect.lower() == b"100-continue":
            assert self.transport is not None
            if not self.busy and not self.queue:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        n = len(body)
        size = self.body_size + n
        if size > self.body_limit:
            code = "value_too_large" if self.req.method == b"PUT" else "body_too_large"
            raise _Reject(
                problem(code, f"body exceeds the limit of {self.body_limit} bytes"),
                linger=True,
            )
        self.body_size = size
        if size == n:  # the first chunk (or all before it were empty): no list, no join
            self.req.body = body
            return
        parts = self.body_parts
        if parts is None:
            self.body_parts = parts = [self.req.body]
        parts.append(body)

    def on_message_complete(self) -> None:
        req = self.req
        parts = self.body_parts
        if parts is not None:
            req.body = b"".join(parts)
        parser = self.parser
        # An Upgrade/CONNECT request is answered normally, then the connection closes.
        req.keep_alive = parser.should_keep_alive() and not parser.should_upgrade()
        self.msg_started = None
        self._complete(req)

    def _complete(self, req: CacheRequest) -> None:
        """A whole request: answer it now, or queue it behind what must go first."""
        if self.busy or self.queue or self.paused_writing:
            # Behind an async answer, or the client is not reading: answer later,
            # so pipelined requests cannot pile responses up in the write buffer.
            self.queue.append(req)
            self.queued_bytes += len(req.body)
            if len(self.queue) >= MAX_PIPELINE or self.queued_bytes > QUEUED_BODY_BYTES:
                self.paused_by_queue = True
                self._update_reading()
        elif req.error is None:
            # _dispatch, inlined for the common case (one Python frame less).
            t0 = _perf_counter()
            try:
                result = self.state.handler(req)
            except Exception:  # a handler bug must not kill the connection loop
                log.exception("handler failed for %r", req.url[:200])
                result = problem("internal_error", "unexpected server error")
            if type(result) is tuple:
                self._write(req, result, t0)
            else:
                self._start_async(req, result, t0)
        else:
            self._dispatch(req)

    # -- dispatch and responses ---------------------------------------------

    def _dispatch(self, req: CacheRequest) -> None:
        if req.error is not None:
            self._write(req, req.error, _perf_counter())
            return
        t0 = _perf_counter()
        try:
            result = self.state.handler(req)
        except Exception:  # a handler bug must not kill the connection loop
            log.exception("handler failed for %r", req.url[:200])
            result = problem("internal_error", "unexpected server error")
        if type(result) is tuple:
            self._write(req, result, t0)
        else:
            self._start_async(req, result, t0)

    def _start_async(self, req: CacheRequest, result: Handled, t0: float) -> None:
        assert not isinstance(result, tuple)
        self.busy = True
        self.task = self.state.loop.create_task(self._run_async(req, result, t0))

    async def _run_async(self, req: CacheRequest, coro: Awaitable[Result], t0: float) -> None:
        # The deadline: --request-timeout, or the caller's X-Request-Timeout when shorter
        # (no work past the caller's deadline; forwarded to an upstream as what remains).
        limit = self.state.limits.request_timeout
        if req.request_timeout is not None:
            asked = _seconds(req.request_timeout)
            if 0 < asked < limit:
                limit = asked
        req.deadline = t0 + limit  # set before the coroutine's body first runs
        try:
            async with asyncio.timeout(limit):
                result = await coro
        except TimeoutError:
            result = problem(
                "deadline_exceeded", f"no answer within the request deadline of {limit:g}s"
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("handler failed for %r", req.url[:200])
            result = problem("internal_error", "unexpected server error")
        self.task = None
        self.busy = False
        if self.closing and self.transport is not None and self.transport.is_closing():
            return
        self._write(req, result, t0)
        self._drain_queue()

    def _drain_queue(self) -> None:
        """Answer queued requests in order while nothing blocks (async work, back-pressure)."""
        queue = self.queue
        while queue and not self.busy and not self.closing and not self.paused_writing:
            req = queue.popleft()
            self.queued_bytes -= len(req.body)
            self._dispatch(req)
        if not queue:
            self.queued_bytes = 0
        if (
            self.paused_by_queue
            and len(queue) < MAX_PIPELINE // 2
            and self.queued_bytes <= QUEUED_BODY_BYTES // 2
        ):
            self.paused_by_queue = False
            self._update_reading()
        self._maybe_finish()

    def _write(self, req: CacheRequest, result: Result, t0: float) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status, headers, body = result
        state = self.state
        keep = req.keep_alive and not self.closing and req.error is None and not state.draining
        rid = req.request_id
        if (
            keep
            and rid is None
            and (status == 200 or status == 201)
            and len(body) < 65536
            and req.method != b"HEAD"
        ):
            # The hot path (GET hit, PUT stored): one join (one allocation and copy,
            # where each + makes its own), one write.
            n = len(body)
            transport.write(
                _join(
                    (
                        _STATUS[status],
                        state.date_header,
                        headers,
                        _CONTENT_LENGTH_END[n] if n < 4096 else b"content-length: %d\r\n\r\n" % n,
                        body,
                    )
                )
            )
        else:
            parts = [_STATUS.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status, state.date_header]
            if headers:
                parts.append(headers)
            if rid is not None and valid_request_id(rid):
                parts.append(b"x-request-id: " + rid + b"\r\n")
            has_body = status >= 200 and status != 304 and status != 204
            if has_body:
                parts.append(b"content-length: %d\r\n" % len(body))
            if not keep:
                parts.append(_CLOSE)
            parts.append(b"\r\n")
            if has_body and req.method != b"HEAD":
                if len(body) < 65536:
                    parts.append(body)
                    transport.write(b"".join(parts))
                else:
                    transport.write(b"".join(parts))
                    transport.write(body)
            else:
                transport.write(b"".join(parts))
        self.last_active = state.now
        self.served = True
        elapsed = _perf_counter() - t0
        metrics = state.metrics
        h = metrics.latency.get((req.route, status))
        if h is not None and elapsed <= metrics.first_bound:
            # Metrics.observe_request, inlined for the common case: a histogram that
            # exists and the first bucket (no call, no bisect).
            h.counts[0] += 1
            h.sum += elapsed
            h.count += 1
        else:
            metrics.observe_request(req.route, status, elapsed)
        if status >= state.log_status or elapsed >= state.log_slow:
            state.access(req, status, elapsed, body)
        if not keep:
            self.closing = True
            self.queue.clear()
            if req.error is not None and status == 413:
                self._linger(transport)  # see _fail
            else:
                transport.close()

    def _linger(self, transport: asyncio.Transport) -> None:
        self.discarding = True
        if self.paused_by_queue or self.paused_writing:
            transport.close()
            return
        try:
            if transport.can_write_eof():
                transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self.state.loop.call_later(LINGER_SECONDS, transport.close)

    def _fail(self, result: Result, linger: bool) -> None:
        """Stop parsing; answer ``result`` after anything already queued, then close.

        ``linger`` (413 only) half-closes and discards input for a while instead of
        closing at once, so the client reads the answer rather than a reset.
        """
        req = CacheRequest()
        req.method = self.req.method
        req.keep_alive = False
        req.error = result
        self.msg_started = None
        self.in_head = False
        self.discarding = True  # ignore any further input
        if self.busy or self.queue or self.paused_writing:
            self.queue.append(req)
        else:
            self._dispatch(req)

    def _update_reading(self) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        if self.paused_writing or self.paused_by_queue:
            t.pause_reading()
        else:
            t.resume_reading()

    def close_when_idle(self) -> None:
        if not self.busy and not self.queue and self.msg_started is None:
            self.closing = True
            if self.transport is not None:
                self.transport.close()
        else:
            self.closing_after_queue()

    def closing_after_queue(self) -> None:
        """Answer what is in flight and queued (in order), then close."""
        self.discarding = True
        if self.queue:
            self.queue[-1].keep_alive = False
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        t = self.transport
        if (
            self.discarding
            and not self.busy
            and not self.queue
            and t is not None
            and not t.is_closing()
            and not self.closing
        ):
            self.closing = True
            t.close()

    def check_timeouts(self, now: float) -> None:
        t = self.transport
        if t is None or t.is_closing():
            return
        limits = self.state.limits
        if self.paused_writing and now - self.paused_writing_since > limits.request_timeout:
            t.abort()  # the client stopped reading its responses
            return
        if self.busy or self.queue:
            return
        if self.msg_started is not None:
            if now - self.msg_started > limits.request_timeout:
                self._fail(
                    problem(
                        "request_timeout",
                        f"request not received within {limits.request_timeout}s",
                    ),
                    False,
                )
        elif now - self.last_active > (
            limits.keepalive_timeout if self.served else limits.request_timeout
        ):
            # Idle keep-alive, or a connection that never sent a byte of a request
            # (held only for request_timeout: cheap slowloris defence).
            self.closing = True
            t.close()


class _NoCallbacks:
    pass


_DEAD_PARSER: Final = httptools.HttpRequestParser(_NoCallbacks())


def _parser_detail(exc: Exception) -> str:
    msg = str(exc)
    if not msg or len(msg) > 200 or not msg.isprintable():
        return "the request could not be parsed as HTTP/1.1"
    return f"the request could not be parsed as HTTP/1.1: {msg}"


_RID_OK: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")


def _seconds(value: bytes) -> float:
    """``X-Request-Timeout`` seconds; anything unusable is 0 (ignored)."""
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if 0 < seconds < 1e6 else 0.0


def valid_request_id(rid: bytes) -> bool:
    return 0 < len(rid) <= 128 and all(c in _RID_OK for c in rid)
