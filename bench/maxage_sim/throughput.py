"""`maxage sim` throughput: race-exposed operations per CPU-minute (docs/benchmarks.md).

    .venv/bin/python bench/maxage_sim/throughput.py [--ops 20000] [--rounds 5] [CONFIG...]

Each round runs the simulator's driver (the real service on K=3 nodes, every fault on,
the history hashed and checked by the checker's checks, as `maxage sim` does) for --ops
client operations and divides the race-exposed reads (counted as `maxage check` counts
them) by the process's CPU time. The same rounds without faults are the reference in the
same invocation: the ratio says what the faults cost, whatever the machine's load.
Rounds alternate between the two, so a change in load hits both alike.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path

from maxage.contracts import load_config
from maxage.sim.driver import SimConfig, run

HERE = Path(__file__).parent


def rate(cfg: SimConfig, seed: int, ops: int) -> tuple[float, float, float]:
    """Race-exposed operations per CPU-minute, their share of the operations, and the
    CPU microseconds per operation (the rate is 60e6 * share / that)."""
    c0 = time.process_time()
    totals, _, _, _ = run(cfg, seed, ops=ops, duration=None)
    cpu = time.process_time() - c0
    assert not totals.violations, totals.violations[0][1].message
    share = totals.race_exposed / totals.operations
    return totals.race_exposed / cpu * 60, share, cpu / totals.operations * 1e6


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("configs", nargs="*", default=[str(HERE / "a-1s-500ms.toml")])
    p.add_argument("--ops", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    logging.getLogger("maxage").setLevel(logging.CRITICAL)
    for config in args.configs:
        specs = load_config(config).collections
        faulty = SimConfig(specs)
        calm = SimConfig(specs, faults=frozenset())
        with_faults, without, shares, costs = [], [], [], []
        for r in range(args.rounds):
            per_minute, share, us = rate(faulty, r, args.ops)
            with_faults.append(per_minute)
            shares.append(share)
            costs.append(us)
            without.append(rate(calm, r, args.ops)[0])
        name = Path(config).name
        print(f"{name}: race-exposed operations per CPU-minute, {args.rounds} rounds of "
              f"{args.ops} operations")  # fmt: skip
        print(f"  all faults  median {statistics.median(with_faults):>12,.0f}  "
              f"best {max(with_faults):>12,.0f}")  # fmt: skip
        print(f"  no faults   median {statistics.median(without):>12,.0f}  "
              f"best {max(without):>12,.0f}")  # fmt: skip
        print(f"  all faults  race-exposed share {statistics.median(shares):.3f}, "
              f"{statistics.median(costs):.1f} us of CPU per operation (medians)")  # fmt: skip
        print(f"  faults cost {1 - statistics.median(with_faults) / statistics.median(without):.0%}"
              " of the reference's rate")  # fmt: skip


if __name__ == "__main__":
    main()
