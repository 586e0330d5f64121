"""Runs a simulation in epochs, checks each with the checker's own checks, reports, shrinks.

A run is a sequence of independent **epochs**. Each epoch is a fresh deployment
(:class:`maxage.sim.world.World`) on a fresh :class:`SimLoop` seeded from
``(seed, epoch)``, with fresh document ids, running a workload of
``epoch_ops`` steps drawn from the same seed; then the faults heal, the bound
passes, every key is read on every node (P6), and the epoch's history is
checked by :func:`maxage.checker.checks.check` (P0-P6: the same checks as
``maxage check``). Epochs keep each check small (the per-key linearizability
search stays cheap) and make a failing epoch reproducible on its own: its
steps and its seed are all it needs, which is what shrinking relies on.

Determinism: with ``ops`` set, the same seed, config, nodes, clients, faults and
mutant give the same history, byte for byte (its sha256 is reported).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import msgspec

from maxage.checker.checks import PROPERTIES, TITLES, Result, Violation, check
from maxage.checker.history import Op
from maxage.checker.lists import LIST
from maxage.checker.revocation import AUTH_READ, RESCOPE, REVOKE
from maxage.checker.revocation import counts as revocation_counts
from maxage.contracts import CollectionSpec, load_config
from maxage.sim.faults import FAULTS, FaultPlan, parse_faults
from maxage.sim.loop import SimLoop
from maxage.sim.world import ClientState, Step, World

EPOCH_OPS = 1000
SIMULATED = PROPERTIES
KEYS = 2  # documents per collection per epoch: few, so reads race with writes
API_KEYS = 3  # API keys per epoch, used by every client and node, revoked or re-scoped
KEY_OPS = 0.05  # the share of API key operations (a use, a revoke, a scope change)
KEY_USES = 0.85  # ... of which uses; then scope changes up to KEY_CUTS, then revokes
KEY_CUTS = 0.93
READS = 0.9  # the share of reads among the other operations
LISTS = 0.1  # the share of list reads (first pages) among the reads, as in maxage check
CHASE = 0.5  # the share of reads that chase a write in flight (FoundationDB-style)
THINK = 0.03  # mean think time between a client's operations, in bounds
# A run's garbage collection: the thresholds a ``maxage serve`` worker sets (maxage.cli's
# WORKER_GC_THRESHOLDS), so the nodes run as a worker does; the default (700, 10, 10) ran
# a young collection every few operations (about 1 % of the instructions, more of the time)
GC_THRESHOLDS = (50_000, 20, 100)
_encoder = msgspec.json.Encoder()
_encode = _encoder.encode
_encode_lines = _encoder.encode_lines


@dataclass(frozen=True)
class SimConfig:
    """What a run (and a replay of one epoch) is a function of."""

    specs: Mapping[str, CollectionSpec]
    nodes: int = 3
    clients: int = 32
    faults: frozenset[str] = frozenset(FAULTS)
    mutant: str | None = None
    epoch_ops: int = EPOCH_OPS
    keys: int = KEYS

    @property
    def bound(self) -> float:
        """The time scale of faults and think times: the smallest positive bound."""
        positive = [s.max_staleness for s in self.specs.values() if s.max_staleness > 0]
        return min(positive, default=0.1)


@dataclass
class EpochOutcome:
    ops: list[Op]
    result: Result
    faults: dict[str, int]
    steps: list[Step]

    @property
    def violations(self) -> list[Violation]:
        return self.result.violations


def epoch_seed(seed: int, epoch: int, what: str) -> random.Random:
    return random.Random(f"maxage-sim:{seed}:{epoch}:{what}")


def workload(cfg: SimConfig, seed: int, epoch: int) -> list[Step]:
    """The epoch's steps, drawn from ``(seed, epoch)``."""
    random_ = epoch_seed(seed, epoch, "steps").random
    think_random = epoch_seed(seed, epoch, "think").random
    chase_random = epoch_seed(seed, epoch, "chase").random  # its own: the rest stays as it was
    log = math.log
    names = sorted(cfg.specs)
    modes = {n: _mode_table(cfg.specs[n]) for n in names}
    think = cfg.bound * THINK
    give_up = cfg.bound / 10 if "disconnect" in cfg.faults else 0.0
    clients, nodes, keys = cfg.clients, cfg.nodes, cfg.keys
    put = READS + (1 - READS) * 0.6
    create = READS + (1 - READS) * 0.8
    others = 1 - KEY_OPS
    steps = []
    for _ in range(cfg.epoch_ops):
        collection = names[int(random_() * len(names))]
        r = random_()
        mode = None
        if_match = chase = False
        if r >= others:  # an API key's use or change: P8
            r = (r - others) / KEY_OPS
            kind = AUTH_READ if r < KEY_USES else RESCOPE if r < KEY_CUTS else REVOKE
            steps.append(
                Step(
                    int(random_() * clients),
                    round(-log(1.0 - think_random()) * think, 6),
                    int(random_() * nodes),
                    kind,
                    collection,
                    int(random_() * API_KEYS),
                )
            )
            continue
        r /= others
        if r < READS:
            kind = LIST if random_() < LISTS else "read"
            table = modes[collection]  # weighted by MODE_WEIGHTS
            mode = table[int(random_() * len(table))]
            chase = kind == "read" and chase_random() < CHASE
        elif r < put:
            kind = "put"
            if_match = random_() < 0.3
        elif r < create:
            kind = "create"
        else:
            kind = "delete"
            if_match = random_() < 0.5
        quit_after = None
        if give_up and random_() < 0.03:
            quit_after = round(random_() * give_up, 6)
        steps.append(
            Step(
                int(random_() * clients),
                round(-log(1.0 - think_random()) * think, 6),  # exponential, mean think
                int(random_() * nodes),
                kind,
                collection,
                int(random_() * keys),
                mode,
                if_match,
                quit_after,
                chase,
            )
        )
    return steps


MODE_WEIGHTS = {"bounded": 6, "session": 3, "strong": 2}  # most reads of a cache are bounded


def _mode_table(spec: CollectionSpec) -> list[str]:
    allowed = sorted(m.value for m in spec.read_modes)
    return [m for m in allowed for _ in range(MODE_WEIGHTS[m])]


def bounds_of(cfg: SimConfig, plan: FaultPlan) -> dict[str, float]:
    """The bound each collection is checked against: ``S`` plus the stated clock skew."""
    return {n: s.max_staleness + plan.skew for n, s in cfg.specs.items()}


def run_epoch(cfg: SimConfig, seed: int, epoch: int, steps: Sequence[Step]) -> EpochOutcome:
    """One epoch on a fresh deployment and loop; its history, checked."""
    bound = cfg.bound
    loop = SimLoop(epoch_seed(seed, epoch, "loop").randrange(1 << 62), jitter=bound / 1000)
    plan = FaultPlan(cfg.faults, bound)
    try:
        asyncio.set_event_loop(loop)
        world = World(
            cfg.specs,
            loop=loop,
            nodes=cfg.nodes,
            plan=plan,
            mutant=cfg.mutant,
            key_prefix=f"e{epoch}",
        )
        per_client: list[list[Step]] = [[] for _ in range(cfg.clients)]
        for step in steps:
            per_client[step.client % cfg.clients].append(step)

        async def main() -> None:
            for node in world.nodes:
                await node.start()
            await world.make_keys(API_KEYS)
            nemesis = loop.create_task(world.nemesis())
            await asyncio.gather(
                *(world.client(ClientState(i), s) for i, s in enumerate(per_client) if s)
            )
            await world.heal()
            nemesis.cancel()
            await world.final_reads()
            world.shutdown()

        try:
            loop.run_until_complete(main())
        finally:
            _drain(loop)
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    ops = world.ops
    result = check(
        ops, bounds_of(cfg, plan), age_slack=2 * plan.skew + 1e-9, revocation_slack=plan.skew
    )
    return EpochOutcome(ops, result, plan.counts, list(steps))


def _drain(loop: SimLoop) -> None:
    """Cancel what is left (background fills, timers' tasks) and let it finish."""
    for _ in range(10):
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if not pending:
            return
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))


def replay(
    config: str | Path,
    *,
    seed: int,
    epoch: int,
    steps: Sequence[Step],
    nodes: int = 3,
    clients: int = 32,
    faults: str = "all",
    mutant: str | None = None,
) -> EpochOutcome:
    """Run the given steps as epoch ``epoch`` of seed ``seed`` (a shrunk reproduction)."""
    cfg = SimConfig(
        load_config(config).collections,
        nodes=nodes,
        clients=clients,
        faults=parse_faults(faults),
        mutant=mutant,
    )
    return run_epoch(cfg, seed, epoch, steps)


# -- shrinking -------------------------------------------------------------------------


@dataclass
class Shrunk:
    """A shrunk failing step list; ``minimal``: removing any one of its steps was tried
    and makes the epoch pass (1-minimal), proven before the time cap."""

    steps: list[Step]
    minimal: bool
    runs: int  # epochs run to find it


def shrink(
    cfg: SimConfig,
    seed: int,
    epoch: int,
    steps: Sequence[Step],
    prop: str,
    budget: float,
) -> Shrunk:
    """A short failing step list found within ``budget`` seconds: the shortest failing
    prefix (bisection), then delta debugging (ddmin) over what is left, then single
    removals until none of them fails any more (1-minimal: every remaining step is
    needed). An epoch is a function of its steps, so each candidate is run once."""
    deadline = time.monotonic() + budget
    tried: dict[tuple[Step, ...], bool] = {}

    def fails(candidate: Sequence[Step]) -> bool:
        key = tuple(candidate)
        if key not in tried:
            outcome = run_epoch(cfg, seed, epoch, candidate)
            tried[key] = any(v.prop == prop for v in outcome.violations)
        return tried[key]

    current = list(steps)
    lo, hi = 0, len(current)  # fails(current[:hi]) is known
    while lo + 1 < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        if fails(current[:mid]):
            hi = mid
        else:
            lo = mid
    current = current[:hi]
    n = 2
    while len(current) >= 2 and time.monotonic() < deadline:
        chunk = math.ceil(len(current) / n)
        subsets = [current[i : i + chunk] for i in range(0, len(current), chunk)]
        reduced = False
        for i in range(len(subsets)):
            if time.monotonic() >= deadline:
                break
            complement = [s for j, sub in enumerate(subsets) if j != i for s in sub]
            if fails(subsets[i]):
                current, n, reduced = subsets[i], 2, True
                break
            if len(subsets) > 2 and fails(complement):
                current, n, reduced = complement, max(n - 1, 2), True
                break
        if not reduced:
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
    # 1-minimal: a pass that removes nothing proves it (a removal can make another step
    # unneeded, so a pass that removed something is followed by another)
    while True:
        removed = False
        for i in reversed(range(len(current))):
            if time.monotonic() >= deadline:
                return Shrunk(current, False, len(tried))
            candidate = current[:i] + current[i + 1 :]
            if candidate and fails(candidate):
                current, removed = candidate, True
        if not removed:
            return Shrunk(current, True, len(tried))


def reproduction(
    config: str, cfg: SimConfig, faults_text: str, seed: int, epoch: int, steps: Sequence[Step],
    prop: str,
) -> str:  # fmt: skip
    """Python that replays the shrunk steps (paste it into a test)."""
    lines = [
        "from maxage.sim import Step, replay",
        "",
        f"outcome = replay({config!r}, seed={seed}, epoch={epoch}, nodes={cfg.nodes}, "
        f"clients={cfg.clients}, faults={faults_text!r}, mutant={cfg.mutant!r}, steps=[",
    ]
    lines += [f"    {step!r}," for step in steps]
    lines.append("])")
    lines.append(f"assert any(v.prop == {prop!r} for v in outcome.violations)")
    return "\n".join(lines)


# -- a whole run -----------------------------------------------------------------------


@dataclass
class Totals:
    operations: int = 0
    final_reads: int = 0
    race_exposed: int = 0
    epochs: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    violations: list[tuple[int, Violation]] = field(default_factory=list)
    unknowns: int = 0
    reads: dict[str, int] = field(default_factory=dict)
    within: dict[str, int] = field(default_factory=dict)
    stale: dict[str, int] = field(default_factory=dict)
    max_staleness: dict[str, float] = field(default_factory=dict)
    by_tier: dict[str, int] = field(default_factory=dict)
    lists_by_tier: dict[str, int] = field(default_factory=dict)  # list pages read (200)
    revocation: dict[str, int] = field(default_factory=dict)  # P8: revocation.counts, summed
    first_failure: EpochOutcome | None = None
    failed_epoch: int | None = None
    # For the HTML report: every read's staleness per mode, and the last epoch.
    staleness: dict[str, list[float]] = field(default_factory=dict)
    last: EpochOutcome | None = None

    def add(self, epoch: int, outcome: EpochOutcome) -> None:
        self.epochs += 1
        res = outcome.result
        self.race_exposed += res.race_exposed
        self.unknowns += len(res.unknowns)
        for op in outcome.ops:
            if op.phase == "final":
                self.final_reads += 1
            else:
                self.operations += 1
            if op.status == 200 and op.kind in ("read", LIST):
                counts = self.by_tier if op.kind == "read" else self.lists_by_tier
                tier = op.tier or "-"
                counts[tier] = counts.get(tier, 0) + 1
        for name, n in outcome.faults.items():
            self.faults[name] = self.faults.get(name, 0) + n
        for name, n in revocation_counts(outcome.ops).items():
            self.revocation[name] = self.revocation.get(name, 0) + n
        # a read outside its promise is a violation of its mode's property
        broken = {"bounded": "P2", "strong": "P3", "session": "P4"}
        for mode, secs in res.staleness_seconds.items():
            bad = {id(o) for v in res.violations if v.prop == broken.get(mode) for o in v.ops[:1]}
            self.reads[mode] = self.reads.get(mode, 0) + len(secs)
            self.within[mode] = self.within.get(mode, 0) + len(secs) - len(bad)
            self.stale[mode] = self.stale.get(mode, 0) + sum(1 for s in secs if s > 0)
            if secs:
                self.max_staleness[mode] = max(self.max_staleness.get(mode, 0.0), max(secs))
        for mode, secs in res.staleness_seconds.items():
            self.staleness.setdefault(mode, []).extend(secs)
        self.last = outcome
        for v in res.violations:
            self.violations.append((epoch, v))
        if res.violations and self.first_failure is None:
            self.first_failure = outcome
            self.failed_epoch = epoch


def op_line(op: Op) -> bytes:
    """The history's JSONL line of ``op``: every field of :class:`Op`, as
    :func:`maxage.checker.history.iter_ops` reads it (encoded in C, all fields)."""
    return _encode(op) + b"\n"


def history_lines(ops: Sequence[Op]) -> bytes:
    """:func:`op_line` of every op, joined (one C call for an epoch's history: the same
    bytes, so the same sha256)."""
    return _encode_lines(ops)


def run(
    cfg: SimConfig,
    seed: int,
    *,
    ops: int | None,
    duration: float | None,
    history: IO[bytes] | None = None,
    keep_going: bool = False,
    progress: Callable[[Totals], None] | None = None,
) -> tuple[Totals, str, float, float]:
    """Epochs until ``ops`` steps ran (or ``duration`` wall seconds passed); returns the
    totals, the history's sha256, wall and CPU seconds. The garbage collector runs with
    the thresholds of a ``maxage serve`` worker meanwhile (:data:`GC_THRESHOLDS`)."""
    digest = hashlib.sha256()
    t0, c0 = time.perf_counter(), time.process_time()
    totals = Totals()
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        for epoch, steps in _epochs(cfg, seed, ops):
            outcome = run_epoch(cfg, seed, epoch, steps)
            totals.add(epoch, outcome)
            lines = history_lines(outcome.ops)
            digest.update(lines)
            if history is not None:
                history.write(lines)
            if progress is not None:
                progress(totals)
            if totals.violations and not keep_going:
                break
            if duration is not None and time.perf_counter() - t0 >= duration:
                break
    finally:
        gc.set_threshold(*thresholds)
    return totals, digest.hexdigest(), time.perf_counter() - t0, time.process_time() - c0


def _epochs(cfg: SimConfig, seed: int, ops: int | None) -> Iterator[tuple[int, list[Step]]]:
    epoch = 0
    left = ops
    while left is None or left > 0:
        steps = workload(cfg, seed, epoch)
        if left is not None:
            steps = steps[:left]
            left -= len(steps)
        yield epoch, steps
        epoch += 1


def report(
    cfg: SimConfig,
    totals: Totals,
    *,
    seed: int,
    config: str,
    faults_text: str,
    sha: str,
    wall: float,
    cpu: float,
) -> dict[str, Any]:
    by_prop: dict[str, list[Violation]] = {p: [] for p in SIMULATED}
    for _, v in totals.violations:
        by_prop.setdefault(v.prop, []).append(v)
    plan = FaultPlan(cfg.faults, cfg.bound)
    nines = {}
    for mode, n in sorted(totals.reads.items()):
        within = totals.within.get(mode, 0)
        frac = within / n if n else math.nan
        nines[mode] = {
            "reads": n,
            "within_bound": within,
            "fraction": frac,
            # all within: n reads show at least log10(n) nines
            "nines": (math.log10(n) if within == n else -math.log10(1 - frac)) if n else math.nan,
            "nines_at_least": within == n,
            "stale_reads": totals.stale.get(mode, 0),
            "max_staleness_s": totals.max_staleness.get(mode, 0.0),
        }
    per_cpu_minute = totals.race_exposed / cpu * 60 if cpu > 0 else math.nan
    return {
        "seed": seed,
        "config": config,
        "nodes": cfg.nodes,
        "clients": cfg.clients,
        "mutant": cfg.mutant,
        "faults_requested": faults_text,
        "collections": {
            n: {"max_staleness_s": s.max_staleness} for n, s in sorted(cfg.specs.items())
        },
        "skew_bound_s": plan.skew,
        "epochs": totals.epochs,
        "operations": totals.operations,
        "final_reads": totals.final_reads,
        "race_exposed": totals.race_exposed,
        "reads_by_tier": dict(sorted(totals.by_tier.items())),
        "list_reads_by_tier": dict(sorted(totals.lists_by_tier.items())),
        "faults": dict(sorted(totals.faults.items())),
        "revocation": totals.revocation,
        "violation_count": len(totals.violations),
        "violations": {
            p: {
                "title": TITLES.get(p, p),
                "count": len(vs),
                "first": [v.to_json() for v in vs[:3]],
            }
            for p, vs in by_prop.items()
        },
        "unknown_count": totals.unknowns,
        "staleness": nines,
        "history_sha256": sha,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "race_exposed_per_cpu_minute": round(per_cpu_minute),
        "verdict": "violation" if totals.violations else "ok",
    }


def render(rep: dict[str, Any]) -> str:
    def kv(d: Mapping[str, Any]) -> str:
        return " ".join(f"{k}={v}" for k, v in d.items() if v) or "-"

    lines = [
        f"maxage sim: {rep['config']}  seed {rep['seed']}  {rep['nodes']} nodes, "
        f"{rep['clients']} clients" + (f"  MUTANT {rep['mutant']}" if rep["mutant"] else ""),
        f"operations      {rep['operations']} in {rep['epochs']} epochs "
        f"(+{rep['final_reads']} reads after healing)",
        f"race-exposed    {rep['race_exposed']} reads "
        f"({rep['race_exposed_per_cpu_minute']:,} per CPU-minute)",
        f"reads by tier   {kv(rep['reads_by_tier'])}",
        f"lists by tier   {kv(rep['list_reads_by_tier'])}",
        f"faults          {kv(rep['faults'])}",
        f"API keys        {kv(rep['revocation'])}",
        f"clock skew      within ±{rep['skew_bound_s'] * 1000:.1f} ms (checked against S + that)",
    ]
    for mode, st in rep["staleness"].items():
        lines.append(
            f"  {mode:8s} n={st['reads']:<8d} within S {st['within_bound']}  "
            f"stale {st['stale_reads']}  max {st['max_staleness_s']:.3f}s"
        )
    lines.append("properties:")
    for p, v in rep["violations"].items():
        mark = "ok" if v["count"] == 0 else f"VIOLATED x{v['count']}"
        lines.append(f"  {p} {v['title']:26s} {mark}")
        for first in v["first"][:1]:
            lines.append(f"      - {first['message']}")
    lines.append(f"history sha256  {rep['history_sha256']}")
    lines.append(f"wall {rep['wall_s']:.2f}s  cpu {rep['cpu_s']:.2f}s")
    lines.append(f"verdict: {rep['verdict'].upper()}")
    return "\n".join(lines)
