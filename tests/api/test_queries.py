"""List queries, black-box, against ``maxage serve`` on SQLite and on PostgreSQL: every
operator and its errors, typed comparison, sort with keyset pages stable under
concurrent inserts, ``count``, ``fields``, page tokens bound to their query, and cached
list reads that are never older than the bound while writers run."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.launcher import ServerProcess, python_m
from tests.support.services import drop_postgres_schema, require_postgres, unique_name

BOUND = 0.5
CONFIG = f"""
[collections.posts]
max_staleness = "{int(BOUND * 1000)}ms"
ttl = "5m"
indexes = ["status", "score", "rank", "pinned", "/author/id", "title"]

[collections.posts.schema]
type = "object"
required = ["title"]

[collections.posts.schema.properties.title]
type = "string"

[collections.posts.schema.properties.status]
type = "string"
enum = ["draft", "published", "archived"]

[collections.posts.schema.properties.score]
type = "number"

[collections.posts.schema.properties.rank]
type = ["integer", "null"]

[collections.posts.schema.properties.pinned]
type = "boolean"

[collections.posts.schema.properties.author]
type = "object"
properties.id = {{ type = "string" }}

[collections.posts.schema.properties.body]
type = "string"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp(f"queries-{request.param}")
    (workdir / "blog.toml").write_text(CONFIG)
    env: dict[str, str] = {}
    schema = None
    if request.param == "sqlite":
        db = f"sqlite:///{workdir / 'db.sqlite'}"
    else:
        db = asyncio.run(require_postgres())
        schema = unique_name("q")
        env["MAXAGE_PG_SCHEMA"] = schema
    argv = python_m("serve", "--port", "0", "--config", str(workdir / "blog.toml"), "--db", db)
    proc = ServerProcess(argv, workdir=workdir, env=env, name="serve")
    proc.start().wait_listening(timeout=30)
    try:
        _wait_ready(proc)
        yield proc
    finally:
        proc.kill()
        if schema is not None:
            asyncio.run(drop_postgres_schema(db, schema))


def _wait_ready(proc: ServerProcess, timeout: float = 60.0) -> None:
    """``/readyz`` answers 200: the store is open and the query indexes are built."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=proc.url, trust_env=False, timeout=5) as c:
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline and proc.alive(), proc.describe()
            time.sleep(0.05)  # polling a child's start-up, not a race


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as c:
        yield c


def _post(http: httpx.Client, data: dict[str, Any]) -> dict[str, Any]:
    r = http.post("/v1/posts", json=data)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def _ids(http: httpx.Client, **params: str) -> list[str]:
    r = http.get("/v1/posts", params={"consistency": "strong", "page_size": "100", **params})
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["data"]]


def _problem(r: httpx.Response, parameter: str) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["parameter"] == parameter, body
    return body


@pytest.fixture
def tag(http: httpx.Client) -> str:
    """A fresh author id: every test filters on its own documents."""
    return unique_name("a")


def test_every_operator_with_typed_comparison(http: httpx.Client, tag: str) -> None:
    rows = [
        ("p1", "draft", 9, 1, True),
        ("p2", "published", 10, 2, False),
        ("p3", "published", 2.5, None, False),
        ("p4", "archived", -1, 3, True),
        ("pre-x", "published", 100, 4, False),
    ]
    ids = {}
    for title, status, score, rank, pinned in rows:
        doc = _post(http, {"title": f"{tag}-{title}", "status": status, "score": score,
                           "rank": rank, "pinned": pinned, "author": {"id": tag}})  # fmt: skip
        ids[title] = doc["id"]
    mine = {"author.id": tag}

    def titles(**params: str) -> set[str]:
        got = set(_ids(http, **mine, **params))
        return {t for t, i in ids.items() if i in got}

    assert titles() == set(ids)
    assert titles(status="published") == {"p2", "p3", "pre-x"}  # eq is the default
    assert titles(status="eq.draft") == {"p1"}
    assert titles(status="ne.published") == {"p1", "p4"}
    assert titles(score="gt.9") == {"p2", "pre-x"}  # numbers, not strings: 10 > 9
    assert titles(score="gte.9") == {"p1", "p2", "pre-x"}
    assert titles(score="lt.2.5") == {"p4"}
    assert titles(score="lte.2.5") == {"p3", "p4"}
    assert titles(score="gte.0", rank="lt.3") == {"p1", "p2"}  # null rank matches nothing
    assert titles(rank="in.(1,4)") == {"p1", "pre-x"}
    assert titles(status='in.(draft,"archived")') == {"p1", "p4"}
    assert titles(pinned="true") == {"p1", "p4"}
    assert titles(pinned="eq.false", status="published") == {"p2", "p3", "pre-x"}
    assert titles(title=f"prefix.{tag}-p") == set(ids)
    assert titles(title=f"prefix.{tag}-p1") == {"p1"}
    assert titles(title=f"prefix.{tag}-pre") == {"pre-x"}
    assert titles(score="gt.1e1") == {"pre-x"}


def test_operator_errors_name_the_parameter(http: httpx.Client) -> None:
    body = _problem(http.get("/v1/posts", params={"body": "x"}), "body")
    assert "not an index of posts" in body["detail"] and "declared" in body["detail"]
    _problem(http.get("/v1/posts", params={"sort": "body"}), "sort")
    _problem(http.get("/v1/posts", params={"rank": "gt.1.5"}), "rank")
    _problem(http.get("/v1/posts", params={"rank": "99999999999999999999"}), "rank")
    _problem(http.get("/v1/posts", params={"score": "lt.abc"}), "score")
    _problem(http.get("/v1/posts", params={"score": "prefix.1"}), "score")
    _problem(http.get("/v1/posts", params={"pinned": "yes"}), "pinned")
    _problem(http.get("/v1/posts", params={"status": "in.()"}), "status")
    _problem(http.get("/v1/posts", params={"status": "in.a,b"}), "status")
    _problem(http.get("/v1/posts", params={"status": 'in.("a)'}), "status")
    _problem(http.get("/v1/posts", params={"count": "estimated"}), "count")
    _problem(http.get("/v1/posts", params={"fields": "a,,b"}), "fields")
    _problem(http.get("/v1/posts", params={"page_size": "x"}), "page_size")
    many = "in.(" + ",".join(str(i) for i in range(101)) + ")"
    _problem(http.get("/v1/posts", params={"rank": many}), "rank")


def test_count_and_fields(http: httpx.Client, tag: str) -> None:
    for i in range(7):
        _post(http, {"title": f"t{i}", "body": "x" * 10, "score": i, "author": {"id": tag}})
    r = http.get("/v1/posts", params={"author.id": tag, "score": "gte.2", "count": "exact",
                                      "fields": "title,score", "page_size": "2",
                                      "consistency": "strong"})  # fmt: skip
    body = r.json()
    assert body["total"] == 5 and len(body["data"]) == 2
    for d in body["data"]:
        assert set(d["data"]) == {"title", "score"} and d["id"] and d["version"] == 1
    assert "total" not in http.get("/v1/posts", params={"author.id": tag}).json()


def test_sort_and_keyset_pages_stable_under_concurrent_inserts(
    http: httpx.Client, tag: str
) -> None:
    for i in range(20):
        _post(http, {"title": f"s{i}", "score": i % 7, "author": {"id": tag}})
    _post(http, {"title": "no score", "author": {"id": tag}})  # sorts last ascending
    for sort in ("score", "-score", "id", "-id"):
        want = _ids(http, **{"author.id": tag, "sort": sort})
        seen: list[str] = []
        token = ""
        while True:
            params = {"author.id": tag, "sort": sort, "page_size": "3", "consistency": "strong"}
            if token:
                params["page_token"] = token
            page = http.get("/v1/posts", params=params).json()
            seen.extend(d["id"] for d in page["data"])
            # Inserts between pages, above and below the cursor, with other authors too.
            _post(http, {"title": "late", "score": -5, "author": {"id": tag + "x"}})
            _post(http, {"title": "late", "score": 50, "author": {"id": tag + "x"}})
            token = page["next_page_token"]
            if not token:
                break
        assert seen == want, sort
    scores = [d["data"].get("score") for d in http.get(
        "/v1/posts", params={"author.id": tag, "sort": "score", "page_size": "100",
                             "consistency": "strong"}).json()["data"]]  # fmt: skip
    assert scores == sorted(s for s in scores if s is not None) + [None]


def test_a_page_token_is_bound_to_its_query(http: httpx.Client, tag: str) -> None:
    for i in range(3):
        _post(http, {"title": f"k{i}", "score": i, "author": {"id": tag}})
    page = http.get("/v1/posts", params={"author.id": tag, "sort": "score", "page_size": "1"})
    token = page.json()["next_page_token"]
    ok = http.get("/v1/posts", params={"author.id": tag, "sort": "score", "page_size": "2",
                                       "fields": "title", "page_token": token})  # fmt: skip
    assert ok.status_code == 200 and len(ok.json()["data"]) == 2
    for other in ({"author.id": tag, "sort": "-score"}, {"author.id": tag + "z", "sort": "score"},
                  {"author.id": tag}):  # fmt: skip
        r = http.get("/v1/posts", params={**other, "page_token": token})
        assert r.status_code == 400 and r.json()["code"] == "invalid_page_token", r.text
    forged = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    r = http.get("/v1/posts", params={"author.id": tag, "sort": "score", "page_token": forged})
    assert r.status_code == 400 and r.json()["code"] == "invalid_page_token"


def test_cached_lists_and_their_meta(http: httpx.Client, tag: str) -> None:
    _post(http, {"title": "c", "author": {"id": tag}})
    params = {"author.id": tag}
    first = http.get("/v1/posts", params=params)
    second = http.get("/v1/posts", params=params)
    meta = second.json()["meta"]
    assert second.json()["data"] == first.json()["data"]
    assert meta["collectionVersion"] >= 1 and meta["consistency"] == "bounded"
    # Nothing changed: the second read is a hit (unless the holder lagged the bound).
    assert meta["source"] in ("l1", "primary")
    assert "etag" not in second.headers and second.headers["cache-control"].startswith("max-age=")
    strong = http.get("/v1/posts", params={**params, "consistency": "strong"}).json()["meta"]
    assert strong["source"] == "primary" and strong["consistency"] == "strong"
    version = strong["collectionVersion"]
    session = http.get("/v1/posts", params={**params, "min_version": str(version)}).json()
    assert session["meta"]["collectionVersion"] >= version
    assert session["meta"]["consistency"] == "session"
    r = http.get("/v1/posts", params={**params, "min_version": str(version + 10**12)})
    assert r.status_code == 409 and r.json()["code"] == "min_version_unavailable", r.text


def test_repeated_list_reads_are_served_from_the_cache(http: httpx.Client, tag: str) -> None:
    _post(http, {"title": "h", "author": {"id": tag}})
    params = {"author.id": tag, "page_size": "5"}
    deadline = time.monotonic() + 10
    while True:  # a concurrent test's write may retire the page: retry until a hit is seen
        http.get("/v1/posts", params=params)
        r = http.get("/v1/posts", params=params)
        if r.json()["meta"]["source"] == "l1":
            assert "hit" in r.headers["cache-status"]
            return
        assert time.monotonic() < deadline, r.json()["meta"]


def test_cached_list_reads_are_never_older_than_the_bound(http: httpx.Client, tag: str) -> None:
    """Writers create and update documents; readers list them (bounded). A page that
    starts more than S after a write was acknowledged shows that write (or a later one)."""
    acked: dict[str, tuple[int, float]] = {}  # id -> (version, ack time)
    lock = threading.Lock()
    stop = time.monotonic() + 3.0
    violations: list[str] = []
    reads = {"l1": 0, "primary": 0}

    def writer() -> None:
        with httpx.Client(base_url=str(http.base_url), trust_env=False, timeout=10) as c:
            i = 0
            while time.monotonic() < stop and i < 90:  # one page of 100 shows them all
                doc = c.post("/v1/posts", json={"title": "w", "rank": i, "author": {"id": tag}})
                with lock:
                    acked[doc.json()["id"]] = (1, time.monotonic())
                i += 1
                if i % 3 == 0:
                    some = doc.json()["id"]
                    r = c.patch(f"/v1/posts/{some}", json={"rank": -i},
                                headers={"content-type": "application/merge-patch+json"})  # fmt: skip
                    with lock:
                        acked[some] = (r.json()["version"], time.monotonic())

    def reader() -> None:
        with httpx.Client(base_url=str(http.base_url), trust_env=False, timeout=10) as c:
            while time.monotonic() < stop:
                started = time.monotonic()
                with lock:
                    due = {i: v for i, (v, at) in acked.items() if at < started - BOUND}
                page = c.get("/v1/posts", params={"author.id": tag, "page_size": "100"}).json()
                reads[page["meta"]["source"]] = reads.get(page["meta"]["source"], 0) + 1
                shown = {d["id"]: d["version"] for d in page["data"]}
                for i, v in due.items():
                    if shown.get(i, 0) < v:
                        violations.append(f"{i} v{v} missing or older: {shown.get(i)}")

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not violations, violations[:5]
    assert len(acked) > 5 and sum(reads.values()) > 10


INDEX_CONFIG = """
[collections.notes]
max_staleness = "1s"
indexes = {indexes}
[collections.notes.schema.properties]
topic = {{ type = "string" }}
rank = {{ type = "integer" }}
"""


async def _pg_indexes(dsn: str, schema: str) -> set[str]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND indexname LIKE 'mxq%'",
            schema,
        )
        return {r["indexname"] for r in rows}
    finally:
        await conn.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_indexes_follow_the_config_across_restarts(tmp_path: Path, kind: str) -> None:
    """A restart with another ``indexes`` builds the new index and drops the old one; the
    data stays, and the grammar follows (the dropped field is refused, the new one works)."""
    import sqlite3

    config = tmp_path / "notes.toml"
    env: dict[str, str] = {}
    schema = unique_name("ix")
    if kind == "sqlite":
        db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    else:
        db = asyncio.run(require_postgres())
        env["MAXAGE_PG_SCHEMA"] = schema

    def indexes() -> set[str]:
        if kind == "postgres":
            return asyncio.run(_pg_indexes(db, schema))
        with sqlite3.connect(tmp_path / "db.sqlite") as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE name LIKE 'mxq%'")
            return {r[0] for r in rows}

    def serve(names: str) -> ServerProcess:
        config.write_text(INDEX_CONFIG.format(indexes=names))
        argv = python_m("serve", "--port", "0", "--config", str(config), "--db", db)
        proc = ServerProcess(argv, workdir=tmp_path, env=env, name="serve")
        proc.start().wait_listening(timeout=30)
        _wait_ready(proc)
        return proc

    try:
        first = serve('["topic"]')
        try:
            with first.client() as c:
                for i in range(6):
                    assert (
                        c.post("/v1/notes", json={"topic": f"t{i % 2}", "rank": i}).status_code
                        == 201
                    )
                assert len(c.get("/v1/notes", params={"topic": "t1"}).json()["data"]) == 3
            built = indexes()
            assert len(built) == 1
        finally:
            assert first.stop() == 0
        second = serve('["rank"]')
        try:
            with second.client() as c:
                r = c.get("/v1/notes", params={"topic": "t1"})
                assert r.status_code == 400 and r.json()["parameter"] == "topic"
                ranks = c.get("/v1/notes", params={"rank": "gte.3", "sort": "-rank"}).json()
                assert [d["data"]["rank"] for d in ranks["data"]] == [5, 4, 3]
            now = indexes()
            assert len(now) == 1 and not now & built
        finally:
            assert second.stop() == 0
    finally:
        if kind == "postgres":
            asyncio.run(drop_postgres_schema(db, schema))
