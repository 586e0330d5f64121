"""GET /status and /status.json on a real ``maxage serve`` under traffic: the numbers
come from the server's own /metrics, the contracts from its config, the page is one
self-contained HTML document."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MaxageServer, metric


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaxageServer]:
    s = MaxageServer(tmp_path_factory.mktemp("status"), "--monitor-sample", "1")
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()


def traffic(c: httpx.Client, reads: int) -> str:
    doc = c.post("/v1/products", json={"name": "lamp", "price": 3}).json()["id"]
    for _ in range(reads):
        assert c.get(f"/v1/products/{doc}").status_code == 200
    c.get("/v1/nope/1")  # a 404 is not an error
    return doc


def self_contained(page: str) -> None:
    """No asset from anywhere: no src/href to another origin, no stylesheet link."""
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "external asset"
    assert '<link rel="stylesheet"' not in page and "@import" not in page
    assert "<script src" not in page


def test_status_json_agrees_with_metrics(monitored: MaxageServer) -> None:
    with httpx.Client(base_url=monitored.url, trust_env=False, timeout=10) as c:
        traffic(c, 200)
        model = c.get("/status.json").json()
        text = c.get("/metrics").text
    assert model["server"] == "maxage serve"
    names = [col["name"] for col in model["collections"]]
    assert {"products", "inventory", "profiles"} <= set(names)  # the bundled config
    products = model["collections"][names.index("products")]
    assert products["max_staleness_s"] == 30.0
    assert products["write_policy"] == "write-through"
    assert products["read_modes"] == ["bounded", "session", "strong"]
    checked = metric(text, "maxage_consistency_checked_total", collection="products")
    # The monitor checks a hit about a second after it; /status.json was taken before
    # /metrics, so it saw at most what /metrics shows.
    assert 0 <= products["monitor"]["checked"] <= checked
    requests = sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("http_server_request_duration_seconds_count")
    )
    assert 200 < model["totals"]["requests"] <= requests
    assert model["totals"]["errors_5xx"] == 0
    assert model["last_minute"]["hit_ratio"]["l1"] > 0.9
    assert "l2" not in model["last_minute"]["hit_ratio"]  # no shared tier configured
    assert model["series"]["requests_per_s"], "no points recorded"
    assert "<svg" in model["html"]


def test_status_page_is_self_contained_html(monitored: MaxageServer) -> None:
    with httpx.Client(base_url=monitored.url, trust_env=False, timeout=10) as c:
        traffic(c, 50)
        r = c.get("/status")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    self_contained(page)
    assert page.count("<svg") >= 5  # rate, latency, hit ratio, errors, tailer lag (+ histograms)
    assert "Tailer lag against the bound" in page and "tightest bound 5s" in page
    assert "every read from the primary (S = 0)" in page  # inventory
    assert 'name="viewport"' in page  # phone width


def test_status_with_keys_needs_admin(tmp_path: Path) -> None:
    from tests.api.test_access import new_key

    db = tmp_path / "db.sqlite"
    s = MaxageServer(tmp_path, "--auth", "keys", db=db)
    try:
        _, admin = new_key(db, "admin")
        _, reader = new_key(db, "read:*")
        with httpx.Client(base_url=s.url, trust_env=False, timeout=10) as c:
            locked = c.get("/status")
            assert locked.status_code == 401 and 'id="keyform"' in locked.text
            assert "products" not in locked.text  # no collection named before the key
            assert c.get("/status.json").status_code == 401
            hdr = {"authorization": f"Bearer {reader}"}
            assert c.get("/status", headers=hdr).status_code == 401
            assert c.get("/status.json", headers=hdr).status_code == 403
            hdr = {"authorization": f"Bearer {admin}"}
            assert "products" in c.get("/status", headers=hdr).text
            assert c.get("/status.json", headers=hdr).json()["collections"]
    finally:
        s.kill()


def test_status_shows_the_whole_server_with_workers(tmp_path: Path) -> None:
    """With --workers 2 the page reads the merged /metrics: every request, whichever
    worker served it (a worker's own numbers would miss the other's share)."""
    s = MaxageServer(tmp_path, "--workers", "2")
    try:
        sent = 60
        fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
        with httpx.Client(base_url=s.url, trust_env=False, timeout=10, limits=fresh) as c:
            deadline = time.monotonic() + 20
            while (
                len(
                    set(
                        re.findall(
                            r'process_start_time_seconds\{worker="(\d+)"', c.get("/metrics").text
                        )
                    )
                )
                < 2
            ):
                assert time.monotonic() < deadline, "the second worker did not start"
                time.sleep(0.2)
            for i in range(sent):
                assert c.get(f"/v1/products/none-{i}").status_code == 404
            deadline = time.monotonic() + 15
            while True:
                model = c.get("/status.json").json()
                route = model["totals"]["requests"]
                if route >= sent:
                    break
                assert time.monotonic() < deadline, f"status saw {route} of {sent} requests"
                time.sleep(0.3)
    finally:
        s.kill()
