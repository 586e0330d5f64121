"""In-process cost of the cache server's hot paths: protocol + app + cache, no sockets.

``HttpProtocol.data_received`` is fed wrk-shaped requests (the bytes
``bench/cacheserver/run.py``'s Lua scripts make wrk send: one request per read) on a
transport whose ``write`` and ``is_closing`` are C functions, so what is timed is
the server's own Python per request (parser callbacks, routing, the cache, the
answer, the histogram), not the kernel's loopback TCP.

    .venv/bin/python bench/cacheserver/inproc.py [--requests 200000] [--repeat 4]
        [--baseline-src DIR] [--rounds 3] [--profile put]

``--baseline-src DIR`` runs the same measurement with ``PYTHONPATH=DIR`` (a ``src/``
tree of another commit: ``git archive <commit> src | tar -x -C /tmp/base``) in
alternating child processes, so both see the same machine; the best of each round's
repeats and the median over rounds are printed. Real CPU per request under wrk is about
twice these figures (cold caches between requests on a shared core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
from callgrind_core import callgrind_count  # noqa: E402  (bench/, beside this folder)

KEYS = 1000
VALUE = b"x" * 100


class _Transport:
    """What the protocol uses of a uvloop transport, with C-level methods."""

    def __init__(self) -> None:
        self.out: deque[bytes] = deque(maxlen=1)
        self.write = self.out.append
        self.is_closing = bool  # bool() is False


def _requests(method: str, n: int) -> list[bytes]:
    import random

    rnd = random.Random(7)
    out = []
    for _ in range(n):
        k = rnd.randint(1, KEYS)
        if method == "PUT":
            # wrk.format's header order (captured from wrk 4: Content-Length before the
            # script's Content-Type; it was Content-Type first here until issue 17).
            out.append(
                b"PUT /v1/keys/k%d HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n"
                b"Content-Length: %d\r\nContent-Type: text/plain\r\n\r\n%s" % (k, len(VALUE), VALUE)
            )
        else:
            out.append(b"GET /v1/keys/k%d HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n" % k)
    return out


def _setup() -> Any:
    """A protocol connected to a fake transport, wired like ``server.serve`` does."""
    from maxage.cacheserver import app as app_mod
    from maxage.cacheserver.app import CacheApp, make_meta, meta_size
    from maxage.cacheserver.metrics import Metrics
    from maxage.cacheserver.protocol import HttpProtocol, Limits, ServerState
    from maxage.core import Cache, SystemClock

    del make_meta
    # what server.serve passes (a --baseline-src tree from before meta_charge: meta_size)
    meta_charge = getattr(app_mod, "meta_charge", meta_size)
    loop = asyncio.new_event_loop()
    clock = SystemClock()
    cache = Cache(
        256 * 1024 * 1024,
        clock=clock,
        policy="adaptive",
        thread_safe=False,
        prefix_index=True,
        meta_size=meta_charge,
    )
    metrics = Metrics()
    app = CacheApp(
        cache, clock, metrics, max_key_length=1024, max_value_bytes=8 * 1024 * 1024, token=None
    )
    limits = Limits(max_value_bytes=8 * 1024 * 1024, request_timeout=10.0)
    state = ServerState(app, limits, metrics, loop, access_log="errors-and-slow")
    proto = HttpProtocol(state)
    t = _Transport()
    proto.connection_made(t)  # type: ignore[arg-type]
    return proto, t, metrics


def measure(n: int, repeat: int, which: list[str]) -> dict[str, float]:
    """Best-of-``repeat`` microseconds per request for each of ``which``."""
    import gc

    proto, t, _ = _setup()
    feed = proto.data_received
    reqs = {m: _requests(m, n) for m in ("PUT", "GET")}
    for k in range(1, KEYS + 1):  # preload every key
        feed(
            b"PUT /v1/keys/k%d HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (k, len(VALUE), VALUE)
        )
    assert t.out[0].startswith(b"HTTP/1.1 201"), t.out[0][:200]
    out: dict[str, float] = {}
    gc.collect()
    for m in which:
        best = float("inf")
        for _ in range(repeat):
            batch = reqs[m]
            t0 = time.perf_counter()
            for r in batch:
                feed(r)
            best = min(best, (time.perf_counter() - t0) / len(batch) * 1e6)
        expect = b"HTTP/1.1 201" if m == "PUT" else b"HTTP/1.1 200"
        assert t.out[0].startswith(expect), t.out[0][:300]
        out[m.lower()] = best
    return out


def profile(method: str, n: int) -> None:
    import cProfile
    import pstats

    proto, _, _ = _setup()
    feed = proto.data_received
    for r in _requests("PUT", KEYS * 2):
        feed(r)
    batch = _requests(method.upper(), n)
    pr = cProfile.Profile()
    pr.enable()
    for r in batch:
        feed(r)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)


def cg_child(method: str, n: int) -> None:
    """Under callgrind: the measured requests are the only calls made through ``filter``
    (``--toggle-collect=filter_next`` counts them and nothing else)."""
    proto, t, _ = _setup()
    feed = proto.data_received
    for r in _requests("PUT", KEYS * 2):
        feed(r)
    for r in _requests(method, 2000):  # warm the path (specialising interpreter)
        feed(r)
    batch = _requests(method, n)
    deque(filter(feed, batch), maxlen=0)
    assert t.out[0][9:10] == b"2", t.out[0][:300]


def instructions(src: str, method: str, n: int, keep: str | None = None) -> float:
    """Instructions per request (one valgrind run on ``src``)."""
    argv = [__file__, "--cg-child", method, "--requests", str(n)]
    return callgrind_count("filter_next", argv, {"PYTHONPATH": src}, keep=keep, cwd=str(ROOT)) / n


def _child(src: str, n: int, repeat: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": src}
    cmd = [sys.executable, __file__, "--child", "--requests", str(n), "--repeat", str(repeat)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline-src", help="a src/ tree of another commit, run alternately")
    ap.add_argument("--src", default=str(ROOT / "src"), help="the src/ tree measured as 'now'")
    ap.add_argument("--profile", choices=["put", "get"], help="cProfile one path instead")
    ap.add_argument(
        "--callgrind",
        action="store_true",
        help="instructions per request under callgrind instead of time (load-independent)",
    )
    ap.add_argument("--method", choices=["PUT", "GET"], help="with --callgrind: only this one")
    ap.add_argument("--keep", help="with --callgrind: save the profiles as KEEP.NAME.METHOD")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cg-child", choices=["PUT", "GET"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cg_child:
        cg_child(args.cg_child, args.requests)
        return
    if args.child:
        print(json.dumps(measure(args.requests, args.repeat, ["PUT", "GET"])))
        return
    if args.profile:
        sys.path.insert(0, args.src)
        profile(args.profile, args.requests)
        return
    srcs = {"now": args.src}
    if args.baseline_src:
        srcs["baseline"] = args.baseline_src
    if args.callgrind:
        n = min(args.requests, 5000)
        methods = [args.method] if args.method else ["PUT", "GET"]
        res = {
            name: {
                m: instructions(src, m, n, f"{args.keep}.{name}.{m}" if args.keep else None)
                for m in methods
            }
            for name, src in srcs.items()
        }
        for name, r in res.items():
            each = "  ".join(f"{m} {r[m]:,.0f}" for m in methods)
            print(f"{name:8s} {each} instructions/request")
        if "baseline" in res:
            for m in methods:
                print(f"{m} now/baseline: {res['now'][m] / res['baseline'][m]:.3f}")
        return
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in srcs}
    for rnd in range(args.rounds):
        order = list(srcs.items()) if rnd % 2 == 0 else list(srcs.items())[::-1]
        for name, src in order:
            r = _child(src, args.requests, args.repeat)
            runs[name].append(r)
            print(f"round {rnd + 1} {name:8s} PUT {r['put']:.2f} us  GET {r['get']:.2f} us")
    for name, rs in runs.items():
        put = statistics.median(r["put"] for r in rs)
        get = statistics.median(r["get"] for r in rs)
        print(f"median {name:8s} PUT {put:.2f} us  GET {get:.2f} us")
    if "baseline" in runs:
        for m in ("put", "get"):
            now = statistics.median(r[m] for r in runs["now"])
            base = statistics.median(r[m] for r in runs["baseline"])
            print(f"{m.upper()} now/baseline: {now / base:.3f}")


if __name__ == "__main__":
    main()
