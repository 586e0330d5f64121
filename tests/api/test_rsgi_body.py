"""Request bodies through ``maxage serve``'s RSGI bridge, against ``--interface asgi``.

granian's RSGI body iterator hands over a body that broke off (the client went away
mid-body, or sent a malformed chunk) as an empty chunk and then the end, like a body
that ended: the bridge must tell the app the client went away (``http.disconnect``, as
ASGI does), never pass the part that arrived as the whole body. Every test runs on both
interfaces: the answers must agree.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest

from tests.api.conftest import MaxageServer, metric, wait_for

BODY = b'{"name":"cut","price":1}'
COUNT = "http_server_request_duration_seconds_count"
PUT = {"http_request_method": "PUT", "http_route": "/v1/products/{id}"}


@pytest.fixture(scope="module", params=["rsgi", "asgi"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MaxageServer]:
    s = MaxageServer(tmp_path_factory.mktemp(f"body-{request.param}"), "--interface", request.param)
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()


def _puts(server: MaxageServer) -> float:
    """PUTs to a document that have finished, whatever their status."""
    with server.client() as c:
        text = c.get("/metrics").text
    return sum(
        metric(text, COUNT, **PUT, http_response_status_code=str(status))
        for status in (200, 201, 400, 408, 413, 499, 500)
    )


def _send_and_vanish(server: MaxageServer, data: bytes) -> None:
    """Send ``data`` and close the connection (part of a request, never its end)."""
    with socket.create_connection((server.host, server.port)) as sock:
        sock.sendall(data)


def _head(path: str, *fields: str) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: x", "Content-Type: application/json", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda h: _head(h, "Content-Length: 200") + BODY, id="content-length"),
        pytest.param(
            lambda h: _head(h, "Transfer-Encoding: chunked") + b"%x\r\n%s\r\n" % (len(BODY), BODY),
            id="chunked-without-last-chunk",
        ),
        pytest.param(
            lambda h: (
                _head(h, "Transfer-Encoding: chunked")
                + b"%x\r\n%s\r\n" % (len(BODY), BODY)
                + b"zz\r\n"
            ),
            id="chunked-malformed",
        ),
    ],
)
def test_a_body_cut_short_writes_nothing(server: MaxageServer, cut: Callable[[str], bytes]) -> None:
    # The part that arrives is a valid document: only the cut tells it is not the body.
    path = f"/v1/products/cut-{uuid.uuid4().hex}"
    before = _puts(server)
    _send_and_vanish(server, cut(path))
    wait_for(lambda: _puts(server) > before, 10, "the cut PUT to finish")
    with server.client() as c:
        assert c.get(path, params={"consistency": "strong"}).status_code == 404


def test_a_chunked_body_with_announced_trailers_is_served(server: MaxageServer) -> None:
    path = f"/v1/products/tr-{uuid.uuid4().hex}"
    data = _head(
        path, "Transfer-Encoding: chunked", "Trailer: X-Checksum", "Connection: close"
    ) + b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(BODY), BODY)
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 201"), out[:200]
    with server.client() as c:
        assert c.get(path, params={"consistency": "strong"}).json()["data"]["name"] == "cut"


def _curl_http2() -> bool:
    if shutil.which("curl") is None:
        return False
    out = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    return "HTTP2" in out


@pytest.mark.skipif(not _curl_http2(), reason="needs curl with HTTP/2")
def test_an_http2_body_of_unknown_length_is_served(server: MaxageServer) -> None:
    # curl streams stdin as DATA frames and ends with an empty one: granian's RSGI body
    # iterator yields it as an empty chunk, which is not a cut on HTTP/2.
    path = f"/v1/products/h2-{uuid.uuid4().hex}"
    done = subprocess.run(
        ["curl", "-s", "--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
         "-T", "-", "-H", "Content-Type: application/json", server.url + path],
        input=BODY, capture_output=True, timeout=30,
    )  # fmt: skip
    assert done.stdout == b"2 201", done
    with server.client() as c:
        assert c.get(path, params={"consistency": "strong"}).json()["data"]["name"] == "cut"


def test_a_chunked_body_with_unannounced_trailers_gets_an_answer(server: MaxageServer) -> None:
    # On RSGI a trailer section reads like a body that broke off unless ``Trailer``
    # announced it: refused with a problem (the client may still be there), never
    # granian's empty 500. ASGI sees the trailers and serves the request.
    path = f"/v1/products/tr-{uuid.uuid4().hex}"
    data = _head(path, "Transfer-Encoding: chunked", "Connection: close") + (
        b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(BODY), BODY)
    )
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    if "rsgi" in server.argv:
        assert head.startswith(b"HTTP/1.1 400"), out[:300]
        assert b"content-type: application/problem+json" in head
        assert json.loads(body)["code"] == "bad_request"
        with server.client() as c:
            assert c.get(path, params={"consistency": "strong"}).status_code == 404
    else:
        assert head.startswith(b"HTTP/1.1 201"), out[:300]
