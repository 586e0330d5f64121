"""GET /status and /status.json on a real ``maxage cache-server``: bytes against the
bound, entries, hit ratio, evictions by reason, top tags."""

from __future__ import annotations

from tests.cacheserver.conftest import CacheServer


def test_status_shows_the_cache() -> None:
    s = CacheServer("--max-bytes", "1MiB")
    try:
        with s.client() as c:
            for i in range(40):
                tags = "hot,user:1" if i % 2 else "hot"
                assert c.put(f"/v1/keys/s{i}?tags={tags}", content=b"x" * 100).status_code in (
                    200,
                    201,
                    204,
                )
            for i in range(60):
                c.get(f"/v1/keys/s{i}")
            model = c.get("/status.json").json()
            page = c.get("/status")
            metrics = c.get("/metrics").text
    finally:
        assert s.stop() == 0, s.stderr()
    cache = model["cache"]
    assert model["server"] == "maxage cache-server"
    assert cache["entries"] == 40 and cache["max_bytes"] == 1 << 20
    assert 0 < cache["bytes"] < cache["max_bytes"]
    assert cache["hit_ratio_since_start"] == round(40 / 60, 4)
    assert cache["top_tags"][:2] == [
        {"tag": "hot", "entries": 40},
        {"tag": "user:1", "entries": 20},
    ]
    assert set(cache["evictions"]) >= {"size", "ttl"}
    assert 'http_route="/status|/status.json"' in metrics
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "user:1" in page.text and page.text.count("<svg") >= 5


def test_status_needs_the_token_when_set() -> None:
    s = CacheServer("--token", "sekret-sekret-sekret")
    try:
        with s.client() as c:
            assert c.get("/status").status_code == 401
            ok = c.get("/status.json", headers={"authorization": "Bearer sekret-sekret-sekret"})
            assert ok.status_code == 200 and ok.json()["cache"]["entries"] == 0
    finally:
        s.kill()


def test_docs_page_and_its_assets() -> None:
    s = CacheServer()
    try:
        with s.client() as c:
            page = c.get("/docs")
            js = c.get("/docs/swagger-ui-bundle.js")
            css = c.get("/docs/swagger-ui.css")
            missing = c.get("/docs/nope.js")
            posted = c.post("/docs")
    finally:
        s.kill()
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="put_key"' in page.text or "/v1/keys/{key}" in page.text  # the no-JS list
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404 and posted.status_code == 405
