"""Issue 4, black box: problem details, request ids, trace context, limits, health, metrics,
OpenAPI and /docs, idempotency keys; docs/errors.md agrees with the catalog."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from maxage.api.problems import CATALOG
from maxage.contracts import load_config
from tests.api.conftest import MaxageServer, metric

ROOT = Path(__file__).resolve().parents[2]
PROBLEM_KEYS = {"type", "title", "status", "detail", "instance", "request_id", "code"}
PRODUCT = {"name": "p", "price": 1}


def problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:maxage:problem:{code}"
    assert body["title"] == CATALOG[code].title
    assert body["request_id"] == r.headers["x-request-id"]
    assert "Traceback" not in r.text
    return body


# -- problem details for every error -----------------------------------------------------


def test_unknown_route_and_wrong_method(http: httpx.Client) -> None:
    body = problem(http.get("/nope/here"), 404, "not_found")
    assert body["instance"] == "/nope/here"
    problem(http.get("/v1/"), 404, "not_found")
    for method, path, allow in (
        ("DELETE", "/v1/products", "GET, HEAD, POST"),
        ("POST", "/v1/products/x", "GET, HEAD, PUT, PATCH, DELETE"),
        ("PUT", "/livez", "GET, HEAD"),
        ("POST", "/v1/products/changes", "GET, HEAD"),
    ):
        r = http.request(method, path)
        problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allow, (method, path)


def test_body_limits_413(http: httpx.Client) -> None:
    big = b'{"name":"' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = http.post("/v1/products", content=big, headers={"content-type": "application/json"})
    body = problem(r, 413, "payload_too_large")
    assert body["limit"] == 1024 * 1024

    def chunks() -> Iterator[bytes]:
        yield b'{"name":"'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    r = http.post("/v1/products", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers  # really chunked
    problem(r, 413, "payload_too_large")
    # The server still works on the same client afterwards.
    assert http.post("/v1/products", json=PRODUCT).status_code == 201


def test_media_type_json_and_schema_errors(http: httpx.Client) -> None:
    r = http.post("/v1/products", content=b"name=x", headers={"content-type": "text/plain"})
    assert problem(r, 415, "unsupported_media_type")["accepted"] == ["application/json"]
    r = http.post(
        "/v1/products", content=b'{"name": ', headers={"content-type": "application/json"}
    )
    problem(r, 400, "malformed_json")
    r = http.post("/v1/products", json={"price": "free", "extra": 1})
    errors = problem(r, 422, "validation_failed")["errors"]
    assert {"pointer": "/name", "detail": "is required"} in errors  # type: ignore[operator]
    assert all(set(e) == {"pointer", "detail"} for e in errors)  # type: ignore[union-attr]
    assert {e["pointer"] for e in errors} == {"/name", "/price", "/extra"}  # type: ignore[union-attr]
    problem(http.post("/v1/products", json=[1, 2]), 422, "validation_failed")
    # A failed request writes nothing.
    before = len(http.get("/v1/profiles", params={"page_size": 100}).json()["data"])
    http.post("/v1/profiles", json={"name": ""})
    assert len(http.get("/v1/profiles", params={"page_size": 100}).json()["data"]) == before


def test_docs_errors_md_matches_catalog() -> None:
    text = (ROOT / "docs" / "errors.md").read_text()
    rows = dict(re.findall(r"^\|\s*`([a-z_]+)`\s*\|\s*(\d{3})\s*\|", text, re.M))
    assert set(rows) == set(CATALOG), "docs/errors.md and api/problems.py CATALOG differ"
    for code, t in CATALOG.items():
        assert int(rows[code]) == t.status, code


# -- request ids and trace context --------------------------------------------------------


def test_request_id_echoed_replaced_generated(http: httpx.Client) -> None:
    r = http.get("/livez", headers={"x-request-id": "abc-123:x/y+z=@."})
    assert r.headers["x-request-id"] == "abc-123:x/y+z=@."
    for bad in ("a" * 129, "has space", "<script>", "é"):
        r = http.get("/livez", headers={"x-request-id": bad.encode()})
        rid = r.headers["x-request-id"]
        assert rid != bad and re.fullmatch(r"[A-Za-z0-9._:/+=@-]{1,128}", rid)
    ids = {http.get("/livez").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5  # generated, unique
    r = http.get("/v1/nothing", headers={"x-request-id": "err-1"})
    assert r.headers["x-request-id"] == "err-1"
    assert r.json()["request_id"] == "err-1"


def test_traceparent_continued_or_replaced(http: httpx.Client) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    incoming = f"00-{trace}-00f067aa0ba902b7-01"
    url = http.post("/v1/products", json=PRODUCT, headers={"traceparent": incoming}).headers[
        "location"
    ]
    for r in (http.get(url, headers={"traceparent": incoming}),
              http.get("/nope", headers={"traceparent": incoming})):  # fmt: skip
        out = r.headers["traceparent"]
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-01", out)
        assert m, out
        assert m.group(1) == trace
        assert m.group(2) != "00f067aa0ba902b7"
    for bad in ("garbage", f"00-{'0' * 32}-00f067aa0ba902b7-01", "00-xyz-abc-01"):
        out = http.get("/livez", headers={"traceparent": bad}).headers["traceparent"]
        m = re.fullmatch(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})", out)
        assert m and m.group(1) != "0" * 32


# -- health, metrics, OpenAPI, docs --------------------------------------------------------


def test_livez_readyz(http: httpx.Client) -> None:
    assert http.get("/livez").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    assert http.head("/livez").status_code == 200


def test_metrics(http: httpx.Client) -> None:
    doc_id = f"metric-{uuid.uuid4().hex}"
    http.put(f"/v1/profiles/{doc_id}", json={"name": "m"})
    http.get(f"/v1/profiles/{doc_id}")  # miss
    http.get(f"/v1/profiles/{doc_id}")  # hit
    http.get(f"/v1/profiles/{doc_id}", params={"consistency": "strong"})  # bypass
    http.get(f"/v1/products/{uuid.uuid4()}")
    http.get(f"/random-{doc_id}")
    r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert doc_id not in text  # route templates only, never raw ids or paths
    assert 'http_route="/v1/profiles/{id}"' in text
    assert re.search(
        r'http_server_request_duration_seconds_bucket\{http_request_method="GET",'
        r'http_route="/v1/profiles/\{id\}",http_response_status_code="200",le="\+Inf"\} [1-9]',
        text,
    )
    assert 'http_route="/v1/products/{id}",http_response_status_code="404"' in text
    assert metric(text, "maxage_cache_hits_total", tier="l1") >= 1
    assert metric(text, "maxage_cache_misses_total") >= 1
    assert metric(text, "maxage_cache_bypasses_total", reason="strong") >= 1
    assert metric(text, "maxage_cache_entries") >= 1
    assert metric(text, "maxage_cache_bytes") > 0
    assert metric(text, "maxage_store_operations_total", op="get") >= 1
    assert metric(text, "maxage_store_operation_seconds_total", op="get") > 0
    for family in ("http_server_active_requests", "maxage_cache_evictions_total",
                   "maxage_store_errors_total", "maxage_requests_cancelled_total",
                   "maxage_deadline_exceeded_total"):  # fmt: skip
        assert f"# TYPE {family} " in text, family


def test_openapi_document(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    config = load_config(ROOT / "src" / "maxage" / "examples" / "catalog.toml")
    expected = {"/livez", "/readyz", "/metrics", "/openapi.json"}
    for name in config.collections:
        expected |= {f"/v1/{name}", f"/v1/{name}/{{id}}", f"/v1/{name}/changes"}
    assert expected <= set(spec["paths"])
    products = json.loads((ROOT / "src/maxage/examples/products.schema.json").read_text())
    assert spec["components"]["schemas"]["ProductsData"] == products
    inventory = spec["components"]["schemas"]["InventoryData"]
    assert inventory["required"] == ["sku", "quantity"]
    assert inventory["properties"]["quantity"] == {"type": "integer", "minimum": 0}
    assert inventory["additionalProperties"] is False
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters" or not path.startswith("/v1/"):
                continue
            errors = [s for s in op["responses"] if s[0] in "45"]
            assert errors, (method, path)
            for s in errors:
                content = op["responses"][s]["content"]
                assert "application/problem+json" in content, (method, path, s)


def test_docs_served_locally(http: httpx.Client) -> None:
    """Everything /docs loads is maxage's own (relative URLs, same origin); the viewer
    reads openapi.json and is told not to call the public validator. (That nothing else
    is fetched is checked in a browser: tests/browser/test_docs_page.py.)"""
    r = http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    loaded = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', r.text)
    assert "docs/swagger-ui-bundle.js" in loaded and "docs/swagger-ui.css" in loaded
    for url in loaded:
        assert url.startswith(("docs/", "data:")), f"{url}: docs must work without network access"
        if url.startswith("docs/"):
            asset = http.get("/" + url)
            assert asset.status_code == 200
            assert asset.headers["content-type"].startswith(("text/javascript", "text/css"))
    assert "url: 'openapi.json'" in r.text and "validatorUrl: null" in r.text


# -- idempotency keys ----------------------------------------------------------------------


def test_idempotent_replay_is_byte_identical(http: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = http.post("/v1/products", json=PRODUCT, headers={"idempotency-key": key})
    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    for header in (key, f'"{key}"'):  # bare or structured-field quoted
        again = http.post("/v1/products", json=PRODUCT, headers={"idempotency-key": header})
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["etag"] == first.headers["etag"]
    # One effect: the document is still at version 1.
    assert http.get(first.headers["location"]).headers["etag"] == '"1"'

    other = http.post(
        "/v1/products", json={**PRODUCT, "price": 2}, headers={"idempotency-key": key}
    )
    problem(other, 422, "idempotency_key_reused")
    # Keys are scoped per method and path.
    elsewhere = http.post("/v1/profiles", json={"name": "k"}, headers={"idempotency-key": key})
    assert elsewhere.status_code == 201


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_idempotent_other_methods(http: httpx.Client, method: str) -> None:
    url = http.post("/v1/products", json=PRODUCT).headers["location"]
    key = uuid.uuid4().hex
    kwargs: dict[str, object] = {}
    headers = {"idempotency-key": key}
    if method == "PUT":
        kwargs = {"json": {"name": "q", "price": 3}}
    elif method == "PATCH":
        kwargs = {"json": {"price": 4}}
        headers["content-type"] = "application/merge-patch+json"
    first = http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert first.status_code in (200, 204)
    again = http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert again.status_code == first.status_code  # a replayed DELETE is 204, not 404
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["etag"] == '"2"'


def test_rejected_request_stores_no_key(http: httpx.Client) -> None:
    key = uuid.uuid4().hex
    bad = http.post("/v1/products", json={"name": "no price"}, headers={"idempotency-key": key})
    problem(bad, 422, "validation_failed")
    broken = http.post("/v1/products", content=b"{", headers={"idempotency-key": key,
                                                              "content-type": "application/json"})  # fmt: skip
    problem(broken, 400, "malformed_json")
    good = http.post("/v1/products", json=PRODUCT, headers={"idempotency-key": key})
    assert good.status_code == 201
    assert "idempotent-replayed" not in good.headers
    for bad_key in ("a" * 256, "has space", 'a"b'):
        r = http.post("/v1/products", json=PRODUCT, headers={"idempotency-key": bad_key})
        problem(r, 400, "invalid_parameter")


def test_precondition_failure_is_replayed(http: httpx.Client, server: MaxageServer) -> None:
    url = http.post("/v1/products", json=PRODUCT).headers["location"]
    key = uuid.uuid4().hex
    headers = {"idempotency-key": key, "if-match": '"9"'}
    r = http.put(url, json=PRODUCT, headers=headers)
    problem(r, 412, "precondition_failed")
    # A failed precondition committed nothing; the key is free for the corrected request.
    headers["if-match"] = '"1"'
    ok = http.put(url, json=PRODUCT, headers={"idempotency-key": uuid.uuid4().hex, **headers})
    assert ok.status_code == 200
