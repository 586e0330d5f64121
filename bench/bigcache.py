"""Big caches and the CPython collector: 1,000 vs 1,000,000 entries in one ``maxage.core.Cache``.

    python bench/bigcache.py [--entries 1000,1000000] [--ops 1000000] [--fill-every 3]
                             [--modes default,freeze,refreeze]
    python bench/bigcache.py --api [--entries 1000,1000000] [--rounds 3] [--duration 5]

``--api`` measures through HTTP instead: one ``maxage serve`` (SQLite, write-through)
per entry count, all up at once, each filled by ``:batch`` creates of ids ``d1``..``dN``
(write-through puts every document in the L1; the fill is checked on ``/metrics``),
then ``wrk`` GETs of uniformly random ids in alternating rounds: RSS per entry, req/s,
p50/p99 and server CPU per request at each size, and the p99 ratio largest / smallest
(medians; ``bench/cacheserver/run.py --entries`` does the same for the cache server).

Every (entries, mode) runs in a fresh interpreter (the collector's state is
per process). The child fills a thread-safe ``Cache`` (the API's L1 and the
cache server use one) with API-shaped entries -- a 16-byte key, an 80-byte JSON
body, a bytes ETag as ``meta`` -- then runs ``--ops`` operations: a ``get`` of a
random resident key, and every ``--fill-every``-th operation a fill of a new
key (an insert that evicts). Reported per row:

* RSS per entry: resident memory added by the fill / entries (key, body, meta,
  entry record, dict slots and the policy's share);
* tracked objects and the CPU time of one full collection (``gc.collect()``
  timed with ``process_time``: load-independent);
* per-operation wall latency p50/p99/p99.9/max, and every full (generation 2)
  collection the workload triggered: its wall and CPU time.

Modes: ``default`` (CPython's collector as is), ``freeze`` (``gc.collect()``
then ``gc.freeze()`` after the fill: the objects alive then are never scanned
again) and ``refreeze`` (the same, and ``gc.freeze()`` again after every full
collection: each one scans only what survived since the last; anything frozen
that later becomes cyclic garbage is never freed). On a shared machine the wall latencies carry other tenants' noise;
the collections' CPU times do not.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time

from maxage.core import Cache, ManualClock

BODY = b'{"id":"0000000000000000","version":1,"data":{"name":"chair","price":49.5,"tags":["wood"]}}'


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(entries: int, mode: str, ops: int, fill_every: int) -> dict[str, object]:
    cache = Cache(entries * 1024, clock=ManualClock(0.0), seed=1)
    gc.collect()
    rss0 = rss_bytes()
    for i in range(entries):
        cache.set_if_newer(f"products/{i:07d}", 1, BODY, started_at=0.0, meta=b'"1"')
    assert len(cache) == entries, (len(cache), entries)
    gc.collect()
    rss1 = rss_bytes()
    cpu = time.process_time()
    gc.collect()
    full_gc_cpu = time.process_time() - cpu
    if mode in ("freeze", "refreeze"):
        gc.freeze()
    tracked = len(gc.get_objects())

    pauses: list[tuple[float, float]] = []  # (wall, cpu) of each generation-2 collection
    started = [0.0, 0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            started[:] = [time.perf_counter(), time.process_time()]
        else:
            pauses.append((time.perf_counter() - started[0], time.process_time() - started[1]))
            if mode == "refreeze":
                gc.freeze()

    rng = random.Random(1)
    keys = [f"products/{rng.randrange(entries):07d}" for _ in range(ops)]
    lat = [0.0] * ops
    get, fill, clock = cache.get, cache.set_if_newer, time.perf_counter
    new = entries
    gc.callbacks.append(on_gc)
    for i, key in enumerate(keys):
        t = clock()
        if i % fill_every == 0:
            fill(f"products/{new:07d}", 1, BODY, started_at=0.0, meta=b'"1"')
            new += 1
        else:
            get(key)
        lat[i] = clock() - t
    gc.callbacks.remove(on_gc)
    lat.sort()

    def q(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1e6

    return {
        "entries": entries,
        "mode": mode,
        "rss_per_entry": (rss1 - rss0) / entries,
        "tracked": tracked,
        "full_gc_cpu_ms": full_gc_cpu * 1e3,
        "p50_us": q(0.5),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_ms": lat[-1] * 1e3,
        "gen2_wall_ms": [round(w * 1e3, 1) for w, _ in pauses],
        "gen2_cpu_ms": [round(c * 1e3, 1) for _, c in pauses],
    }


API_CONFIG = """
[collections.docs]
max_staleness = "1s"
write_policy = "write-through"
ttl = "1h"  # the fill of a million takes minutes: none may expire before the reads
[collections.docs.schema]
type = "object"
required = ["name"]
properties = {name = {type = "string"}, price = {type = "number"}, tags = {type = "array"}}
"""
API_DOC = {"name": "chair", "price": 49.5, "tags": ["wood"]}
API_GET_LUA = """
request = function()
  return wrk.format("GET", "/v1/docs/d" .. math.random(%d))
end
"""


def _session_rss(sid: int) -> int:
    """Resident bytes of the live processes of session ``sid`` (the server and its workers)."""
    from pathlib import Path

    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[3]) == sid:
                total += int((stat.parent / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total * os.sysconf("SC_PAGE_SIZE")


def _api_fill(base: str, n: int) -> None:
    """Create ``d1``..``dN`` in batches of 1,000 (one transaction each; write-through
    fills the L1), then check the L1 holds all of them."""
    import httpx

    with httpx.Client(base_url=base, timeout=120, trust_env=False) as c:
        for first in range(1, n + 1, 1000):
            ops = [
                {"op": "create", "id": f"d{i}", "data": API_DOC}
                for i in range(first, min(first + 1000, n + 1))
            ]
            r = c.post("/v1/docs:batch", json={"operations": ops})
            r.raise_for_status()
            if first % 100_000 == 1 and first > 1:
                print(f"  {first - 1:,} created", flush=True)
        text = c.get("/metrics").text
    entries = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("maxage_cache_entries")
    )
    if entries != n:
        raise RuntimeError(f"created {n} documents but the L1 holds {entries:.0f}")


def _full_collections(base: str) -> int:
    """The server's generation-2 collections so far (``python_gc_collections_total``)."""
    import httpx

    text = httpx.get(base + "/metrics", trust_env=False, timeout=30).text
    return sum(
        int(float(line.split()[-1]))
        for line in text.splitlines()
        if line.startswith('python_gc_collections_total{generation="2"')
    )


def api(sizes: list[int], rounds: int, duration: int, connections: int) -> int:
    """The ``--api`` mode (see the module docstring)."""
    import contextlib
    import shutil
    import statistics
    import tempfile
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent / "api"))
    from run import serve_config, server, wrk

    tmp = Path(tempfile.mkdtemp(prefix="maxage-bigcache-"))
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in sizes}
    targets: list[tuple[int, str, int, Path]] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, tmp, ignore_errors=True)
        for n in sizes:
            # The L1's bound holds every document: what is measured is size, not eviction.
            cmd, port, base, db = serve_config(
                API_CONFIG,
                "",
                "--max-batch-operations",
                "1000",
                "--cache-bytes",
                "8GiB",
                "--max-loop-lag",
                "0",  # no shedding during the fill
            )
            # The SQLite file of a million documents is ~230 MB: removed after the server.
            stack.callback(shutil.rmtree, Path(db.removeprefix("sqlite:///")).parent, True)
            sid = stack.enter_context(server(cmd, port))
            rss0 = _session_rss(sid)
            t = time.monotonic()
            _api_fill(base, n)
            per_entry = (_session_rss(sid) - rss0) / n
            print(
                f"{n:,} entries: filled in {time.monotonic() - t:.0f} s, "
                f"{per_entry:.0f} B of RSS per entry",
                flush=True,
            )
            script = tmp / f"get-{n}.lua"
            script.write_text(API_GET_LUA % n)
            targets.append((n, base + "/", sid, script))
        for rnd in range(rounds):
            for n, url, sid, script in targets:
                gen2 = _full_collections(url.rstrip("/"))
                r = wrk(url, duration, connections, sid=sid, script=script)
                r["gen2"] = _full_collections(url.rstrip("/")) - gen2  # warm-up included
                if r["non2xx"]:
                    raise RuntimeError(f"{r['non2xx']:.0f} non-2xx answers at {n:,} entries")
                runs[n].append(r)
                print(
                    f"round {rnd + 1}: {n:>9,} entries {r['rps']:>8.0f} req/s  p50 "
                    f"{r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  cpu {r['cpu_us']:.1f} us/req  "
                    f"full collections {r['gen2']:.0f}",
                    flush=True,
                )
    print("\n| entries | req/s | p50 ms | p99 ms | server CPU µs/request |\n|---|---|---|---|---|")
    for n in sizes:
        med = {
            k: statistics.median(r[k] for r in runs[n])
            for k in ("rps", "p50_ms", "p99_ms", "cpu_us")
        }
        print(
            f"| {n:,} | {med['rps']:,.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} "
            f"| {med['cpu_us']:.1f} |"
        )
    small, big = sizes[0], sizes[-1]
    per = [b["p99_ms"] / a["p99_ms"] for a, b in zip(runs[small], runs[big], strict=True)]
    print(
        f"\nGET p99 {big:,} / {small:,} entries: {statistics.median(per):.2f}x "
        f"(per round: {', '.join(f'{x:.2f}' for x in per)}; target <= 1.5x)"
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", default="1000,1000000")
    ap.add_argument("--api", action="store_true", help="through maxage serve over HTTP")
    ap.add_argument("--rounds", type=int, default=3, help="--api: alternating rounds")
    ap.add_argument("--duration", type=int, default=5, help="--api: seconds per wrk run")
    ap.add_argument("--connections", type=int, default=50, help="--api: wrk connections")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--fill-every", type=int, default=3)
    ap.add_argument("--modes", default="default,freeze,refreeze")
    ap.add_argument("--child", nargs=2, metavar=("ENTRIES", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.api:
        sizes = sorted(int(x) for x in args.entries.split(","))
        return api(sizes, args.rounds, args.duration, args.connections)
    if args.child:
        r = child(int(args.child[0]), args.child[1], args.ops, args.fill_every)
        print(json.dumps(r))
        return 0
    print(
        f"{args.ops:,} ops, a fill every {args.fill_every} (else a get-hit); one interpreter per row\n"
    )
    print(
        "| entries | mode | RSS B/entry | tracked objects | full gc CPU ms | p50 µs | p99 µs "
        "| p99.9 µs | max ms | gen-2 collections: wall ms (CPU ms) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in args.modes.split(","):
        for n in (int(x) for x in args.entries.split(",")):
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(n), mode, "--ops", str(args.ops),
                 "--fill-every", str(args.fill_every)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            r = json.loads(out)
            gen2 = ", ".join(
                f"{w} ({c})" for w, c in zip(r["gen2_wall_ms"], r["gen2_cpu_ms"], strict=True)
            )
            print(
                f"| {n:,} | {mode} | {r['rss_per_entry']:.0f} | {r['tracked']:,} | "
                f"{r['full_gc_cpu_ms']:.1f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
                f"{r['p999_us']:.1f} | {r['max_ms']:.1f} | {gen2 or 'none'} |"
            )
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
