"""An unexpected exception becomes a 500 problem with no traceback and no echoed detail."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from maxage.api.app import Settings, build_app
from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.service import Service
from maxage.store.base import Document
from maxage.store.sqlite import SQLiteStore


class BrokenStore(SQLiteStore):
    async def get(self, collection: str, id: str) -> Document | None:
        raise RuntimeError("password=hunter2 at line 42")


async def test_unexpected_error_is_a_500_problem(tmp_path: Path) -> None:
    clock = ManualClock()
    store = BrokenStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    try:
        config = load_config(BUNDLED_CONFIG)
        service = Service(config.collections, store, Cache(1 << 20, clock=clock), clock)
        app = build_app(service, Settings())
        sent: list[dict[str, Any]] = []

        client_gone = asyncio.Event()  # never set: the client stays connected

        async def receive() -> dict[str, Any]:
            await client_gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": "GET",
            "path": "/v1/inventory/abc",
            "query_string": b"",
            "headers": [(b"x-request-id", b"req-1")],
        }
        await app(scope, receive, send)
        start, body = sent[0], sent[1]["body"]
        assert start["status"] == 500
        assert (b"content-type", b"application/problem+json") in start["headers"]
        problem = json.loads(body)
        assert problem["code"] == "internal_error" and problem["status"] == 500
        assert problem["request_id"] == "req-1" and problem["instance"] == "/v1/inventory/abc"
        assert b"hunter2" not in body and b"Traceback" not in body and b"line 42" not in body
    finally:
        await store.close()
