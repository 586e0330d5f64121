"""maxage.cacheserver.client against a running server: typed results and typed errors."""

from __future__ import annotations

import pytest

from maxage.cacheserver.client import (
    AsyncCacheClient,
    BadRequest,
    CacheClient,
    CacheUnavailable,
    PayloadTooLarge,
    Tombstoned,
    UpstreamFailed,
    VersionConflict,
)

from .conftest import CacheServer
from .upstream_fixture import Upstream


def test_sync_client_round_trip(server: CacheServer, unique: str) -> None:
    with CacheClient(server.url) as cache:
        w = cache.set(f"{unique}a", '{"x":1}', version=3, ttl=60, tags=["t1"],
                      content_type="application/json")  # fmt: skip
        assert (w.version, w.stored, w.outcome) == (3, True, "stored")
        assert cache.set(f"{unique}a", '{"x":1}', version=3).stored is False
        e = cache.get(f"{unique}a")
        assert e is not None
        assert e.json() == {"x": 1}
        assert (e.version, e.content_type, e.cache_status) == (3, "application/json", "maxage; hit")
        assert e.max_age is not None and 58 <= e.max_age <= 60
        with pytest.raises(VersionConflict) as exc:
            cache.set(f"{unique}a", b"old", version=2)
        assert exc.value.code == "version_conflict" and exc.value.current_version == 3
        assert cache.invalidate(tags=["t1"]).invalidated == 1
        assert cache.get(f"{unique}a") is None
        d = cache.delete(f"{unique}b", version=4)
        assert (d.deleted, d.tombstone) == (False, 4)
        with pytest.raises(Tombstoned) as ts:
            cache.set(f"{unique}b", b"x", version=2)
        assert ts.value.tombstone_version == 4
        with pytest.raises(PayloadTooLarge):
            cache.set(f"{unique}big", b"x" * (2 * 1024 * 1024))
        with pytest.raises(BadRequest) as br:
            cache.set(f"{unique}x", b"x", ttl=-1)
        assert br.value.code == "invalid_parameter"
        calls = []

        def load() -> tuple[bytes, int]:
            calls.append(1)
            return b"loaded", 9

        assert cache.get_or_load(f"{unique}l", load, ttl=30).value == b"loaded"
        e2 = cache.get_or_load(f"{unique}l", load, ttl=30)
        assert (e2.value, e2.version, len(calls)) == (b"loaded", 9, 1)
        assert cache.invalidate(prefix=f"{unique}l").invalidated == 1
        assert "maxage_cache_hits_total" in cache.metrics()


def test_unreachable_server_raises_cache_unavailable() -> None:
    with CacheClient("http://127.0.0.1:9", timeout=1) as cache, pytest.raises(CacheUnavailable):
        cache.get("x")


async def test_async_client(server: CacheServer, unique: str) -> None:
    async with AsyncCacheClient(server.url) as cache:
        w = await cache.set(f"{unique}k", b"v1")
        assert w.version == 1
        e = await cache.get(f"{unique}k")
        assert e is not None and e.value == b"v1"

        async def load() -> bytes:
            return b"from-db"

        e = await cache.get_or_load(f"{unique}m", load, ttl=5, tags=["g"])
        assert e.value == b"from-db"
        assert (await cache.get(f"{unique}m")) is not None
        assert (await cache.invalidate(tags=["g"])).invalidated == 1
        assert (await cache.delete(f"{unique}k")).deleted is True
        assert await cache.get(f"{unique}k") is None


def test_token_and_upstream_errors_through_the_client() -> None:
    up = Upstream()
    token = "client-token-0123456789"
    s = CacheServer("--token", token, "--upstream", f"f/={up.url}/fail/{{suffix}}")
    try:
        with CacheClient(s.url) as anon, pytest.raises(Exception) as exc:
            anon.get("f/x")
        assert getattr(exc.value, "code", None) == "unauthorized"
        with CacheClient(s.url, token=token) as cache, pytest.raises(UpstreamFailed) as uf:
            cache.get("f/x")
        assert uf.value.code == "upstream_error" and uf.value.status == 502
    finally:
        up.stop()
        assert s.stop() == 0


def test_too_many_tags_is_payload_too_large(server: CacheServer, unique: str) -> None:
    from maxage.cacheserver.client import CacheClient, PayloadTooLarge

    with CacheClient(server.url) as c, pytest.raises(PayloadTooLarge) as exc:
        c.set(f"{unique}many", b"v", tags=[f"t{i}" for i in range(65)])
    assert exc.value.code == "too_many_tags"


def test_a_lost_answer_is_retried_and_a_retry_stores_nothing_twice(
    server: CacheServer, unique: str
) -> None:
    """The JSON API client's retry machinery (maxage_client.transport): a connection that
    dies before the answer is retried; a set of one version is idempotent."""
    from maxage_client.transport import RetryPolicy

    from tests.support.proxy import DroppingProxy

    retries: list[str] = []
    with (
        DroppingProxy(server.port) as proxy,
        CacheClient(proxy.url, on_retry=lambda n, delay, reason: retries.append(reason)) as cache,
    ):
        proxy.drop_answers(1)
        w = cache.set(f"{unique}r", b"once", version=5)
        assert (proxy.dropped, retries) == (1, ["RemoteProtocolError"])
        assert (w.version, w.outcome) == (5, "unchanged")  # the first attempt had stored it
        entry = cache.get(f"{unique}r")
        assert entry is not None and (entry.value, entry.version) == (b"once", 5)
    with (
        DroppingProxy(server.port) as proxy,
        CacheClient(proxy.url, retry=RetryPolicy(attempts=1)) as cache,
    ):
        proxy.drop_answers(1)
        with pytest.raises(CacheUnavailable) as caught:
            cache.get(f"{unique}r")
        assert caught.value.code == "unavailable"
