"""The ``maxage-client`` distribution (./client) installs into a fresh virtualenv with httpx
as its only dependency: none of the server's (granian, uvloop, httptools, asyncpg, redis,
msgspec, jsonschema-rs), and both clients import and work from there
(docs/adr/0008-client-distribution.md)."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_ONLY = {
    "maxage",
    "granian",
    "uvloop",
    "httptools",
    "asyncpg",
    "redis",
    "msgspec",
    "jsonschema-rs",
}
# httpx and what httpx itself needs (measured: docs/adr/0008-client-distribution.md)
EXPECTED = {
    "maxage-client",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "idna",
    "certifi",
    "sniffio",
    "typing-extensions",
}


def test_the_client_installs_without_the_server_dependencies(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT / "client")],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    (wheel,) = wheels.glob("maxage_client-*.whl")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=False)  # this interpreter's pip installs into it (fast)
    python = env_dir / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", str(wheel)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    listed = subprocess.run([*pip[:-1], "--python", str(python), "list", "--format", "json"],
                            check=True, capture_output=True, text=True, timeout=120)  # fmt: skip
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    names -= {"pip", "setuptools"}
    assert names & SERVER_ONLY == set()
    assert names <= EXPECTED, names - EXPECTED
    used = subprocess.run(
        [str(python), "-c",
         "import maxage_client, maxage_client.cache, sys;"
         "c = maxage_client.Client('http://127.0.0.1:9', timeout=0.5,"
         " retry=maxage_client.RetryPolicy(attempts=1));\n"
         "try:\n c.collection('posts').get('x')\n"
         "except maxage_client.ConnectionFailed as e: print(e.code)\n"
         "print('maxage' in sys.modules)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr
    assert used.stdout.split() == ["unavailable", "False"]


def test_the_server_and_the_client_are_released_together() -> None:
    """One version for both distributions (the server depends on the client it ships with)."""
    import maxage_client

    import maxage

    assert maxage_client.__version__ == maxage.__version__
