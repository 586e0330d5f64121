"""The cashews peer: FastAPI + cashews with its in-memory backend (``mem://``), serving the
same document from SQLite. In-process like maxage's L1: a like-for-like peer."""

from cashews import cache
from fastapi import FastAPI
from peer_fastapi import read_product

cache.setup("mem://")

app = FastAPI()


@app.get("/v1/products/{id}")
@cache(ttl="30s", key="product:{id}")
async def get_product(id: str) -> dict[str, object]:
    return read_product(id)
