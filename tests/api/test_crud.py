"""Issue 3, black box: CRUD, conditional requests, pagination, read modes and the contract's
headers, write-through vs write-around, restart, and the ``maxage serve`` command line.

All tests but the restart/CLI ones share one server; each works on fresh documents.
"""

from __future__ import annotations

import base64
import re
import signal
import socket
import subprocess
import sys
import threading
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MaxageServer

PRODUCT = {"name": "widget", "price": 9.5, "currency": "EUR", "tags": ["a"]}
MERGE = {"content-type": "application/merge-patch+json"}


def create(http: httpx.Client, collection: str, data: dict[str, object]) -> httpx.Response:
    r = http.post(f"/v1/{collection}", json=data)
    assert r.status_code == 201, r.text
    return r


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["code"] == code, body
    return body


# -- CRUD ---------------------------------------------------------------------------------


def test_post_creates_with_location_etag_and_time_ordered_id(http: httpx.Client) -> None:
    r = create(http, "products", PRODUCT)
    body = r.json()
    doc_id = body["id"]
    assert r.headers["location"] == f"/v1/products/{doc_id}"
    assert r.headers["etag"] == '"1"'
    assert body["version"] == 1
    assert body["data"] == PRODUCT
    assert uuid.UUID(doc_id).version == 7  # time-ordered
    later = create(http, "products", PRODUCT).json()["id"]
    assert later > doc_id
    for stamp in (body["createdAt"], body["updatedAt"], body["meta"]["cachedAt"]):
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))

    got = http.get(r.headers["location"])
    assert got.status_code == 200
    assert got.json()["data"] == PRODUCT
    assert got.headers["etag"] == '"1"'


def test_put_create_or_replace_and_if_none_match_star(http: httpx.Client) -> None:
    doc_id = f"put-{uuid.uuid4().hex}"
    url = f"/v1/products/{doc_id}"
    r = http.put(url, json=PRODUCT, headers={"if-none-match": "*"})
    assert r.status_code == 201, r.text
    assert r.headers["etag"] == '"1"'
    assert r.headers["location"] == url

    r = http.put(url, json={**PRODUCT, "name": "other"}, headers={"if-none-match": "*"})
    body = assert_problem(r, 412, "precondition_failed")
    assert body["current_version"] == 1
    assert http.get(url, params={"consistency": "strong"}).json()["data"]["name"] == "widget"

    r = http.put(url, json={"name": "replaced", "price": 1})
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert r.json()["data"] == {"name": "replaced", "price": 1}  # replace, not merge
    assert http.get(url).json()["data"] == {"name": "replaced", "price": 1}


def test_patch_merges_and_revalidates(http: httpx.Client) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    r = http.patch(url, json={"price": 12, "tags": None, "in_stock": True}, headers=MERGE)
    assert r.status_code == 200, r.text
    assert r.headers["etag"] == '"2"'
    assert r.json()["data"] == {"name": "widget", "price": 12, "currency": "EUR", "in_stock": True}

    # The merged document must still match the schema: removing a required field fails.
    r = http.patch(url, json={"name": None}, headers=MERGE)
    body = assert_problem(r, 422, "validation_failed")
    assert [e["pointer"] for e in body["errors"]] == ["/name"]  # type: ignore[union-attr]
    r = http.patch(url, json={"price": -1, "colour": "red"}, headers=MERGE)
    errors = assert_problem(r, 422, "validation_failed")["errors"]
    assert {e["pointer"] for e in errors} == {"/price", "/colour"}  # type: ignore[union-attr]

    # Merge patch needs its own media type.
    r = http.patch(url, json={"price": 3})
    assert_problem(r, 415, "unsupported_media_type")
    after = http.get(url, params={"consistency": "strong"})
    assert after.headers["etag"] == '"2"'
    assert after.json()["data"]["price"] == 12

    missing = http.patch(f"/v1/products/nope-{uuid.uuid4().hex}", json={"price": 1}, headers=MERGE)
    assert_problem(missing, 404, "document_not_found")


def test_delete_then_404_and_recreate_continues_versions(http: httpx.Client) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    r = http.delete(url)
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["etag"] == '"2"'
    body = assert_problem(http.get(url), 404, "document_not_found")
    assert body["instance"] == url
    assert_problem(http.get(url, params={"consistency": "strong"}), 404, "document_not_found")
    assert_problem(http.delete(url), 404, "document_not_found")
    # A re-create continues the version chain (caches rely on versions only rising).
    r = http.put(url, json=PRODUCT)
    assert r.status_code == 201
    assert r.headers["etag"] == '"3"'


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_if_match_mismatch_is_412_and_changes_nothing(http: httpx.Client, method: str) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    kwargs: dict[str, object] = {}
    if method == "PUT":
        kwargs = {"json": {"name": "x", "price": 1}}
    elif method == "PATCH":
        kwargs = {"json": {"name": "x"}}
    headers = {"if-match": '"7"', **(MERGE if method == "PATCH" else {})}
    r = http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
    body = assert_problem(r, 412, "precondition_failed")
    assert body["current_version"] == 1
    assert r.headers["etag"] == '"1"'
    now = http.get(url, params={"consistency": "strong"})
    assert now.status_code == 200
    assert now.headers["etag"] == '"1"'
    assert now.json()["data"] == PRODUCT
    # The matching ETag succeeds.
    headers["if-match"] = '"1"'
    r = http.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert r.status_code in (200, 204), r.text
    assert r.headers["etag"] == '"2"'


def test_if_match_on_missing_document_is_412(http: httpx.Client) -> None:
    r = http.put(f"/v1/products/m-{uuid.uuid4().hex}", json=PRODUCT, headers={"if-match": '"1"'})
    assert_problem(r, 412, "precondition_failed")


def test_conditional_get_304(http: httpx.Client) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    r = http.get(url, headers={"if-none-match": '"1"'})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == '"1"'
    assert "cache-status" in r.headers and "age" in r.headers
    assert http.get(url, headers={"if-none-match": 'W/"1"'}).status_code == 304  # weak compare
    assert http.get(url, headers={"if-none-match": '"5", "1"'}).status_code == 304
    assert http.get(url, headers={"if-none-match": "*"}).status_code == 304
    assert http.get(url, headers={"if-none-match": '"2"'}).status_code == 200
    strong = http.get(url, headers={"if-none-match": '"1"', "cache-control": "no-cache"})
    assert strong.status_code == 304
    http.patch(url, json={"price": 1}, headers=MERGE)
    r = http.get(url, headers={"if-none-match": '"1"'})
    assert r.status_code == 200
    assert r.headers["etag"] == '"2"'


# -- reads: modes, meta, headers ---------------------------------------------------------


def check_read(
    r: httpx.Response, *, consistency: str, source: str, bound: int
) -> dict[str, object]:
    assert r.status_code == 200, r.text
    body = r.json()
    meta = body["meta"]
    assert set(meta) == {"version", "cachedAt", "maxAgeSeconds", "consistency", "source"}
    assert meta["version"] == body["version"]
    assert r.headers["etag"] == f'"{body["version"]}"'
    assert meta["consistency"] == consistency
    assert meta["source"] == source
    datetime.fromisoformat(meta["cachedAt"].replace("Z", "+00:00"))
    age = int(r.headers["age"])
    assert age >= 0
    m = re.fullmatch(r"max-age=(\d+)", r.headers["cache-control"])
    assert m, r.headers["cache-control"]
    max_age = int(m.group(1))
    assert meta["maxAgeSeconds"] == max_age
    if consistency == "strong":
        assert max_age == 0
    else:
        assert 0 <= max_age <= bound
        assert age + max_age <= bound
    status = r.headers["cache-status"]
    assert status.startswith("maxage;")
    if source == "primary":
        assert "fwd=" in status
    else:
        assert "hit" in status.split(";")[1]
    return body


def test_write_through_read_after_write_is_l1(http: httpx.Client) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    r = http.get(url)
    check_read(r, consistency="bounded", source="l1", bound=30)
    assert r.json()["data"] == PRODUCT
    http.patch(url, json={"price": 2}, headers=MERGE)
    r = http.get(url)
    body = check_read(r, consistency="bounded", source="l1", bound=30)
    assert body["version"] == 2
    assert body["data"]["price"] == 2  # type: ignore[index]


def test_write_around_first_read_primary_then_l1(http: httpx.Client) -> None:
    url = create(http, "profiles", {"name": "ann"}).headers["location"]
    first = http.get(url)
    check_read(first, consistency="bounded", source="primary", bound=5)
    assert "fwd=miss" in first.headers["cache-status"]
    second = http.get(url)
    check_read(second, consistency="bounded", source="l1", bound=5)
    assert second.content.split(b',"meta"')[0] == first.content.split(b',"meta"')[0]
    # A write invalidates: the next read goes to the primary again and sees it.
    http.put(url, json={"name": "bob"})
    third = http.get(url)
    body = check_read(third, consistency="bounded", source="primary", bound=5)
    assert body["data"] == {"name": "bob"}
    check_read(http.get(url), consistency="bounded", source="l1", bound=5)


def test_strong_reads(http: httpx.Client) -> None:
    url = create(http, "products", PRODUCT).headers["location"]
    for r in (
        http.get(url, params={"consistency": "strong"}),
        http.get(url, headers={"cache-control": "no-cache"}),
    ):
        check_read(r, consistency="strong", source="primary", bound=30)
        assert "fwd=request" in r.headers["cache-status"]
    conflict = http.get(
        url, params={"consistency": "bounded"}, headers={"cache-control": "no-cache"}
    )
    assert_problem(conflict, 400, "invalid_parameter")


def test_session_reads(http: httpx.Client) -> None:
    url = create(http, "profiles", {"name": "s"}).headers["location"]
    http.get(url)  # fill the cache with version 1
    http.patch(url, json={"name": "s2"}, headers=MERGE)
    r = http.get(url, params={"min_version": "2"})
    body = check_read(r, consistency="session", source=r.json()["meta"]["source"], bound=5)
    assert body["version"] >= 2
    r = http.get(url, params={"min_version": "1", "consistency": "session"})
    assert check_read(r, consistency="session", source=r.json()["meta"]["source"], bound=5)
    assert_problem(http.get(url, params={"min_version": "-1"}), 400, "invalid_parameter")
    assert_problem(http.get(url, params={"min_version": "x"}), 400, "invalid_parameter")


def test_strong_only_collection(http: httpx.Client) -> None:
    url = create(http, "inventory", {"sku": "a-1", "quantity": 3}).headers["location"]
    for _ in range(2):  # never from a cache, even on a repeat read
        check_read(http.get(url), consistency="strong", source="primary", bound=0)
    check_read(http.get(url, params={"consistency": "strong"}), consistency="strong",
               source="primary", bound=0)  # fmt: skip
    for params in ({"consistency": "bounded"}, {"consistency": "session"}, {"min_version": "1"}):
        body = assert_problem(http.get(url, params=params), 400, "read_mode_not_allowed")
        assert body["allowed_modes"] == ["strong"]
        assert "strong" in str(body["detail"])
    assert_problem(http.get(url, params={"consistency": "eventual"}), 400, "invalid_parameter")
    assert_problem(http.get(url, params={"foo": "1"}), 400, "invalid_parameter")


def test_unknown_document_and_collection(http: httpx.Client) -> None:
    assert_problem(http.get(f"/v1/products/{uuid.uuid4()}"), 404, "document_not_found")
    assert_problem(http.get("/v1/nothing"), 404, "collection_not_found")
    assert_problem(http.get("/v1/nothing/x"), 404, "collection_not_found")


# -- pagination -----------------------------------------------------------------------------


def walk(http: httpx.Client, collection: str, page_size: int, between: object = None) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        params: dict[str, str | int] = {"page_size": page_size}
        if token:
            params["page_token"] = token
        r = http.get(f"/v1/{collection}", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) >= {"data", "next_page_token"}
        assert len(body["data"]) <= page_size
        ids.extend(d["id"] for d in body["data"])
        token = body["next_page_token"]
        if not token:
            return ids
        if callable(between):
            between()


def test_pagination_walk_and_limits(http: httpx.Client) -> None:
    made = {
        create(http, "inventory", {"sku": f"p{i}", "quantity": i}).json()["id"] for i in range(25)
    }
    ids = walk(http, "inventory", 7)
    assert len(ids) == len(set(ids))
    assert made <= set(ids)
    assert ids == sorted(ids)

    r = http.get("/v1/inventory", params={"page_size": 100000})
    assert r.status_code == 200
    assert 0 < len(r.json()["data"]) <= 100  # capped
    first = http.get("/v1/inventory").json()
    assert first["data"][0]["version"] >= 1
    for bad in ("0", "-1", "abc", ""):
        assert_problem(
            http.get("/v1/inventory", params={"page_size": bad}), 400, "invalid_parameter"
        )

    token = http.get("/v1/inventory", params={"page_size": 2}).json()["next_page_token"]
    assert token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-3] ^= 1  # flip a bit of the payload: the MAC no longer matches
    tampered = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    for bad in (tampered, token[:-2], "garbage", "%%%"):
        r = http.get("/v1/inventory", params={"page_token": bad})
        assert_problem(r, 400, "invalid_page_token")
    # A token is bound to its collection.
    assert_problem(
        http.get("/v1/products", params={"page_token": token}), 400, "invalid_page_token"
    )


def test_pagination_stable_under_concurrent_inserts(
    http: httpx.Client, server: MaxageServer
) -> None:
    before = {create(http, "profiles", {"name": f"n{i}"}).json()["id"] for i in range(40)}
    # Ids that sort before and after every server id, inserted between pages.
    low = iter(f"0000-{i:04d}" for i in range(1000))
    high = iter(f"zzzz-{i:04d}" for i in range(1000))

    stop = threading.Event()
    wrote = threading.Event()  # set after each background insert
    inserted: list[int] = []

    def insert_between_pages() -> None:
        http.put(f"/v1/profiles/{next(low)}", json={"name": "low"})
        http.put(f"/v1/profiles/{next(high)}", json={"name": "high"})
        create(http, "profiles", {"name": "new"})
        # However the threads are scheduled, the background writer has landed an
        # insert before the walk goes on past its first page.
        assert wrote.wait(10), "the background writer made no progress"

    def writer() -> None:
        with server.client() as c:
            # bounded, so the walk ends even if the writer outruns it
            while not stop.is_set() and len(inserted) < 200:
                c.post("/v1/profiles", json={"name": "bg"})
                inserted.append(1)
                wrote.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        ids = walk(http, "profiles", 6, insert_between_pages)
    finally:
        stop.set()
        t.join()
    assert len(ids) == len(set(ids)), "a document appeared twice in one walk"
    assert before <= set(ids), f"skipped {len(before - set(ids))} pre-existing documents"
    assert ids == sorted(ids)
    assert any(i.startswith("zzzz-") for i in ids)  # inserts past the cursor are seen
    assert inserted


# -- restart and the command line ----------------------------------------------------------


def test_restart_keeps_data(tmp_path: Path) -> None:
    first = MaxageServer(tmp_path)
    try:
        with first.client() as c:
            r = create(c, "products", PRODUCT)
            url = r.headers["location"]
            c.patch(url, json={"price": 3}, headers=MERGE)
            for i in range(3):
                create(c, "inventory", {"sku": f"r{i}", "quantity": i})
            token = c.get("/v1/inventory", params={"page_size": 1}).json()["next_page_token"]
    finally:
        assert first.stop(signal.SIGINT) == 0, first.stderr()
    second = MaxageServer(tmp_path, db=first.db)
    try:
        with second.client() as c:
            r = c.get(url)
            assert r.status_code == 200
            assert r.headers["etag"] == '"2"'
            assert r.json()["data"]["price"] == 3
            assert r.json()["meta"]["source"] == "primary"  # a new process starts cold
            # The page-token key lives in the database: tokens survive a restart.
            page = c.get("/v1/inventory", params={"page_token": token})
            assert page.status_code == 200, page.text
            r = c.patch(url, json={"price": 4}, headers=MERGE)
            assert r.headers["etag"] == '"3"'
    finally:
        assert second.stop() == 0, second.stderr()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_without_arguments(tmp_path: Path) -> None:
    if not _port_free(8080):
        pytest.skip("port 8080 is in use")
    s = MaxageServer(tmp_path, command=[sys.executable, "-m", "maxage", "serve"])
    try:
        out = s.stdout()
        assert "listening on http://127.0.0.1:8080" in out
        data_dir = (tmp_path / "maxage-data").resolve()
        assert data_dir.is_dir()
        assert str(data_dir) in out  # prints where its data lives
        assert "catalog.toml" in out  # and the bundled config
        with s.client() as c:
            assert create(c, "products", PRODUCT).status_code == 201
            assert set(c.get("/openapi.json").json()["paths"]) >= {
                "/v1/products",
                "/v1/inventory",
                "/v1/profiles",
            }
        assert any(data_dir.iterdir())
    finally:
        assert s.stop(signal.SIGINT) == 0, s.stderr()  # Ctrl-C shuts down cleanly


def test_help_lists_every_option() -> None:
    top = subprocess.run([sys.executable, "-m", "maxage", "--help"], capture_output=True,
                         text=True, timeout=30)  # fmt: skip
    assert top.returncode == 0
    assert "serve" in top.stdout
    r = subprocess.run([sys.executable, "-m", "maxage", "serve", "--help"], capture_output=True,
                       text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0
    for option in ("--config", "--db", "--host", "--port", "--body-limit", "--deadline",
                   "--idempotency-ttl", "--access-log", "--cache", "--workers"):  # fmt: skip
        assert option in r.stdout, option
    assert "sqlite:///" in r.stdout
