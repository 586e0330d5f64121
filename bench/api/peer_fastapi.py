"""The peer: FastAPI + fastapi-cache2 (Redis backend) serving the same document from SQLite."""

import json
import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi_cache import FastAPICache
from fastapi_cache.backends.redis import RedisBackend
from fastapi_cache.decorator import cache
from redis import asyncio as aioredis

DB = os.environ["BENCH_DB"]
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/15")


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    redis = aioredis.from_url(REDIS)
    FastAPICache.init(RedisBackend(redis), prefix="bench-peer")
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/v1/products/{id}")
@cache(expire=30)
async def get_product(id: str) -> dict[str, object]:
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
