"""Packaging: the wheel built from this checkout installs and runs on its own (the bundled
example config and schema are inside it), without network access (setuptools and wheel
are dev dependencies)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_and_runs(tmp_path: Path) -> None:
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = wheels.glob("maxage-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    env = {k: v for k, v in env.items() if not k.startswith("MAXAGE_")}
    where = subprocess.run([sys.executable, "-c", "import maxage; print(maxage.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert where.stdout.strip().startswith(str(site))  # the installed copy, not the checkout
    version = subprocess.run([sys.executable, "-m", "maxage", "--version"], env=env,
                             capture_output=True, text=True, check=True, cwd=tmp_path)  # fmt: skip
    assert version.stdout.startswith("maxage ")
    example = site / "maxage" / "examples" / "catalog.toml"
    checked = subprocess.run([sys.executable, "-m", "maxage", "config", "check", str(example)],
                             env=env, capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
