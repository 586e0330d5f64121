"""Scale-out benchmarks (issue 5): PostgreSQL primary + Redis tier, wrk as load generator.

    python bench/scaleout/run.py [--duration 10] [--connections 50] [--workers 2]
        [--db postgresql://postgres@127.0.0.1:5432/test] [--cache redis://127.0.0.1:6379/14]

In one run, one server after the other (each pinned to CPU 0, wrk to CPU 1, with the
helpers of ``bench/api/run.py``):

1. cached GET (L1 hit) of ``maxage serve --workers N --db postgresql://… --cache redis://…``
   vs the raw ASGI reference (``bench/api/raw_asgi.py``, same body bytes) on granian
   with N workers;
2. strong GET (``?consistency=strong``: a primary read per request) vs a bare asyncpg
   primary-key lookup (``pk_asgi.py``, same query, same body bytes) on the same granian
   with N workers;
3. writes per second: ``POST /v1/products`` (one transaction: document row + change-log
   row) on PostgreSQL (N workers and 1 worker) and on SQLite (1 worker).

The PostgreSQL schema is a fresh one (dropped at the end); the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "api"))

from run import BIN, free_port, granian, server  # type: ignore[import-not-found]  # noqa: E402

API = HERE.parent / "api"
PRODUCT = {"name": "chair", "price": 49.5, "currency": "EUR", "tags": ["wood"]}


def wrk(url: str, duration: int, connections: int, script: Path | None = None) -> dict[str, float]:
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    extra = ["-s", str(script)] if script else []
    base = [*pin, "wrk", "-t1", "-c", str(connections), *extra]
    subprocess.run([*base, "-d", "2s", url], capture_output=True)  # warm-up
    out = subprocess.run([*base, "-d", f"{duration}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        print(f"  wrk socket errors at {url}: {socket_errors.group(1)}", file=sys.stderr)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def ready(base: str, timeout: float = 30.0) -> None:
    end = time.time() + timeout
    while True:
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"{base}/readyz", timeout=2).status == 200:
                return
        if time.time() > end:
            raise RuntimeError(f"{base} never became ready")
        time.sleep(0.05)


@contextlib.contextmanager
def maxage(db: str, workers: int, cache: str | None, schema: str) -> Iterator[str]:
    port = free_port()
    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", db,
           "--workers", str(workers), "--access-log", "off"]  # fmt: skip
    if cache:
        cmd += ["--cache", cache]
    with server(cmd, port, {"MAXAGE_PG_SCHEMA": schema}):
        base = f"http://127.0.0.1:{port}"
        ready(base)
        yield base


def post(base: str) -> dict[str, object]:
    req = urllib.request.Request(f"{base}/v1/products", method="POST",
                                 data=json.dumps(PRODUCT).encode(),
                                 headers={"content-type": "application/json"})  # fmt: skip
    return json.loads(urllib.request.urlopen(req).read())  # type: ignore[no-any-return]


async def row_data(dsn: str, schema: str, doc_id: str) -> bytes:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return bytes(
            await conn.fetchval(
                f'SELECT data FROM "{schema}".documents WHERE collection = $1 AND id = $2',
                "products",
                doc_id,
            )
        )
    finally:
        await conn.close()


async def drop_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def table(title: str, rows: dict[str, dict[str, float]], ref: str | None) -> None:
    print(f"\n| {title} | req/s | p50 ms | p99 ms | non-2xx |{' vs ref |' if ref else ''}")
    print("|---|---|---|---|---|" + ("---|" if ref else ""))
    for name, r in rows.items():
        ratio = f" {r['rps'] / rows[ref]['rps']:.2f}x |" if ref else ""
        print(f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{r['non2xx']:.0f} |{ratio}")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--cache", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    n, d, c = args.workers, args.duration, args.connections
    schema = f"bench_scaleout_{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-scaleout-"))
    flush_redis(args.cache)
    cached: dict[str, dict[str, float]] = {}
    strong: dict[str, dict[str, float]] = {}
    writes: dict[str, dict[str, float]] = {}
    post_lua = HERE / "post.lua"
    try:
        with maxage(args.db, n, args.cache, schema) as base:
            doc = post(base)
            url = f"{base}/v1/products/{doc['id']}"
            body = urllib.request.urlopen(url).read().decode()
            cached[f"maxage cached GET (PG + Redis, {n} workers)"] = wrk(url, d, c)
            strong_url = url + "?consistency=strong"
            strong_body = urllib.request.urlopen(strong_url).read()
            strong[f"maxage strong GET (PG, {n} workers)"] = wrk(strong_url, d, c)
            writes[f"maxage POST, PostgreSQL + Redis ({n} workers)"] = wrk(
                f"{base}/v1/products", d, c, post_lua
            )
        raw_port = free_port()
        with server(granian("raw_asgi:app", raw_port, n, API), raw_port, {"BENCH_BODY": body}):
            cached[f"raw ASGI reference ({n} workers)"] = wrk(f"http://127.0.0.1:{raw_port}/", d, c)
        data = asyncio.run(row_data(args.db, schema, str(doc["id"])))
        head, sep, tail = strong_body.partition(data)
        assert sep, "the document's data is not in the strong body"
        pk_port = free_port()
        pk_env = {
            "BENCH_DSN": args.db,
            "BENCH_SCHEMA": schema,
            "BENCH_COLLECTION": "products",
            "BENCH_ID": str(doc["id"]),
            "BENCH_HEAD": head.decode(),
            "BENCH_TAIL": tail.decode(),
        }
        with server(granian("pk_asgi:app", pk_port, n, HERE), pk_port, pk_env):
            strong[f"bare asyncpg PK lookup ({n} workers)"] = wrk(
                f"http://127.0.0.1:{pk_port}/", d, c
            )
        if n != 1:
            with maxage(args.db, 1, None, schema) as base:
                writes["maxage POST, PostgreSQL (1 worker)"] = wrk(
                    f"{base}/v1/products", d, c, post_lua
                )
        with maxage(f"sqlite:///{tmp / 'bench.db'}", 1, None, schema) as base:
            writes["maxage POST, SQLite (1 worker)"] = wrk(f"{base}/v1/products", d, c, post_lua)
    finally:
        asyncio.run(drop_schema(args.db, schema))
        flush_redis(args.cache)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"cached": cached, "strong": strong, "writes": writes}, indent=2))
    cores = os.cpu_count()
    print(f"\nwrk -t1 -c{c} -d{d}s after a 2 s warm-up; servers on CPU 0, wrk on CPU 1 "
          f"({cores} CPUs); granian, uvloop")  # fmt: skip
    ref_c = f"raw ASGI reference ({n} workers)"
    table("cached GET", cached, ref_c)
    table("strong GET", strong, f"bare asyncpg PK lookup ({n} workers)")
    table("writes (POST, change log in the same transaction)", writes, None)
    mx = cached[f"maxage cached GET (PG + Redis, {n} workers)"]["rps"]
    print(f"\ncached GET: maxage / raw = {mx / cached[ref_c]['rps']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
