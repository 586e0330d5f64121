"""maxage sim: deterministic, checked by the checker's own checks, and it finds every mutant.

The mutant test runs every mutant for 20 consecutive seeds, each seed on one of several
configs (bounds from 100 ms to 10 s, both write policies, with and without session or
strong reads, TTL shorter and longer than the bound), none of them tuned to a mutant.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import pytest

from maxage.checker import revocation
from maxage.checker.checks import check
from maxage.checker.history import load
from maxage.cli import main as maxage_main
from maxage.contracts import load_config
from maxage.faults.mutants import SIM_MUTANTS
from maxage.sim import SimConfig, Step, replay, run, run_epoch, shrink, workload
from maxage.sim.driver import bounds_of
from maxage.sim.faults import FaultPlan

CONFIGS = {
    "a": """
[collections.around]
max_staleness = "1s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-around"
ttl = "60s"
[collections.through]
max_staleness = "500ms"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "60s"
""",
    "b": """
[collections.fast]
max_staleness = "100ms"
read_modes = ["bounded", "strong"]
write_policy = "write-through"
ttl = "10s"
""",
    "c": """
[collections.slow]
max_staleness = "10s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-around"
ttl = "5m"
[collections.stock]
max_staleness = "0s"
read_modes = ["strong"]
write_policy = "write-around"
""",
    "d": """
[collections.guarded]
max_staleness = "250ms"
read_modes = ["bounded", "session"]
write_policy = "write-around"
require_if_match = true
[collections.other]
max_staleness = "3s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "2s"
""",
    "e": """
[collections.orders]
max_staleness = "150ms"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "30s"
[collections.catalog]
max_staleness = "7s"
read_modes = ["bounded", "session"]
write_policy = "write-around"
ttl = "1m"
""",
}


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("sim-configs")
    out = {}
    for name, text in CONFIGS.items():
        path = d / f"{name}.toml"
        collections = re.findall(r"^\[collections\.(\w+)\]$", text, re.M)
        schemas = "".join(f'[collections.{c}.schema]\ntype = "object"\n' for c in collections)
        path.write_text(text + schemas)
        out[name] = path
    return out


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("maxage")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    yield
    logger.setLevel(level)


def sim_config(path: Path, **kw: object) -> SimConfig:
    return SimConfig(load_config(path).collections, **kw)  # type: ignore[arg-type]


def test_same_seed_same_history_byte_for_byte(configs: dict[str, Path], tmp_path: Path) -> None:
    cfg = sim_config(configs["a"])
    first = tmp_path / "first.jsonl"
    with first.open("wb") as fh:
        totals, sha, _, _ = run(cfg, 11, ops=2500, duration=None, history=fh)
    again = tmp_path / "again.jsonl"
    with again.open("wb") as fh:
        _, sha_again, _, _ = run(cfg, 11, ops=2500, duration=None, history=fh)
    assert sha == sha_again and first.read_bytes() == again.read_bytes()
    assert totals.operations == 2500 and totals.race_exposed > 1000
    _, other, _, _ = run(cfg, 12, ops=2500, duration=None)
    assert other != sha
    # the history is maxage check's format, and maxage check's checks agree with the run
    ops = load(first)
    assert len(ops) == totals.operations + totals.final_reads
    assert not totals.violations
    pages = [o for o in ops if o.kind == "list" and o.page is not None]
    assert pages and all(o.version is not None for o in pages)  # the page fields came back


def test_list_pages_are_read_in_every_mode_and_checked(configs: dict[str, Path]) -> None:
    """A tenth of the reads are first pages through the service's listing, recorded as
    maxage check records them; a page that omits a change older than the bound is a P2
    violation of the reads it implies (the list cache without its generation bump)."""
    cfg = sim_config(configs["a"])
    outcome = run_epoch(cfg, 4, 0, workload(cfg, 4, 0))
    pages = [o for o in outcome.ops if o.kind == "list" and o.status == 200]
    assert {o.mode for o in pages} == {"bounded", "strong", "session"}
    assert any(o.min_version for o in pages if o.mode == "session")
    assert {o.tier for o in pages} >= {"l1", "primary"}  # cached pages were served
    assert sum(len(o.page or {}) for o in pages) > len(pages)
    assert not outcome.violations
    broken = sim_config(configs["a"], mutant="no-list-invalidation")
    caught = run_epoch(broken, 4, 0, workload(broken, 4, 0)).violations
    assert caught and caught[0].prop == "P2" and caught[0].ops[0].detail == "in a list page"


def test_history_is_the_same_in_another_process_with_another_hash_seed(
    configs: dict[str, Path],
) -> None:
    """Nothing depends on the process: string hashing, addresses, the wall clock."""
    shas = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        done = subprocess.run(
            [sys.executable, "-m", "maxage", "sim", "--config", str(configs["d"]),
             "--seed", "5", "--ops", "1500", "--quiet"],
            capture_output=True, text=True, env=env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        shas += [line.split()[-1] for line in done.stdout.splitlines() if "sha256" in line]
    assert len(shas) == 2 and shas[0] == shas[1]


def test_real_code_keeps_the_contract_on_every_config(configs: dict[str, Path]) -> None:
    for i, path in enumerate(configs.values()):
        totals, _, _, _ = run(sim_config(path), 100 + i, ops=3000, duration=None)
        assert not totals.violations, [v.message for _, v in totals.violations[:3]]
        assert totals.race_exposed > 1000
        assert sum(totals.faults.values()) > 500  # the faults did happen


def test_the_checker_flags_what_the_simulation_records(configs: dict[str, Path]) -> None:
    """The sim's verdict is the checker's: a mutant's history fails check() itself."""
    cfg = sim_config(configs["a"], mutant="no-tombstone")
    outcome = run_epoch(cfg, 3, 0, workload(cfg, 3, 0))
    assert outcome.violations
    again = check(outcome.ops, bounds_of(cfg, FaultPlan(cfg.faults, cfg.bound)), age_slack=0.04)
    assert {v.prop for v in again.violations} & {"P2", "P6"}


def test_api_keys_are_used_revoked_and_rescoped_through_the_real_access_code(
    configs: dict[str, Path],
) -> None:
    """P8 is simulated: keys are accepted, then refused on every node once their revoke
    (401) or the scope change that took their read away (403) was acknowledged; a key
    cache that invalidations do not reach accepts a revoked key (P8, the checker's own
    check), and nothing else is flagged."""
    cfg = sim_config(configs["a"])
    kinds: Counter[tuple[str, int | None]] = Counter()
    for epoch in range(3):
        outcome = run_epoch(cfg, 8, epoch, workload(cfg, 8, epoch))
        assert not outcome.violations, [v.message for v in outcome.violations]
        kinds.update((o.kind, o.status) for o in outcome.ops if o.kind in revocation.KINDS)
    assert kinds[("auth-read", 200)] > 50 and kinds[("auth-read", 403)] > 0
    assert kinds[("revoke", 204)] > 0 and kinds[("rescope", 200)] > 0
    assert kinds[("auth-read", 401)] > 0
    broken = sim_config(configs["a"], mutant="key-cache-no-invalidation")
    totals, _, _, _ = run(broken, 8, ops=10_000, duration=None)
    caught = [v for _, v in totals.violations]
    assert caught and {v.prop for v in caught} == {"P8"}
    assert caught[0].ops[0].kind in ("revoke", "rescope") and caught[0].ops[1].status == 200


@pytest.mark.parametrize("mutant", SIM_MUTANTS)
def test_every_mutant_is_caught_for_20_seeds(mutant: str, configs: dict[str, Path]) -> None:
    names = sorted(configs)
    missed = []
    for seed in range(20):
        name = names[seed % len(names)]
        cfg = sim_config(configs[name], mutant=mutant)
        # a budget of epochs, not of time: the same on a loaded machine (about 10 s of
        # CPU at the worst: see docs/consistency.md for the measured times)
        totals, _, _, _ = run(cfg, seed, ops=150 * cfg.epoch_ops, duration=None)
        if not totals.violations:
            missed.append((seed, name))
    assert not missed, f"{mutant} not caught for (seed, config) {missed}"


def test_a_failure_shrinks_to_a_one_minimal_reproduction_that_still_fails(
    configs: dict[str, Path],
) -> None:
    """The shrunk steps fail; without any single one of them the epoch passes."""
    cfg = sim_config(configs["b"], mutant="no-version-guard")
    totals, _, _, _ = run(cfg, 3, ops=20_000, duration=None)
    failure, epoch = totals.first_failure, totals.failed_epoch
    assert failure is not None and epoch is not None
    prop = failure.violations[0].prop
    shrunk = shrink(cfg, 3, epoch, failure.steps, prop, budget=60.0)
    steps = shrunk.steps
    assert shrunk.minimal and 0 < len(steps) < len(failure.steps) / 5
    for i in range(len(steps)):
        without = run_epoch(cfg, 3, epoch, steps[:i] + steps[i + 1 :])
        assert not any(v.prop == prop for v in without.violations), (i, steps[i])
    # what the reproduction says, replayed from the config file
    outcome = replay(configs["b"], seed=3, epoch=epoch, steps=steps, mutant="no-version-guard")
    assert any(v.prop == prop for v in outcome.violations)
    real = replay(configs["b"], seed=3, epoch=epoch, steps=steps)
    assert not real.violations
    assert all(isinstance(s, Step) for s in steps)


def test_a_client_sends_its_next_request_after_it_heard_the_last(
    configs: dict[str, Path],
) -> None:
    """A write sent with no think time after an instant read starts after that read's
    response: with both at one invoke time, P4 took the write for the earlier op."""
    steps = [
        Step(17, 0.009316, 0, "read", "other", 1, "strong"),
        Step(0, 0.002668, 1, "create", "other", 1),
        Step(17, 0.001011, 2, "read", "other", 1, "session"),
        Step(17, 0.0, 1, "put", "other", 1),
    ]
    outcome = replay(configs["d"], seed=2026, epoch=142, steps=steps)
    assert not outcome.violations, [v.message for v in outcome.violations]
    ops = [o for o in outcome.ops if o.client == 17]
    assert all(a.ret <= b.invoke for a, b in pairwise(ops))


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maxage", "sim", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_cli_exit_status_report_and_reproduction(configs: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    history = tmp_path / "h.jsonl"
    ok = _sim("--config", str(configs["a"]), "--seed", "1", "--ops", "2000", "--json",
              str(report), "--history", str(history), "--quiet")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    rep = json.loads(report.read_text())
    for field in ("seed", "operations", "race_exposed", "violation_count", "history_sha256",
                  "wall_s", "faults"):  # fmt: skip
        assert field in rep
    assert rep["operations"] == 2000 and rep["violation_count"] == 0
    assert rep["faults"]["crash"] >= 0 and sum(rep["faults"].values()) > 0
    assert rep["history_sha256"] in ok.stdout
    assert len(load(history)) == rep["operations"] + rep["final_reads"]

    # a failing run (exit 1, the seed, a reproduction): tests/sim/test_html_report.py

    # usage errors exit 2, in this process (a process each would cost a second apiece)
    for usage in (["--faults", "bogus"], ["--ops", "0"], ["--nodes", "0"],
                  ["--config", str(tmp_path / "missing.toml")], ["--mutant", "nope"]):  # fmt: skip
        args = usage if "--config" in usage else ["--config", str(configs["a"]), *usage]
        status: int | str | None
        try:
            status = maxage_main(["sim", *args])
        except SystemExit as exc:  # argparse's own refusals
            status = exc.code
        assert status == 2, usage


def test_chasing_reads_land_in_the_race_windows_of_strong_only_reads(
    configs: dict[str, Path],
) -> None:
    """A read that chases is sent to the document of a write in flight on its collection:
    the same steps with chasing turned off send fewer reads of the strong-only collection
    while a write of their document is in flight (the only way such a read is
    race-exposed, as check() counts it)."""
    cfg = sim_config(configs["c"])
    overlapping = {True: 0, False: 0}
    for epoch in range(4):
        steps = workload(cfg, 5, epoch)
        assert sum(s.chase for s in steps) > 100
        for chase in (True, False):
            run_steps = steps if chase else [s._replace(chase=False) for s in steps]
            ops = [o for o in run_epoch(cfg, 5, epoch, run_steps).ops if o.collection == "stock"]
            writes = [o for o in ops if o.kind in ("put", "create", "delete")]
            overlapping[chase] += sum(
                any(w.key == r.key and w.invoke < r.ret and r.invoke < w.ret for w in writes)
                for r in ops
                if r.kind == "read" and r.phase != "final"
            )
    assert overlapping[True] > overlapping[False] * 1.02, overlapping
