"""Scale-out benchmarks (issue 5, issue 17): PostgreSQL primary + Redis tier, wrk as load generator.

    python bench/scaleout/run.py [--duration 5] [--rounds 3] [--connections 50] [--workers 2]
        [--cores one|both] [--explain] [--cached-only] [--baseline-src DIR]
        [--db postgresql://postgres@127.0.0.1:5432/test] [--cache redis://127.0.0.1:6379/14]

In one run (with the helpers of ``bench/api/run.py``):

1. cached GET (L1 hit) of ``maxage serve --workers N --db postgresql://… --cache redis://…``
   vs the raw ASGI reference (``bench/api/raw_asgi.py``, same body bytes) on granian
   with N workers, and the raw app on RSGI for scale; every server is started first,
   then ``--rounds`` interleaved rounds load each in turn (medians, per-round ratios,
   server CPU µs per request). ``--explain`` adds the same server with one part turned
   off at a time -- the in-service monitor's sampled look-ups (``--monitor-sample 0``),
   then Redis, then PostgreSQL (SQLite instead), then the shedder's loop-lag probe (a
   timer every 5 ms per worker; ``--max-loop-lag 0``) -- and over ``--interface asgi``,
   so the gap to the reference can be split into its parts; ``--baseline-src DIR`` adds
   the same server as shipped run from another ``src/`` tree (``PYTHONPATH``: before/after
   in one invocation);
2. strong GET (``?consistency=strong``: a primary read per request) vs a bare asyncpg
   primary-key lookup (``pk_asgi.py``, same query, same body bytes) on the same granian
   with N workers;
3. writes per second: ``POST /v1/products`` (one transaction: document row + change-log
   row) on PostgreSQL (N workers and 1 worker) and on SQLite (1 worker).

``--cores one`` (default): servers pinned to CPU 0, wrk to CPU 1, so N workers share one
core. ``--cores both``: servers may run on CPUs 0 and 1 and wrk runs beside them,
unpinned (the kernel shares both cores between the workers, wrk, PostgreSQL and Redis).
``--cached-only`` skips 2 and 3. The PostgreSQL schema is a fresh one (dropped at the
end); the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "api"))

from run import BIN, free_port, granian, server, wrk  # type: ignore[import-not-found]  # noqa: E402

API = HERE.parent / "api"
PRODUCT = {"name": "chair", "price": 49.5, "currency": "EUR", "tags": ["wood"]}
CPUS = {"one": ("0", "1"), "both": ("0,1", None)}  # --cores: (server CPUs, wrk CPUs)


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
def maxage(
    db: str,
    workers: int,
    cache: str | None,
    schema: str,
    *extra: str,
    cpus: str = "0",
    env: dict[str, str] | None = None,
) -> Iterator[tuple[str, int]]:
    """``maxage serve`` (access log off, any ``extra`` options, ``env`` added to the
    environment) until the block ends: (base URL, session id)."""
    port = free_port()
    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", db,
           "--workers", str(workers), "--access-log", "off", *extra]  # fmt: skip
    if cache:
        cmd += ["--cache", cache]
    with server(cmd, port, {"MAXAGE_PG_SCHEMA": schema, **(env or {})}, cpus=cpus) as sid:
        base = f"http://127.0.0.1:{port}"
        ready(base)
        yield base, sid


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


def pk_env(dsn: str, schema: str, doc_id: str, strong_body: bytes) -> dict[str, str]:
    """The environment of ``pk_asgi.py`` answering the bytes of ``strong_body`` (a strong
    read of ``doc_id``) around the row's data."""
    data = asyncio.run(row_data(dsn, schema, doc_id))
    head, sep, tail = strong_body.partition(data)
    assert sep, "the document's data is not in the strong body"
    return {
        "BENCH_DSN": dsn,
        "BENCH_SCHEMA": schema,
        "BENCH_COLLECTION": "products",
        "BENCH_ID": doc_id,
        "BENCH_HEAD": head.decode(),
        "BENCH_TAIL": tail.decode(),
    }


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


def cached_table(rounds: list[dict[str, dict[str, float]]], ref: str) -> None:
    """Medians over the rounds, and ratios to ``ref`` from each round (req/s and CPU/req)."""
    print("\n| cached GET | req/s | p50 ms | p99 ms | server CPU µs/req "
          "| vs ref (req/s) | vs ref (CPU/req), rounds |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in rounds[0]:

        def med(field: str, name: str = name) -> float:
            return statistics.median(r[name][field] for r in rounds)

        by_rps = statistics.median(r[name]["rps"] / r[ref]["rps"] for r in rounds)
        by_cpu = [r[ref]["cpu_us"] / max(1e-9, r[name]["cpu_us"]) for r in rounds]
        print(f"| {name} | {med('rps'):,.0f} | {med('p50_ms'):.2f} | {med('p99_ms'):.2f} | "
              f"{med('cpu_us'):.1f} | {by_rps:.2f}x | **{statistics.median(by_cpu):.2f}x** "
              f"({', '.join(f'{x:.2f}' for x in by_cpu)}) |")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved cached-GET rounds")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cores", choices=tuple(CPUS), default="one")
    ap.add_argument("--explain", action="store_true", help="cached GET with each part off")
    ap.add_argument("--cached-only", action="store_true")
    ap.add_argument("--baseline-src", type=Path, help="also the shipped server from this src/")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--cache", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    n, d, c = args.workers, args.duration, args.connections
    on, beside = CPUS[args.cores]
    schema = f"bench_scaleout_{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-scaleout-"))
    flush_redis(args.cache)
    sqlite = f"sqlite:///{tmp / 'bench.db'}"
    shipped = f"maxage cached GET (PG + Redis, {n} workers)"
    ref = f"raw ASGI reference ({n} workers)"
    # (row, primary, Redis URL, extra options): the server as shipped, then with one
    # part turned off at a time (--explain).
    variants: list[tuple[str, str, str | None, tuple[str, ...]]] = [
        (shipped, args.db, args.cache, ())
    ]
    baseline = f"… from --baseline-src (PG + Redis, {n} workers)"
    if args.baseline_src is not None:
        variants.append((baseline, args.db, args.cache, ()))
    if args.explain:
        variants += [
            (f"… monitor off ({n} workers)", args.db, args.cache, ("--monitor-sample", "0")),
            (f"… monitor and Redis off ({n} workers)", args.db, None, ("--monitor-sample", "0")),
            (f"… SQLite, monitor off ({n} workers)", sqlite, None, ("--monitor-sample", "0")),
            (f"… SQLite, monitor and loop-lag probe off ({n} workers)", sqlite, None,
             ("--monitor-sample", "0", "--max-loop-lag", "0")),
            (f"… over ASGI (PG + Redis, {n} workers)", args.db, args.cache, ("--interface", "asgi")),
        ]  # fmt: skip
    rounds: list[dict[str, dict[str, float]]] = []
    strong: dict[str, dict[str, float]] = {}
    writes: dict[str, dict[str, float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            targets: list[tuple[str, str, int]] = []  # (row, url, session)
            body = ""
            for row, db, cache, extra in variants:
                env = None
                if row == baseline:
                    env = {"PYTHONPATH": str(args.baseline_src.resolve())}
                base, sid = stack.enter_context(
                    maxage(db, n, cache, schema, *extra, cpus=on, env=env)
                )
                url = f"{base}/v1/products/{post(base)['id']}"
                body = body or urllib.request.urlopen(url).read().decode()
                targets.append((row, url, sid))
            for row, target, interface in (
                (ref, "raw_asgi:app", "asgi"),
                (f"raw RSGI ({n} workers, for scale)", "raw_rsgi:app", "rsgi"),
            ):
                port = free_port()
                sid = stack.enter_context(server(granian(target, port, n, API, interface), port,
                                                 {"BENCH_BODY": body}, cpus=on))  # fmt: skip
                targets.append((row, f"http://127.0.0.1:{port}/", sid))
            for _ in range(args.rounds):
                rounds.append(
                    {row: wrk(url, d, c, (), sid, cpus=beside) for row, url, sid in targets}
                )
        if not args.cached_only:
            strong, writes = primary_rows(args, schema, tmp, on, beside)
    finally:
        asyncio.run(drop_schema(args.db, schema))
        flush_redis(args.cache)
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps({"cached": rounds, "strong": strong, "writes": writes}, indent=2))
    where = (
        "servers on CPU 0, wrk on CPU 1"
        if args.cores == "one"
        else "servers on CPUs 0-1, wrk beside them (unpinned)"
    )
    print(f"\nwrk -t1 -c{c} -d{d}s after a 2 s warm-up, {args.rounds} round(s); {where} "
          f"({os.cpu_count()} CPUs); granian, uvloop")  # fmt: skip
    cached_table(rounds, ref)
    if strong:
        table("strong GET", strong, f"bare asyncpg PK lookup ({n} workers)")
        table("writes (POST, change log in the same transaction)", writes, None)
    by_rps = [r[shipped]["rps"] / r[ref]["rps"] for r in rounds]
    by_cpu = [r[ref]["cpu_us"] / r[shipped]["cpu_us"] for r in rounds]
    print(f"\ncached GET: maxage / raw = {statistics.median(by_rps):.2f} by req/s, "
          f"{statistics.median(by_cpu):.2f} by server CPU/req (target ≥ 0.8, goal 0.9)")  # fmt: skip
    return 0


def primary_rows(
    args: argparse.Namespace, schema: str, tmp: Path, on: str, beside: str | None
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Strong GET vs a bare asyncpg lookup, and POST rates (one pass each)."""
    n, d, c = args.workers, args.duration, args.connections
    strong: dict[str, dict[str, float]] = {}
    writes: dict[str, dict[str, float]] = {}
    post_lua = HERE / "post.lua"
    with maxage(args.db, n, args.cache, schema, cpus=on) as (base, _):
        doc = post(base)
        url = f"{base}/v1/products/{doc['id']}"
        strong_url = url + "?consistency=strong"
        strong_body = urllib.request.urlopen(strong_url).read()
        strong[f"maxage strong GET (PG, {n} workers)"] = wrk(strong_url, d, c, cpus=beside)
        writes[f"maxage POST, PostgreSQL + Redis ({n} workers)"] = wrk(
            f"{base}/v1/products", d, c, (), None, post_lua, cpus=beside
        )
    pk_port = free_port()
    env = pk_env(args.db, schema, str(doc["id"]), strong_body)
    with server(granian("pk_asgi:app", pk_port, n, HERE), pk_port, env, cpus=on):
        strong[f"bare asyncpg PK lookup ({n} workers)"] = wrk(
            f"http://127.0.0.1:{pk_port}/", d, c, cpus=beside
        )
    if n != 1:
        with maxage(args.db, 1, None, schema, cpus=on) as (base, _):
            writes["maxage POST, PostgreSQL (1 worker)"] = wrk(
                f"{base}/v1/products", d, c, (), None, post_lua, cpus=beside
            )
    with maxage(f"sqlite:///{tmp / 'writes.db'}", 1, None, schema, cpus=on) as (base, _):
        writes["maxage POST, SQLite (1 worker)"] = wrk(
            f"{base}/v1/products", d, c, (), None, post_lua, cpus=beside
        )
    return strong, writes


if __name__ == "__main__":
    raise SystemExit(main())
