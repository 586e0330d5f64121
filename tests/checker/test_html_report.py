"""The HTML report of a checked history: self-contained, with the staleness chart per
mode (bound marked), operations over time (fault phases shaded, violations marked) and
each violation with its operations. Opened in a real browser when chromium is there."""

from __future__ import annotations

import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from maxage.checker.checks import check
from maxage.checker.history import Op
from maxage.checker.html_report import fault_phases, render_html
from maxage.checker.report import build_report


def history(seed: int = 3) -> list[Op]:
    """Two clients over 10 s on one key, a drop phase from 2 to 6 s, and one bounded read
    at 8 s that returns version 1 long after version 2 was acknowledged (P2)."""
    rng = random.Random(seed)
    ops = [
        Op(1, 1, "create", "p", "k", invoke=0.0, ret=0.01, status=201, version=1, token="t1", body_hash="h1"),
        Op(2, 0, "fault", invoke=2.0, ret=2.0, faults={"drop": 0.5}),
        Op(3, 0, "fault", invoke=6.0, ret=6.0, faults={}),
        Op(4, 1, "put", "p", "k", invoke=1.0, ret=1.01, status=200, version=2, token="t2", body_hash="h2"),
        Op(5, 2, "read", "p", "k", mode="bounded", invoke=8.0, ret=8.01, status=200, version=1, token="t1", body_hash="h1", tier="l1"),
    ]  # fmt: skip
    t = 1.1
    n = 6
    while t < 10:
        ops.append(Op(n, 2, "read", "p", "k", mode=rng.choice(["bounded", "strong"]), invoke=t,
                      ret=t + 0.01, status=200, version=2, token="t2", body_hash="h2", tier="l1"))  # fmt: skip
        n += 1
        t += rng.uniform(0.01, 0.05)
    return ops


def test_report_has_charts_and_the_violation_with_its_operations() -> None:
    ops = history()
    res = check(ops, {"p": 0.5})
    assert [v.prop for v in res.violations] == ["P2"]
    rep = build_report(ops, res, bounds={"p": 0.5}, seed=3, duration=10.0, faults_requested=["drop"],
                       server_faults=None, target="http://x")  # fmt: skip
    page = render_html(rep, ops, res, {"p": 0.5})
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<script" not in page
    svgs = re.findall(r"<svg.*?</svg>", page, flags=re.S)
    parsed = [ET.fromstring(svg) for svg in svgs]  # each chart is well-formed
    titles = [p.find("{http://www.w3.org/2000/svg}title").text for p in parsed]  # type: ignore[union-attr]
    assert titles == [
        "Operations over time (fault phases shaded, violations marked)",
        "Staleness of bounded reads",
        "Staleness of strong reads",
    ]
    timeline, bounded = svgs[0], svgs[1]
    assert timeline.count('class="band"') == 1 and "drop 0.5" in timeline  # the phase, labelled
    assert 'class="mark"' in timeline and ">P2<" in timeline  # the violation, marked
    assert "S = 500ms" in bounded and "staleness: time since a newer version" in bounded
    assert re.search(r'data-series="reads/s" data-points="\d{2,}"', timeline)
    assert "violated &times; 1" in page and "verdict violation" in page
    # The violation, its message and its operations (the stale read and the newer write).
    assert "version 2 was acknowledged more than 0.5s before" in page
    v = page[page.index('<div class="v">') :]
    assert "<td>5</td>" in v and "<td>4</td>" in v


def test_fault_phases() -> None:
    bands = fault_phases(history(), end=10.0)
    assert [(b.start, b.end, b.label) for b in bands] == [(2.0, 6.0, "drop 0.5")]


def test_cli_refuses_unwritable_report_paths_and_the_removed_plot(tmp_path: Path) -> None:
    """Before any run: a report that could not be written, and --plot, exit 2 and say why."""
    for args, said in (
        (["--html", str(tmp_path / "missing" / "r.html")], "--html"),
        (["--json", str(tmp_path / "missing" / "r.json")], "--json"),
        (["--plot", str(tmp_path / "p.png")], "--html FILE"),
    ):
        r = subprocess.run([sys.executable, "-m", "maxage", "check", *args], capture_output=True,
                           text=True, timeout=60, check=False)  # fmt: skip
        assert r.returncode == 2 and said in r.stderr, (args, r.stderr)
        assert not (tmp_path / "p.png").exists()
