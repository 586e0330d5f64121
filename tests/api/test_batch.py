"""Issue 14, black box: ``POST /v1/{collection}:batch`` and the change feed's
``include=doc``, against real ``maxage serve`` processes on SQLite and on PostgreSQL.

A batch commits every operation in one primary transaction or none: the tests make
operation k fail in each way it can (schema, If-Match, missing, existing, shape) and
check that nothing of the batch reached the documents, the change log or the cache.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import MaxageServer
from tests.support.launcher import python_m
from tests.support.services import drop_postgres_schema, require_postgres, unique_name

MAX_OPS = 5
CONFIG = """
[collections.posts]
max_staleness = "30s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "5m"
[collections.posts.schema]
type = "object"
required = ["title"]
properties = { title = { type = "string", minLength = 1 }, price = { type = "number", minimum = 0 } }

[collections.guarded]
max_staleness = "30s"
write_policy = "write-around"
require_if_match = true
[collections.guarded.schema]
type = "object"
properties = { n = { type = "integer" } }

[collections.counters]
max_staleness = "5s"
write_policy = "write-back"
flush_interval = "100ms"
[collections.counters.schema]
type = "object"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MaxageServer]:
    work = tmp_path_factory.mktemp(f"batch-{request.param}")
    config = work / "maxage.toml"
    config.write_text(CONFIG)
    db, env, schema = f"sqlite:///{work / 'db.sqlite'}", {}, ""
    if request.param == "postgres":
        db = asyncio.run(require_postgres())
        schema = unique_name("batch")
        env = {"MAXAGE_PG_SCHEMA": schema}
    args = ("--config", str(config), "--max-batch-operations", str(MAX_OPS))
    command = python_m("serve", "--port", "0", "--db", db, *args)
    s = MaxageServer(work, command=command, env=env)
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()
        if schema:
            asyncio.run(drop_postgres_schema(db, schema))


@pytest.fixture()
def http(server: MaxageServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def batch(http: httpx.Client, *ops: dict[str, Any], collection: str = "posts",
          headers: dict[str, str] | None = None) -> httpx.Response:  # fmt: skip
    return http.post(f"/v1/{collection}:batch", json={"operations": list(ops)}, headers=headers)


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


def feed(http: httpx.Client, after: str = "0", **params: str) -> list[dict[str, Any]]:
    r = http.get("/v1/posts/changes", params={"after": after, **params})
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def changes_since(
    http: httpx.Client, after: str, **params: str
) -> tuple[list[dict[str, Any]], str]:
    """Every change after ``after`` committed before now, and a cursor past them: a marker
    is written and the feed read until it shows (on PostgreSQL another transaction of the
    cluster may hold newer rows back for a moment; once the marker is out, all before it is)."""
    marker = fresh("mark")
    post(http, marker, {"title": "marker"})
    deadline = time.monotonic() + 10
    while True:
        changes = feed(http, after, **params)
        ids = [c["id"] for c in changes]
        if marker in ids:
            i = ids.index(marker)
            return changes[:i], changes[i]["cursor"]
        assert time.monotonic() < deadline, "the marker never reached the feed"
        time.sleep(0.01)


def cursor(http: httpx.Client) -> str:
    return changes_since(http, "0")[1]


def post(http: httpx.Client, id: str, data: dict[str, Any]) -> int:
    r = http.put(f"/v1/posts/{id}", json=data)
    assert r.status_code in (200, 201), r.text
    return int(r.json()["version"])


def read(http: httpx.Client, id: str, **params: str) -> tuple[int, dict[str, Any] | None]:
    """(status, data) of a bounded read (or the given mode)."""
    r = http.get(f"/v1/posts/{id}", params=params)
    return r.status_code, r.json().get("data") if r.status_code == 200 else None


def fresh(prefix: str) -> str:
    return unique_name(prefix).replace("_", "-")


# -- success ------------------------------------------------------------------------------


def test_batch_applies_every_operation_in_order(http: httpx.Client) -> None:
    a, b, c, new = fresh("a"), fresh("b"), fresh("c"), fresh("n")
    post(http, a, {"title": "a"})
    post(http, b, {"title": "b", "price": 1})
    post(http, c, {"title": "c"})
    read(http, a)  # cached: the batch must reach the cache too (write-through)
    after = cursor(http)
    r = batch(
        http,
        {"op": "create", "data": {"title": "server id"}},
        {"op": "create", "id": new, "data": {"title": "client id"}},
        {"op": "replace", "id": a, "data": {"title": "a2"}},
        {"op": "patch", "id": b, "if_match": 1.0, "data": {"price": 2}},  # JSON's integer
        {"op": "delete", "id": c, "if_match": "*"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    results = r.json()["results"]
    assert [(x["op"], x["status"]) for x in results] == [
        ("create", 201), ("create", 201), ("replace", 200), ("patch", 200), ("delete", 204),
    ]  # fmt: skip
    server_id = results[0]["id"]
    assert [(x["id"], x["version"]) for x in results] == [
        (server_id, 1), (new, 1), (a, 2), (b, 2), (c, 2),
    ]  # fmt: skip
    assert results[3]["data"] == {"title": "b", "price": 2}
    assert "data" not in results[4]
    # Reads, bounded (from the cache when it has the key) and strong, see the batch.
    assert read(http, a) == (200, {"title": "a2"})
    assert read(http, b, consistency="strong") == (200, {"title": "b", "price": 2})
    assert read(http, new) == (200, {"title": "client id"})
    assert read(http, c)[0] == 404
    # One change row per version, in the batch's order, each with its body.
    changes = changes_since(http, after, include="doc")[0]
    assert [(x["id"], x["version"], x["op"], x["data"]) for x in changes] == [
        (server_id, 1, "put", {"title": "server id"}),
        (new, 1, "put", {"title": "client id"}),
        (a, 2, "put", {"title": "a2"}),
        (b, 2, "put", {"title": "b", "price": 2}),
        (c, 2, "delete", None),
    ]
    cursors = [int(x["cursor"]) for x in changes]
    assert cursors == sorted(set(cursors))
    assert len({x["committedAt"] for x in changes}) == 1  # one transaction


# -- all or nothing -----------------------------------------------------------------------


def assert_untouched(http: httpx.Client, after: str, versions: dict[str, int | None]) -> str:
    """Nothing of a refused batch is visible: documents, the change log, the cache.
    Returns a cursor past what was checked."""
    changes, after = changes_since(http, after)
    assert changes == []
    for id, version in versions.items():
        for params in ({}, {"consistency": "strong"}):  # bounded (cache) and primary
            r = http.get(f"/v1/posts/{id}", params=params)
            if version is None:
                assert r.status_code == 404, (id, r.text)
            else:
                assert r.status_code == 200 and r.json()["version"] == version, (id, r.text)
    return after


def test_a_failing_operation_rolls_back_every_operation(http: httpx.Client) -> None:
    a, b, new = fresh("a"), fresh("b"), fresh("n")
    post(http, a, {"title": "a"})
    post(http, b, {"title": "b"})
    read(http, a)
    after = cursor(http)
    ok = [
        {"op": "create", "id": new, "data": {"title": "new"}},
        {"op": "replace", "id": a, "data": {"title": "a2"}},
    ]
    failing = {
        # (operation, status, code, pointer)
        "if_match": ({"op": "patch", "id": b, "if_match": 7, "data": {"title": "x"}},
                     412, "precondition_failed", "/operations/2/if_match"),
        "missing": ({"op": "delete", "id": fresh("gone")}, 404, "document_not_found",
                    "/operations/2/id"),
        "exists": ({"op": "create", "id": b, "data": {"title": "x"}}, 409, "document_exists",
                   "/operations/2/id"),
        "schema": ({"op": "patch", "id": b, "data": {"title": None}}, 422, "validation_failed",
                   "/operations/2/data/title"),
    }  # fmt: skip
    for name, (op, status, code, pointer) in failing.items():
        body = problem(batch(http, *ok, op), status, code)
        assert [e["pointer"] for e in body["errors"]] == [pointer], (name, body)
        assert body.get("operation", 2) == 2, name  # 422s list every operation's errors
        assert "nothing" in body["detail"] and "written" in body["detail"], body
        after = assert_untouched(http, after, {a: 1, b: 1, new: None})
    body = problem(batch(http, *ok, failing["if_match"][0]), 412, "precondition_failed")
    assert body["current_version"] == 1 and "etag" not in body
    # The same operations without the failing one commit (nothing was left locked).
    assert batch(http, *ok).status_code == 200
    assert read(http, a) == (200, {"title": "a2"})


def test_validation_errors_point_into_every_operation(http: httpx.Client) -> None:
    a = fresh("a")
    post(http, a, {"title": "a"})
    after = cursor(http)
    r = batch(
        http,
        {"op": "create", "data": {"title": "ok"}},
        {"op": "create", "data": {"price": -1}},
        {"op": "patch", "id": a, "data": {"price": -3}},
        {"op": "replace", "id": "no/slash", "data": {"title": "x"}},
    )
    body = problem(r, 422, "validation_failed")
    pointers = sorted((e["pointer"], e["detail"]) for e in body["errors"])
    assert [p for p, _ in pointers] == [
        "/operations/1/data/price",
        "/operations/1/data/title",  # required
        "/operations/2/data/price",
        "/operations/3/id",
    ], pointers
    assert_untouched(http, after, {a: 1})


def test_write_rules_apply_per_operation(http: httpx.Client) -> None:
    with_if_match = {"op": "patch", "id": "g1", "if_match": "*", "data": {"n": 2}}
    created = batch(http, {"op": "create", "id": "g1", "data": {"n": 1}}, collection="guarded")
    assert created.status_code == 200, created.text
    body = problem(
        batch(http, with_if_match, {"op": "delete", "id": "g2"}, collection="guarded"),
        428,
        "precondition_required",
    )
    assert [e["pointer"] for e in body["errors"]] == ["/operations/1/if_match"]
    assert batch(http, with_if_match, collection="guarded").status_code == 200
    # write-around: the batch invalidated the cached body; the next read has the new one.
    r = http.get("/v1/guarded/g1")
    assert r.json()["version"] == 2 and r.json()["data"] == {"n": 2}
    # write-back acknowledges before the primary commits: no all-or-nothing batch there.
    create = {"op": "create", "data": {"n": 1}}
    problem(batch(http, create, collection="counters"), 400, "write_back_unsupported")


# -- idempotency --------------------------------------------------------------------------


def test_idempotency_key_covers_the_whole_batch(http: httpx.Client) -> None:
    a = fresh("a")
    key = {"idempotency-key": fresh("key")}
    ops = (
        {"op": "create", "id": a, "data": {"title": "once"}},
        {"op": "create", "data": {"title": "t"}},
    )
    first = batch(http, *ops, headers=key)
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    after = cursor(http)
    again = batch(http, *ops, headers=key)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert changes_since(http, after)[0] == []  # applied once
    other = batch(http, ops[1], headers=key)
    problem(other, 422, "idempotency_key_reused")
    # A refused batch releases its key: the corrected batch may use it.
    key2 = {"idempotency-key": fresh("key")}
    problem(
        batch(http, {"op": "delete", "id": fresh("gone")}, headers=key2), 404, "document_not_found"
    )
    assert batch(http, {"op": "delete", "id": a}, headers=key2).status_code == 200


# -- limits and shape ---------------------------------------------------------------------


def test_limits_and_shape_are_clear_problems(http: httpx.Client) -> None:
    after = cursor(http)
    create = {"op": "create", "data": {"title": "x"}}
    too_many = problem(batch(http, *[create] * (MAX_OPS + 1)), 422, "validation_failed")
    assert too_many["errors"] == [
        {
            "pointer": "/operations",
            "detail": f"has {MAX_OPS + 1} operations; a batch holds at most {MAX_OPS}",
        }
    ]
    assert batch(http, *[create] * MAX_OPS).status_code == 200
    after = cursor(http)
    empty = problem(batch(http), 422, "validation_failed")
    assert empty["errors"][0]["pointer"] == "/operations"
    shapes: list[tuple[object, list[str]]] = [
        ([], [""]),
        ({}, ["/operations"]),
        ({"operations": {"op": "create"}}, ["/operations"]),
        ({"operations": [create], "atomic": False}, ["/atomic"]),
        ({"operations": [{"op": "upsert", "id": "x"}]}, ["/operations/0/op"]),
        ({"operations": [{"id": "x"}]}, ["/operations/0/op"]),
        ({"operations": [7]}, ["/operations/0"]),
        ({"operations": [{"op": "create"}]}, ["/operations/0/data"]),
        ({"operations": [{"op": "delete", "id": "x", "data": {}}]}, ["/operations/0/data"]),
        ({"operations": [{"op": "patch", "data": {}}]}, ["/operations/0/id"]),
        ({"operations": [{"op": "delete", "id": 5}]}, ["/operations/0/id"]),
        ({"operations": [{"op": "delete", "id": None}]}, ["/operations/0/id"]),
        ({"operations": [{"op": "create", "id": None, "data": {"title": "t"}}]}, ["/operations/0/id"]),
        ({"operations": [{"op": "delete", "id": "x", "if_match": 1.5}]}, ["/operations/0/if_match"]),
        ({"operations": [{"op": "delete", "id": "x", "if_match": None}]}, ["/operations/0/if_match"]),
        ({"operations": [{"op": "delete", "id": "x", "if_match": "3"}]}, ["/operations/0/if_match"]),
        ({"operations": [{"op": "delete", "id": "x", "if_match": 0}]}, ["/operations/0/if_match"]),
        ({"operations": [{"op": "create", "id": "x", "if_match": 1, "data": {"title": "t"}}]},
         ["/operations/0/if_match"]),
        ({"operations": [{"op": "delete", "id": "x"}, {"op": "patch", "id": "x", "data": {}}]},
         ["/operations/1/id"]),
    ]  # fmt: skip
    for body, pointers in shapes:
        r = http.post("/v1/posts:batch", json=body)
        got = problem(r, 422, "validation_failed")
        assert [e["pointer"] for e in got["errors"]] == pointers, (body, got)
        assert all(e["detail"] for e in got["errors"])
    problem(
        http.post(
            "/v1/posts:batch",
            content=b'{"operations": [',
            headers={"content-type": "application/json"},
        ),
        400,
        "malformed_json",
    )
    problem(
        http.post("/v1/posts:batch", content=b"{}", headers={"content-type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    problem(
        http.post("/v1/posts:batch?x=1", json={"operations": [create]}), 400, "invalid_parameter"
    )
    problem(
        http.post("/v1/posts:batch", json={"operations": [create]}, headers={"if-match": '"1"'}),
        400,
        "invalid_parameter",
    )
    assert http.get("/v1/posts:batch").headers["allow"] == "POST"
    problem(batch(http, create, collection="nope"), 404, "collection_not_found")
    assert changes_since(http, after)[0] == []


def test_body_limit_bounds_a_batch(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, "--body-limit", "1KiB")
    try:
        with s.client() as http:
            big = {
                "op": "create",
                "data": {"name": "n", "price": 1, "attributes": {"k": "x" * 600}},
            }
            problem(batch(http, big, big, collection="products"), 413, "payload_too_large")
            assert batch(http, big, collection="products").status_code == 200
    finally:
        s.stop()
        s.kill()


# -- the change feed with bodies ----------------------------------------------------------


def test_feed_include_doc(http: httpx.Client) -> None:
    a = fresh("a")
    after = cursor(http)
    post(http, a, {"title": "v1"})
    post(http, a, {"title": "v2"})
    assert http.delete(f"/v1/posts/{a}").status_code == 204
    post(http, a, {"title": "v4"})
    changes = changes_since(http, after, include="doc")[0]
    # Each version's own body, not the latest one.
    assert [(x["version"], x["data"]) for x in changes] == [
        (1, {"title": "v1"}), (2, {"title": "v2"}), (3, None), (4, {"title": "v4"}),
    ]  # fmt: skip
    assert all("data" not in x for x in feed(http, after))
    # follow mode (and SSE) carry them too.
    r = http.get(
        "/v1/posts/changes",
        params={"after": after, "include": "doc", "follow": "true", "limit": "2"},
    )
    assert [json.loads(x)["data"] for x in r.text.splitlines()] == [
        {"title": "v1"},
        {"title": "v2"},
    ]
    sse = http.get(
        "/v1/posts/changes",
        params={"after": after, "include": "doc", "limit": "1"},
        headers={"accept": "text/event-stream"},
    )
    assert sse.text.startswith(f"id: {changes[0]['cursor']}\ndata: ")
    assert json.loads(sse.text.split("data: ", 1)[1])["data"] == {"title": "v1"}
    body = problem(
        http.get("/v1/posts/changes", params={"include": "body"}), 400, "invalid_parameter"
    )
    assert body["parameter"] == "include"
