"""Instructions per operation (callgrind) of maxage.core.Cache vs cachetools and theine.

    python bench/callgrind_core.py [--n 20000] [--ops 4000] [--impls ...] [--json]

Wall-clock ns on a shared 2-CPU machine move with the neighbours' load;
instruction counts do not. Each (implementation, operation) runs in a fresh
interpreter under ``valgrind --tool=callgrind``: ``n`` resident keys at
capacity ``n``, then ``ops`` operations from pre-built
argument lists through ``itertools.starmap``, the only place the child uses it,
so ``--toggle-collect=starmap_next`` counts those operations and nothing else
(imports and the fill are not counted). Each operation is a call of a bound
method or of a one-line lambda around it (the same for every implementation;
that call, ~100-200 instructions, is in every figure): ``lru[k]`` and
``lru[k] = body`` for cachetools (as ``bench/micro_core.py`` times it),
``th.get(k)``/``th.set(k, body)`` for theine, ``c.get(k)`` and
``c.set_if_newer(k, 1, body, started_at=0.0)`` for maxage.
``PYTHONHASHSEED=0`` in the children (the sketch and the shadows hash ``str``).

* get-hit: the resident keys read round-robin (hits only);
* set: never-seen keys into the full cache (every set is an insert that
  evicts; maxage's ``set_if_newer``, the read-through fill).
* read_mostly (``--op read_mostly``; not in the default run): runs of ``RUN``
  = 1,000 hits, each followed by one set of a never-seen key, through one
  two-argument lambda (so not comparable with the two rows above). A run is
  longer than maxage's 256-slot read buffer, so every set drains a full buffer
  that dropped hits: the cost the drain pays for them (the dropped-hit counts,
  the shadows' replay of sampled keys) is in the figure.

Targets (issue 17): maxage's set <= 1.0x theine's set, get-hit <= cachetools'.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable
from itertools import starmap

IMPLS = ("cachetools", "theine", "maxage", "maxage-lru", "policy")
OPS = ("get_hit", "set", "read_mostly")
RUN = 1000  # read_mostly: hits between two sets (> the read buffer's 256: hits are dropped)


def child(impl: str, op: str, n: int, count: int) -> None:
    """Build ``impl`` with ``n`` residents, then do ``count`` of ``op``."""
    keys = [f"key:{i:010d}" for i in range(n)]
    fresh = [f"new:{i:010d}" for i in range(count)]
    body = b"x" * 100
    get: Callable[[str], object]
    put: Callable[[str], object]
    if impl == "cachetools":
        import cachetools

        lru: cachetools.LRUCache[str, bytes] = cachetools.LRUCache(maxsize=n)
        get = lambda k: lru[k]  # noqa: E731

        def put(k: str) -> None:
            lru[k] = body
    elif impl == "theine":
        import theine

        th: theine.Cache[str, bytes] = theine.Cache(n)
        get = lambda k: th.get(k)  # noqa: E731
        put = lambda k: th.set(k, body)  # noqa: E731
    elif impl == "policy":  # W-TinyLFU alone, no storage: admit = set (weight 1)
        from maxage.core.policy import TinyLfuPolicy

        pol = TinyLfuPolicy(n)
        get = lambda k: pol.on_hit(k)  # noqa: E731
        put = lambda k: pol.admit(k, 1)  # noqa: E731
    else:
        from maxage.core import ENTRY_OVERHEAD, Cache, ManualClock

        size = len(body) + len(keys[0]) + ENTRY_OVERHEAD
        policy = "lru" if impl == "maxage-lru" else "adaptive"
        c = Cache(n * size, clock=ManualClock(0.0), policy=policy, thread_safe=False)
        get = lambda k: c.get(k)  # noqa: E731
        put = lambda k: c.set_if_newer(k, 1, body, started_at=0.0)  # noqa: E731
    for k in keys:
        put(k)
    fn: Callable[[str], object]
    if op == "get_hit":
        args = [(keys[i % n],) for i in range(count)]
        fn = get
    elif op == "read_mostly":
        args = [
            ((fresh[i], True) if i % (RUN + 1) == RUN else (keys[i % n], False))
            for i in range(count)
        ]
        fn = lambda k, is_set: put(k) if is_set else get(k)  # noqa: E731
    else:
        args = [(k,) for k in fresh[:count]]
        fn = put
    # The measured operations are the only ones run through itertools.starmap:
    # callgrind counts from its first ``starmap_next`` to the last (``--toggle-collect``).
    deque(starmap(fn, args), maxlen=0)


def callgrind_count(
    toggle: str,
    argv: list[str],
    env: dict[str, str],
    *,
    keep: str | None = None,
    cwd: str | None = None,
) -> int:
    """Instructions that ``valgrind --tool=callgrind`` counts in ``python argv`` while
    ``toggle`` (a C function name) runs; ``keep``: save the profile there for
    ``callgrind_annotate``. ``PYTHONHASHSEED=0`` in the child (hashes decide here)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or os.path.join(tmp, "cg.out")
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--toggle-collect={toggle}",
                f"--callgrind-out-file={out}",
                sys.executable,
                *argv,
            ],
            capture_output=True,
            text=True,
            env={**os.environ, **env, "PYTHONHASHSEED": "0"},
            check=True,
            cwd=cwd,
        )
    m = re.search(r"Collected : (\d+)", proc.stderr)
    if m is None:
        raise SystemExit(f"no instruction count from valgrind:\n{proc.stderr[-2000:]}")
    return int(m.group(1))


def instructions(impl: str, op: str, n: int, count: int, keep: str | None = None) -> float:
    """Instructions per ``op`` of ``impl`` (one valgrind run; ``keep``: save the
    callgrind profile there for ``callgrind_annotate``)."""
    argv = [__file__, "--child", impl, op, str(n), str(count)]
    # valgrind runs the interpreter by its resolved path, outside the venv: the child
    # gets the parent's import path.
    env = {"PYTHONPATH": os.pathsep.join(sys.path)}
    return callgrind_count("starmap_next", argv, env, keep=keep) / count


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--child":
        impl, op, n, count = argv[1], argv[2], int(argv[3]), int(argv[4])
        child(impl, op, n, count)
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000, help="resident keys (capacity)")
    ap.add_argument("--ops", type=int, default=4000, help="measured operations")
    ap.add_argument("--impls", default=",".join(IMPLS), help="comma-separated")
    ap.add_argument("--op", choices=OPS, help="only this operation")
    ap.add_argument("--keep", help="save each callgrind profile as KEEP.IMPL.OP")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    ops = [args.op] if args.op else ["get_hit", "set"]
    table: dict[str, dict[str, float]] = {}
    for impl in args.impls.split(","):
        if impl not in IMPLS:
            ap.error(f"unknown implementation {impl!r} (one of {', '.join(IMPLS)})")
        row: dict[str, float] = {}
        for op in ops:
            keep = f"{args.keep}.{impl}.{op}" if args.keep else None
            row[op] = instructions(impl, op, args.n, args.ops, keep)
        table[impl] = row
        if not args.json:
            print(impl, {k: round(v) for k, v in row.items()}, file=sys.stderr)
    if args.json:
        print(json.dumps({"n": args.n, "ops": args.ops, "instructions_per_op": table}))
        return 0
    print(f"n={args.n} resident keys; instructions per operation (callgrind)")
    print("| implementation | " + " | ".join(f"{op} instr/op" for op in ops) + " |")
    print("|---|" + "---|" * len(ops))
    for impl, row in table.items():
        cells = []
        for op in ops:
            ratio = ""
            if op == "set" and "theine" in table and impl.startswith("maxage"):
                ratio = f" ({row[op] / table['theine'][op]:.2f}x theine)"
            if op == "get_hit" and "cachetools" in table and impl.startswith("maxage"):
                ratio = f" ({row[op] / table['cachetools'][op]:.2f}x cachetools)"
            cells.append(f"{row[op]:,.0f}{ratio}")
        print(f"| {impl} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
