"""Black-box fixtures for the API: a real ``maxage serve`` process on a free port.

``MaxageServer`` starts ``python -m maxage serve --port 0 --db sqlite:///<tmp>/db.sqlite``
with stdout and stderr going to files (so a chatty server can never block on a
full pipe), waits for the ``listening on http://HOST:PORT`` line, and on
``stop()`` sends SIGTERM (or SIGINT) and returns the exit code.

Servers are shared per module where tests do not interfere (every test uses
fresh documents); tests that stop, restart or slow a server start their own.
``MAXAGE_TEST_SLOW_STORE_SECONDS`` (read by ``maxage.cli.asgi_app``, test only)
stalls document reads and writes so deadlines, disconnects, concurrent
idempotency keys and drains can be forced deterministically.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

SLOW_ENV = "MAXAGE_TEST_SLOW_STORE_SECONDS"
_LISTENING = re.compile(r"^listening on (http://\S+)$", re.M)


class MaxageServer:
    def __init__(
        self,
        workdir: Path,
        *args: str,
        db: Path | None = None,
        env: dict[str, str] | None = None,
        port: str = "0",
        command: list[str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.db = db if db is not None else workdir / "db.sqlite"
        cmd = command or [
            sys.executable,
            "-m",
            "maxage",
            "serve",
            "--port",
            port,
            "--db",
            f"sqlite:///{self.db}",
            *args,
        ]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_")}
        full_env.update(env or {})
        n = len(list(workdir.glob("stdout*.txt")))
        self.stdout_path = workdir / f"stdout{n}.txt"
        self.stderr_path = workdir / f"stderr{n}.txt"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=workdir, env=full_env)
        deadline = time.monotonic() + 20
        while True:
            m = _LISTENING.search(self.stdout())
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(
                    f"maxage serve did not start (rc={self.proc.returncode}):\n"
                    f"{self.stdout()}\n{self.stderr()}"
                )
            time.sleep(0.02)

    def client(self, **kw: object) -> httpx.Client:
        kw.setdefault("timeout", 15)
        return httpx.Client(base_url=self.url, trust_env=False, **kw)  # type: ignore[arg-type]

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


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
    yield s
    rc = s.stop()
    assert rc == 0, s.stderr()


@pytest.fixture()
def http(server: MaxageServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c
