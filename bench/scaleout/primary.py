"""The primary's paths against bare asyncpg (issue 17): strong GET and POST on PostgreSQL.

    python bench/scaleout/primary.py [--duration 4] [--rounds 3] [--connections 50]
        [--workers 1,2] [--db postgresql://postgres@127.0.0.1:5432/test] [--lean-references]
        [--baseline-src DIR]

For each worker count N, three servers run side by side on granian with N workers (each
pinned to CPU 0, wrk to CPU 1, with the helpers of ``bench/api/run.py``):

* ``maxage serve --workers N --db postgresql://…`` (no shared tier, access log off, and
  ``--max-loop-lag 0``: on a shared machine loop-lag shedding answers a few requests with
  a cheap 503, which the references never do);
* ``pk_asgi.py``: a bare asyncpg primary-key lookup of the same row, answering the same
  bytes maxage sends for a strong read (the strong-GET reference);
* ``txn_asgi.py``: a bare asyncpg transaction doing the same two inserts a maxage POST
  does (document row + change-log row), in tables of the same definition in a schema of
  its own, so its change rows never reach maxage's tailer (the POST reference).

The references use asyncpg's pool as it comes, which runs a reset query (a round trip)
each time a connection goes back to the pool; ``--lean-references`` turns that off in
both, as maxage does in its own pool.

Rounds interleave maxage and the references (the order alternates), and the tables
report medians over the rounds: req/s, p50/p99 and server CPU microseconds per request
(the server's processes only; PostgreSQL's backends are not counted), with the ratio
maxage / reference per round. Targets (issue 17): strong GET >= 0.8x with p99 <= 2x the
reference's; POST >= 0.7x with p99 <= 2x. ``--baseline-src DIR`` adds maxage run from
another source tree (``PYTHONPATH``; e.g. ``git archive`` of the commit before a change)
to the same rounds, on a schema of its own. Schemas ``bench_primary_<pid>`` (and
``_ref``, ``_base``) are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import statistics
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "api"))

from run import BIN, free_port, granian, server, wrk  # type: ignore[import-not-found]  # noqa: E402


def _scaleout_run() -> Any:
    """``bench/scaleout/run.py`` (its ``ready`` and ``post``), loaded under another name
    (``run`` is ``bench/api/run.py`` here)."""
    spec = importlib.util.spec_from_file_location("scaleout_run", HERE / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scaleout = _scaleout_run()
POST_LUA = HERE / "post.lua"
METRICS = ("rps", "p50_ms", "p99_ms", "cpu_us")


@contextlib.contextmanager
def maxage(
    db: str, workers: int, schema: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """``maxage serve`` on PostgreSQL: (base URL, session id for its CPU)."""
    port = free_port()
    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", db,
           "--workers", str(workers), "--access-log", "off", "--max-loop-lag", "0"]  # fmt: skip
    with server(cmd, port, {"MAXAGE_PG_SCHEMA": schema, **(env or {})}) as sid:
        base = f"http://127.0.0.1:{port}"
        scaleout.ready(base)
        yield base, sid


async def sql(dsn: str, *statements: str) -> object:
    """Run ``statements`` in order on one connection; the last one's first value."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        value = None
        for st in statements:
            value = await conn.fetchval(st)
        return value
    finally:
        await conn.close()


def summary(runs: list[dict[str, float]]) -> dict[str, float]:
    return {m: statistics.median(r[m] for r in runs) for m in METRICS} | {
        "non2xx": sum(r["non2xx"] for r in runs)
    }


def bench_workers(args: argparse.Namespace, n: int, schema: str) -> dict[str, object]:
    """All rounds for ``n`` workers: per path, per server ("maxage", "baseline" with
    ``--baseline-src``, "ref") the summary, and per round each one's ratio to "ref"."""
    d, c = args.duration, args.connections
    ref_schema = f"{schema}_ref"
    with contextlib.ExitStack() as stack:
        base, mx_sid = stack.enter_context(maxage(args.db, n, schema))
        doc = scaleout.post(base)
        strong_url = f"{base}/v1/products/{doc['id']}?consistency=strong"
        strong_body = urllib.request.urlopen(strong_url).read()
        asyncio.run(
            sql(
                args.db,
                f'CREATE SCHEMA IF NOT EXISTS "{ref_schema}"',
                f'CREATE TABLE IF NOT EXISTS "{ref_schema}".documents'
                f' (LIKE "{schema}".documents INCLUDING ALL)',
                f'CREATE TABLE IF NOT EXISTS "{ref_schema}".changes'
                f' (LIKE "{schema}".changes INCLUDING ALL)',
            )
        )
        pk_port, txn_port = free_port(), free_port()
        pk_env = scaleout.pk_env(args.db, schema, str(doc["id"]), strong_body)
        txn_env = {"BENCH_DSN": args.db, "BENCH_SCHEMA": ref_schema}
        if args.lean_references:
            pk_env["BENCH_POOL_RESET"] = txn_env["BENCH_POOL_RESET"] = "off"
        pk = granian("pk_asgi:app", pk_port, n, HERE)
        pk_sid = stack.enter_context(server(pk, pk_port, pk_env))
        txn = granian("txn_asgi:app", txn_port, n, HERE)
        txn_sid = stack.enter_context(server(txn, txn_port, txn_env))
        paths: dict[str, list[tuple[str, str, int, Path | None]]] = {
            "strong GET": [
                ("maxage", strong_url, mx_sid, None),
                ("ref", f"http://127.0.0.1:{pk_port}/", pk_sid, None),
            ],
            "POST": [
                ("maxage", f"{base}/v1/products", mx_sid, POST_LUA),
                ("ref", f"http://127.0.0.1:{txn_port}/", txn_sid, POST_LUA),
            ],
        }
        if args.baseline_src is not None:
            env = {"PYTHONPATH": str(args.baseline_src)}
            if n > 1:
                # One worker builds its schema first: older trees deadlocked when several
                # workers built the query indexes of a new schema at once.
                with maxage(args.db, 1, f"{schema}_base", env):
                    pass
            b_base, b_sid = stack.enter_context(maxage(args.db, n, f"{schema}_base", env))
            b_doc = scaleout.post(b_base)
            b_strong = f"{b_base}/v1/products/{b_doc['id']}?consistency=strong"
            paths["strong GET"].insert(1, ("baseline", b_strong, b_sid, None))
            paths["POST"].insert(1, ("baseline", f"{b_base}/v1/products", b_sid, POST_LUA))
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            p: {who: [] for who, *_ in servers} for p, servers in paths.items()
        }
        for r in range(args.rounds):
            for path, servers in paths.items():
                for who, url, sid, script in servers if r % 2 == 0 else servers[::-1]:
                    runs[path][who].append(wrk(url, d, c, sid=sid, script=script))
    out: dict[str, object] = {}
    for path, by_who in runs.items():
        ref = by_who["ref"]
        out[path] = {
            who: {
                **summary(rs),
                "ratios": [m["rps"] / f["rps"] for m, f in zip(rs, ref, strict=True)],
                "p99_ratios": [m["p99_ms"] / f["p99_ms"] for m, f in zip(rs, ref, strict=True)],
            }
            for who, rs in by_who.items()
        }
    return out


def report(n: int, results: dict[str, object], lean: bool) -> None:
    how = " (no pool reset)" if lean else ""
    names = {
        "maxage": "maxage",
        "baseline": "maxage, --baseline-src",
        "ref strong GET": f"bare asyncpg PK lookup{how}",
        "ref POST": f"bare asyncpg 2-insert transaction{how}",
    }
    print(f"\n### {n} worker{'s' if n > 1 else ''}\n")
    print("| path | server | req/s | p50 ms | p99 ms | CPU µs/req | non-2xx "
          "| req/s vs ref (rounds) | p99 vs ref |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for path, by_who in results.items():
        assert isinstance(by_who, dict)
        for who, s in by_who.items():
            name = names.get(who) or names[f"ref {path}"]
            vs = p99 = ""
            if who != "ref":
                rounds = ", ".join(f"{x:.2f}" for x in s["ratios"])
                vs = f"**{statistics.median(s['ratios']):.2f}x** ({rounds})"
                p99 = f"{statistics.median(s['p99_ratios']):.2f}x"
            print(f"| {path} | {name} | {s['rps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                  f"{s['cpu_us']:.0f} | {s['non2xx']:.0f} | {vs} | {p99} |")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument(
        "--lean-references",
        action="store_true",
        help="no reset query in the references' pools (as in maxage's)",
    )
    ap.add_argument(
        "--baseline-src",
        type=Path,
        help="also run maxage from this src directory (e.g. a checkout before a change) "
        "in the same rounds",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    schema = f"bench_primary_{os.getpid()}"
    load = os.getloadavg()
    results: dict[int, dict[str, object]] = {}
    try:
        for n in (int(w) for w in args.workers.split(",")):
            results[n] = bench_workers(args, n, schema)
    finally:
        for s in (schema, f"{schema}_ref", f"{schema}_base"):
            asyncio.run(sql(args.db, f'DROP SCHEMA IF EXISTS "{s}" CASCADE'))
    if args.json:
        print(json.dumps(results, indent=2))
    print(f"\nwrk -t1 -c{args.connections} -d{args.duration}s after a 2 s warm-up, "
          f"{args.rounds} interleaved rounds, medians; servers on CPU 0, wrk on CPU 1 "
          f"({os.cpu_count()} CPUs); load average before {load[0]:.1f}, "
          f"after {os.getloadavg()[0]:.1f}")  # fmt: skip
    for n, res in results.items():
        report(n, res, args.lean_references)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
