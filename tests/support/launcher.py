"""The one way tests start a server: ``python -m maxage <command> ...`` as a subprocess.

Every ``maxage serve`` and ``maxage cache-server`` a test runs goes through
:class:`ServerProcess` (the API, scale-out, checker and cache-server fixtures are thin
wrappers around it):

* stdout and stderr go to files in ``workdir`` (``<name>.stdout.txt`` and
  ``<name>.stderr.txt``), so a chatty server can never block on a full pipe and the
  output is still there after the process is gone;
* the environment is the test runner's minus every inherited ``MAXAGE_*`` variable,
  plus ``env`` (a variable a test means to pass, it names there);
* the process starts in a session (and process group) of its own;
* :meth:`ServerProcess.wait_listening` waits for the ``listening on http://HOST:PORT``
  line both servers print once their socket is bound, and sets ``url``;
* :meth:`ServerProcess.stop` sends SIGTERM (or the signal given) and returns the exit
  code (``-9`` if it had to be killed after ``timeout``);
* :meth:`ServerProcess.kill` SIGKILLs the whole process group (a worker left behind
  included). Fixtures call it on teardown; servers a test started and never stopped are
  killed when the test run exits.

``launch(*args)`` is the short form: build, start and wait in one call.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

LISTENING = re.compile(r"^listening on (http://\S+)$", re.M)

_running: set[ServerProcess] = set()  # started and not yet reaped: killed at exit
_tempdirs: list[str] = []  # work directories the launcher made itself: removed at exit


def python_m(*args: str, module: str = "maxage") -> list[str]:
    """The command line ``python -m <module> <args>`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def server_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The runner's environment without inherited ``MAXAGE_*`` variables, plus ``env``.

    Loop-lag shedding is off unless a test turns it on (``env`` or ``--max-loop-lag``): it
    answers 503 when the event loop runs late, which on a loaded test machine is the
    machine, not the server under test."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_")}
    full["MAXAGE_MAX_LOOP_LAG"] = "0"
    full.update(env or {})
    return full


class ServerProcess:
    """One server subprocess. Construction starts nothing: ``start()``, then ``wait_listening()``."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        workdir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        name: str | None = None,
    ) -> None:
        if workdir is None:
            made = tempfile.mkdtemp(prefix="maxage-server-")
            _tempdirs.append(made)
            workdir = Path(made)
        workdir.mkdir(parents=True, exist_ok=True)
        self.argv = list(argv)
        self.workdir = workdir
        self.env = server_env(env)
        self.cwd = cwd if cwd is not None else workdir
        if name is None:  # a fresh pair of output files per server sharing a directory
            n = 0
            while (workdir / f"server{n}.stdout.txt").exists():
                n += 1
            name = f"server{n}"
        self.name = name
        self.stdout_path = workdir / f"{name}.stdout.txt"
        self.stderr_path = workdir / f"{name}.stderr.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> ServerProcess:
        """Start the process and return at once (several servers can start together)."""
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,
            )
        self.url = ""
        _running.add(self)
        return self

    def wait_listening(self, timeout: float = 20.0) -> ServerProcess:
        """Wait for the ``listening on`` line and set ``url``.

        A process that exits first, or says nothing within ``timeout`` seconds, is killed
        and reported (RuntimeError with its exit code and output)."""
        proc = self._proc()
        deadline = time.monotonic() + timeout
        while True:
            m = LISTENING.search(self.stdout())
            if m:
                self.url = m.group(1)
                return self
            if self._exited() or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"{self.describe()} did not start (rc={proc.returncode}):\n"
                    f"{self.stdout()}\n{self.stderr()}"
                )
            time.sleep(0.02)  # polling a child's start-up, not a race

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0, *, group: bool = False) -> int:
        """Send ``sig`` (to the process, or its whole group) and return the exit code.

        After ``timeout`` seconds the group is killed and ``-9`` returned. A process that
        has already exited returns its exit code (0 for one never started)."""
        proc = self.proc
        if proc is None:
            return 0
        if not self._exited():
            if group:
                self._signal_group(sig)
            else:
                proc.send_signal(sig)
            if not self._exited(timeout):
                self.kill()
                return -9
        self._signal_group(signal.SIGKILL)  # anything the leader left behind
        rc = proc.wait()
        _running.discard(self)
        return rc

    def kill(self) -> None:
        """SIGKILL the process group and reap the process (teardown; idempotent)."""
        proc = self.proc
        if proc is None:
            return
        self._signal_group(signal.SIGKILL)
        proc.wait()
        _running.discard(self)

    # -- looking at it ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 0

    def client(self, **kw: Any) -> httpx.Client:
        """An httpx client on ``url`` that ignores proxy variables (timeout 15 s unless given)."""
        kw.setdefault("timeout", 15)
        return httpx.Client(base_url=self.url, trust_env=False, **kw)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and not self._exited()

    def describe(self) -> str:
        """``maxage serve`` (the module and its command, if any) for messages."""
        if self.argv[1:2] != ["-m"]:
            return self.argv[0]
        words = self.argv[2:4]
        return " ".join(w for w in words if not w.startswith("-"))

    # -- internals --------------------------------------------------------------------------

    def _proc(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError(f"{self.describe()} was not started")
        return self.proc

    def _exited(self, timeout: float = 0.0) -> bool:
        """True once the process has exited, waiting up to ``timeout`` seconds.

        The process is left unreaped where the platform allows (a zombie keeps its pid,
        hence its process group id, from being reused until ``wait()``), so the group can
        still be signalled safely afterwards."""
        proc = self._proc()
        deadline = time.monotonic() + timeout
        while True:
            if proc.returncode is not None:
                return True
            if hasattr(os, "waitid"):
                try:
                    info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return True
                if info is not None:
                    return True
            elif proc.poll() is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)  # polling a child's exit against a deadline

    def _signal_group(self, sig: int) -> None:
        """Signal the process group, but only while its leader is unreaped (alive or a
        zombie): once reaped, the group id may belong to someone else."""
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def launch(
    *args: str,
    module: str = "maxage",
    workdir: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    name: str | None = None,
    timeout: float = 20.0,
) -> ServerProcess:
    """Start ``python -m <module> <args>`` and wait until it is listening."""
    server = ServerProcess(
        python_m(*args, module=module), workdir=workdir, env=env, cwd=cwd, name=name
    )
    return server.start().wait_listening(timeout)


@atexit.register
def _cleanup() -> None:
    for server in list(_running):
        server.kill()
    for path in _tempdirs:
        shutil.rmtree(path, ignore_errors=True)
