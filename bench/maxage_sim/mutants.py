"""Every mutant under `maxage sim`, for consecutive seeds on several configs: the wall and CPU
time until the first violation (docs/consistency.md records a run).

    .venv/bin/python bench/maxage_sim/mutants.py [--seeds 20] [--epochs 150] bench/maxage_sim/*.toml

Each (mutant, config, seed) runs `maxage sim`'s driver with the default options and stops at
the first failing epoch; a run that finds nothing within --epochs epochs (150 000 operations)
is a miss. The time to the violation is printed as wall and CPU seconds: on a loaded
machine the wall time is several times the CPU time.
"""

from __future__ import annotations

import argparse
import logging
import time

from maxage.contracts import load_config
from maxage.faults.mutants import SIM_MUTANTS
from maxage.sim.driver import SimConfig, run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="+")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--mutants", default=",".join(SIM_MUTANTS))
    args = p.parse_args()
    logging.getLogger("maxage").setLevel(logging.CRITICAL)
    print("mutant               config                 caught  worst wall  worst cpu  mean cpu")
    for mutant in args.mutants.split(","):
        for config in args.configs:
            cfg = SimConfig(load_config(config).collections, mutant=mutant)
            walls, cpus, caught = [], [], 0
            for seed in range(args.seeds):
                w0, c0 = time.perf_counter(), time.process_time()
                totals, _, _, _ = run(cfg, seed, ops=args.epochs * cfg.epoch_ops, duration=None)
                walls.append(time.perf_counter() - w0)
                cpus.append(time.process_time() - c0)
                caught += bool(totals.violations)
            print(f"{mutant:20s} {config.rsplit('/', 1)[-1]:22s} {caught:3d}/{args.seeds}  "
                  f"{max(walls):9.2f}s  {max(cpus):8.2f}s  {sum(cpus) / len(cpus):7.2f}s",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
