"""Instructions per `maxage sim` operation (callgrind): load-independent, unlike CPU time.

    .venv/bin/python bench/maxage_sim/callgrind.py [--ops 2000] [--seed 1] CONFIG...

Each config runs in a fresh interpreter under ``valgrind --tool=callgrind``: a warm-up
run of 1,000 operations (seed 99: imports, first calls), then the measured run of --ops
operations through ``itertools.starmap``, the only place the child uses it, so
``--toggle-collect=starmap_next`` counts that run and nothing else (as
``bench/callgrind_core.py`` does). The measured run is the simulator's driver as
``throughput.py`` runs it (every fault, the history hashed and checked); the history's
sha256 is printed, so two code trees can be shown to simulate the same thing.
About 30 seconds per 1,000 operations.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from itertools import starmap
from pathlib import Path
from typing import Any


def child(config: str, ops: int, seed: int) -> None:
    import logging

    from maxage.contracts import load_config
    from maxage.sim.driver import SimConfig, run

    logging.getLogger("maxage").setLevel(logging.CRITICAL)
    cfg = SimConfig(load_config(config).collections)
    run(cfg, 99, ops=1000, duration=None)
    out: list[Any] = []
    deque(starmap(lambda: out.append(run(cfg, seed, ops=ops, duration=None)), [()]), maxlen=0)
    totals, sha, _, _ = out[0]
    print(sha, totals.race_exposed, totals.operations)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+")
    p.add_argument("--ops", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    for config in args.configs:
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                ["valgrind", "--tool=callgrind", "--collect-atstart=no",
                 "--toggle-collect=starmap_next", f"--callgrind-out-file={tmp}/cg.out",
                 sys.executable, __file__, "--child", config, str(args.ops), str(args.seed)],
                capture_output=True, text=True, check=True,
                # valgrind runs the interpreter outside the venv: the child gets our path
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "PYTHONHASHSEED": "0"},
            )  # fmt: skip
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            raise SystemExit(f"no instruction count from valgrind:\n{proc.stderr[-2000:]}")
        sha, race, n = proc.stdout.split()
        print(f"{Path(config).name}: {int(m.group(1)) / int(n):,.0f} instructions per operation "
              f"(seed {args.seed}, {n} operations, race-exposed {race}, "
              f"history sha256 {sha[:16]})", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
