"""A cold cached read looks in the in-process cache once: one miss, not one per layer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from maxage.api.app import Settings, build_app
from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config
from maxage.core.cache import Cache
from maxage.core.clock import SystemClock
from maxage.service import Service
from maxage.store.sqlite import SQLiteStore


async def test_one_lookup_per_read(tmp_path: Path) -> None:
    clock = SystemClock()
    store = SQLiteStore(tmp_path / "db.sqlite", clock=clock)
    await store.open()
    try:
        cache = Cache(1 << 20, clock=clock, thread_safe=False)
        service = Service(load_config(BUNDLED_CONFIG).collections, store, cache, clock)
        app = build_app(service, Settings())
        gone = asyncio.Event()

        async def call(method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
            sent: list[dict[str, Any]] = []
            first = True

            async def receive() -> dict[str, Any]:
                nonlocal first
                if first:
                    first = False
                    return {"type": "http.request", "body": body, "more_body": False}
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": method, "path": path, "query_string": b"",
                     "headers": [(b"content-type", b"application/json")]}  # fmt: skip
            await app(scope, receive, send)
            return sent[0]["status"], sent[1]["body"]

        status, body = await call("POST", "/v1/profiles", b'{"name":"ann"}')
        assert status == 201
        path = f"/v1/profiles/{json.loads(body)['id']}"  # write-around: not cached yet
        assert (await call("GET", path))[0] == 200
        assert (cache.stats.misses, cache.stats.hits) == (1, 0)
        assert service.reads.stats.misses == 1
        assert (await call("GET", path))[0] == 200
        assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    finally:
        await store.close()
