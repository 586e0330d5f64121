"""Black-box fixtures for the API: a real ``maxage serve`` process on a free port.

``MaxageServer`` is the shared launcher (``tests.support.launcher``) with the API's
defaults: ``python -m maxage serve --port 0 --db sqlite:///<workdir>/db.sqlite``, run in
``workdir``, waited for until it prints ``listening on http://HOST:PORT``; ``stop()``
sends SIGTERM (or SIGINT) and returns the exit code.

Servers are shared per module where tests do not interfere (every test uses
fresh documents); tests that stop, restart or slow a server start their own.
``MAXAGE_TEST_SLOW_STORE_SECONDS`` (read by ``maxage.cli.asgi_app``, test only)
stalls document reads and writes so deadlines, disconnects, concurrent
idempotency keys and drains can be forced deterministically.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launcher import ServerProcess, python_m

SLOW_ENV = "MAXAGE_TEST_SLOW_STORE_SECONDS"


class MaxageServer(ServerProcess):
    """A started, listening ``maxage serve`` on SQLite (``command`` replaces the whole argv)."""

    def __init__(
        self,
        workdir: Path,
        *args: str,
        db: Path | None = None,
        env: dict[str, str] | None = None,
        port: str = "0",
        command: list[str] | None = None,
    ) -> None:
        self.db = db if db is not None else workdir / "db.sqlite"
        argv = command or python_m("serve", "--port", port, "--db", f"sqlite:///{self.db}", *args)
        super().__init__(argv, workdir=workdir, env=env)
        self.start().wait_listening(timeout=20)


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name or (want and head == f"{name}{{{want}}}"):
            return float(value)
    return 0.0


def wait_for(predicate: object, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate()`` until true (a condition wait, not a sleep hoping for a race)."""
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaxageServer]:
    """One default server (bundled example config) shared by a test module."""
    s = MaxageServer(tmp_path_factory.mktemp("serve"))
    try:
        yield s
        rc = s.stop()
        assert rc == 0, s.stderr()
    finally:
        s.kill()


@pytest.fixture()
def http(server: MaxageServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
