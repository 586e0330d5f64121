"""A stream of oversized bodies leaves the server's memory flat (issue 4, limits)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import MaxageServer
from tests.api.test_hygiene import problem


def _worker_rss_kib(server: MaxageServer) -> int:
    """Resident memory of the serving worker (granian runs it as a child process)."""
    pid = server.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "no worker process found"
    status = Path(f"/proc/{children[0]}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])


def _oversized() -> Iterator[bytes]:
    yield b'{"name":"'
    for _ in range(8):
        yield b"z" * 32768  # 256 KiB in all, four times the limit, chunked
    yield b'"}'


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc")
def test_oversized_bodies_do_not_grow_memory(tmp_path: Path) -> None:
    server = MaxageServer(tmp_path / "srv", "--body-limit", "64KiB")
    try:
        with server.client() as http:
            headers = {"content-type": "application/json"}

            def burst(n: int) -> None:
                for _ in range(n):
                    r = http.post("/v1/products", content=_oversized(), headers=headers)
                    problem(r, 413, "payload_too_large")
                    r = http.post(
                        "/v1/products",
                        content=b"x" * (10 * 1024 * 1024),  # declared by Content-Length: not read
                        headers=headers,
                    )
                    problem(r, 413, "payload_too_large")

            burst(30)  # warm-up: allocator pools, code paths
            before = _worker_rss_kib(server)
            burst(300)  # 300 x (256 KiB chunked + 10 MiB declared) offered
            after = _worker_rss_kib(server)
            assert after - before < 8 * 1024, (before, after)
            assert http.post("/v1/products", json={"name": "ok", "price": 1}).status_code == 201
    finally:
        assert server.stop() == 0
