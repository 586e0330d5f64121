"""Read-through to an upstream: single flight, deadlines, cancellation, errors, stale-if-error."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import CacheServer, read_response, wait_closed
from .upstream_fixture import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def rt(upstream: Upstream) -> Iterator[CacheServer]:
    s = CacheServer(
        "--upstream", f"ok/={upstream.url}/ok/{{suffix}}",
        "--upstream", f"slow/={upstream.url}/slow/{{suffix}}",
        "--upstream", f"fail/={upstream.url}/fail/{{suffix}}",
        "--upstream", f"missing/={upstream.url}/missing/{{suffix}}",
        "--upstream", f"flaky/={upstream.url}/flaky/{{suffix}}",
        "--upstream", "down/=http://127.0.0.1:9/{key}",
        "--upstream-timeout", "1.0",
        "--stale-if-error", "100",
        "--debug-clock",
    )  # fmt: skip
    yield s
    assert s.stop() == 0, s.stderr()


def test_miss_loads_from_upstream_and_then_hits(rt: CacheServer, upstream: Upstream) -> None:
    with rt.client() as c:
        r = c.get("/v1/keys/ok/a")
        assert r.status_code == 200
        assert r.content == b"value-of-/ok/a"
        assert r.headers["content-type"] == "text/x-up"
        assert r.headers["etag"] == '"1"'
        assert r.headers["cache-status"] == "maxage; fwd=miss; stored"
        r = c.get("/v1/keys/ok/a")
        assert r.headers["cache-status"] == "maxage; hit"
    assert upstream.calls["/ok/a"] == 1


def test_concurrent_misses_cause_one_upstream_call(rt: CacheServer, upstream: Upstream) -> None:
    upstream.delay = 0.5

    def get(_: int) -> tuple[int, bytes]:
        with rt.client() as c:
            r = c.get("/v1/keys/slow/shared")
            return r.status_code, r.content

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(get, range(20)))
    assert results == [(200, b"value-of-/slow/shared")] * 20
    assert upstream.calls["/slow/shared"] == 1


def test_deadline_cancels_the_upstream_call(rt: CacheServer, upstream: Upstream) -> None:
    upstream.delay = 5.0
    try:
        with rt.client() as c:
            t0 = time.monotonic()
            r = c.get("/v1/keys/slow/late")
            elapsed = time.monotonic() - t0
        assert r.status_code == 504
        assert r.json()["code"] == "upstream_timeout"
        assert 0.9 <= elapsed < 3.0
        # The upstream saw its caller go away (the call was cancelled, not abandoned).
        deadline = time.monotonic() + 3
        while upstream.cancelled["/slow/late"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.cancelled["/slow/late"] == 1
        assert upstream.calls["/slow/late"] == 1
    finally:
        upstream.delay = 0.5


def test_failing_and_unreachable_upstreams_are_502(rt: CacheServer) -> None:
    with rt.client() as c:
        r = c.get("/v1/keys/fail/x")
        assert (r.status_code, r.json()["code"]) == (502, "upstream_error")
        r = c.get("/v1/keys/down/x")
        assert (r.status_code, r.json()["code"]) == (502, "upstream_error")
        r = c.get("/v1/keys/missing/x")
        assert (r.status_code, r.json()["code"]) == (404, "key_not_found")
        r = c.get("/v1/keys/unconfigured/x")
        assert (r.status_code, r.json()["code"]) == (404, "key_not_found")
        text = c.get("/metrics").text
        assert 'maxage_upstream_errors_total{kind="status"}' in text
        assert 'maxage_upstream_errors_total{kind="connect"}' in text


def test_stale_if_error_within_its_bound(rt: CacheServer, upstream: Upstream) -> None:
    upstream.max_age = 10
    try:
        with rt.client() as c:
            assert c.get("/v1/keys/flaky/s").status_code == 200
            upstream.fail_flaky = True
            assert c.get("/v1/keys/flaky/s").headers["cache-status"] == "maxage; hit"
            c.post("/debug/clock", params={"advance": "20"})  # past the TTL, within stale bound
            r = c.get("/v1/keys/flaky/s")
            assert r.status_code == 200
            assert r.content == b"value-of-/flaky/s"
            assert "fwd=stale" in r.headers["cache-status"]
            assert upstream.calls["/flaky/s"] == 2
            c.post("/debug/clock", params={"advance": "100"})  # past the stale bound too
            r = c.get("/v1/keys/flaky/s")
            assert (r.status_code, r.json()["code"]) == (502, "upstream_error")
            upstream.fail_flaky = False
            r = c.get("/v1/keys/flaky/s")
            assert r.status_code == 200 and "fwd=miss" in r.headers["cache-status"]
    finally:
        upstream.fail_flaky = False
        upstream.max_age = None


def test_explicit_writes_and_invalidation_apply_to_upstream_keys(
    rt: CacheServer, upstream: Upstream
) -> None:
    with rt.client() as c:
        assert c.put("/v1/keys/ok/w", params={"version": "5"}, content=b"mine").status_code == 201
        assert c.get("/v1/keys/ok/w").content == b"mine"
        assert upstream.calls["/ok/w"] == 0
        c.delete("/v1/keys/ok/w")
        assert c.get("/v1/keys/ok/w").content == b"value-of-/ok/w"
        assert upstream.calls["/ok/w"] == 1


def test_pipelined_requests_behind_a_read_through_stay_in_order(
    rt: CacheServer, upstream: Upstream
) -> None:
    upstream.delay = 0.3
    with rt.connect() as s:
        s.sendall(
            b"GET /v1/keys/slow/pipe HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
            b"PUT /v1/keys/p1 HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /v1/keys/p1 HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        status, _, body = read_response(s)
        assert (status, body) == (200, b"value-of-/slow/pipe")
        assert read_response(s)[2] == b'{"status":"ok"}'
        assert read_response(s)[0] == 201
        assert read_response(s)[2] == b"hi"


def test_client_disconnect_does_not_cancel_the_shared_load(
    rt: CacheServer, upstream: Upstream
) -> None:
    upstream.delay = 0.5
    with rt.connect() as s:
        s.sendall(b"GET /v1/keys/slow/abandon HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.1)
    with rt.client() as c:
        r = c.get("/v1/keys/slow/abandon")
        assert r.status_code == 200
    assert upstream.calls["/slow/abandon"] == 1
    assert upstream.cancelled["/slow/abandon"] == 0


def test_request_deadline_is_504(upstream: Upstream) -> None:
    upstream.delay = 3.0
    s = CacheServer(
        "--upstream", f"slow/={upstream.url}/slow/{{suffix}}",
        "--upstream-timeout", "5", "--request-timeout", "0.5",
    )  # fmt: skip
    try:
        with s.client() as c:
            t0 = time.monotonic()
            r = c.get("/v1/keys/slow/deadline")
            assert (r.status_code, r.json()["code"]) == (504, "deadline_exceeded")
            assert time.monotonic() - t0 < 2.5
    finally:
        upstream.delay = 0.5
        assert s.stop() == 0


def test_problem_body_shape(rt: CacheServer) -> None:
    with httpx.Client(base_url=rt.url, trust_env=False) as c:
        doc = json.loads(c.get("/v1/keys/fail/shape").content)
    assert doc["instance"] == "/v1/keys/fail/shape"
    assert doc["type"] == "urn:maxage:problem:upstream_error"


def test_sigterm_drains_in_flight_requests(upstream: Upstream) -> None:
    upstream.delay = 0.8
    s = CacheServer("--upstream", f"slow/={upstream.url}/slow/{{suffix}}")
    try:
        with s.connect() as c:
            c.sendall(b"GET /v1/keys/slow/drain HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.2)  # the load is in flight
            s.proc.send_signal(__import__("signal").SIGTERM)
            status, headers, body = read_response(c)
            assert (status, body) == (200, b"value-of-/slow/drain")
            assert headers["connection"] == "close"
        assert s.proc.wait(timeout=10) == 0
    finally:
        upstream.delay = 0.5
        s.stop()


def test_port_in_use_exits_nonzero(rt: CacheServer) -> None:
    import subprocess
    import sys

    from .conftest import ROOT

    p = subprocess.run(
        [sys.executable, "-m", "maxage.cacheserver", "--port", str(rt.port)],
        capture_output=True, text=True, timeout=20, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 1
    assert "cannot listen" in p.stderr


def test_half_close_after_pipelining_still_answers_everything(
    rt: CacheServer, upstream: Upstream
) -> None:
    import socket as socket_mod

    upstream.delay = 0.3
    with rt.connect() as s:
        s.sendall(
            b"GET /v1/keys/slow/halfclose HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        s.shutdown(socket_mod.SHUT_WR)
        assert read_response(s)[2] == b"value-of-/slow/halfclose"
        assert read_response(s)[2] == b'{"status":"ok"}'
        assert read_response(s)[2] == b'{"status":"ready"}'
        assert wait_closed(s)


def test_a_put_during_a_load_is_not_overwritten_by_the_fill(
    rt: CacheServer, upstream: Upstream
) -> None:
    upstream.delay = 4.0  # held until released below: the put lands during the load
    with ThreadPoolExecutor(1) as pool, rt.client() as c:
        pending = pool.submit(lambda: rt.client().get("/v1/keys/slow/race"))
        deadline = time.monotonic() + 3
        while upstream.calls["/slow/race"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.put("/v1/keys/slow/race", content=b"written meanwhile").status_code == 201
        upstream.release_slow()
        first = pending.result(timeout=5)
        assert first.status_code == 200
        assert c.get("/v1/keys/slow/race").content == b"written meanwhile"
        assert first.content == b"written meanwhile"
    upstream.delay = 0.5


def test_a_delete_during_a_load_refuses_the_fill(rt: CacheServer, upstream: Upstream) -> None:
    upstream.delay = 4.0  # held until released below: the delete lands during the load
    with ThreadPoolExecutor(1) as pool, rt.client() as c:
        pending = pool.submit(lambda: rt.client().get("/v1/keys/slow/del-race"))
        deadline = time.monotonic() + 3
        while upstream.calls["/slow/del-race"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        c.delete("/v1/keys/slow/del-race")
        upstream.release_slow()
        r = pending.result(timeout=5)
        assert r.status_code == 200 and r.headers["cache-status"] == "maxage; fwd=miss"
        # Not stored: the next read loads again.
        c.get("/v1/keys/slow/del-race")
        assert upstream.calls["/slow/del-race"] == 2
    upstream.delay = 0.5


# -- propagation (issue 18): request id, trace context and deadline reach the upstream --


class _Recorder:
    """A one-route upstream that records the headers of every call."""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.seen = []  # type: list[dict[str, str]]

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append({k.lower(): v for k, v in self.headers.items()})
                body = b"recorded"
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_read_through_forwards_request_id_child_traceparent_and_deadline() -> None:
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    rec = _Recorder()
    s = CacheServer("--upstream", f"rec/={rec.url}/{{suffix}}", "--upstream-timeout", "5s")
    try:
        with s.client() as c:
            r = c.get(
                "/v1/keys/rec/a",
                headers={
                    "x-request-id": "caller-42",
                    "traceparent": f"00-{trace}-{span}-01",
                    "x-request-timeout": "3",
                },
            )
            assert r.status_code == 200, r.text
            r = c.get("/v1/keys/rec/b")  # no caller context: a new trace, the upstream timeout
            assert r.status_code == 200, r.text
    finally:
        assert s.stop() == 0, s.stderr()
        rec.stop()
    first, second = rec.seen
    assert first["x-request-id"] == "caller-42"
    version, tid, child, flags = first["traceparent"].split("-")
    assert (version, tid, flags) == ("00", trace, "01") and len(child) == 16 and child != span
    assert 0 < float(first["x-request-timeout"]) <= 3
    assert "x-request-id" not in second
    assert second["traceparent"].split("-")[1] != trace
    assert 0 < float(second["x-request-timeout"]) <= 5


def test_client_sends_request_id_traceparent_and_timeout() -> None:
    import httpx

    from maxage.cacheserver.client import CacheClient, request_context

    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(404, json={"code": "key_not_found"})

    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    with CacheClient(timeout=4.0, transport=httpx.MockTransport(handler)) as cache:
        assert cache.get("k") is None
        with request_context(request_id="rid-9", traceparent=f"00-{trace}-00f067aa0ba902b7-01",
                             timeout=2.0):  # fmt: skip
            assert cache.get("k") is None
    plain, carried = seen
    assert "x-request-id" not in plain and "traceparent" not in plain
    assert float(plain["x-request-timeout"]) == 4.0
    assert carried["x-request-id"] == "rid-9"
    assert carried["traceparent"].split("-")[1] == trace
    assert carried["traceparent"].split("-")[2] != "00f067aa0ba902b7"
    assert 0 < float(carried["x-request-timeout"]) <= 2.0
