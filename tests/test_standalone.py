"""The repository stands alone: nothing in it depends on a path outside it.

A clone must be enough to read the design (docs/architecture.md) and to run the
benchmarks (bench/traces/), so no tracked text file may point at the workshop
directory that sits beside some checkouts, and every trace bench/ ships is
accounted for (origin and licence) in bench/traces/README.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "traces"

# Spelled in pieces so that this file does not match itself.
_OUTSIDE = "shared"
FORBIDDEN = ("../" + _OUTSIDE, _OUTSIDE + "/DESIGN", _OUTSIDE + "/traces")


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    """The file's text, or None for binary, unreadable or absent (deleted, not staged) files."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_refers_to_a_path_outside_the_repository() -> None:
    offenders = []
    for path in _tracked_files():
        text = _text(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for needle in FORBIDDEN:
                if needle in line:
                    offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {needle}")
    assert offenders == []


def test_every_shipped_trace_is_named_in_the_traces_readme() -> None:
    readme = TRACES / "README.md"
    assert readme.is_file(), "bench/traces/README.md (origins and licences) is missing"
    text = readme.read_text(encoding="utf-8")
    traces = sorted(p.name for p in TRACES.rglob("*.trace"))
    assert traces, "bench/traces/ ships no .trace file"
    assert [t for t in traces if t not in text] == []


def test_every_trace_bench_sim_reads_is_shipped() -> None:
    sim = (ROOT / "bench" / "sim.py").read_text(encoding="utf-8")
    named = set(re.findall(r"\"([\w.-]+\.trace)\"", sim))
    assert named, "bench/sim.py names no trace (the pattern of TRACE_RUNS changed?)"
    assert sorted(n for n in named if not (TRACES / n).is_file()) == []
