"""Black-box fixtures: a real ``maxage cache-server`` process on a free port.

``CacheServer`` starts ``python -m maxage.cacheserver --port 0 ...`` with the shared
launcher (``tests.support.launcher``), waits for the ``listening on http://HOST:PORT``
line, and on teardown sends SIGTERM and checks the process exits 0 (clean shutdown is
part of the contract).
"""

from __future__ import annotations

import signal
import socket
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.launcher import ServerProcess, python_m

ROOT = Path(__file__).resolve().parents[2]


class CacheServer(ServerProcess):
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        argv = python_m("--port", "0", *args, module="maxage.cacheserver")
        super().__init__(argv, env=env, cwd=ROOT)
        self.start().wait_listening(timeout=15)
        assert self.port != 0

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, trust_env=False, timeout=10, **kw)  # type: ignore[arg-type]

    def connect(self, timeout: float = 5.0) -> socket.socket:
        s = socket.create_connection((self.host, self.port), timeout=timeout)
        return s

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10, *, group: bool = False) -> int:
        return super().stop(sig, timeout, group=group)


@pytest.fixture(scope="session")
def server() -> Iterator[CacheServer]:
    """The shared default server (loopback, no token, test clock enabled)."""
    s = CacheServer("--max-bytes", "64MiB", "--max-value-bytes", "1MiB", "--debug-clock")
    yield s
    assert s.stop() == 0, s.stderr()


@pytest.fixture()
def http(server: CacheServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


@pytest.fixture()
def unique() -> str:
    """A key prefix no other test uses (the default server is shared)."""
    return f"t{time.monotonic_ns()}/"


_PENDING: weakref.WeakKeyDictionary[socket.socket, bytes] = weakref.WeakKeyDictionary()


def read_response(sock: socket.socket, timeout: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Read one HTTP/1.1 response (Content-Length framed) from a raw socket."""
    sock.settimeout(timeout)
    buf = _PENDING.pop(sock, b"")
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a full head: {buf!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    if status in (100, 304, 204):
        n = 0
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside a body")
        rest += chunk
    body, leftover = rest[:n], rest[n:]
    _PENDING[sock] = leftover
    return status, headers, body


def wait_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True if the peer closes (EOF or reset) within ``timeout``; drains input."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False
