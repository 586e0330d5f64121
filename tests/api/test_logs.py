"""Issue 18 "Logs", black box: every stderr line of a ``maxage serve`` run with client
errors, a 500, a 504 and a store failure is one JSON object with ts, level, logger and msg; the
access line of an error carries its problem ``code`` and the caller's ``trace_id``.
Exceptions are one ``exception`` field (the formatter, in process)."""

from __future__ import annotations

import json
import logging
import sqlite3
import sys
import uuid
from collections.abc import Iterator

import pytest

from maxage.logs import JsonFormatter, TextFormatter, child_traceparent, trace_id
from tests.api.conftest import SLOW_ENV, MaxageServer

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
REQUIRED = ("ts", "level", "logger", "msg")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MaxageServer, list[str]]]:
    s = MaxageServer(
        tmp_path_factory.mktemp("logs"),
        "--access-log", "all", "--log-format", "json",
        env={SLOW_ENV: "0.5"},
    )  # fmt: skip
    try:
        with s.client() as c:
            doc = f"/v1/products/logs-{uuid.uuid4().hex}"
            assert c.get("/v1/nope/x").status_code == 404
            assert (
                c.put(doc, content=b"{", headers={"content-type": "application/json"}).status_code
                == 400
            )
            r = c.get(doc, headers={"x-request-timeout": "0.1", "traceparent": TRACEPARENT,
                                    "x-request-id": "rid-504"})  # fmt: skip
            assert r.status_code == 504, r.text
            # A 500: a stored document whose data is not JSON any more (corrupted behind
            # the server's back); patching it must decode it, which fails unexpectedly.
            broken = f"/v1/products/broken-{uuid.uuid4().hex}"
            assert c.put(broken, json={"name": "x", "price": 1}).status_code == 201
            raw = sqlite3.connect(s.db, timeout=30, isolation_level=None)
            try:
                raw.execute(
                    "UPDATE documents SET data = x'7b' WHERE id = ?", (broken.rsplit("/", 1)[1],)
                )
            finally:
                raw.close()
            r = c.patch(broken, content=b'{"price": 2}', headers={
                "content-type": "application/merge-patch+json", "x-request-id": "rid-500"})  # fmt: skip
            assert r.status_code == 500 and r.json()["code"] == "internal_error", r.text
            # A store failure: another connection holds the write lock past the store's
            # own timeout, so the server's write fails (503 store_unavailable).
            lock = sqlite3.connect(s.db, timeout=30, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")
                r = c.put(doc, json={"name": "x", "price": 1}, headers={"x-request-id": "rid-503"},
                          timeout=30)  # fmt: skip
                assert r.status_code in (503, 504), r.text
            finally:
                lock.execute("ROLLBACK")
                lock.close()
    finally:
        code = s.stop()
    assert code == 0, s.stderr()
    yield s, s.stderr().splitlines()


def test_every_stderr_line_is_json_with_the_required_fields(
    run: tuple[MaxageServer, list[str]],
) -> None:
    _, lines = run
    assert lines
    for line in lines:
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        for field in REQUIRED:
            assert field in doc, (field, line)
        assert doc["level"] in ("debug", "info", "warning", "error", "critical"), line


def test_error_access_lines_carry_code_status_route_and_trace(
    run: tuple[MaxageServer, list[str]],
) -> None:
    docs = [json.loads(line) for line in run[1]]
    access = [d for d in docs if d["logger"] == "maxage.access"]
    codes = {d.get("code") for d in access}
    assert {"collection_not_found", "deadline_exceeded", "store_unavailable"} <= codes, access
    assert codes & {"malformed_json", "unsupported_media_type", "invalid_document"}, codes
    timed_out = next(d for d in access if d.get("request_id") == "rid-504")
    assert timed_out["status"] == 504 and timed_out["trace_id"] == TRACE
    assert timed_out["route"] == "/v1/{collection}/{id}" or "{" in timed_out["route"]
    store = [d for d in docs if d.get("request_id") == "rid-503"]
    assert store and all("code" in d and "status" in d for d in store), store
    crashed = [d for d in access if d.get("request_id") == "rid-500"]
    assert crashed and crashed[0]["status"] == 500 and crashed[0]["code"] == "internal_error"
    logged = [d for d in docs if d.get("request_id") == "rid-500" and "exception" in d]
    assert logged and "Traceback" in logged[0]["exception"], docs  # one field, not loose lines
    warning = [d for d in docs if d["logger"] == "maxage.api" and d["level"] == "warning"]
    assert any(d.get("code") == "deadline_exceeded" and d.get("trace_id") == TRACE for d in warning)


def _record(exc_info: object = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "maxage.api", logging.ERROR, __file__, 1, "boom %s", ("x",), exc_info
    )
    record.__dict__.update(extra)
    return record


def test_an_exception_is_one_field_never_loose_lines() -> None:
    try:
        raise RuntimeError("inner\nline")
    except RuntimeError:
        record = _record(sys.exc_info(), request_id="r1", code="internal_error", status=500)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "boom x" and doc["level"] == "error" and doc["logger"] == "maxage.api"
    assert doc["request_id"] == "r1" and doc["code"] == "internal_error" and doc["status"] == 500
    assert "Traceback" in doc["exception"] and "RuntimeError" in doc["exception"]
    assert doc["ts"].endswith("Z") and len(doc["ts"]) == len("2025-01-01T00:00:00.000Z")
    text = TextFormatter().format(_record(code="x"))
    assert "maxage.api: boom x code=x" in text


def test_trace_helpers() -> None:
    assert trace_id(TRACEPARENT.encode()) == TRACE
    assert trace_id(b"00-" + b"0" * 32 + b"-b7ad6b7169203331-01") is None
    assert trace_id(b"garbage") is None and trace_id(None) is None
    child = child_traceparent(TRACEPARENT)
    assert child.startswith(f"00-{TRACE}-") and child.endswith("-01")
    assert child.split("-")[2] != "b7ad6b7169203331"
    assert trace_id(child_traceparent(None).encode()) not in (None, TRACE)
