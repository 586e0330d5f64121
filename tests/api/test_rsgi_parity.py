"""``maxage serve`` on RSGI (the default) and on ``--interface asgi`` answer alike, byte for
byte once the per-request values are masked: the same raw HTTP/1 requests, in the same
order, to one server of each, with CORS and rate limits on so their header fields are
in the answers too. Covers the hot path and the bridge, HEAD and 304 on both, HTTP/1.0,
``Expect: 100-continue``, chunked and pipelined requests, percent-encoded paths and
queries, repeated request fields, an upgrade request (websockets are off), and the
change feed streamed."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import MaxageServer

CONFIG = """
[collections.notes]
max_staleness = "30s"
read_modes = ["bounded", "strong"]
[collections.notes.schema]
type = "object"
[rate_limits]
default = "1000/s"
burst = 1000
[cors]
allow_origins = ["https://a.example"]
"""
DOC = b'{"text":"hello"}'
MASKS = [
    (rb"x-request-id: [^\r]*", b"x-request-id: X"),
    (rb"date: [^\r]*", b"date: D"),
    (rb'"request_id":"[^"]*"', b'"request_id":"X"'),
    (rb"\d{4}-\d\d-\d\dT[\d:.]+Z", b"TS"),
    (rb"age: \d+", b"age: N"),
    (rb"max-age=\d+", b"max-age=N"),
    (rb'"maxAgeSeconds":\d+', b'"maxAgeSeconds":N'),
    (rb";r=\d+;t=\d+", b";r=N;t=N"),
]


def _put(path: str, *fields: str) -> bytes:
    head = [f"PUT {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + DOC


def _get(target: str, *fields: str, method: str = "GET", version: str = "1.1") -> bytes:
    head = [f"{method} {target} HTTP/{version}", "Host: x", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


CLOSE = "Connection: close"
REQUESTS = [
    _put("/v1/notes/a", f"Content-Length: {len(DOC)}", CLOSE),
    _put("/v1/notes/b", "Transfer-Encoding: chunked", CLOSE).replace(
        DOC, b"%x\r\n%s\r\n0\r\n\r\n" % (len(DOC), DOC)
    ),
    _put("/v1/notes/c", f"Content-Length: {len(DOC)}", "Expect: 100-continue", CLOSE),
    _get("/v1/notes/a", CLOSE),  # fills L1
    _get("/v1/notes/a", CLOSE),  # the hot path
    _get("/v1/notes/a", CLOSE, method="HEAD"),
    _get("/v1/notes/a", 'If-None-Match: "1"', CLOSE),
    _get("/v1/notes/a", 'If-None-Match: "2", W/"1"', CLOSE),
    _get("/v1/notes/a", 'If-None-Match: "1"', CLOSE, method="HEAD"),
    _get("/v1/notes/a", "Origin: https://a.example", CLOSE),
    _get("/v1/notes/a", "Origin: https://b.example", CLOSE),
    _get(
        "/v1/notes/a",
        "Origin: https://a.example",
        "Access-Control-Request-Method: PUT",
        CLOSE,
        method="OPTIONS",
    ),
    _get("/v1/notes/a", "Accept: application/json", "Accept: */*", CLOSE),
    _get("/v1/notes/a", "Accept: text/html", CLOSE),
    _get("/v1/notes/a", "X-Request-Id: first", "X-Request-Id: second", CLOSE),
    _get(
        "/v1/notes/a",
        "Upgrade: websocket",
        "Connection: Upgrade, close",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ),
    _get("/v1/notes/a", version="1.0"),
    _get("/v1/notes/a", method="HEAD", version="1.0"),
    _get("/v1/notes/%61", CLOSE),
    _get("/v1/notes%2Fa", CLOSE),
    _get("/v1/notes/%C3%A9t%C3%A9", CLOSE),
    _get("/v1/notes/a%0D%0AX-Evil:%201", CLOSE),
    _get("/v1/notes?x=%C3%A9&y=%FF", CLOSE),
    _get("/v1/notes/a", "Content-Length: 5") + b"hello" + _get("/livez", CLOSE),
    _get("/v1/notes/a") + _get("/v1/notes/b") + _get("/livez", CLOSE),
    _get("/v1/notes", CLOSE),
    _get("/v1/notes", CLOSE, method="HEAD"),
    _get("/v1/notes/changes", CLOSE),
    _get("/v1/notes/changes", CLOSE, method="HEAD"),
    _get("/v1/notes/changes", version="1.0"),
    _get("/v1/notes/changes?limit=2", "Accept: text/event-stream", CLOSE),
    _get("/v1/notes/nope", CLOSE, method="DELETE"),
    _get("/v1/notes/b", 'If-Match: "1"', CLOSE, method="DELETE"),
    _get(
        "/v1/notes",
        "Content-Type: application/json",
        "Content-Length: 9999999",
        CLOSE,
        method="POST",
    ),
    _get("/v1/notes", CLOSE, method="BREW"),
    _get("/livez", CLOSE, method="HEAD"),
]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, MaxageServer]]:
    started: dict[str, MaxageServer] = {}
    try:
        for interface in ("rsgi", "asgi"):
            work: Path = tmp_path_factory.mktemp(f"parity-{interface}")
            (work / "c.toml").write_text(CONFIG)
            started[interface] = MaxageServer(
                work, "--interface", interface, "--config", str(work / "c.toml")
            )
        yield started
        for s in started.values():
            assert s.stop() == 0, s.stderr()
    finally:
        for s in started.values():
            s.kill()


def _exchange(server: MaxageServer, data: bytes) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    for pattern, mask in MASKS:
        out = re.sub(pattern, mask, out)
    return out


def test_every_request_gets_the_same_answer(servers: dict[str, MaxageServer]) -> None:
    for data in REQUESTS:
        rsgi = _exchange(servers["rsgi"], data)
        asgi = _exchange(servers["asgi"], data)
        assert rsgi == asgi, data
        assert rsgi.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), (data, rsgi)
