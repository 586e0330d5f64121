"""HTTP/1.1 transport over raw sockets: keep-alive, pipelining, chunked bodies,
Expect: 100-continue, size limits, malformed input, slow clients."""

from __future__ import annotations

import contextlib
import json
import socket
import time

import pytest

from .conftest import CacheServer, read_response, wait_closed


def _req(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if body or method in ("PUT", "POST") else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}{cl}\r\n".encode() + body


def test_keep_alive_serves_many_requests_on_one_connection(
    server: CacheServer, unique: str
) -> None:
    with server.connect() as s:
        for i in range(20):
            s.sendall(_req("PUT", f"/v1/keys/{unique}{i}", b"v%d" % i))
            status, headers, _ = read_response(s)
            assert status == 201 and "connection" not in headers
            s.sendall(_req("GET", f"/v1/keys/{unique}{i}"))
            assert read_response(s)[2] == b"v%d" % i


def test_pipelined_requests_are_answered_in_order(server: CacheServer, unique: str) -> None:
    reqs = []
    for i in range(100):
        reqs.append(_req("PUT", f"/v1/keys/{unique}p{i}", b"body-%d" % i))
        reqs.append(_req("GET", f"/v1/keys/{unique}p{i}"))
        reqs.append(_req("GET", f"/v1/keys/{unique}absent{i}"))
    with server.connect() as s:
        s.sendall(b"".join(reqs))  # one write: the server sees them back to back
        for i in range(100):
            assert read_response(s)[0] == 201
            status, _, body = read_response(s)
            assert (status, body) == (200, b"body-%d" % i)
            assert read_response(s)[0] == 404


def test_chunked_request_body(server: CacheServer, unique: str) -> None:
    chunks = [b"hello ", b"chunked ", b"x" * 5000, b" world"]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    head = (
        f"PUT /v1/keys/{unique}c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    with server.connect() as s:
        s.sendall(head)
        for i in range(0, len(body), 7):  # dribble it in tiny pieces
            s.sendall(body[i : i + 7])
        assert read_response(s)[0] == 201
        s.sendall(_req("GET", f"/v1/keys/{unique}c"))
        _status, headers, got = read_response(s)
    assert got == b"".join(chunks)
    assert headers["content-type"] == "text/plain"


def test_declared_oversized_body_is_refused_before_it_is_sent(server: CacheServer) -> None:
    with server.connect() as s:
        s.sendall(
            b"PUT /v1/keys/big HTTP/1.1\r\nHost: t\r\nContent-Length: 999999999\r\n\r\n"
            + b"x" * 1000
        )
        status, headers, body = read_response(s)
        assert status == 413 and json.loads(body)["code"] == "value_too_large"
        assert headers["connection"] == "close"
        # The server does not wait for (or buffer) the rest: it half-closes.
        assert wait_closed(s, 5)


def test_chunked_body_over_the_limit_is_cut_off(server: CacheServer) -> None:
    chunk = b"x" * 65536
    with server.connect() as s:
        s.sendall(b"PUT /v1/keys/big HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        status = None
        try:
            for _ in range(40):  # 2.5 MiB > the 1 MiB limit
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass
        status, _, body = read_response(s)
        assert status == 413 and json.loads(body)["code"] == "value_too_large"


def test_expect_100_continue(server: CacheServer, unique: str) -> None:
    with server.connect() as s:
        s.sendall(
            f"PUT /v1/keys/{unique}e HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        assert read_response(s)[0] == 100
        s.sendall(b"abc")
        assert read_response(s)[0] == 201
        s.sendall(
            b"PUT /v1/keys/x HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert read_response(s)[0] == 413  # no 100 first


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"PUT /v1/keys/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"GET /livez HTTP/1.1\r\nBad Header\r\n\r\n",
        b"\x00\x01\x02\x03" * 10,
    ],
)
def test_malformed_request_gets_400_and_close(server: CacheServer, raw: bytes) -> None:
    with server.connect() as s:
        s.sendall(raw)
        status, headers, body = read_response(s)
        assert status == 400
        assert json.loads(body)["code"] == "malformed_request"
        assert headers["connection"] == "close"
        assert wait_closed(s)
    assert server.alive()


def test_a_good_request_before_a_malformed_one_is_still_answered(server: CacheServer) -> None:
    with server.connect() as s:
        s.sendall(_req("GET", "/livez") + b"NOT HTTP\r\n\r\n")
        assert read_response(s)[0] == 200
        assert read_response(s)[0] == 400
        assert wait_closed(s)


def test_url_and_header_limits(server: CacheServer) -> None:
    with server.connect() as s:
        s.sendall(b"GET /v1/keys/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 414 and json.loads(body)["code"] == "url_too_long"
    with server.connect() as s:
        s.sendall(b"GET /livez HTTP/1.1\r\n" + b"X-Filler: " + b"f" * 20000 + b"\r\n\r\n")
        status, _, body = read_response(s)
        assert status == 431 and json.loads(body)["code"] == "headers_too_large"
    with server.connect() as s:
        s.sendall(
            b"GET /livez HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n"
        )
        assert read_response(s)[0] == 431
    with server.connect() as s:  # a header line that never ends
        s.sendall(b"GET /livez HTTP/1.1\r\nX-Endless: ")
        try:
            for _ in range(256):  # bounded by the limit plus one read buffer
                s.sendall(b"e" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert read_response(s)[0] == 431


def test_http10_closes_unless_keep_alive(server: CacheServer) -> None:
    with server.connect() as s:
        s.sendall(b"GET /livez HTTP/1.0\r\n\r\n")
        status, headers, _ = read_response(s)
        assert status == 200 and headers["connection"] == "close"
        assert wait_closed(s)
    with server.connect() as s:
        s.sendall(b"GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(s)[0] == 200
        s.sendall(b"GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(s)[0] == 200


def test_connection_close_is_honoured(server: CacheServer) -> None:
    with server.connect() as s:
        s.sendall(_req("GET", "/livez", headers="Connection: close\r\n") + _req("GET", "/livez"))
        _status, headers, _ = read_response(s)
        assert headers["connection"] == "close"
        assert wait_closed(s)  # the second request is not answered


def test_slow_client_gets_408_and_idle_connections_close() -> None:
    s = CacheServer("--request-timeout", "0.5", "--keepalive-timeout", "1")
    try:
        with s.connect() as c:
            c.sendall(b"GET /livez HTTP/1.1\r\nHost: t\r\n")  # never finishes the head
            t0 = time.monotonic()
            status, _headers, body = read_response(c, timeout=5)
            assert status == 408 and json.loads(body)["code"] == "request_timeout"
            assert time.monotonic() - t0 < 3
            assert wait_closed(c)
        with s.connect() as c:
            c.sendall(_req("GET", "/livez"))
            assert read_response(c)[0] == 200
            assert wait_closed(c, timeout=5)  # idle keep-alive closed by the server
    finally:
        assert s.stop() == 0


def test_client_that_stops_reading_does_not_hurt_others(server: CacheServer, unique: str) -> None:
    with server.connect() as http_c:
        http_c.sendall(_req("PUT", f"/v1/keys/{unique}big", b"b" * 500_000))
        assert read_response(http_c)[0] == 201
    hog = socket.create_connection((server.host, server.port))
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    hog.setblocking(False)
    sent = 0
    try:
        for _ in range(200):  # ask for ~100 MB and never read it
            try:
                sent += hog.send(_req("GET", f"/v1/keys/{unique}big"))
            except BlockingIOError:
                break
        with server.connect() as other:
            other.sendall(_req("GET", "/livez"))
            assert read_response(other)[0] == 200
    finally:
        hog.close()
    assert server.alive()


def test_a_connection_that_never_sends_a_request_is_closed_after_the_request_timeout() -> None:
    s = CacheServer("--request-timeout", "0.5", "--keepalive-timeout", "60")
    try:
        with s.connect() as c:
            t0 = time.monotonic()
            assert wait_closed(c, timeout=5)
            assert time.monotonic() - t0 < 3
    finally:
        assert s.stop() == 0


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_pipelined_burst_from_a_non_reading_client_does_not_pile_up_responses() -> None:
    s = CacheServer("--max-value-bytes", "1MiB")
    try:
        with s.client() as c:
            # < 64 KiB: each answer is a fresh head+body buffer (large bodies are shared).
            assert c.put("/v1/keys/big", content=b"B" * 60_000).status_code == 201
        before = _rss_kib(s.proc.pid)
        hog = socket.create_connection((s.host, s.port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # 1500 GETs of a 60 kB value (90 MB of answers) in one burst, never read.
        burst = b"GET /v1/keys/big HTTP/1.1\r\nHost: t\r\n\r\n" * 1500
        hog.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            hog.send(burst)
        with s.connect() as other:  # the server still serves others
            other.sendall(_req("GET", "/livez"))
            assert read_response(other)[0] == 200
        grown = _rss_kib(s.proc.pid) - before
        assert grown < 40 * 1024, f"server grew by {grown} KiB"
        hog.close()
    finally:
        assert s.stop() == 0
