"""Schemathesis (`st run`, all default checks) against a live `maxage serve`; 0 failures.

Bounded to finish in well under a minute: a fixed seed and few examples per operation.
``tests/api/schemathesis/schemathesis.toml`` declares what a stateless fuzzer cannot know
(precondition and page-token statuses); ``hooks.py`` makes valid Idempotency-Keys unique.
The change feed is excluded: ``follow=true`` is an endless stream by design.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.api.conftest import MaxageServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def test_schemathesis_finds_nothing(server: MaxageServer) -> None:
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis.hooks", "NO_COLOR": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(st), "--config-file", str(HERE / "schemathesis" / "schemathesis.toml"), "run",
           f"{server.url}/openapi.json", "--exclude-path-regex", "/changes$", "--no-color",
           "--seed", "1", "--workers", "1", "--max-examples", "10"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=170)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]
    assert "failures" not in r.stdout.splitlines()[-1], r.stdout[-4000:]
