"""Hostile clients (issue 12): every attack is bounded, measured as the server's RSS.

Each memory test starts its own ``maxage cache-server`` with a small
``--max-bytes``, warms it up, reads ``VmRSS`` from ``/proc``, runs a bounded
attack over one pipelined raw connection (fast: no per-request round trip),
and asserts that the growth stays within the byte bound plus a fixed allowance
for the interpreter (allocator slack, connection buffers). No test depends on
timing: a slow machine only makes them slower.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import CacheServer, read_response
from .upstream_fixture import Upstream

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux)"
)

MiB = 1024 * 1024
SLACK = 24 * MiB  # interpreter and allocator allowance on top of the byte bound


def rss(server: CacheServer) -> int:
    text = Path(f"/proc/{server.proc.pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB$", text, re.MULTILINE)
    assert m is not None
    return int(m.group(1)) * 1024


def metric(server: CacheServer, name: str) -> float:
    with server.client() as c:
        text = c.get("/metrics").text
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    assert m is not None, f"{name} not exported"
    return float(m.group(1))


def blast(server: CacheServer, requests: Iterable[bytes], window: int = 200) -> Counter[int]:
    """Send ``requests`` pipelined over one connection, ``window`` at a time; count statuses."""
    statuses: Counter[int] = Counter()
    with server.connect(timeout=60) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        batch: list[bytes] = []

        def flush() -> None:
            s.sendall(b"".join(batch))
            for _ in batch:
                statuses[read_response(s, timeout=60)[0]] += 1
            batch.clear()

        for r in requests:
            batch.append(r)
            if len(batch) >= window:
                flush()
        if batch:
            flush()
    return statuses


def req(method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    cl = f"Content-Length: {len(body)}\r\n" if body or method in ("PUT", "POST") else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}{cl}\r\n".encode() + body


@pytest.fixture()
def small() -> Iterator[CacheServer]:
    s = CacheServer("--max-bytes", "8MiB")
    yield s
    assert s.stop() == 0, s.stderr()


def test_a_delete_flood_of_unique_long_keys_is_bounded(small: CacheServer) -> None:
    def deletes(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            yield req("DELETE", f"/v1/keys/{i:08d}" + "k" * 992)

    assert blast(small, deletes(0, 2000)) == {200: 2000}  # warm-up
    before = rss(small)
    assert blast(small, deletes(2000, 60_000)) == {200: 60_000}
    grown = rss(small) - before
    print(
        f"delete flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB", file=sys.stderr
    )
    # before the fix: every tombstone lived 60 s, uncounted (~80 MB here)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_guard_bytes") <= 2 * MiB
    assert metric(small, "maxage_cache_memory_bytes") <= 8 * MiB
    assert metric(small, "maxage_cache_tombstones") > 0
    assert metric(small, "maxage_cache_guards_folded_total") > 0


def test_a_flood_of_heavily_tagged_entries_is_bounded(small: CacheServer) -> None:
    def puts(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            tags = ",".join(f"t{i}-{j}" for j in range(64))
            yield req("PUT", f"/v1/keys/k{i}?tags={tags}", b"v")

    assert blast(small, puts(0, 500)) == {201: 500}
    before = rss(small)
    assert blast(small, puts(500, 8000)) == {201: 8000}
    grown = rss(small) - before
    print(f"tag flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB", file=sys.stderr)
    # before the fix: ~250 MB for 8 MiB (the index was not counted)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_memory_bytes") <= 8 * MiB
    assert metric(small, "maxage_cache_tags") > 0


def test_an_invalidation_flood_leaves_bounded_guards(small: CacheServer) -> None:
    def invalidations(start: int, n: int) -> Iterator[bytes]:
        for i in range(start, start + n):
            tags = ",".join(f"{i:04d}-{j:04d}-" + "g" * 180 for j in range(256))
            body = b'{"tags": [%s]}' % b",".join(b'"%s"' % t.encode() for t in tags.split(","))
            yield req("POST", "/v1/invalidate", body, "Content-Type: application/json\r\n")

    assert blast(small, invalidations(0, 4), window=4) == {200: 4}
    before = rss(small)
    assert blast(small, invalidations(4, 160), window=16) == {200: 160}
    grown = rss(small) - before
    print(
        f"invalidation flood: RSS {before / MiB:.1f} -> {(before + grown) / MiB:.1f} MiB",
        file=sys.stderr,
    )
    # before the fix: 41,000 guards of ~500 B each, uncounted, and every write
    # rebuilt the guard maps (quadratic)
    assert grown < 8 * MiB + SLACK, grown
    assert metric(small, "maxage_cache_guard_bytes") <= 2 * MiB
    with small.client() as c:  # writes are not slowed down by the guards
        assert c.put("/v1/keys/after", content=b"x", params={"tags": "a,b"}).status_code == 201


# -- parameters, versions, TTLs, tags -------------------------------------------------


def test_unknown_repeated_or_undecodable_parameters_are_refused(
    server: CacheServer, unique: str
) -> None:
    with server.client() as c:
        k = f"/v1/keys/{unique}p"
        assert c.put(k, content=b"v1", params={"version": "3"}).status_code == 201
        for query in ("verison=5", "version=4&version=5", "version=4&x=%ff", "ttl=5&nope"):
            r = c.put(f"{k}?{query}", content=b"v2")
            assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter"), query
            r = c.delete(f"{k}?{query}")
            assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter"), query
        r = c.get(f"{k}?verison=5")
        assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter")
        r = c.post("/v1/invalidate?tags=a&tgas=b")
        assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter")
        many = "&".join(f"tags=t{i}" for i in range(20))
        assert c.post(f"/v1/invalidate?{many}").status_code == 400
        # nothing was written or deleted by the refused requests
        r = c.get(k)
        assert (r.status_code, r.content, r.headers["etag"]) == (200, b"v1", '"3"')


def test_versions_and_ttls_have_ranges(server: CacheServer, unique: str) -> None:
    top = 2**63 - 1
    with server.client() as c:
        k = f"/v1/keys/{unique}v"
        for version in ("0", str(top + 1), "9" * 5000, "-1", "1.5", "¹"):
            r = c.put(k, content=b"x", params={"version": version})
            assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter"), version[:20]
        assert c.put(k, content=b"x", params={"version": str(top)}).status_code == 201
        r = c.put(k, content=b"y")  # would be 2^63
        assert (r.status_code, r.json()["code"]) == (409, "version_conflict")
        assert c.get(k).content == b"x"
        assert c.delete(k).json()["tombstone"] == top
        for ttl in ("1e308", "inf", "nan", "0", "-5", str(365 * 86400 + 1)):
            r = c.put(f"{k}t", content=b"x", params={"ttl": ttl})
            assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter"), ttl
        assert c.put(f"{k}t", content=b"x", params={"ttl": str(365 * 86400)}).status_code == 201
        max_age = int(c.get(f"{k}t").headers["cache-control"].removeprefix("max-age="))
        assert 365 * 86400 - 2 <= max_age <= 365 * 86400


def test_tag_limits(server: CacheServer, unique: str) -> None:
    with server.client() as c:
        k = f"/v1/keys/{unique}tags"
        tags = ",".join(f"t{i}" for i in range(65))
        r = c.put(k, content=b"x", params={"tags": tags})
        assert (r.status_code, r.json()["code"], r.json()["max_tags"]) == (413, "too_many_tags", 64)
        r = c.put(k, content=b"x", params={"tags": "a," + "t" * 257})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter")
        r = c.put(k, content=b"x", params={"tags": ",".join(["same"] * 100 + ["t" * 256])})
        assert r.status_code == 201  # 2 distinct tags
        body = {"tags": [f"t{i}" for i in range(1025)]}
        r = c.post("/v1/invalidate", json=body)
        assert (r.status_code, r.json()["code"]) == (413, "too_many_tags")
        r = c.post("/v1/invalidate", json={"tags": ["x" * 257]})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter")
        r = c.post("/v1/invalidate", json={"prefix": "p" * 1025})
        assert (r.status_code, r.json()["code"]) == (400, "invalid_parameter")
        assert c.post("/v1/invalidate", json={"tags": ["same"]}).json()["invalidated"] == 1


# -- transport -------------------------------------------------------------------------


def test_a_split_head_before_a_large_body_is_not_a_large_head(
    server: CacheServer, unique: str
) -> None:
    body = b"b" * 100_000
    head = (
        f"PUT /v1/keys/{unique}split HTTP/1.1\r\nHost: t\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with server.connect() as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(head[:20])
        # Make sure the server has read the first 20 bytes on their own: a request
        # on a second connection is answered only after the loop went past them.
        with server.client() as c:
            assert c.get("/livez").status_code == 200
        s.sendall(head[20:] + body + req("GET", f"/v1/keys/{unique}split"))
        assert read_response(s)[0] == 201
        status, _, got = read_response(s)
        assert (status, got) == (200, body)


def test_two_authorization_headers_are_refused() -> None:
    token = "t0ken-" + "x" * 20
    s = CacheServer("--token", token)
    try:
        with s.connect() as sock:
            sock.sendall(
                req(
                    "GET",
                    "/livez",
                    headers=f"Authorization: Bearer wrong-wrong-wrong\r\nAuthorization: Bearer {token}\r\n",
                )
            )
            status, headers, body = read_response(sock)
            assert status == 400 and b"Authorization" in body
            assert headers.get("connection") == "close"
        with s.client(headers={"authorization": f"Bearer {token}"}) as c:
            assert c.get("/livez").status_code == 200
    finally:
        assert s.stop() == 0


@pytest.mark.parametrize("token", [" " * 16, "\t" * 20, "sixteen chars ok"])
def test_a_token_with_whitespace_is_refused_at_start(token: str) -> None:
    import subprocess

    r = subprocess.run(
        [sys.executable, "-m", "maxage.cacheserver", "--port", "0", "--token", token],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "whitespace" in r.stderr


def test_connections_beyond_the_limit_are_closed() -> None:
    s = CacheServer("--max-connections", "8")
    try:
        held = [s.connect() for _ in range(8)]
        # a ninth is refused while the eight stay open
        with s.client() as c, pytest.raises(httpx.TransportError):
            c.get("/livez")
        for h in held:
            h.close()
        # once the server has seen them go, new connections are served again
        for _ in range(200):
            try:
                with s.client() as c:
                    assert c.get("/livez").status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            pytest.fail("connections stayed refused after the others closed")
        assert metric(s, "maxage_connections_refused_total") >= 1
    finally:
        assert s.stop() == 0


# -- read-through ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def recording() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def rt(recording: Upstream) -> Iterator[CacheServer]:
    s = CacheServer(
        "--upstream", f"ok/={recording.url}/ok/{{suffix}}",
        "--upstream", f"whole/={recording.url}/ok/{{key}}",
        "--upstream", f"hostile/={recording.url}/hostile/{{suffix}}",
    )  # fmt: skip
    yield s
    assert s.stop() == 0, s.stderr()


@pytest.mark.parametrize(
    "key",
    [
        "ok/../../admin/secret",
        "ok/%2e%2e/%2e%2e/admin/secret",
        "ok/..%2f..%2fadmin/secret",
        "ok/.%2e/.%2e/admin/secret",
        "ok/%2E%2E%2F%2E%2E%2Fadmin%2Fsecret",
        "ok/a/./../../admin/secret",
        "ok/..",
        "ok/..%5c..%5cadmin%5csecret",
        "whole/../admin/secret",
    ],
)
def test_keys_cannot_leave_the_upstream_template(
    rt: CacheServer, recording: Upstream, key: str
) -> None:
    with rt.connect() as s:  # raw: an HTTP client would resolve the dot segments itself
        s.sendall(req("GET", f"/v1/keys/{key}"))
        status, _, body = read_response(s)
        assert (status, json.loads(body)["code"]) == (400, "invalid_key")
    assert all(p.startswith(("/ok/", "/hostile/")) for p in recording.calls), recording.calls
    assert not [p for p in recording.calls if "admin" in p]


def test_dots_inside_a_segment_are_fine(rt: CacheServer, recording: Upstream) -> None:
    with rt.client() as c:
        r = c.get("/v1/keys/ok/v1.2/..hidden/a..b/file.json")
        assert r.status_code == 200
    assert recording.calls["/ok/v1.2/..hidden/a..b/file.json"] == 1


def test_untrusted_upstream_headers(rt: CacheServer) -> None:
    with rt.client() as c:
        r = c.get("/v1/keys/hostile/bigetag/1")  # no version: the cache assigns one
        assert r.status_code == 200 and r.headers["etag"] == '"1"'
        r = c.get("/v1/keys/hostile/hugeage/1")
        assert r.status_code == 200
        max_age = int(r.headers["cache-control"].removeprefix("max-age="))
        assert 365 * 86400 - 2 <= max_age <= 365 * 86400
        r = c.get("/v1/keys/hostile/longtype/1")
        assert (r.status_code, r.json()["code"]) == (502, "upstream_error")


def test_an_upstream_slot_in_the_host_is_refused_at_start() -> None:
    import subprocess

    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "maxage.cacheserver",
            "--port",
            "0",
            "--upstream",
            "u/=http://{suffix}.internal/x",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "after the host" in r.stderr


# -- in process: a large invalidation yields; Meta is charged ------------------------


def _app(n: int) -> tuple[object, object]:
    from maxage.cacheserver.app import CacheApp, make_meta, meta_size
    from maxage.cacheserver.metrics import Metrics
    from maxage.core import Cache, ManualClock

    clock = ManualClock(100.0)
    cache = Cache(512 << 20, clock=clock, thread_safe=False, prefix_index=True, meta_size=meta_size)
    app = CacheApp(
        cache, clock, Metrics(), max_key_length=1024, max_value_bytes=1 << 20, token=None
    )
    meta = make_meta(b"text/plain", 1, None)
    for i in range(n):
        cache.set_if_newer(f"k/{i}", 1, b"x", started_at=99.0, tags=("big",), meta=meta)
    return app, cache


def _request(method: bytes, url: bytes) -> object:
    from maxage.cacheserver.protocol import CacheRequest

    r = CacheRequest()
    r.method, r.url = method, url
    return r


@pytest.mark.parametrize("how", [b"tags=big", b"prefix=k/"])
def test_a_large_invalidation_yields_to_other_requests(how: bytes) -> None:
    import asyncio

    app, cache = _app(30_000)

    async def main() -> tuple[int, tuple[int, bytes, bytes]]:
        handled = app(_request(b"POST", b"/v1/invalidate?" + how))  # type: ignore[operator]
        assert not isinstance(handled, tuple), "a large invalidation must not block"
        task = asyncio.ensure_future(handled)
        served_meanwhile = 0
        while not task.done():
            assert app(_request(b"GET", b"/livez"))[0] == 200  # type: ignore[operator]
            if len(cache):  # type: ignore[arg-type]
                served_meanwhile += 1
            if served_meanwhile == 2:  # written while the invalidation runs: kept
                app.clock.advance(1.0)  # type: ignore[attr-defined]
                put = _request(b"PUT", b"/v1/keys/k/5?tags=big")
                put.body = b"new"  # type: ignore[attr-defined]
                assert app(put)[0] == 201  # type: ignore[operator]
            await asyncio.sleep(0)
        return served_meanwhile, task.result()

    served, (status, _, body) = asyncio.run(main())
    assert status == 200 and served >= 5
    # 30,000 if the old k/5 was dropped before the PUT, else it was overwritten
    assert json.loads(body)["invalidated"] in (29_999, 30_000)
    assert cache.keys() == ["k/5"]  # type: ignore[attr-defined]


def test_an_invalidation_finishes_when_its_request_is_cancelled() -> None:
    import asyncio

    app, cache = _app(30_000)

    async def main() -> None:
        handled = app(_request(b"POST", b"/v1/invalidate?tags=big"))  # type: ignore[operator]
        task = asyncio.ensure_future(handled)
        await asyncio.sleep(0)
        task.cancel()  # the request deadline passed, or the client went away
        with pytest.raises(asyncio.CancelledError):
            await task
        while app._invalidations:  # type: ignore[attr-defined]
            await asyncio.sleep(0)

    asyncio.run(main())
    assert len(cache) == 0  # type: ignore[arg-type]


def test_meta_overhead_is_measured() -> None:
    import gc
    import tracemalloc

    from maxage.cacheserver.app import META_OVERHEAD, make_meta, meta_size

    n = 20_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        metas = [make_meta(b"application/json", i + 1, 1e9 + i) for i in range(n)]
        used = tracemalloc.get_traced_memory()[0] - before - sys.getsizeof(metas)
    finally:
        tracemalloc.stop()
    charged = sum(meta_size(m) for m in metas)
    assert used <= charged, (used / n, charged / n)
    assert 2 * used / n > META_OVERHEAD  # not wildly over either


def test_unversioned_entries_of_one_content_type_share_their_meta() -> None:
    from maxage.cacheserver.app import SHARED_META_TYPES, make_meta, meta_size

    a, b = make_meta(b"text/plain", None, None), make_meta(b"text/plain", None, None)
    assert a is b and a.head == b"content-type: text/plain\r\n" and a.etag is None
    assert meta_size(a) == meta_size(make_meta(b"text/plain", None, 1.0))  # charged alike
    assert make_meta(b"text/plain", 7, None) is not make_meta(b"text/plain", 7, None)
    assert make_meta(b"text/plain", None, 5.0).fresh_until == 5.0  # not the shared one
    # Past the bound every new content type gets its own Meta (no unbounded table).
    for i in range(SHARED_META_TYPES + 1):
        make_meta(b"x/%d" % i, None, None)
    late = b"x/late"
    assert make_meta(late, None, None) is not make_meta(late, None, None)
    assert make_meta(late, None, None).head == b"content-type: x/late\r\n"


def test_header_lookup_as_sent_agrees_with_the_lower_case_one() -> None:
    from maxage.cacheserver import protocol

    for name, attr in protocol._WANTED_AS_SENT.items():
        assert attr == (protocol._WANTED.get(name.lower()) or ""), name


def test_precomputed_header_lines_match_formatting() -> None:
    from maxage.cacheserver import app, protocol

    assert len(protocol._CONTENT_LENGTH_END) == len(app._AGE) == len(app._MAX_AGE)
    for n in (0, 1, 99, 4095):
        assert protocol._CONTENT_LENGTH_END[n] == b"content-length: %d\r\n\r\n" % n
        assert app._AGE[n] == b"age: %d\r\n" % n
        assert app._MAX_AGE[n] == b"cache-control: max-age=%d\r\n" % n


@pytest.mark.parametrize(("advance", "age", "left"), [(5.0, 5, 9995), (6000.5, 6000, 3999)])
def test_age_and_max_age_lines_small_and_large(advance: float, age: int, left: int) -> None:
    app, _ = _app(0)
    put = _request(b"PUT", b"/v1/keys/aged?ttl=10000")
    put.body = b"v"  # type: ignore[attr-defined]
    assert app(put)[0] == 201  # type: ignore[operator]
    app.clock.advance(advance)  # type: ignore[attr-defined]
    status, head, body = app(_request(b"GET", b"/v1/keys/aged"))  # type: ignore[operator]
    assert (status, body) == (200, b"v")
    assert b"age: %d\r\ncache-control: max-age=%d\r\n" % (age, left) in head


def test_meta_size_is_precomputed_and_charged_alike() -> None:
    from maxage.cacheserver.app import META_OVERHEAD, make_meta, meta_charge, meta_size

    for meta in (
        make_meta(b"text/plain", None, None),
        make_meta(b"application/json", 7, None),
        make_meta(b"application/json", None, 5.0),
        make_meta(b"text/html", 123456, 9.0),
    ):
        etag = meta.etag
        expected = META_OVERHEAD + len(meta.head) + (len(etag) if etag is not None else 0)
        assert meta_size(meta) == meta_charge(meta) == meta.size == expected
    assert meta_size(None) == 0


def test_a_parsed_request_starts_with_the_same_fields_as_a_new_one() -> None:
    """``on_message_begin`` inlines ``CacheRequest.__init__``: the two must stay alike."""
    import asyncio

    from maxage.cacheserver.protocol import CacheRequest, HttpProtocol, Limits, ServerState

    loop = asyncio.new_event_loop()
    try:
        limits = Limits(max_value_bytes=1024, request_timeout=10.0)
        state = ServerState(lambda req: (200, b"", b""), limits, None, loop)
        proto = HttpProtocol(state)
        proto.req.url = b"/left/over"
        proto.on_message_begin()
        fresh = CacheRequest()
        for field in CacheRequest.__slots__:
            assert getattr(proto.req, field) == getattr(fresh, field), field
        assert isinstance(proto.req, CacheRequest)
    finally:
        loop.close()


@pytest.mark.parametrize(
    "ct_name,cl_name",
    [
        (b"Content-Type", b"Content-Length"),
        (b"content-type", b"content-length"),
        (b"CONTENT-TYPE", b"CONTENT-LENGTH"),
        (b"content-Type", b"Content-length"),
    ],
)
def test_the_headers_read_are_found_however_they_are_spelt(ct_name: bytes, cl_name: bytes) -> None:
    """``on_header`` compares the common spellings before its dict look-ups."""
    import asyncio

    from maxage.cacheserver.protocol import CacheRequest, HttpProtocol, Limits, ServerState

    seen: list[CacheRequest] = []

    def handler(req: CacheRequest) -> tuple[int, bytes, bytes]:
        seen.append(req)
        return 200, b"", b""

    class Transport:
        def __init__(self) -> None:
            self.out: list[bytes] = []
            self.write = self.out.append
            self.closed = False

        def is_closing(self) -> bool:
            return self.closed

        def close(self) -> None:
            self.closed = True

    loop = asyncio.new_event_loop()
    try:
        limits = Limits(max_value_bytes=1024, request_timeout=10.0)
        state = ServerState(handler, limits, _NullMetrics(), loop)
        proto = HttpProtocol(state)
        t = Transport()
        proto.connection_made(t)  # type: ignore[arg-type]
        proto.data_received(
            b"PUT /v1/keys/a HTTP/1.1\r\nHost: x\r\n" + ct_name + b": text/plain\r\n"
            b"X-Request-ID: r1\r\n" + cl_name + b": 3\r\n\r\nabc"
        )
        assert len(seen) == 1
        req = seen[0]
        assert (req.content_type, req.content_length, req.body) == (b"text/plain", b"3", b"abc")
        assert req.request_id == b"r1"
        proto.data_received(
            b"PUT /v1/keys/a HTTP/1.1\r\n" + ct_name + b": a/b\r\n" + ct_name + b": c/d\r\n"
            b"Content-Length: 0\r\n\r\n"
        )
        assert len(seen) == 1  # a repeated Content-Type is refused, not dispatched
        assert t.out[-1].startswith(b"HTTP/1.1 400 ")
        assert b"must not be repeated" in t.out[-1]
        assert t.closed
    finally:
        loop.close()


class _NullMetrics:
    connections_open = connections_total = connections_refused = parse_errors = 0
    first_bound = 0.0
    latency: dict[object, object] = {}

    def observe_request(self, route: str, status: int, elapsed: float) -> None:
        pass
