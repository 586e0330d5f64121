"""Every SQLite-applicable mutant is caught within 20 s of workload, on configs that were
not tuned for it, with the default faults; the real code is not flagged on the same configs.

A user's run: ``maxage serve --fault-injection [--mutant M] --config CONFIG`` and
``maxage check --target URL --duration 20`` with nothing else (the checker reads the
bounds from ``/openapi.json`` and stops at the first violation). The configs are not the
checker's generated one: two collections with bounds 250 ms (write-around) and 5 s
(write-through), TTL 60 s; and one collection with a 1 s bound and the default write
policy. The runs are independent: they go two at a time (the machine has two CPUs).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.artefacts import artefacts
from tests.support.launcher import ServerProcess, python_m

BUDGET = 20.0  # seconds of workload within which every mutant must be caught
REAL_DURATION = 10.0
PARALLEL = 2

TWO_BOUNDS = """
[collections.fast]
max_staleness = "250ms"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-around"
ttl = "60s"
[collections.fast.schema]
type = "object"
required = ["title"]
[collections.fast.schema.properties.title]
type = "string"
maxLength = 200

[collections.slow]
max_staleness = "5s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "60s"
[collections.slow.schema]
type = "object"
required = ["name"]
[collections.slow.schema.properties.name]
type = "string"
maxLength = 100
[collections.slow.schema.properties.n]
type = "integer"
"""

ONE_SECOND = """
[collections.items]
max_staleness = "1s"
read_modes = ["bounded", "strong", "session"]
ttl = "60s"
[collections.items.schema]
type = "object"
required = ["label"]
[collections.items.schema.properties.label]
type = "string"
maxLength = 80
"""

CONFIGS = {"two-bounds": TWO_BOUNDS, "one-second": ONE_SECOND}
FEED_MUTANTS = ["feed-replay", "feed-skip"]  # P7: caught by the checker's feed reader
# the guards' mutants; the models of real cache bugs are in test_live_mutants.py
CACHE_MUTANTS = ["no-version-guard", "no-tombstone", "no-watermark", "error-path-drop"]


@dataclass
class Run:
    rc: int
    report: dict[str, Any]
    output: str

    def explain(self) -> str:
        return f"rc={self.rc}\n{self.output[-4000:]}"


def run_check(
    workdir: Path,
    config: str,
    mutant: str | None,
    *,
    duration: float,
    seed: int,
    extra: tuple[str, ...] = (),
) -> Run:
    """Serve ``config`` (with ``mutant``) and run ``maxage check --target`` against it."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "config.toml"
    cfg.write_text(config)
    args = ["serve", "--fault-injection", "--port", "0", "--config", str(cfg),
            "--db", f"sqlite:///{workdir}/db.sqlite", "--access-log", "off"]  # fmt: skip
    if mutant:
        args += ["--mutant", mutant]
    server = ServerProcess(python_m(*args), workdir=workdir).start()
    try:
        server.wait_listening(30.0)
        report = workdir / "report.json"
        cmd = python_m("check", "--target", server.url, "--duration", str(duration),
                       "--seed", str(seed), "--quiet", "--json", str(report), *extra)  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
        rep = json.loads(report.read_text()) if report.exists() else {}
        return Run(proc.returncode, rep, proc.stdout + proc.stderr)
    finally:
        server.stop(signal.SIGTERM, timeout=10, group=True)
        server.kill()


CASES: list[tuple[str, str | None]] = [
    *((config, mutant) for config in CONFIGS for mutant in [*CACHE_MUTANTS, None]),
    *(("one-second", mutant) for mutant in FEED_MUTANTS),
]


@pytest.fixture(scope="module")
def runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str | None], Run]:
    """Every selected case of this module, run two at a time."""
    wanted = sorted(
        {
            (item.callspec.params["config"], item.callspec.params.get("mutant"))
            for item in request.session.items
            if getattr(item, "module", None) is request.module
            and "config" in getattr(getattr(item, "callspec", None), "params", {})
        },
        key=str,
    )

    def one(case: tuple[str, str | None]) -> Run:
        config, mutant = case
        workdir = tmp_path_factory.mktemp(f"{config}-{mutant or 'real'}")
        duration = BUDGET if mutant else REAL_DURATION
        return run_check(
            workdir, CONFIGS[config], mutant, duration=duration, seed=CASES.index(case) + 1
        )

    with ThreadPoolExecutor(PARALLEL) as pool:
        return dict(zip(wanted, pool.map(one, wanted), strict=True))


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("mutant", CACHE_MUTANTS)
def test_mutant_is_caught_within_the_budget(
    runs: dict[tuple[str, str | None], Run], config: str, mutant: str
) -> None:
    run = runs[(config, mutant)]
    assert run.rc == 1, run.explain()
    assert run.report["violation_count"] >= 1
    caught = run.report["stopped_at_s"]
    assert caught is not None and caught < BUDGET, run.explain()
    assert run.report["targeted"]["rounds"] >= 1
    assert run.report["violations"]["P2"]["count"] >= 1, run.explain()


@pytest.mark.parametrize("config", ["one-second"])
@pytest.mark.parametrize("mutant", FEED_MUTANTS)
def test_feed_mutant_is_caught_as_p7(
    runs: dict[tuple[str, str | None], Run], config: str, mutant: str
) -> None:
    """A feed that replays or skips a change when a client resumes is a P7 violation: the
    checker drops its feed connections on purpose and resumes after its last cursor."""
    run = runs[(config, mutant)]
    assert run.rc == 1, run.explain()
    assert run.report["violations"]["P7"]["count"] >= 1, run.explain()
    caught = run.report["stopped_at_s"]
    assert caught is not None and caught < BUDGET, run.explain()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_real_code_passes_on_the_same_configs(
    runs: dict[tuple[str, str | None], Run], config: str
) -> None:
    run = runs[(config, None)]
    assert run.rc == 0, json.dumps(run.report.get("violations"), indent=1)[:4000] or run.explain()
    targeted = run.report["targeted"]
    assert targeted["rounds"] >= 1 and targeted["holds"] >= 1, targeted
    assert targeted["lost_deliveries"] >= 1 and targeted["stalled_writes"] >= 1, targeted
    assert run.report["race_exposed"] > 0
    feed = run.report["feed"]
    assert feed["changes"] > 0 and feed["connections"] > 10, feed


def test_seq_tailer_is_not_applicable_to_sqlite(tmp_path: Path) -> None:
    cmd = python_m("check", "--mutant", "seq-tailer", "--duration", "1", "--quiet")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 2, proc.stderr


def test_ci_check_all_faults(tmp_path: Path) -> None:
    """The CI run: every fault, all collections, the embedded default (about 20 s)."""
    report = tmp_path / "report.json"
    page = tmp_path / "report.html"
    history = tmp_path / "history.jsonl"
    cmd = [sys.executable, "-m", "maxage", "check", "--duration", "15", "--clients", "8", "--seed", "7",
           "--quiet", "--json", str(report), "--html", str(page), "--history", str(history)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    rep = json.loads(report.read_text())
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert rep["operations"] > 500
    assert sum(rep["faults"]["injected"].values()) > 0
    html = page.read_text()
    assert "Staleness of bounded reads" in html and 'class="band"' in html  # fault phases
    assert html.count("<svg") >= 2 and "verdict ok" in html
    shutil.copy(page, artefacts() / "check-report.html")
    assert len(history.read_text().splitlines()) >= rep["operations"]
