"""Micro-benchmark: get-hit and set cost (ns/op) of maxage.core.Cache vs references.

    python bench/micro_core.py [--n 20000] [--repeat 5] [--runs 5] [--json]

All in one process, like with like: every implementation holds the same ``n``
keys at the same capacity (``n`` entries; maxage's byte bound is ``n`` x the
uniform entry size). Compared: a plain ``dict``, ``cachetools.LRUCache``
(``__getitem__`` / ``__setitem__``), ``theine.Cache`` (``get`` / ``set``) and
our ``Cache`` (``get`` / ``set_if_newer``, no TTL like the others; one extra
row with a TTL) with each policy, locked (``thread_safe=True``) and unlocked.

* "get-hit" reads the ``n`` resident keys round-robin: hits only (the policy's
  per-hit work is included).
* "update" overwrites the ``n`` resident keys (for maxage: a newer version
  each pass; the write-through path of an API write).
* "set" writes never-seen keys into the full cache: every write is an insert
  that evicts (for W-TinyLFU the newcomer may be the one evicted). This is
  the read-through fill of a miss, and the figure the issue's target is on.

One *run* builds every cache afresh and takes the best of ``--repeat`` timings
per operation; ratios to cachetools are taken within the run. The report is
the median over ``--runs`` runs of each ns/op and of each ratio (the machine
is shared: medians of same-run ratios are the robust figure). Targets
(issue 2): get-hit <= 1.0x cachetools' ``__getitem__``, set <= 2x its
``__setitem__``.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator

import cachetools
import theine

from maxage.core import ENTRY_OVERHEAD, Cache, ManualClock

ROUNDS = 5  # get: passes over the resident keys per timing
OPS = ("get_hit", "update", "set")


def best(fn: Callable[[], int], repeat: int) -> float:
    """Best ns/op of ``fn`` (which returns its op count) over ``repeat`` calls."""
    out = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter_ns()
        n = fn()
        out = min(out, (time.perf_counter_ns() - t0) / n)
    return out


def timings(
    keys: list[str],
    repeat: int,
    fresh: Iterator[list[str]],
    get: Callable[[str], object],
    set_: Callable[[str], object],
) -> dict[str, float]:
    """ns/op of get-hit, update and set through the ``get``/``set_`` callables."""
    n = len(keys)

    def do_get() -> int:
        for _ in range(ROUNDS):
            for k in keys:
                get(k)
        return ROUNDS * n

    def do_update() -> int:
        for k in keys:
            set_(k)
        return n

    def do_set() -> int:
        ks = next(fresh)  # never-seen keys: insert + evict
        for k in ks:
            set_(k)
        return len(ks)

    return {
        "get_hit": best(do_get, repeat),
        "update": best(do_update, repeat),
        "set": best(do_set, repeat),
    }


def reference_rows(
    keys: list[str], body: bytes, repeat: int, fresh: Iterator[list[str]]
) -> dict[str, dict[str, float]]:
    """dict, cachetools.LRUCache and theine holding ``keys``."""
    n = len(keys)
    res: dict[str, dict[str, float]] = {}
    d: dict[str, bytes] = dict.fromkeys(keys, body)

    def d_set(k: str) -> None:
        d[k] = body

    res["dict"] = timings(keys, repeat, fresh, d.get, d_set)

    lru: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=n)
    for k in keys:
        lru[k] = body

    # Inline loops for cachetools (no wrapper call), the reference must not be slowed.
    def lru_get_loop() -> int:
        for _ in range(ROUNDS):
            for k in keys:
                lru[k]
        return ROUNDS * n

    def lru_set_loop() -> int:
        ks = next(fresh)
        for k in ks:
            lru[k] = body
        return len(ks)

    def lru_update_loop() -> int:
        for k in keys:
            lru[k] = body
        return n

    res["cachetools.LRUCache"] = {
        "get_hit": best(lru_get_loop, repeat),
        "update": best(lru_update_loop, repeat),
        "set": best(lru_set_loop, repeat),
    }

    th = theine.Cache(n)
    for k in keys:
        th.set(k, body)
    th_set = th.set
    res["theine"] = timings(keys, repeat, fresh, th.get, lambda k: th_set(k, body))
    return res


def maxage_rows(
    keys: list[str], body: bytes, repeat: int, fresh: Iterator[list[str]]
) -> dict[str, dict[str, float]]:
    """maxage's Cache with each policy, locked and unlocked, holding ``keys``."""
    n = len(keys)
    res: dict[str, dict[str, float]] = {}
    size = len(body) + len(keys[0]) + ENTRY_OVERHEAD
    for policy, ts, ttl in (
        ("adaptive", False, None),
        ("adaptive", True, None),
        ("adaptive", False, 3600.0),
        ("lru", False, None),
        ("lru", True, None),
    ):
        c = Cache(n * size, clock=ManualClock(0.0), policy=policy, thread_safe=ts)
        for k in keys:
            c.set_if_newer(k, 1, body, started_at=0.0, ttl=ttl)
        s = c.set_if_newer
        name = f"maxage {policy} thread_safe={ts}" + ("" if ttl is None else f" ttl={ttl:g}")

        # get first: every key resident (the sets below churn the cache)
        g = c.get

        def c_get_loop(g: Callable[[str], object] = g) -> int:
            for _ in range(ROUNDS):
                for k in keys:
                    g(k)
            return ROUNDS * n

        versions = itertools.count(2)

        def c_update_loop(
            s: Callable[..., object] = s,
            ttl: float | None = ttl,
            versions: Iterator[int] = versions,
        ) -> int:
            v = next(versions)  # a newer version each pass: every call stores
            for k in keys:
                s(k, v, body, started_at=0.0, ttl=ttl)
            return n

        def c_set_loop(s: Callable[..., object] = s, ttl: float | None = ttl) -> int:
            ks = next(fresh)
            for k in ks:
                s(k, 1, body, started_at=0.0, ttl=ttl)
            return len(ks)

        res[name] = {
            "get_hit": best(c_get_loop, repeat),
            "update": best(c_update_loop, repeat),
            "set": best(c_set_loop, repeat),
        }
    return res


def one_run(n: int, repeat: int, fresh: Iterator[list[str]]) -> dict[str, dict[str, float]]:
    keys = [f"key:{i:010d}" for i in range(n)]
    body = b"x" * 100
    return {
        **reference_rows(keys, body, repeat, fresh),
        **maxage_rows(keys, body, repeat, fresh),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000, help="resident keys (capacity)")
    ap.add_argument("--repeat", type=int, default=5, help="timings per op per run (best)")
    ap.add_argument("--runs", type=int, default=5, help="runs (median reported)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.n
    counter = itertools.count()
    fresh = ([f"new{next(counter)}:{i:010d}" for i in range(n)] for _ in itertools.count())

    runs = [one_run(n, args.repeat, fresh) for _ in range(args.runs)]
    names = list(runs[0])
    ref = "cachetools.LRUCache"
    table: dict[str, dict[str, float]] = {}
    for name in names:
        row: dict[str, float] = {}
        for op in OPS:
            row[op] = statistics.median(r[name][op] for r in runs)
            row[op + "_ratio"] = statistics.median(r[name][op] / r[ref][op] for r in runs)
        table[name] = row
    if args.json:
        print(json.dumps({"n": n, "runs": args.runs, "median": table}))
        return 0
    print(
        f"n={n} resident keys; median of {args.runs} runs (each best of {args.repeat}); "
        "ns/op and same-run ratio to cachetools.LRUCache"
    )
    print("| implementation | get-hit ns | vs LRU | update ns | vs LRU | set ns | vs LRU |")
    print("|---|---|---|---|---|---|---|")
    for name, r in table.items():
        cells = " | ".join(f"{r[op]:.0f} | {r[op + '_ratio']:.2f}x" for op in OPS)
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
