"""Issue 18 "Logs" for the cache server: the same --access-log modes as the API and
--log-format json lines (ts, level, logger, msg; request_id, trace_id, route, status,
code where known)."""

from __future__ import annotations

import json

from .conftest import CacheServer

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def _lines(s: CacheServer) -> list[dict[str, object]]:
    docs = [json.loads(line) for line in s.stderr().splitlines()]
    for doc in docs:
        assert {"ts", "level", "logger", "msg"} <= doc.keys(), doc
    return docs


def test_all_mode_logs_every_request_as_json() -> None:
    s = CacheServer("--access-log", "all", "--log-format", "json")
    try:
        with s.client() as c:
            assert c.put("/v1/keys/a", content=b"x").status_code in (200, 201)
            assert c.get("/v1/keys/a").status_code == 200
            r = c.get(
                "/v1/keys/nope", headers={"x-request-id": "rid-1", "traceparent": TRACEPARENT}
            )
            assert r.status_code == 404
    finally:
        assert s.stop() == 0, s.stderr()
    access = [d for d in _lines(s) if d["logger"] == "maxage.cacheserver.access"]
    assert [(d["method"], d["route"], d["status"]) for d in access] == [
        ("PUT", "put", 201), ("GET", "get", 200), ("GET", "get", 404),
    ]  # fmt: skip
    miss = access[-1]
    assert miss["code"] == "key_not_found" and miss["request_id"] == "rid-1"
    assert miss["trace_id"] == TRACE and miss["level"] == "info"
    assert isinstance(miss["duration_ms"], float)
    assert "code" not in access[1] and "request_id" not in access[1]


def test_default_mode_logs_only_errors_and_slow_requests() -> None:
    s = CacheServer("--log-format", "json")  # default --access-log errors-and-slow
    try:
        with s.client() as c:
            c.put("/v1/keys/a", content=b"x")
            c.get("/v1/keys/a")
            c.get("/v1/keys/nope")
    finally:
        assert s.stop() == 0, s.stderr()
    assert [d for d in _lines(s) if d["logger"] == "maxage.cacheserver.access"] == []


def test_off_mode_and_text_format() -> None:
    s = CacheServer("--access-log", "off", "--log-format", "text")
    try:
        with s.client() as c:
            c.get("/v1/keys/nope")
    finally:
        assert s.stop() == 0, s.stderr()
    assert "maxage.cacheserver.access" not in s.stderr()
