"""``maxage check --target`` on a server without fault injection (a real deployment)
deletes every document it created; on a fault-injection server it says it leaves them."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from maxage.checker.history import OK, load
from tests.checker.test_mutants import ONE_SECOND
from tests.support.launcher import ServerProcess, python_m


def _check(tmp_path: Path, *serve_flags: str) -> tuple[ServerProcess, dict[str, object], Path]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(ONE_SECOND)
    args = ["serve", "--port", "0", "--config", str(cfg), "--db",
            f"sqlite:///{tmp_path}/db.sqlite", "--access-log", "off", *serve_flags]  # fmt: skip
    server = ServerProcess(python_m(*args), workdir=tmp_path).start().wait_listening(30.0)
    report, history = tmp_path / "report.json", tmp_path / "history.jsonl"
    cmd = python_m("check", "--target", server.url, "--duration", "2", "--seed", "3", "--quiet",
                   "--json", str(report), "--history", str(history))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return server, json.loads(report.read_text()), history


def test_documents_are_deleted_on_a_target_without_fault_injection(tmp_path: Path) -> None:
    server, rep, history = _check(tmp_path)
    try:
        written = {o.key for o in load(history) if o.is_write and o.outcome == OK and o.key}
        assert len(written) >= 4
        with server.client() as c:
            alive = [k for k in written if c.get(f"/v1/items/{k}").status_code != 404]
    finally:
        server.stop(signal.SIGTERM, timeout=10, group=True)
        server.kill()
    assert alive == []
    assert any(n.startswith("cleaned up: deleted the") for n in rep["notes"]), rep["notes"]  # type: ignore[union-attr]


def test_documents_are_left_on_a_fault_injection_target_and_the_report_says_so(
    tmp_path: Path,
) -> None:
    server, rep, history = _check(tmp_path, "--fault-injection")
    try:
        written = {o.key for o in load(history) if o.is_write and o.outcome == OK and o.key}
        with server.client() as c:
            alive = [k for k in written if c.get(f"/v1/items/{k}").status_code == 200]
    finally:
        server.stop(signal.SIGTERM, timeout=10, group=True)
        server.kill()
    assert alive, "the run's documents were deleted"
    assert any(n.startswith("left the") for n in rep["notes"]), rep["notes"]  # type: ignore[union-attr]
