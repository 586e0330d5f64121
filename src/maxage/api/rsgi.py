"""granian's RSGI interface in front of the ASGI app: what ``maxage serve`` runs.

Invariant: every request gets the answer :class:`maxage.api.app.App` would give it
over ASGI -- the same status, headers, body, metrics and log lines. The hot path (a
bounded ``GET`` answered from L1) is the app's own (``hot_answer`` builds the answer for
both interfaces, in RSGI's str spelling here; ``hot_served`` counts it) and is sent here
in one call, ``proto.response_bytes``, without the ASGI scope and message dicts granian
would otherwise build and parse for every request (docs/benchmarks.md: a raw RSGI app
costs less CPU per request than the same raw app on ASGI). Every other request is
bridged to the app's ASGI general path.

One difference in what granian hands over: RSGI's header list leaves out any field
whose value is not visible ASCII (its name stays in ``keys()``). A request whose left-out
field is one maxage reads and whose value could change the answer is refused with a 400
naming it, never served as if the field were absent; one whose value the app ignores or
replaces when it is not ASCII (``_NOT_VISIBLE_IS_IGNORED``) is served as on ASGI, and
others are ignored, as the app ignores them on ASGI.

Two more. RSGI's body iterator hands over a body that broke off like one that ended
(:class:`_Bridge` tells them apart, so the part that arrived is never taken for the
body; an HTTP/1 chunked body with trailer fields must announce them with ``Trailer``,
else it reads as broken off). And RSGI cannot cut a response it has begun: when the app
fails after a stream began (ASGI: granian drops the connection), the stream just ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from maxage.api.app import UNUSUAL_HEADERS, App, accepts_json
from maxage.api.http import READ_HEADERS
from maxage.api.problems import PROBLEM_CONTENT_TYPE, render_problem
from maxage.api.types import HTTPProblem

log = logging.getLogger("maxage.api")

_UNUSUAL = frozenset(name.decode() for name in UNUSUAL_HEADERS)
_READ = frozenset(name.decode() for name in READ_HEADERS)
# Fields maxage reads whose value, when not visible ASCII, the app on ASGI ignores or
# replaces whatever it is: an unsafe request id is replaced, a trace context it cannot
# parse starts a new trace, a timeout or event id it cannot parse is ignored, credentials
# that are no ASCII bearer token are none. RSGI hands them over as one such value
# (_NOT_VISIBLE) instead of refusing the request. Any other field maxage reads could
# change the answer (If-Match, If-None-Match, Idempotency-Key, Accept, Content-Type, ...):
# refused with a 400 naming it.
_NOT_VISIBLE_IS_IGNORED = frozenset(
    {"x-request-id", "traceparent", "x-request-timeout", "last-event-id", "authorization"}
)
_NOT_VISIBLE = b"\x80"
_DISCONNECT = {"type": "http.disconnect"}
_NO_BODY = frozenset({204, 304})
_CONTENT_LENGTH = b"content-length"
_LAST_CHUNK = {"type": "http.request", "body": b"", "more_body": False}
_EMPTY_IS_CUT, _NO_CUT_SIGN = -1, -2  # _cut_detector's answers other than a length
_PROBLEM = PROBLEM_CONTENT_TYPE.decode()
_BROKEN = (
    "the chunked request body broke off (or carried trailer fields without announcing "
    "them in a Trailer header field); nothing was done"
)


class Headers(Protocol):
    def keys(self) -> list[str]: ...
    def __contains__(self, name: str) -> bool: ...
    def __len__(self) -> int: ...  # how many distinct names, readable or not
    def items(self) -> list[tuple[str, str]]: ...


class Scope(Protocol):
    """The fields of granian's RSGI scope this module reads."""

    proto: str
    http_version: str
    method: str
    path: str
    query_string: str
    client: str
    scheme: str

    @property
    def headers(self) -> Headers: ...


class Stream(Protocol):
    async def send_bytes(self, data: bytes) -> None: ...


class Protocol_(Protocol):
    """granian's RSGI HTTP protocol object (the calls this module makes)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...
    async def client_disconnect(self) -> None: ...
    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None: ...
    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Stream: ...


class RSGIApp:
    """The RSGI application: ``__rsgi__`` per request, ``__rsgi_init__``/``__rsgi_del__``
    run the app's start-up and shut-down on the worker's loop (ASGI's lifespan)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_until_complete(self.app.startup())
        except Exception:
            # As granian does when an ASGI lifespan start-up fails: the worker exits 1.
            log.exception("maxage: start-up failed")
            sys.exit(1)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.run_until_complete(self.app.shutdown())

    async def __rsgi__(self, scope: Scope, proto: Protocol_) -> None:
        if scope.proto != "http":
            return
        started = time.perf_counter()
        app = self.app
        headers = scope.headers  # granian copies the request's header map on every read
        items = headers.items()
        fields = dict(items)
        # All fields readable and none repeated (len(headers): distinct names, readable or
        # not): the hot path may answer (else the general path reads every field as ASGI
        # would, and refuses unreadable ones).
        plain = len(fields) == len(items) == len(headers)
        rid = app.request_id(fields.get("x-request-id"), app.rsgi_fields)
        authorization = fields.get("authorization")
        auth = None if authorization is None else authorization.encode()
        path = scope.path
        shedder = app.shedder
        if app.in_flight >= shedder.full_at and await app.refused(path):  # shedder.full()
            await app.shed(path, rid.encode(), _Bridge(proto).send, started)
            return
        accept = fields.get("accept")
        unusual = (
            not plain
            or not _UNUSUAL.isdisjoint(fields)
            or (accept is not None and not accepts_json(accept.encode()))
        )
        answer = app.hot_answer(
            app.rsgi_fields, scope.method, path, scope.query_string, unusual, auth, rid
        )
        if type(answer) is tuple:
            hot, response_headers, body = answer
            try:
                proto.response_bytes(200, response_headers, body)
            finally:
                # Sent in one synchronous call: nothing else ran while this request was
                # in progress, so it is not counted in in_flight (which App.finished
                # undoes); the slot it held, if it was let in from the shedder's queue,
                # goes to the next, even if the send failed.
                if shedder.waiting:
                    shedder.release()
            app.hot_served(hot, path, rid, started)
            return
        refusal = None
        asgi_headers = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in items]
        if not plain:
            unreadable = _READ.intersection(headers.keys()).difference(fields)
            refused = sorted(unreadable.difference(_NOT_VISIBLE_IS_IGNORED))
            if refused:
                name = "-".join(part.capitalize() for part in refused[0].split("-"))
                refusal = HTTPProblem(
                    "invalid_parameter",
                    f"the {name} header's value is not visible ASCII",
                    parameter=name,
                )
            # The app ignores or replaces any such value of these, as it would on ASGI.
            asgi_headers.extend((n.encode(), _NOT_VISIBLE) for n in sorted(unreadable))
        asgi_scope: dict[str, Any] = {
            "type": "http",
            "http_version": scope.http_version,
            "method": scope.method,
            "scheme": scope.scheme,
            "path": path,
            "query_string": scope.query_string.encode(),
            "headers": asgi_headers,
            "client": _address(scope.client),
        }
        cut = _cut_detector(scope.http_version, fields, "trailer" in headers)
        bridge = _Bridge(proto, cut)
        await app.general(
            asgi_scope, bridge.receive, bridge.send, rid.encode(), auth, answer, started, refusal
        )
        if bridge.broken and not bridge.started:
            # The app took the body that broke off for a client gone (499, nothing sent).
            # It may still be there (an unannounced trailer section reads the same): it
            # gets a problem, not granian's empty 500.
            status, body = render_problem("bad_request", _BROKEN, path, rid)
            proto.response_bytes(
                status,
                [
                    ("x-request-id", rid),
                    ("content-type", _PROBLEM),
                    ("content-length", str(len(body))),
                    ("connection", "close"),
                ],
                body,
            )


def _cut_detector(version: str, fields: dict[str, str], trailer: bool) -> int:
    """How :meth:`_Bridge.receive` tells a body that broke off from one that ended: the
    declared ``Content-Length`` (>= 0: fewer bytes then the end is a cut), else
    ``_EMPTY_IS_CUT`` on HTTP/1 without ``Trailer`` (an empty chunk before the end is a cut), else
    ``_NO_CUT_SIGN`` (HTTP/2 ends a body with an empty DATA frame: no sign to read)."""
    declared = fields.get("content-length")
    if declared is not None and declared.isdigit():
        return int(declared)
    if version.startswith("1") and not trailer:
        return _EMPTY_IS_CUT
    return _NO_CUT_SIGN


def _address(text: str) -> tuple[str, int] | None:
    """``"127.0.0.1:5000"`` or ``"[::1]:5000"`` as ASGI's ``(host, port)``."""
    host, _, port = text.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class _Bridge:
    """ASGI ``receive`` and ``send`` over one RSGI request: the body as it arrives, then
    ``http.disconnect`` when the client goes; the response in one call, or streamed when
    its length is not declared or the app sends ``more_body``.

    granian's body iterator yields an empty chunk at the end of the body and then stops;
    a body that broke off (the client went away, a malformed chunk) or a trailer section
    is an empty chunk too, but followed by another. ``cut`` (:func:`_cut_detector`) says
    how a cut shows: short of the declared length, or (HTTP/1 without ``Trailer``) an
    empty chunk not followed by the end. A cut is ``http.disconnect``, as on ASGI: the
    part that arrived is never the body."""

    __slots__ = ("_body", "_closed", "_cut", "_done", "_headers", "_proto", "_received",
                 "_status", "_stream", "broken", "started")  # fmt: skip

    def __init__(self, proto: Protocol_, cut: int = _NO_CUT_SIGN) -> None:
        self._proto = proto
        self._cut = cut
        self._received = 0
        self._body: AsyncIterator[bytes] | None = None
        self._status = 500
        self._headers: list[tuple[str, str]] = []
        self._stream: Stream | None = None
        self._closed = False
        self.started = False  # http.response.start seen
        self.broken = False  # an HTTP/1 chunked body broke off (receive said http.disconnect)
        self._done = False  # the response is complete (or ended early): send ignores the rest

    async def receive(self) -> dict[str, Any]:
        if not self._closed:
            if self._body is None:
                self._body = aiter(self._proto)
            try:
                chunk = await anext(self._body)
                if not chunk and self._cut == _EMPTY_IS_CUT:
                    await anext(self._body)  # the end raises StopAsyncIteration
                    self._closed = self.broken = True
                    return _DISCONNECT  # anything else: the body broke off
            except StopAsyncIteration:
                self._closed = True
                if self._cut >= 0 and self._received < self._cut:
                    return _DISCONNECT  # short of its declared length: the client went
                return _LAST_CHUNK
            except Exception:  # the client went away mid-body
                self._closed = True
                return _DISCONNECT
            self._received += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": True}
        await self._proto.client_disconnect()
        return _DISCONNECT

    async def send(self, message: dict[str, Any]) -> None:
        if self._done:
            return  # the response is over; any later message is a second one (see below)
        if message["type"] == "http.response.start":
            if self.started:
                # A second response: the app failed after this one began (a store error
                # under a change-feed stream). ASGI refuses it and granian cuts the
                # connection; RSGI cannot cut a stream, so it ends here, without the
                # second response's bytes appended to the first.
                self._end()
                return
            self.started = True
            self._status = status = message["status"]
            headers = message["headers"]
            self._headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers]
            if status not in _NO_BODY and _CONTENT_LENGTH not in dict(headers):
                # A body of undeclared length is a stream (the change feed): its headers go
                # out now, so a follower sees them before the first event.
                self._stream = self._proto.response_stream(status, self._headers)
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self._stream is None:
            if not more:
                self._done = True
                self._proto.response_bytes(self._status, self._headers, body)
                return
            self._stream = self._proto.response_stream(self._status, self._headers)
        if body:
            # A client gone mid-stream: the app learns it from receive().
            with contextlib.suppress(RuntimeError):
                await self._stream.send_bytes(body)
        if not more:
            self._end()

    def _end(self) -> None:
        """No more of this response: dropping the stream transport ends its body (RSGI
        has no close call), then and there rather than whenever the bridge is freed."""
        self._done = True
        self._stream = None
