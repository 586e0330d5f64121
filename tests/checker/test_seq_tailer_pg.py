"""The ``seq-tailer`` mutant is caught end to end on PostgreSQL; the real tailer is not flagged.

``maxage serve --db postgresql://... --fault-injection [--mutant seq-tailer]`` runs on a
schema of its own (``MAXAGE_PG_SCHEMA``) with a generated config where the mechanism is
load-bearing: ``max_staleness`` 250 ms, ``ttl`` 120 s, a write-around and a write-through
collection. ``maxage check --target`` drives it under ``slow-commit`` (a write sleeps
between inserting its change row and COMMIT, so a later write commits first, out of
``seq`` order) and ``drop`` (the direct post-commit cache update is skipped, so the
tailer is the only invalidation path). The mutant's ``seq > last`` poll passes the
late-committing row and a stale entry outlives the bound (P2); the real tailer's xid
frontier holds the watermark back until the slow transaction ends, so nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from maxage.checker.cli import generated_config
from tests.support.launcher import ServerProcess, python_m
from tests.support.services import drop_postgres_schema, require_postgres, unique_name

FAULTS = "slow-commit,drop"
MUTANT_BUDGET = 20.0  # seconds of workload at most; the run stops at the first violation
REAL_DURATION = 10.0
# Many writers on few keys: commits overlap (and leave seq order) often, and the keys
# beyond the first few are read-mostly, so a skipped invalidation stays visible.
WORKLOAD = ("--clients", "12", "--keys", "6", "--fault-probability", "1.0", "--seed", "15")


@pytest.fixture
def dsn() -> str:
    return asyncio.run(require_postgres())


class _Server(ServerProcess):
    def __init__(self, tmp: Path, dsn: str, mutant: str | None) -> None:
        self.schema = unique_name("chk")
        self.dsn = dsn
        cfg = tmp / "check.toml"
        cfg.write_text(generated_config("250ms"))
        args = ["serve", "--db", dsn, "--fault-injection",
                "--port", "0", "--config", str(cfg), "--access-log", "off"]  # fmt: skip
        if mutant:
            args += ["--mutant", mutant]
        env = {"MAXAGE_PG_SCHEMA": self.schema, "MAXAGE_FAULTS_FILE": str(tmp / "faults.json")}
        super().__init__(python_m(*args), workdir=tmp, env=env, cwd=Path.cwd())
        self.start()
        try:
            self.wait_listening(timeout=30.0)
        except RuntimeError as exc:
            self.stop_and_drop()
            pytest.fail(f"the server did not start:\n{str(exc)[-4000:]}")

    def stop_and_drop(self) -> None:
        self.stop(signal.SIGTERM, timeout=10, group=True)
        self.kill()
        asyncio.run(drop_postgres_schema(self.dsn, self.schema))


@contextlib.contextmanager
def _server(tmp: Path, dsn: str, mutant: str | None) -> Iterator[_Server]:
    server = _Server(tmp, dsn, mutant)
    try:
        yield server
    finally:
        server.stop_and_drop()


def _check(tmp: Path, url: str, duration: float, *extra: str) -> tuple[int, dict[str, object]]:
    report = tmp / "report.json"
    cmd = [sys.executable, "-m", "maxage", "check", "--target", url, "--duration", str(duration),
           "--faults", FAULTS, *WORKLOAD, "--collections", "around,through", "--quiet",
           "--json", str(report), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    assert report.exists(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.returncode, json.loads(report.read_text())


def test_seq_tailer_mutant_is_caught_on_postgres(tmp_path: Path, dsn: str) -> None:
    with _server(tmp_path, dsn, "seq-tailer") as server:
        rc, rep = _check(tmp_path, server.url, MUTANT_BUDGET)
    assert rc == 1, rep
    assert rep["violation_count"], rep
    assert float(rep["duration_s"]) < MUTANT_BUDGET + 5  # type: ignore[arg-type]
    injected = rep["faults"]["injected"]  # type: ignore[index]
    assert injected["slow-commit"] > 0, injected


def test_real_tailer_passes_under_slow_commits(tmp_path: Path, dsn: str) -> None:
    with _server(tmp_path, dsn, None) as server:
        rc, rep = _check(tmp_path, server.url, REAL_DURATION)
    assert rc == 0, json.dumps(rep.get("violations", {}), indent=1)[:4000]
    assert rep["race_exposed"], rep
    injected = rep["faults"]["injected"]  # type: ignore[index]
    assert injected["slow-commit"] > 0 and injected["drop"] > 0, injected


def test_slow_commit_is_not_offered_on_sqlite(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "maxage", "check", "--duration", "1", "--faults", "slow-commit",
           "--quiet", "--json", str(report)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "slow-commit" in proc.stderr
