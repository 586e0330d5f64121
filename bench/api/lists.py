"""List queries on PostgreSQL with many documents: a cached filtered page vs the same page
from the primary, and the primary's latency with the plan it uses.

    python bench/api/lists.py [--docs 1000000] [--duration 10] [--connections 50]

Set-up (not through the API): the example config's ``posts`` collection (indexes on
status, published_at, /author/id, likes), on a PostgreSQL schema of its own, filled by
``COPY`` with ``--docs`` posts of 20,000 authors (50 each). ``maxage serve`` then starts on it and
builds the four query indexes (``CREATE INDEX CONCURRENTLY``; the time to ready is
printed), and the table is ANALYZEd. Then, one after the other (server on CPU 0, wrk on
CPU 1; ``bench/api/run.py``):

* the filtered page ``author.id=a7&status=published&sort=-published_at&page_size=20``,
  bounded (a hit in the in-process cache) and ``consistency=strong`` (the primary):
  the ratio is cached / primary;
* the primary's latency over random authors (a wrk script; 4 connections): p99 is
  the target (< 10 ms);
* ``EXPLAIN ANALYZE`` of that query as the store sends it.

Needs wrk and the PostgreSQL of ``MAXAGE_TEST_POSTGRES_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``). The schema is dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, free_port, server, wrk

from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config
from maxage.core.clock import SystemClock
from maxage.service.listing import parse_condition
from maxage.store.base import ListQuery
from maxage.store.postgres import PostgresStore

DSN = os.environ.get("MAXAGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
AUTHORS = 20_000  # 50 posts each
QUERY = "author.id=a7&status=published&sort=-published_at&page_size=20"
_encode = msgspec.json.Encoder().encode


def _rows(n: int, batch: int):  # type: ignore[no-untyped-def]
    rng = random.Random(1)
    now = time.time()
    out = []
    for i in range(n):
        doc = {
            "title": f"post {i}",
            "status": rng.choices(["published", "draft", "archived"], (6, 3, 1))[0],
            "published_at": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + rng.randrange(10**8))
            ),
            "likes": rng.randrange(1000),
            "author": {"id": f"a{rng.randrange(AUTHORS)}", "name": "someone"},
            "body": "lorem ipsum " * 8,
        }
        data = _encode(doc)
        out.append(("posts", f"b{i:09d}", 1, data, data.decode(), now, now, False))
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


async def load(schema: str, n: int) -> float:
    store = PostgresStore(DSN, clock=SystemClock(), schema=schema, timeout=600)
    await store.open()  # migrations
    await store.close()
    import asyncpg

    started = time.perf_counter()
    conn = await asyncpg.connect(DSN)
    try:
        for rows in _rows(n, 50_000):
            await conn.copy_records_to_table(
                "documents",
                schema_name=schema,
                records=rows,
                columns=["collection", "id", "version", "data", "body", "created_at",
                         "updated_at", "deleted"],
            )  # fmt: skip
    finally:
        await conn.close()
    return time.perf_counter() - started


async def analyze_and_explain(schema: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'ANALYZE "{schema}".documents')
    finally:
        await conn.close()
    spec = load_config(BUNDLED_CONFIG).collections["posts"]
    author, status, published = (
        spec.index("author.id"),
        spec.index("status"),
        spec.index("published_at"),
    )
    assert author and status and published
    query = ListQuery(
        "posts",
        (parse_condition(author, "a7"), parse_condition(status, "published")),
        published,
        True,
        limit=21,
    )
    store = PostgresStore(DSN, clock=SystemClock(), schema=schema)
    await store.open()
    try:
        return await store.explain(query, analyze=True)
    finally:
        await store.close()


async def store_latency(schema: str, n: int) -> tuple[float, float]:
    """p50 and p99 ms of ``n`` sequential ``Store.list_query`` calls (random authors): the
    primary's part of a list read, without HTTP or the server process's scheduling."""
    spec = load_config(BUNDLED_CONFIG).collections["posts"]
    author, status, published = (
        spec.index("author.id"),
        spec.index("status"),
        spec.index("published_at"),
    )
    assert author and status and published
    store = PostgresStore(DSN, clock=SystemClock(), schema=schema, max_size=1)
    await store.open()
    rng = random.Random(3)
    took = []
    try:
        for _ in range(n):
            who = parse_condition(author, f"a{rng.randrange(AUTHORS)}")
            query = ListQuery("posts", (who, parse_condition(status, "published")), published,
                              True, limit=21)  # fmt: skip
            started = time.perf_counter()
            await store.list_query(query)
            took.append((time.perf_counter() - started) * 1000)
    finally:
        await store.close()
    took.sort()
    return took[n // 2], took[int(n * 0.99)]


async def drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    args = ap.parse_args()
    schema = f"bench_lists_{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-lists-"))
    script = tmp / "authors.lua"
    script.write_text(
        'math.randomseed(7)\nrequest = function()\n  return wrk.format("GET", "/v1/posts?'
        'author.id=a" .. math.random(0, 19999) .. "&status=published&sort=-published_at'
        '&page_size=20&consistency=strong")\nend\n'
    )
    try:
        seconds = asyncio.run(load(schema, args.docs))
        print(f"loaded {args.docs:,} posts with COPY in {seconds:.1f} s")
        port = free_port()
        started = time.perf_counter()
        cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", DSN,
               "--pg-schema", schema, "--access-log", "off"]  # fmt: skip
        with server(cmd, port, start_timeout=1800):  # the indexes are built first
            base = f"http://127.0.0.1:{port}"
            while True:  # the indexes are built before the server is ready
                try:
                    if urllib.request.urlopen(f"{base}/readyz").status == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            print(
                f"maxage serve ready (4 query indexes built) in {time.perf_counter() - started:.1f} s"
            )
            plan = asyncio.run(analyze_and_explain(schema))
            page = json.loads(urllib.request.urlopen(f"{base}/v1/posts?{QUERY}").read())
            print(f"page: {len(page['data'])} posts, meta {page['meta']}")
            results = {
                "cached (bounded, L1 hit)": wrk(f"{base}/v1/posts?{QUERY}", args.duration,
                                                args.connections),
                "primary (consistency=strong)": wrk(f"{base}/v1/posts?{QUERY}&consistency=strong",
                                                    args.duration, args.connections),
                "primary, random authors, 4 connections": wrk(f"{base}/", args.duration, 4,
                                                              script=script),
            }  # fmt: skip
        print(f"\n| {args.docs:,} posts on PostgreSQL, `{QUERY}` | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|")
        for name, r in results.items():
            bad = f" ({r['non2xx']:.0f} non-2xx)" if r["non2xx"] else ""
            print(f"| {name}{bad} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
        cached = results["cached (bounded, L1 hit)"]["rps"]
        primary = results["primary (consistency=strong)"]["rps"]
        p99 = results["primary, random authors, 4 connections"]["p99_ms"]
        print(f"\ncached / primary = {cached / primary:.1f}x")
        print(f"primary p99 over random authors = {p99:.2f} ms (target < 10 ms)")
        p50, p99 = asyncio.run(store_latency(schema, 3000))
        print(
            f"Store.list_query alone, random authors, sequential: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )
        print("\nEXPLAIN ANALYZE (author a7):\n" + plan)
    finally:
        asyncio.run(drop(schema))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
