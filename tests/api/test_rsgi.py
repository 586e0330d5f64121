"""``maxage serve`` on granian's RSGI interface (maxage.api.rsgi, the default).

RSGI hands the app no header whose value is not visible ASCII; such a field that maxage
reads is refused with a 400 naming it (never served as if it were absent), any other is
ignored as on ASGI. The hot path's answer carries every header the ASGI one does.
"""

from __future__ import annotations

import httpx

from tests.api.conftest import metric

PRODUCT = {"name": "chair", "price": 49.5, "tags": ["wood"]}


def test_an_unreadable_field_maxage_reads_is_refused_naming_it(http: httpx.Client) -> None:
    doc = http.post("/v1/products", json=PRODUCT).json()
    r = http.get(f"/v1/products/{doc['id']}", headers={"If-None-Match": "caf\xe9".encode()})
    assert r.status_code == 400
    assert r.json()["code"] == "invalid_parameter"
    assert r.json()["parameter"] == "If-None-Match"
    r = http.put(
        f"/v1/products/{doc['id']}",
        json=PRODUCT,
        headers={"Idempotency-Key": "caf\xc3\xa9".encode()},
    )
    assert r.status_code == 400 and r.json()["parameter"] == "Idempotency-Key"
    assert http.get(f"/v1/products/{doc['id']}").json()["version"] == 1  # nothing written


def test_an_unreadable_field_maxage_does_not_read_is_ignored(http: httpx.Client) -> None:
    doc = http.post("/v1/products", json=PRODUCT).json()
    http.get(f"/v1/products/{doc['id']}")  # fills L1
    r = http.get(f"/v1/products/{doc['id']}", headers={"User-Agent": "caf\xe9".encode()})
    assert r.status_code == 200
    assert r.headers["cache-status"] == "maxage; hit; detail=l1"


def test_the_hot_answer_carries_every_header_and_is_counted(http: httpx.Client) -> None:
    doc = http.post("/v1/products", json=PRODUCT).json()
    path = f"/v1/products/{doc['id']}"
    http.get(path)  # fills L1
    series = {
        "http_request_method": "GET",
        "http_route": "/v1/products/{id}",
        "http_response_status_code": "200",
    }
    count = "http_server_request_duration_seconds_count"
    before = metric(http.get("/metrics").text, count, **series)
    r = http.get(path, headers={"X-Request-Id": "mine-1"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "mine-1"
    assert r.headers["etag"] == '"1"'
    assert r.headers["cache-status"] == "maxage; hit; detail=l1"
    assert r.headers["cache-control"].startswith("max-age=")
    assert int(r.headers["age"]) >= 0
    assert r.headers["content-type"] == "application/json"
    assert int(r.headers["content-length"]) == len(r.content)
    assert r.json()["meta"]["source"] == "l1"
    assert metric(http.get("/metrics").text, count, **series) == before + 1
    # A repeated field takes the general path, which answers the same way.
    r2 = http.get(path, headers=[("Accept", "application/json"), ("Accept", "*/*")])
    assert r2.status_code == 200 and r2.json()["id"] == doc["id"]
