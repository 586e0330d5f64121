"""The transport's own parser for plain requests answers exactly as llhttp's path does.

``HttpProtocol.data_received`` parses a whole request of the plain shape itself
(``protocol._plain``) and hands everything else to llhttp. Property: for any byte
stream, split into reads anywhere, a connection with that fast path and one without
(``proto.fast = False``: every byte through llhttp) dispatch the same requests with
the same fields, write the same bytes and end in the same state.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from maxage.cacheserver.protocol import CacheRequest, HttpProtocol, Limits, ServerState

from .test_fuzz import mutated

FIELDS = tuple(f for f in CacheRequest.__slots__ if f not in ("route", "deadline"))

PLAIN = [
    b"PUT /v1/keys/k1 HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\n\r\nhello",
    b"GET /v1/keys/k1 HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n",
    b"PUT /v1/keys/k2 HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nContent-Length: 5\r\n"
    b"Content-Type: text/plain\r\n\r\nhello",  # wrk's order
    b"GET /v1/keys/k1?x=1#frag HTTP/1.1\r\n\r\n",
    b"HEAD /v1/keys/%41 HTTP/1.1\r\nHost: \r\n\r\n",
    b"DELETE /v1/keys/a?version=3 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    b'POST /v1/invalidate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"tags":["x"]}',
    b"PUT /v1/keys/b HTTP/1.1\r\nContent-Type: a b \r\nContent-Length: 0003\r\n\r\nabc",
    b'GET /a"<>{}|\\^` HTTP/1.1\r\n\r\n',
    b"GET /v1/keys/k1 HTTP/1.1\r\nHost:   spaced  \r\n\r\n",
]
NEAR = [  # one step off the plain shape: llhttp's path must take each
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Type: a\r\nContent-Length: 1\r\nContent-Type: b\r\n\r\nx",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nhost: x\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.0\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Length: 3\r\nContent-Type: x\r\n\r\nabc",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Type:  x\r\nContent-Length: 1\r\n\r\na",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort",
    b"GET http://h/v1/keys/k1 HTTP/1.1\r\n\r\n",
    b"GET /v1/keys/\x7f HTTP/1.1\r\n\r\n",
    b"GET /v1/keys/\xff HTTP/1.1\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nHost: a\x01b\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nHost: a\tb\r\n\r\n",
    b"OPTIONS /v1/keys/k1 HTTP/1.1\r\n\r\n",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    b"PUT /v1/keys/k1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
    b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nHost: " + b"h" * 17000 + b"\r\n\r\n",
    b"\r\nGET /v1/keys/k1 HTTP/1.1\r\n\r\n",
    b"GET /v1/keys/k1 HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
]


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.closed = False
        self.eof = False

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Metrics:
    connections_open = connections_total = connections_refused = parse_errors = 0
    first_bound = 1.0

    def __init__(self) -> None:
        self.latency: dict[object, object] = {}

    def observe_request(self, route: str, status: int, elapsed: float) -> None:
        pass


def _run(stream: bytes, cuts: list[int], fast: bool) -> tuple[object, ...]:
    seen: list[tuple[object, ...]] = []

    def handler(req: CacheRequest) -> tuple[int, bytes, bytes]:
        seen.append(tuple(getattr(req, f) for f in FIELDS))
        return 201 if req.method == b"PUT" else 200, b"x-h: 1\r\n", b"n%d" % len(seen)

    loop = asyncio.new_event_loop()
    try:
        limits = Limits(max_value_bytes=64, request_timeout=10.0)
        state = ServerState(handler, limits, _Metrics(), loop)
        state.date_header = b"date: fixed\r\n"
        proto = HttpProtocol(state)
        proto.fast = fast
        t = _Transport()
        proto.connection_made(t)  # type: ignore[arg-type]
        start = 0
        for cut in [*sorted(cuts), len(stream)]:
            if start < cut <= len(stream):
                proto.data_received(stream[start:cut])
                start = cut
        return (
            seen,
            b"".join(t.out),
            t.closed,
            t.eof,
            proto.closing,
            proto.discarding,
            proto.msg_started is None,
            len(proto.queue),
        )
    finally:
        loop.close()


def _check(stream: bytes, cuts: list[int]) -> None:
    assert _run(stream, cuts, True) == _run(stream, cuts, False)


@pytest.mark.parametrize("raw", PLAIN + NEAR)
def test_each_shape_alone_and_pipelined(raw: bytes) -> None:
    for stream in (raw, raw + raw, PLAIN[0] + raw + PLAIN[1]):
        _check(stream, [])
        _check(stream, [len(stream) // 2])
        _check(stream, [1, len(stream) - 1])


def test_the_plain_shapes_take_the_fast_path() -> None:
    """Without this the property above would hold trivially."""

    class _Count(HttpProtocol):
        begun = 0

        def on_message_begin(self) -> None:
            type(self).begun += 1
            super().on_message_begin()

    loop = asyncio.new_event_loop()
    try:
        state = ServerState(
            lambda req: (200, b"", b""),
            Limits(max_value_bytes=64, request_timeout=10.0),
            _Metrics(),
            loop,
        )
        proto = _Count(state)
        proto.connection_made(_Transport())  # type: ignore[arg-type]
        proto.data_received(b"".join(PLAIN))
        assert _Count.begun == 0
        proto.data_received(NEAR[0])
        assert _Count.begun == 1
    finally:
        loop.close()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.one_of(
        mutated(),
        st.lists(st.sampled_from(PLAIN + NEAR), min_size=1, max_size=4).map(b"".join),
        st.binary(max_size=300),
    ),
    st.lists(st.integers(0, 600), max_size=3),
)
def test_any_stream_split_anywhere(stream: bytes, cuts: list[int]) -> None:
    _check(stream, cuts)


@pytest.mark.parametrize("lead", [b"\r", b"\n", b"\r\n", b"G", b" "])
def test_bytes_llhttp_holds_before_a_plain_request(lead: bytes) -> None:
    """A read that leaves llhttp between messages (or inside one), then plain and
    near-plain requests in later reads."""
    for near in NEAR:
        stream = lead + PLAIN[1] + near + PLAIN[0]
        _check(stream, [len(lead), len(lead) + len(PLAIN[1])])
