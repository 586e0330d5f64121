"""Concurrent clients: no lost writes, no torn values, versions never go backwards."""

from __future__ import annotations

import asyncio
import hashlib

import httpx

from .conftest import CacheServer

WRITERS = 6
KEYS = 4
VERSIONS = 36


def _value(key: str, version: int) -> bytes:
    # Self-verifying: the body names its key and version and carries a digest.
    payload = f"{key}:{version}:".encode() * (20 + version % 7 * 40)
    return payload + hashlib.sha256(payload).hexdigest().encode()


def _check(key: str, etag: str, body: bytes) -> int:
    version = int(etag.strip('"'))
    assert body == _value(key, version), "torn or mismatched value"
    return version


async def test_concurrent_writers_and_readers(server: CacheServer, unique: str) -> None:
    keys = [f"{unique}c{i}" for i in range(KEYS)]
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=server.url, trust_env=False, limits=limits) as c:

        async def writer(w: int) -> None:
            # Each writer writes every version congruent to w, in a shuffled-ish order.
            for v in range(1 + w, VERSIONS + 1, WRITERS):
                for key in keys:
                    r = await c.put(
                        f"/v1/keys/{key}", params={"version": v}, content=_value(key, v)
                    )
                    assert r.status_code in (200, 201, 409), r.text
                    if r.status_code == 409:
                        assert r.json()["code"] == "version_conflict"
                        assert r.json()["current_version"] > v

        async def reader() -> None:
            seen = dict.fromkeys(keys, 0)
            for _ in range(30):
                for key in keys:
                    r = await c.get(f"/v1/keys/{key}")
                    if r.status_code == 404:
                        assert seen[key] == 0
                        continue
                    v = _check(key, r.headers["etag"], r.content)
                    assert v >= seen[key], "a reader saw a version go backwards"
                    seen[key] = v

        await asyncio.gather(*(writer(w) for w in range(WRITERS)), *(reader() for _ in range(4)))
        # Nothing lost: the newest version of every key is what is stored.
        for key in keys:
            r = await c.get(f"/v1/keys/{key}")
            assert _check(key, r.headers["etag"], r.content) == VERSIONS
