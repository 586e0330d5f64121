"""Micro-benchmark: get-hit and set cost (ns/op) of maxage.core.Cache vs references.

    python bench/micro_core.py [--n 20000] [--repeat 5] [--json]

All in one process, same keys: a plain ``dict``, ``cachetools.LRUCache``
(``__getitem__`` / ``__setitem__``), ``theine.Cache`` (``get`` / ``set``) and
our ``Cache`` (``get`` / ``set_if_newer``) with each policy, locked
(``thread_safe=True``) and unlocked. "get-hit" reads resident keys round-robin
(so the policy's per-hit work is included); "set" writes new versions of keys
into a full cache (so eviction is included). Best of ``--repeat`` runs. The
targets (issue 2): get-hit <= cachetools' ``__getitem__``, set <= 2x its
``__setitem__``.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from collections.abc import Callable

import cachetools
import theine

from maxage.core import ENTRY_OVERHEAD, Cache, ManualClock


def best(fn: Callable[[], int], repeat: int) -> float:
    """Best ns/op of ``fn`` (which returns its op count)."""
    out = float("inf")
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter_ns()
        n = fn()
        out = min(out, (time.perf_counter_ns() - t0) / n)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000, help="resident keys (capacity)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    n = args.n
    keys = [f"key:{i:010d}" for i in range(n)]
    fresh = [f"new:{i:010d}" for i in range(n)]  # for set: always a miss -> insert + evict
    body = b"x" * 100
    rounds = 5
    results: dict[str, dict[str, float]] = {}

    # dict
    d: dict[str, bytes] = {k: body for k in keys}

    def dict_get() -> int:
        g = d.get
        for _ in range(rounds):
            for k in keys:
                g(k)
        return rounds * n

    def dict_set() -> int:
        for k in fresh:
            d[k] = body
        for k in keys:
            d[k] = body
        return 2 * n

    results["dict"] = {"get_hit": best(dict_get, args.repeat), "set": best(dict_set, args.repeat)}

    # cachetools
    lru: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=n)
    for k in keys:
        lru[k] = body

    def lru_get() -> int:
        for _ in range(rounds):
            for k in keys:
                lru[k]
        return rounds * n

    def lru_set() -> int:
        for k in fresh:
            lru[k] = body
        for k in keys:
            lru[k] = body
        return 2 * n

    results["cachetools.LRUCache"] = {
        "get_hit": best(lru_get, args.repeat),
        "set": best(lru_set, args.repeat),
    }

    # theine
    th = theine.Cache(n)
    for k in keys:
        th.set(k, body)

    def th_get() -> int:
        g = th.get
        for _ in range(rounds):
            for k in keys:
                g(k)
        return rounds * n

    def th_set() -> int:
        s = th.set
        for k in fresh:
            s(k, body)
        for k in keys:
            s(k, body)
        return 2 * n

    results["theine"] = {"get_hit": best(th_get, args.repeat), "set": best(th_set, args.repeat)}

    # maxage
    for policy in ("adaptive", "lru"):
        for ts in (False, True):
            size = len(body) + len(keys[0]) + ENTRY_OVERHEAD
            c = Cache(n * size, clock=ManualClock(0.0), policy=policy, thread_safe=ts)
            version = [1]
            for k in keys:
                c.set_if_newer(k, 1, body, started_at=0.0, ttl=3600.0)

            def our_get(c: Cache = c) -> int:
                g = c.get
                for _ in range(rounds):
                    for k in keys:
                        g(k)
                return rounds * n

            def our_set(c: Cache = c, version: list[int] = version) -> int:
                s = c.set_if_newer
                version[0] += 1
                v = version[0]
                for k in fresh:
                    s(k, v, body, started_at=0.0, ttl=3600.0)
                for k in keys:
                    s(k, v, body, started_at=0.0, ttl=3600.0)
                return 2 * n

            # get first: every key resident (the sets below churn the cache)
            get_ns = best(our_get, args.repeat)
            set_ns = best(our_set, args.repeat)
            name = f"maxage {policy} thread_safe={ts}"
            results[name] = {"get_hit": get_ns, "set": set_ns}

    ref = results["cachetools.LRUCache"]
    if args.json:
        print(json.dumps({"n": n, "ns_per_op": results}))
        return 0
    print(f"n={n} resident keys, best of {args.repeat}; ns/op (ratio to cachetools.LRUCache)")
    print("| implementation | get-hit ns | vs LRU | set ns | vs LRU |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['get_hit']:.0f} | {r['get_hit'] / ref['get_hit']:.2f}x "
            f"| {r['set']:.0f} | {r['set'] / ref['set']:.2f}x |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
