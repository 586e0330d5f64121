"""Black-box API tests against a running cache server (HTTP via httpx)."""

from __future__ import annotations

import httpx

from .conftest import CacheServer


def _problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["code"] == code
    assert doc["status"] == status
    assert set(doc) >= {"type", "title", "status", "detail", "instance", "code"}
    assert doc["type"].endswith(code)
    return doc  # type: ignore[no-any-return]


def test_put_then_get_returns_bytes_content_type_etag_age_ttl(
    http: httpx.Client, unique: str
) -> None:
    body = bytes(range(256)) * 3
    r = http.put(
        f"/v1/keys/{unique}a", params={"ttl": "30"}, content=body,
        headers={"content-type": "image/x-test"},
    )  # fmt: skip
    assert r.status_code == 201
    assert r.json() == {"key": f"{unique}a", "version": 1, "outcome": "stored"}
    assert r.headers["etag"] == '"1"'
    g = http.get(f"/v1/keys/{unique}a")
    assert g.status_code == 200
    assert g.content == body
    assert g.headers["content-type"] == "image/x-test"
    assert g.headers["etag"] == '"1"'
    assert int(g.headers["age"]) >= 0
    assert g.headers["cache-control"] in ("max-age=29", "max-age=30")
    assert g.headers["cache-status"] == "maxage; hit"
    # No TTL: no max-age, default content type.
    http.put(f"/v1/keys/{unique}b", content=b"x")
    g = http.get(f"/v1/keys/{unique}b")
    assert "cache-control" not in g.headers
    assert g.headers["content-type"] == "application/octet-stream"


def test_head_and_if_none_match(http: httpx.Client, unique: str) -> None:
    http.put(f"/v1/keys/{unique}k", params={"version": "7"}, content=b"hello")
    h = http.head(f"/v1/keys/{unique}k")
    assert h.status_code == 200
    assert h.headers["content-length"] == "5"
    assert h.content == b""
    r = http.get(f"/v1/keys/{unique}k", headers={"if-none-match": '"7"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == '"7"'
    r = http.get(f"/v1/keys/{unique}k", headers={"if-none-match": 'W/"6", "8"'})
    assert r.status_code == 200


def test_miss_is_a_404_problem(http: httpx.Client, unique: str) -> None:
    doc = _problem(http.get(f"/v1/keys/{unique}nope"), 404, "key_not_found")
    assert doc["instance"] == f"/v1/keys/{unique}nope"


def test_versioned_writes_are_idempotent_and_refuse_older(http: httpx.Client, unique: str) -> None:
    k = f"/v1/keys/{unique}v"
    r = http.put(k, params={"version": "5"}, content=b"v5")
    assert (r.status_code, r.json()["outcome"]) == (201, "stored")
    r = http.put(k, params={"version": "5"}, content=b"v5")
    assert (r.status_code, r.json()["outcome"]) == (200, "unchanged")
    doc = _problem(http.put(k, params={"version": "4"}, content=b"v4"), 409, "version_conflict")
    assert doc["current_version"] == 5
    assert http.get(k).content == b"v5"
    r = http.put(k, params={"version": "9"}, content=b"v9")
    assert r.status_code == 201
    g = http.get(k)
    assert (g.content, g.headers["etag"]) == (b"v9", '"9"')
    # Unversioned put: version = stored + 1.
    r = http.put(k, content=b"next")
    assert r.json()["version"] == 10


def test_delete_with_version_leaves_a_tombstone(http: httpx.Client, unique: str) -> None:
    k = f"/v1/keys/{unique}d"
    http.put(k, params={"version": "3"}, content=b"v3")
    r = http.delete(k, params={"version": "6"})
    assert r.json() == {"key": f"{unique}d", "deleted": True, "tombstone": 6}
    _problem(http.get(k), 404, "key_not_found")
    doc = _problem(http.put(k, params={"version": "5"}, content=b"slow fill"), 409, "tombstoned")
    assert doc["tombstone_version"] == 6
    assert http.put(k, params={"version": "6"}, content=b"v6").status_code == 201
    # Plain delete of a missing key.
    r = http.delete(f"/v1/keys/{unique}never")
    assert r.status_code == 200 and r.json()["deleted"] is False


def test_invalidate_by_tags_and_prefix(http: httpx.Client, unique: str) -> None:
    for i, tags in enumerate(["red", "red,blue", "blue", ""]):
        http.put(f"/v1/keys/{unique}t{i}", params={"tags": tags} if tags else {}, content=b"x")
    http.put(f"/v1/keys/{unique}other/1", content=b"y")
    http.put(f"/v1/keys/{unique}other/2", content=b"y")
    r = http.post("/v1/invalidate", json={"tags": ["red"]})
    assert r.json()["invalidated"] == 2
    assert [http.get(f"/v1/keys/{unique}t{i}").status_code for i in range(4)] == [
        404, 404, 200, 200,
    ]  # fmt: skip
    r = http.post("/v1/invalidate", params={"tags": "blue"})
    assert r.json()["invalidated"] == 1
    r = http.post("/v1/invalidate", json={"prefix": f"{unique}other/"})
    assert r.json()["invalidated"] == 2
    assert http.get(f"/v1/keys/{unique}other/1").status_code == 404
    assert http.get(f"/v1/keys/{unique}t3").status_code == 200
    _problem(http.post("/v1/invalidate", json={}), 422, "invalid_body")
    _problem(http.post("/v1/invalidate", json={"nope": 1}), 422, "invalid_body")
    _problem(
        http.post("/v1/invalidate", content=b"{", headers={"content-type": "application/json"}),
        400,
        "malformed_json",
    )
    _problem(
        http.post("/v1/invalidate", content=b"tags=x", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )


def test_keys_are_percent_decoded_and_may_contain_slashes(http: httpx.Client, unique: str) -> None:
    r = http.put(f"/v1/keys/{unique}caf%C3%A9%2Fx%20y", content=b"ok")
    assert r.json()["key"] == f"{unique}café/x y"
    assert http.get(f"/v1/keys/{unique}café/x y").content == b"ok"


def test_bad_requests_are_problems(server: CacheServer, http: httpx.Client, unique: str) -> None:
    _problem(http.get("/nope"), 404, "route_not_found")
    r = http.post(f"/v1/keys/{unique}x")
    _problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD, PUT, DELETE"
    _problem(http.delete("/metrics"), 405, "method_not_allowed")
    _problem(http.get("/v1/keys/"), 400, "invalid_key")
    _problem(http.get("/v1/keys/%FF"), 400, "invalid_key")
    _problem(http.get("/v1/keys/" + "k" * 1025), 400, "key_too_long")
    for bad in ({"ttl": "0"}, {"ttl": "abc"}, {"ttl": "inf"}, {"version": "0"},
                {"version": "-1"}, {"version": "1.5"}, {"version": str(2**63)}):  # fmt: skip
        _problem(
            http.put(f"/v1/keys/{unique}x", params=bad, content=b"x"), 400, "invalid_parameter"
        )
    _problem(http.delete(f"/v1/keys/{unique}x", params={"version": "x"}), 400, "invalid_parameter")
    big = b"x" * (1024 * 1024 + 1)
    _problem(http.put(f"/v1/keys/{unique}big", content=big), 413, "value_too_large")
    assert server.alive()


def test_ttl_expiry_with_the_test_clock(http: httpx.Client, unique: str) -> None:
    k = f"/v1/keys/{unique}ttl"
    http.put(k, params={"ttl": "100"}, content=b"short")
    http.put(f"/v1/keys/{unique}long", params={"ttl": "1000"}, content=b"long")
    assert http.get(k).headers["cache-control"] in ("max-age=99", "max-age=100")
    http.post("/debug/clock", params={"advance": "60"})
    g = http.get(k)
    assert g.status_code == 200
    assert int(g.headers["age"]) >= 60
    assert g.headers["cache-control"] in ("max-age=39", "max-age=40")
    http.post("/debug/clock", params={"advance": "41"})
    _problem(http.get(k), 404, "key_not_found")
    assert http.get(f"/v1/keys/{unique}long").status_code == 200
    assert "ttl" in http.get("/metrics").text


def test_health_openapi_metrics(http: httpx.Client, unique: str) -> None:
    assert http.get("/livez").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    doc = http.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert "/v1/keys/{key}" in doc["paths"]
    http.put(f"/v1/keys/{unique}m", content=b"x")
    http.get(f"/v1/keys/{unique}m")
    http.get(f"/v1/keys/{unique}missing")
    text = http.get("/metrics").text
    for name in (
        "maxage_cache_hits_total", "maxage_cache_misses_total", "maxage_cache_hit_ratio",
        'maxage_cache_evictions_total{reason="size"}', "maxage_cache_memory_bytes",
        "maxage_cache_entries",
        'http_server_request_duration_seconds_bucket{http_request_method="GET",'
        'http_route="/v1/keys/{key}",http_response_status_code="200",le="+Inf"}',
        "maxage_upstream_errors_total", "maxage_upstream_duration_seconds_count",
    ):  # fmt: skip
        assert name in text, name
    assert (
        'http_server_request_duration_seconds_count{http_request_method="GET",'
        'http_route="/v1/keys/{key}",http_response_status_code="404"}' in text
    )


def test_request_id_is_echoed(http: httpx.Client) -> None:
    r = http.get("/livez", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = http.get("/livez", headers={"x-request-id": "bad id<>"})
    assert "x-request-id" not in r.headers


def test_byte_bound_and_eviction() -> None:
    s = CacheServer("--max-bytes", "256KiB", "--max-value-bytes", "64KiB")
    try:
        with s.client() as c:
            value = b"v" * 4000
            for i in range(200):  # ~800 KB into a 256 KiB cache
                assert c.put(f"/v1/keys/k{i}", content=value).status_code == 201
            text = c.get("/metrics").text
            used = int(_metric(text, "maxage_cache_memory_bytes"))
            assert 0 < used <= 256 * 1024
            assert int(_metric(text, 'maxage_cache_evictions_total{reason="size"}')) > 100
            present = [i for i in range(200) if c.get(f"/v1/keys/k{i}").status_code == 200]
            assert 0 < len(present) < 200
            # Whatever survived is intact.
            assert all(c.get(f"/v1/keys/k{i}").content == value for i in present)
    finally:
        assert s.stop() == 0


def _metric(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return line.split()[-1]
    raise AssertionError(f"no metric {name}")


def test_token_auth_and_non_loopback_refusal() -> None:
    token = "s3cret-token-0123456789"
    s = CacheServer("--token", token)
    try:
        with s.client() as c:
            r = c.get("/livez")
            _problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer")
            _problem(
                c.get("/livez", headers={"authorization": "Bearer wrong"}), 401, "unauthorized"
            )
            ok = {"authorization": f"Bearer {token}"}
            assert c.put("/v1/keys/a", content=b"1", headers=ok).status_code == 201
            assert c.get("/v1/keys/a", headers=ok).content == b"1"
            lower = {"authorization": f"bearer {token}"}
            assert c.get("/v1/keys/a", headers=lower).status_code == 200
            _problem(
                c.get("/livez", headers={"authorization": f"Basic {token}"}), 401, "unauthorized"
            )
            _problem(c.get("/livez", headers={"authorization": "Bearer"}), 401, "unauthorized")
    finally:
        assert s.stop() == 0
    # The token may come from the environment.
    s = CacheServer(env={"MAXAGE_CACHE_TOKEN": token})
    try:
        with s.client() as c:
            assert c.get("/livez").status_code == 401
            assert c.get("/livez", headers={"authorization": f"Bearer {token}"}).status_code == 200
    finally:
        assert s.stop() == 0
    # Non-loopback without a token: refuse to start, exit 2.
    import subprocess
    import sys

    from .conftest import ROOT

    p = subprocess.run(
        [sys.executable, "-m", "maxage.cacheserver", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=20, cwd=ROOT,
        env={k: v for k, v in __import__("os").environ.items() if k != "MAXAGE_CACHE_TOKEN"},
    )  # fmt: skip
    assert p.returncode == 2
    assert "token" in p.stderr and p.stdout == ""


def test_bad_options_are_refused() -> None:
    import argparse
    import contextlib
    import io
    import subprocess
    import sys

    import pytest

    from maxage.cacheserver.cli import configure_parser, run

    from .conftest import ROOT

    for args in (
        ["--upstream", "nourl"],
        ["--upstream", "p/=ftp://x/{key}"],
        ["--upstream", "p/=http://x/fixed"],
        ["--max-bytes", "lots"],
        ["--port", "70000"],
        ["--request-timeout", "0"],
    ):
        parser = argparse.ArgumentParser()
        configure_parser(parser)
        with (
            pytest.raises(SystemExit) as exc,
            contextlib.redirect_stderr(io.StringIO()),
        ):
            parser.parse_args(args)
        assert exc.value.code == 2, args
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert run(parser.parse_args(["--token", "short"])) == 2
    assert "16" in err.getvalue()
    # And through the real entry point:
    p = subprocess.run(
        [sys.executable, "-m", "maxage.cacheserver", "--port", "0", "--upstream", "x"],
        capture_output=True, text=True, timeout=20, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 2 and p.stdout == ""


def test_sigint_shuts_down_cleanly() -> None:
    import signal

    s = CacheServer()
    with s.client() as c:
        assert c.get("/livez").status_code == 200
    s.proc.send_signal(signal.SIGINT)
    assert s.proc.wait(timeout=10) == 0
