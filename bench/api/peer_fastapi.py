"""The fastapi-cache2 peer: FastAPI + fastapi-cache2 serving the same document from SQLite.

``BENCH_BACKEND`` picks fastapi-cache2's backend: ``redis`` (default; a shared tier,
like maxage's L2 -- not like-for-like with maxage's in-process L1) or ``memory``
(its ``InMemoryBackend``: in-process, the like-for-like peer of maxage's L1).
"""

import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi_cache import FastAPICache
from fastapi_cache.backends.inmemory import InMemoryBackend
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from redis import asyncio as aioredis

DB = os.environ["BENCH_DB"]
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15")
BACKEND = os.environ.get("BENCH_BACKEND", "redis")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    if BACKEND == "memory":
        FastAPICache.init(InMemoryBackend(), prefix="bench-peer")
    elif BACKEND == "redis":
        FastAPICache.init(RedisBackend(aioredis.from_url(REDIS)), prefix="bench-peer")
    else:
        raise SystemExit(f"BENCH_BACKEND must be redis or memory, got {BACKEND!r}")
    yield


app = FastAPI(lifespan=lifespan)


def read_product(id: str) -> dict[str, object]:
    """The primary read on a miss (the same document maxage serves)."""
    conn = sqlite3.connect(DB)
    try:
        row = conn.execute(
            "SELECT id, version, data FROM documents WHERE collection='products' AND id=?", (id,)
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        raise HTTPException(404)
    return {"id": row[0], "version": row[1], "data": json.loads(row[2])}


@app.get("/v1/products/{id}")
@cache(expire=30)
async def get_product(id: str) -> dict[str, object]:
    return read_product(id)
