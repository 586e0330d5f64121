"""``maxage sim``: the real service, K nodes, one simulated primary and shared tier, on a
seeded event loop with virtual time (see docs/consistency.md, "Deterministic simulation").

* :mod:`.loop` — the seeded, virtual-time event loop
* :mod:`.faults` — the faults, drawn from the seed
* :mod:`.world` — the nodes (real code), the simulated network, the clients
* :mod:`.driver` — epochs, checks (the checker's own), report, shrinking
"""

from maxage.sim.driver import (
    EpochOutcome,
    Shrunk,
    SimConfig,
    replay,
    run,
    run_epoch,
    shrink,
    workload,
)
from maxage.sim.world import Step

__all__ = [
    "EpochOutcome",
    "Shrunk",
    "SimConfig",
    "Step",
    "replay",
    "run",
    "run_epoch",
    "shrink",
    "workload",
]
