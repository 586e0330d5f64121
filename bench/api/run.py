"""Cached GET of maxage vs a raw ASGI app on the same server (granian), plus a FastAPI peer.

    python bench/api/run.py [--duration 10] [--connections 50] [--workers 1] [--no-peer]

Each server runs pinned to CPU 0 (``taskset``), wrk pinned to CPU 1, one after the
other in the same invocation; the ratio is maxage / raw. Needs wrk (Debian:
``apt-get install wrk``); the peer needs fastapi, fastapi-cache2 and a Redis at
127.0.0.1:6379 (``pip install fastapi fastapi-cache2``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
BIN = Path(PY).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@contextlib.contextmanager
def server(
    cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[None]:
    pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    proc = subprocess.Popen(pin + cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_port(port)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, duration: int, connections: int, headers: tuple[str, ...] = ()) -> dict[str, float]:
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    extra = [x for h in headers for x in ("-H", h)]
    subprocess.run(
        pin + ["wrk", "-t1", "-c", str(connections), "-d", "2s", *extra, url], capture_output=True
    )  # warm-up
    out = subprocess.run(pin + ["wrk", "-t1", "-c", str(connections), "-d", f"{duration}s", "--latency", *extra, url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def granian(target: str, port: int, workers: int, app_dir: Path) -> list[str]:
    return [str(BIN / "granian"), "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
            "--working-dir", str(app_dir), target]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-"))
    db = tmp / "bench.db"
    results: dict[str, dict[str, float]] = {}

    port = free_port()
    with server([str(BIN / "maxage"), "serve", "--port", str(port), "--db", f"sqlite:///{db}",
                 "--workers", str(args.workers), "--access-log", "off"], port):  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        req = urllib.request.Request(f"{base}/v1/products", method="POST",
                                     data=json.dumps({"name": "chair", "price": 49.5, "tags": ["wood"]}).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
        doc = json.loads(urllib.request.urlopen(req).read())
        url = f"{base}/v1/products/{doc['id']}"
        body = urllib.request.urlopen(url).read().decode()
        results["maxage cached GET"] = wrk(url, args.duration, args.connections)
    # The same with API keys (--auth keys): every hit verifies the key under the bound A.
    made = subprocess.run([str(BIN / "maxage"), "keys", "create", "--db", f"sqlite:///{db}",
                           "--scopes", "read:*,write:*"], capture_output=True, text=True, check=True)  # fmt: skip
    secret = made.stdout.strip().splitlines()[-1]
    auth_port = free_port()
    with server([str(BIN / "maxage"), "serve", "--port", str(auth_port), "--db", f"sqlite:///{db}",
                 "--workers", str(args.workers), "--access-log", "off", "--auth", "keys"], auth_port):  # fmt: skip
        auth_url = f"http://127.0.0.1:{auth_port}/v1/products/{doc['id']}"
        bearer = f"Authorization: Bearer {secret}"
        results["maxage cached GET, --auth keys"] = wrk(
            auth_url, args.duration, args.connections, (bearer,)
        )
    raw_port = free_port()
    with server(
        granian("raw_asgi:app", raw_port, args.workers, HERE), raw_port, {"BENCH_BODY": body}
    ):
        results["raw ASGI (reference)"] = wrk(
            f"http://127.0.0.1:{raw_port}/", args.duration, args.connections
        )
    if not args.no_peer:
        peer_port = free_port()
        with server(granian("peer_fastapi:app", peer_port, args.workers, HERE), peer_port,
                    {"BENCH_DB": str(db)}):  # fmt: skip
            results["FastAPI + fastapi-cache2 (Redis)"] = wrk(
                f"http://127.0.0.1:{peer_port}/v1/products/{doc['id']}",
                args.duration,
                args.connections,
            )
    raw = results["raw ASGI (reference)"]["rps"]
    if args.json:
        print(json.dumps(results, indent=2))
    print(
        f"\n| server (granian, {args.workers} worker(s), wrk -c{args.connections} {args.duration}s) | req/s | p50 ms | p99 ms | vs raw |"
    )
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps'] / raw:.2f}x |"
        )
    mx = results["maxage cached GET"]["rps"]
    peer = results.get("FastAPI + fastapi-cache2 (Redis)")
    print(f"\nmaxage / raw = {mx / raw:.2f} (target ≥ 0.75, goal 0.9)")
    mx_auth = results["maxage cached GET, --auth keys"]["rps"]
    print(f"maxage --auth keys / raw = {mx_auth / raw:.2f} (target ≥ 0.75)")
    if peer:
        print(f"maxage / FastAPI+fastapi-cache2 = {mx / peer['rps']:.1f}x (target ≥ 10x)")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
