"""Load shedding and worker lifetime, black box: a server at its concurrency limit answers
a fast 503 ``overloaded`` (never for /livez, /readyz, /metrics), and workers never
outlive the main process, whatever kills it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.api.conftest import SLOW_ENV, MaxageServer, metric, wait_for


def test_at_the_limit_requests_are_shed_fast_and_health_never(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, "--max-concurrency", "1", "--queue-deadline", "1ms",
                     env={SLOW_ENV: "3"})  # fmt: skip
    try:
        held: dict[str, int] = {}

        def hold_the_slot() -> None:
            with s.client() as c:
                held["status"] = c.post("/v1/products", json={"name": "x", "price": 1}).status_code

        t = threading.Thread(target=hold_the_slot)
        t.start()
        with s.client() as c:
            # The scrape counts itself: the held write makes two.
            wait_for(lambda: metric(c.get("/metrics").text, "http_server_active_requests") >= 2,
                     10, "the slow write to hold the only slot")  # fmt: skip
            r = c.get("/v1/products")
            assert r.status_code == 503 and r.json()["code"] == "overloaded"
            assert r.headers["retry-after"] == "1"
            for path in ("/livez", "/readyz", "/metrics"):
                assert c.get(path).status_code == 200, path
            t.join(30)
            assert held["status"] == 201
            assert c.get("/v1/products").status_code == 200  # the slot is free again
            assert metric(c.get("/metrics").text, "maxage_shed_total") >= 1
        assert s.stop() == 0
    finally:
        s.kill()


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def test_workers_end_when_the_main_process_is_killed(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, "--workers", "2")
    try:
        main = s.proc.pid
        wait_for(lambda: len(_children(main)) >= 2, 20, "two workers")
        workers = _children(main)
        os.kill(main, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, [
                (w, Path(f"/proc/{w}/stat").read_text()[:80]) for w in workers if _alive(w)
            ]
            time.sleep(0.05)
        with __import__("contextlib").suppress(httpx.HTTPError):
            httpx.get(s.url + "/livez", timeout=1)
    finally:
        s.kill()
