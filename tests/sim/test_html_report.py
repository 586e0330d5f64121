"""maxage sim --html: the checker's HTML report for a simulated run (the violations of
the whole run, the staleness of every read, one epoch's timeline)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.sim.test_sim import _sim, configs  # noqa: F401  (the fixture)
from tests.support.artefacts import artefacts


def test_html_report_of_a_failing_run(configs: dict[str, Path], tmp_path: Path) -> None:  # noqa: F811
    """A failing run exits 1 and prints its seed and a reproduction; --html writes the
    report (one run for both: a simulation in a process of its own takes seconds)."""
    page = tmp_path / "sim.html"
    bad = _sim("--config", str(configs["b"]), "--seed", "2", "--ops", "20000", "--mutant",
               "early-flight", "--shrink-budget", "1s", "--quiet", "--html", str(page))  # fmt: skip
    assert bad.returncode == 1, bad.stderr
    assert "seed 2" in bad.stdout and "from maxage.sim import Step, replay" in bad.stdout
    html = page.read_text()
    assert "maxage sim report" in html and "verdict violation" in html
    assert re.search(r"epoch \d+ of \d+ \(simulated seconds\)", html)
    assert re.search(r'data-series="reads/s" data-points="\d+"', html)
    assert "Staleness of bounded reads" in html
    assert html.count('<div class="v">') >= 1  # a violation with its operations
    shutil.copy(page, artefacts() / "sim-report.html")
