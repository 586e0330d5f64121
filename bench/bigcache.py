"""Big caches and the CPython collector: 1,000 vs 1,000,000 entries in one ``maxage.core.Cache``.

    python bench/bigcache.py [--entries 1000,1000000] [--ops 1000000] [--fill-every 3]
                             [--modes default,freeze,refreeze]

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--entries", default="1000,1000000")
    ap.add_argument("--ops", type=int, default=1_000_000)
    ap.add_argument("--fill-every", type=int, default=3)
    ap.add_argument("--modes", default="default,freeze,refreeze")
    ap.add_argument("--child", nargs=2, metavar=("ENTRIES", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
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
