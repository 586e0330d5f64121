"""Tracing (issue "Operable in production"): with tracing on, a request's server span
continues the caller's ``traceparent`` and its primary calls and cache fill are its
children; with tracing off nothing is recorded and the hot path serves cached GETs.
Recorded with the OpenTelemetry SDK's in-memory exporter, on the real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from maxage import tracing
from maxage.api.app import App, Settings, build_app
from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config
from maxage.core.cache import Cache
from maxage.core.clock import SystemClock
from maxage.service import Service
from maxage.store.sqlite import SQLiteStore

pytest.importorskip("opentelemetry.sdk")  # a dev dependency: always there in CI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def call(app: App, method: str, path: str, body: bytes = b"", headers: Any = ()) -> Any:
    sent: list[dict[str, Any]] = []
    first = True

    async def receive() -> dict[str, Any]:
        nonlocal first
        if first:
            first = False
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer is sent
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": b"",
             "headers": [(b"content-type", b"application/json"), *headers]}  # fmt: skip
    await app(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    exp = InMemorySpanExporter()
    assert tracing.configure(exp)
    yield exp
    tracing.reset()


async def _app(tmp_path: Path) -> tuple[App, SQLiteStore]:
    clock = SystemClock()
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    service = Service(load_config(BUNDLED_CONFIG).collections, store,
                      Cache(1 << 20, clock=clock, thread_safe=False), clock)  # fmt: skip
    return build_app(service, Settings()), store


@pytest.fixture
async def traced(tmp_path: Path, exporter: InMemorySpanExporter) -> AsyncIterator[App]:
    app, store = await _app(tmp_path)
    yield app
    await store.close()


async def test_spans_continue_the_callers_trace(
    traced: App, exporter: InMemorySpanExporter
) -> None:
    parent = f"00-{TRACE_ID}-{PARENT}-01".encode()
    status, headers, body = await call(
        traced, "POST", "/v1/products", b'{"name":"chair","price":1}', [(b"traceparent", parent)]
    )
    assert status == 201
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.name == "POST /v1/products"]
    assert len(server) == 1
    root = server[0]
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None and f"{root.parent.span_id:016x}" == PARENT
    assert root.attributes["http.response.status_code"] == 201
    assert root.attributes["http.route"] == "/v1/products"
    # the response names our span, in the caller's trace
    assert headers[b"traceparent"] == f"00-{TRACE_ID}-{root.context.span_id:016x}-01".encode()
    children = {
        s.name: s
        for s in spans
        if s.parent is not None and s.parent.span_id == root.context.span_id
    }
    assert (
        "sqlite write" in children
        and children["sqlite write"].attributes["db.system.name"] == "sqlite"
    )
    assert "maxage fill" in children  # products are write-through

    exporter.clear()
    doc = json.loads(body)["id"]
    status, _, _ = await call(traced, "GET", f"/v1/products/{doc}")
    assert status == 200
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["GET /v1/products/{id}"]  # a cache hit: no primary call, still a span


async def test_off_by_default_and_the_hot_path_stays(tmp_path: Path) -> None:
    assert tracing.TRACER is None
    app, store = await _app(tmp_path)
    try:
        created, _, body = await call(app, "POST", "/v1/products", b'{"name":"c","price":1}')
        assert created == 201
        doc = json.loads(body)["id"]
        _, headers, _ = await call(app, "GET", f"/v1/products/{doc}")
        assert headers[b"cache-status"] == b"maxage; hit; detail=l1"
    finally:
        await store.close()
