"""Fuzz the parser boundary: random and mutated byte streams against a running server.

Property: for any byte stream, the server answers (one or more HTTP responses)
and/or closes the connection within a bounded time -- it never hangs on a
complete request, never crashes, never sends a non-HTTP reply -- and stays up.
"""

from __future__ import annotations

import socket
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import CacheServer

VALID = [
    b"GET /v1/keys/a HTTP/1.1\r\nHost: t\r\n\r\n",
    b"PUT /v1/keys/a?ttl=5&version=3&tags=x,y HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"PUT /v1/keys/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"DELETE /v1/keys/a?version=9 HTTP/1.1\r\n\r\n",
    b'POST /v1/invalidate HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"tags":["x"]}',
    b"GET /metrics HTTP/1.0\r\n\r\n",
    b'HEAD /v1/keys/a HTTP/1.1\r\nIf-None-Match: "3"\r\n\r\n',
    b"GET /v1/keys/%FF%00 HTTP/1.1\r\n\r\n",
    b"PUT /v1/keys/c HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
]

TOKENS = [b"\r\n", b"\r\n\r\n", b":", b" ", b"\x00", b"%", b"?", b"&", b"=", b",",
          b"Content-Length: 99999999999999999999\r\n", b"Transfer-Encoding: chunked\r\n",
          b"Connection: close\r\n", b"Upgrade: h2c\r\nConnection: upgrade\r\n",
          b"HTTP/1.1", b"HTTP/1.0", b"ffffffff\r\n", b"-1", b"\xff\xfe", b"\t"]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 3))
        pos = draw(st.integers(0, len(data)))
        if op == 0 and data:  # flip a byte
            i = min(pos, len(data) - 1)
            data[i] = draw(st.integers(0, 255))
        elif op == 1:  # insert a token
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == 2:  # delete a span
            data[pos : pos + draw(st.integers(1, 20))] = b""
        else:  # truncate
            del data[pos:]
    return bytes(data)


streams = st.one_of(st.binary(max_size=512), mutated())


def _exchange(server: CacheServer, payload: bytes, split: int) -> bytes:
    """Send, half-close, and read until the server closes. Fails on a hang."""
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        try:
            s.sendall(payload[:split])
            s.sendall(payload[split:])
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may already have answered and closed
            pass
        out = b""
        deadline = time.monotonic() + 5
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise AssertionError(f"server neither answered nor closed: {payload!r}") from None
            if not chunk:
                break
            out += chunk
            assert time.monotonic() < deadline, "server kept the connection open"
        return out


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(payload=streams, split=st.integers(0, 600))
def test_any_byte_stream_gets_answers_or_a_close(
    server: CacheServer, payload: bytes, split: int
) -> None:
    out = _exchange(server, payload, min(split, len(payload)))
    if out:
        assert out.startswith(b"HTTP/1.1 "), out[:80]
    assert server.alive()


def test_server_still_serves_after_fuzzing(server: CacheServer) -> None:
    with server.client() as c:
        assert c.get("/livez").status_code == 200
        assert c.put("/v1/keys/after-fuzz", content=b"ok").status_code == 201
        assert c.get("/v1/keys/after-fuzz").content == b"ok"


@st.composite
def pipelines(draw: st.DrawFn) -> tuple[bytes, list[tuple[int, bytes | None]]]:
    """Valid requests back to back, and the (status, body) each must get, in order."""
    key = "KEYXX"  # replaced by a fresh key per example (the server is shared)
    out: list[bytes] = []
    expect: list[tuple[int, bytes | None]] = []
    stored: bytes | None = None
    for _ in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["get", "put", "chunked", "delete", "livez"]))
        if kind == "get":
            out.append(f"GET /v1/keys/{key} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            expect.append((200, stored) if stored is not None else (404, None))
        elif kind in ("put", "chunked"):
            body = draw(st.binary(max_size=300))
            if kind == "put":
                head = f"PUT /v1/keys/{key} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
                out.append(head.encode() + body)
            else:
                cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
                pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
                enc = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
                head = f"PUT /v1/keys/{key} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                out.append(head.encode() + enc)
            expect.append((201, None))
            stored = body
        elif kind == "delete":
            out.append(f"DELETE /v1/keys/{key} HTTP/1.1\r\n\r\n".encode())
            expect.append((200, None))
            stored = None
        else:
            out.append(b"GET /livez HTTP/1.1\r\n\r\n")
            expect.append((200, b'{"status":"ok"}'))
    return b"".join(out), expect


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=pipelines(), cuts=st.lists(st.integers(0, 5000), max_size=6))
def test_valid_pipelines_split_anywhere_are_answered_in_order(
    server: CacheServer, case: tuple[bytes, list[tuple[int, bytes | None]]], cuts: list[int]
) -> None:
    from .conftest import read_response

    payload, expect = case
    payload = payload.replace(b"/v1/keys/KEYXX ", f"/v1/keys/p{time.monotonic_ns()} ".encode())
    points = sorted({c % (len(payload) + 1) for c in cuts})
    with socket.create_connection((server.host, server.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for a, b in zip([0, *points], [*points, len(payload)], strict=True):
            s.sendall(payload[a:b])
        for status, body in expect:
            got_status, _, got_body = read_response(s)
            assert got_status == status
            if body is not None:
                assert got_body == body
