"""``maxage sim``: the contract checked at millions of operations, deterministically.

Exit status as ``maxage check``: 0 no violation, 1 a violation, 2 usage error.
A failing run prints the seed and a shrunk reproduction (Python to paste into a
test: :func:`maxage.sim.replay` of the shortest failing step list found).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from maxage.checker.checks import Result
from maxage.checker.html_report import render_html
from maxage.contracts import ConfigError, load_config
from maxage.faults.mutants import SIM_MUTANTS
from maxage.progress import Progress
from maxage.sim.driver import SimConfig, Totals, render, report, reproduction, run, shrink
from maxage.sim.faults import FAULTS, parse_faults
from maxage.units import DURATION_HELP, positive_duration_arg


class SimUsageError(Exception):
    """A usage problem: exit 2."""


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", metavar="FILE", default=None, help="the config (TOML) to simulate "
        "(default: the bundled example)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: random)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--ops",
        type=int,
        default=None,
        help="exactly this many client operations: the history is then the same, byte for "
        "byte, for the same seed and options (default: 100000 unless --duration)",
    )
    budget.add_argument(
        "--duration",
        type=positive_duration_arg,
        default=None,
        metavar="DURATION",
        help=f"a wall-clock budget instead (not reproducible byte for byte); {DURATION_HELP}",
    )
    p.add_argument("--nodes", type=int, default=3, help="server nodes (default: 3)")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default: 32)")
    p.add_argument(
        "--faults",
        default="all",
        help=f"comma-separated faults, 'all' (default) or 'none': {', '.join(FAULTS)}",
    )
    p.add_argument(
        "--mutant",
        default=None,
        choices=SIM_MUTANTS,
        help="TEST ONLY: run a known-broken variant of one guard (the run should fail)",
    )
    p.add_argument("--json", metavar="REPORT_FILE", help="write the report as JSON")
    p.add_argument("--history", metavar="FILE", help="write the history (JSONL, as maxage check)")
    p.add_argument(
        "--html",
        metavar="FILE",
        help="write the report as one self-contained HTML page with charts (as maxage check)",
    )
    p.add_argument(
        "--keep-going", action="store_true", help="do not stop at the first failing epoch"
    )
    p.add_argument(
        "--shrink-budget",
        type=positive_duration_arg,
        default=60.0,
        metavar="DURATION",
        help="wall time allowed for shrinking a failure (default: 60s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """The real code logs every injected failure; a simulation injects thousands."""
    logger = logging.getLogger("maxage")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def run_command(args: argparse.Namespace, *, default_config: str) -> int:
    try:
        return _run(args, args.config or default_config)
    except SimUsageError as exc:
        print(f"maxage sim: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, config: str) -> int:
    try:
        specs = load_config(config).collections
    except ConfigError as exc:
        raise SimUsageError(str(exc)) from None
    if args.nodes < 1 or args.clients < 1:
        raise SimUsageError("--nodes and --clients must be >= 1")
    if args.ops is not None and args.ops < 1:
        raise SimUsageError("--ops must be >= 1")
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        raise SimUsageError(f"--faults: {exc}") from None
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    ops = args.ops if args.ops is not None or args.duration is not None else 100_000
    cfg = SimConfig(
        specs, nodes=args.nodes, clients=args.clients, faults=faults, mutant=args.mutant
    )
    history: IO[bytes] | None = None
    if args.history:
        try:
            history = open(args.history, "wb")  # noqa: SIM115
        except OSError as exc:
            raise SimUsageError(f"--history: {exc}") from None
    meter = Progress(
        "maxage sim",
        total=ops,
        budget=args.duration if ops is None else None,
        enabled=False if args.quiet else None,
    )

    def progress(t: Totals) -> None:
        meter.update(
            t.operations,
            f"epoch {t.epochs}, {t.race_exposed:,} race-exposed, {len(t.violations)} violations",
        )

    with _quiet_logs():
        try:
            totals, sha, wall, cpu = run(
                cfg,
                seed,
                ops=ops,
                duration=args.duration,
                history=history,
                keep_going=args.keep_going,
                progress=progress,
            )
        finally:
            meter.close()
            if history is not None:
                history.close()
        rep = report(
            cfg, totals, seed=seed, config=config, faults_text=args.faults, sha=sha, wall=wall,
            cpu=cpu,
        )  # fmt: skip
        print(render(rep))
        repro = None
        if totals.first_failure is not None and totals.failed_epoch is not None:
            first = totals.first_failure
            prop = first.violations[0].prop
            shrunk = shrink(cfg, seed, totals.failed_epoch, first.steps, prop, args.shrink_budget)
            steps = shrunk.steps
            repro = reproduction(config, cfg, args.faults, seed, totals.failed_epoch, steps, prop)
            minimal = (
                "1-minimal: without any one of them it passes"
                if shrunk.minimal
                else "not proven minimal within --shrink-budget"
            )
            print(
                f"\nmaxage sim: {prop} violated (seed {seed}, epoch {totals.failed_epoch}); "
                f"shrunk from {len(first.steps)} to {len(steps)} steps ({minimal}; "
                f"{shrunk.runs} replays). Reproduce it in a test:\n"
            )
            print(repro)
            rep["reproduction"] = {
                "epoch": totals.failed_epoch,
                "property": prop,
                "steps": len(steps),
                "one_minimal": shrunk.minimal,
                "replays": shrunk.runs,
                "python": repro,
            }
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(rep), indent=2) + "\n")
    if args.html:
        Path(args.html).write_text(_html(rep, cfg, totals), encoding="utf-8")
        print(f"report: {args.html}", file=sys.stderr)
    return 1 if totals.violations else 0


def _html(rep: dict[str, Any], cfg: SimConfig, totals: Totals) -> str:
    """The checker's HTML report for the whole run; the timeline is one epoch's history
    (the first failing one, else the last)."""
    shown = totals.first_failure or totals.last
    epoch = totals.failed_epoch if totals.first_failure is not None else totals.epochs - 1
    res = Result(violations=[v for _, v in totals.violations], staleness_seconds=totals.staleness)
    bounds = {n: s.max_staleness for n, s in cfg.specs.items()}
    note = f"epoch {epoch} of {totals.epochs} (simulated seconds)" if shown else ""
    return render_html(
        rep, shown.ops if shown else [], res, bounds, title="maxage sim", timeline_note=note
    )


def _finite(value: object) -> object:
    """JSON has no Infinity or NaN: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
