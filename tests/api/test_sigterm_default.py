"""The drain hook on SIGTERM only observes: with no server handler to defer to (the
default disposition), the process still terminates on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import asyncio, os, signal, sys
from maxage.api.app import Settings, build_app
from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config
from maxage.core.cache import Cache
from maxage.core.clock import ManualClock
from maxage.service import Service
from maxage.store.sqlite import SQLiteStore

async def main() -> None:
    clock = ManualClock()
    store = SQLiteStore(sys.argv[1], clock=clock)
    await store.open()
    config = load_config(BUNDLED_CONFIG)
    app = build_app(Service(config.collections, store, Cache(1 << 20, clock=clock), clock), Settings())
    await app.startup()
    print("started", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(30)
    print("survived SIGTERM", flush=True)

asyncio.run(main())
"""


def test_sigterm_terminates_without_a_server_handler(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "db.sqlite")],
        capture_output=True,
        text=True,
        timeout=25,
    )
    assert "started" in proc.stdout, proc.stderr
    assert "survived" not in proc.stdout
    assert proc.returncode == -signal.SIGTERM, (proc.returncode, proc.stderr[-2000:])
