"""Cached GET of maxage vs a raw ASGI app on the same server (granian), plus FastAPI peers.

    python bench/api/run.py [--duration 10] [--connections 50] [--workers 1] [--rounds 1]
        [--no-peer]

Each server runs pinned to CPU 0 (``taskset``), wrk pinned to CPU 1, one after the
other in the same invocation; the ratio is maxage / raw. maxage runs as served (granian's
RSGI interface) and with ``--interface asgi``; the raw app also runs on RSGI, for scale. Needs wrk (Debian:
``apt-get install wrk``). The peers (``PEERS``; ``pip install -e '.[bench]'``) are
FastAPI with fastapi-cache2's in-memory backend and with cashews' in-memory
backend -- in-process caches, like-for-like with maxage's L1 -- and FastAPI with
fastapi-cache2's Redis backend (needs a Redis at 127.0.0.1:6379), a shared tier.
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
import statistics
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


def serve_config(config: str, db: str, *extra: str) -> tuple[list[str], int, str, str]:
    """``maxage serve`` on ``config`` (TOML text) and ``db`` (a fresh SQLite file when
    empty) on a free port, with access logs and the monitor off: (command, port, base
    URL, primary URL). Moves the calling benchmark to CPU 1 (``server`` runs on CPU 0)."""
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-"))
    (tmp / "c.toml").write_text(config)
    db = db or f"sqlite:///{tmp}/db.sqlite"
    port = free_port()
    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", db,
           "--config", str(tmp / "c.toml"), "--access-log", "off", "--monitor-sample", "0", *extra]  # fmt: skip
    return cmd, port, f"http://127.0.0.1:{port}", db


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


@contextlib.contextmanager
def server(
    cmd: list[str],
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    start_timeout: float = 20.0,
    cpus: str = "0",
) -> Iterator[int]:
    """Run ``cmd`` pinned to ``cpus`` (a taskset list; CPU 0 unless told) until the block
    ends; yields its session id (every process it starts, granian's workers too, is in
    that session: ``session_cpu``)."""
    pin = ["taskset", "-c", cpus] if shutil.which("taskset") else []
    proc = subprocess.Popen(pin + cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        wait_port(port, start_timeout)
        yield proc.pid
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of session ``sid``.

    Per-request server CPU is the load-independent figure on a shared machine: other
    tenants change how much CPU the server gets per second (req/s), not how much it
    spends per request."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            rest = stat.read_text().rsplit(")", 1)[1].split()
            if int(rest[3]) == sid:
                total += int(rest[11]) + int(rest[12])
    return total / os.sysconf("SC_CLK_TCK")


def wrk(
    url: str,
    duration: int,
    connections: int,
    headers: tuple[str, ...] = (),
    sid: int | None = None,
    script: Path | None = None,
    cpus: str | None = "1",
) -> dict[str, float]:
    """One wrk run (pinned to ``cpus``, CPU 1 unless told; None: not pinned) after a 2 s
    warm-up; with ``sid``, also the server session's CPU microseconds per request during
    the run (``cpu_us``); ``script``: a wrk Lua script (e.g. one that varies each
    request's path)."""
    pin = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    extra = [x for h in headers for x in ("-H", h)] + (["-s", str(script)] if script else [])
    subprocess.run(
        pin + ["wrk", "-t1", "-c", str(connections), "-d", "2s", *extra, url], capture_output=True
    )  # warm-up
    cpu0 = session_cpu(sid) if sid is not None else 0.0
    out = subprocess.run(pin + ["wrk", "-t1", "-c", str(connections), "-d", f"{duration}s", "--latency", *extra, url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    cpu = session_cpu(sid) - cpu0 if sid is not None else 0.0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]

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
        "cpu_us": cpu * 1e6 / max(1, requests),
    }


ASGI_ROW = "maxage cached GET, --interface asgi"
# (row name, granian target, environment): the in-memory peers are like-for-like with
# maxage's in-process L1; the Redis one is a shared tier (docs/benchmarks.md).
PEERS = [
    ("FastAPI + fastapi-cache2 (in-memory)", "peer_fastapi:app", {"BENCH_BACKEND": "memory"}),
    ("FastAPI + cashews (in-memory)", "peer_cashews:app", {"BENCH_BACKEND": "memory"}),
    ("FastAPI + fastapi-cache2 (Redis)", "peer_fastapi:app", {"BENCH_BACKEND": "redis"}),
]


def granian(
    target: str, port: int, workers: int, app_dir: Path, interface: str = "asgi"
) -> list[str]:
    return [str(BIN / "granian"), "--interface", interface, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(workers), "--loop", "uvloop", "--no-ws", "--log-level", "warning",
            "--working-dir", str(app_dir), target]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds (medians)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-"))
    db = tmp / "bench.db"
    # Every server is started first and stays up (idle ones cost nothing); each round
    # then loads them one after the other, so a change of machine load hits every row
    # of a round alike and the same-round ratios stay comparable.
    targets: list[tuple[str, str, tuple[str, ...], int]] = []  # (row, url, headers, session)
    with contextlib.ExitStack() as stack:
        port = free_port()
        sid = stack.enter_context(server([str(BIN / "maxage"), "serve", "--port", str(port), "--db", f"sqlite:///{db}",
                                          "--workers", str(args.workers), "--access-log", "off"], port))  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        req = urllib.request.Request(f"{base}/v1/products", method="POST",
                                     data=json.dumps({"name": "chair", "price": 49.5, "tags": ["wood"]}).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
        doc = json.loads(urllib.request.urlopen(req).read())
        path = f"/v1/products/{doc['id']}"
        body = urllib.request.urlopen(base + path).read().decode()
        targets.append(("maxage cached GET", base + path, (), sid))
        # The same with API keys (--auth keys): every hit verifies the key under the bound A.
        made = subprocess.run([str(BIN / "maxage"), "keys", "create", "--db", f"sqlite:///{db}",
                               "--scopes", "read:*,write:*"], capture_output=True, text=True, check=True)  # fmt: skip
        secret = made.stdout.strip().splitlines()[-1]
        auth_port = free_port()
        sid = stack.enter_context(server([str(BIN / "maxage"), "serve", "--port", str(auth_port), "--db", f"sqlite:///{db}",
                                          "--workers", str(args.workers), "--access-log", "off", "--auth", "keys"], auth_port))  # fmt: skip
        targets.append(("maxage cached GET, --auth keys", f"http://127.0.0.1:{auth_port}{path}",
                        (f"Authorization: Bearer {secret}",), sid))  # fmt: skip
        # The same app over granian's ASGI interface (maxage serve --interface asgi): what
        # the RSGI front (maxage.api.rsgi, the default) saves.
        asgi_port = free_port()
        sid = stack.enter_context(server([str(BIN / "maxage"), "serve", "--port", str(asgi_port), "--db", f"sqlite:///{db}",
                                          "--workers", str(args.workers), "--access-log", "off", "--interface", "asgi"], asgi_port))  # fmt: skip
        targets.append((ASGI_ROW, f"http://127.0.0.1:{asgi_port}{path}", (), sid))
        raw_port = free_port()
        sid = stack.enter_context(server(granian("raw_asgi:app", raw_port, args.workers, HERE), raw_port,
                                         {"BENCH_BODY": body}))  # fmt: skip
        targets.append(("raw ASGI (reference)", f"http://127.0.0.1:{raw_port}/", (), sid))
        # For scale: the same raw app on granian's RSGI interface (not the reference).
        rsgi_port = free_port()
        sid = stack.enter_context(server(granian("raw_rsgi:app", rsgi_port, args.workers, HERE, "rsgi"),
                                         rsgi_port, {"BENCH_BODY": body}))  # fmt: skip
        targets.append(("raw RSGI", f"http://127.0.0.1:{rsgi_port}/", (), sid))
        if not args.no_peer:
            # Like-for-like peers first (in-process caches, as maxage's L1), then the
            # Redis-backed one (a shared tier: not like-for-like with an L1 hit).
            for name, target, env in PEERS:
                peer_port = free_port()
                sid = stack.enter_context(server(granian(target, peer_port, args.workers, HERE), peer_port,
                                                 {"BENCH_DB": str(db), **env}))  # fmt: skip
                targets.append((name, f"http://127.0.0.1:{peer_port}{path}", (), sid))
        rounds: list[dict[str, dict[str, float]]] = []
        for _ in range(args.rounds):
            rounds.append(
                {
                    name: wrk(url, args.duration, args.connections, hdrs, sid)
                    for name, url, hdrs, sid in targets
                }
            )
    shutil.rmtree(tmp, ignore_errors=True)

    def median(name: str, field: str) -> float:
        return statistics.median(r[name][field] for r in rounds)

    def ratio(a: str, b: str) -> tuple[float, list[float]]:
        """Median and per-round values of rps(a) / rps(b), each from one round."""
        per = [r[a]["rps"] / r[b]["rps"] for r in rounds]
        return statistics.median(per), per

    def cpu_ratio(a: str, b: str) -> tuple[float, list[float]]:
        """The same from server CPU per request: cpu(b) / cpu(a) (> 1: ``a`` is cheaper)."""
        per = [r[b]["cpu_us"] / max(1e-9, r[a]["cpu_us"]) for r in rounds]
        return statistics.median(per), per

    raw = "raw ASGI (reference)"
    if args.json:
        print(json.dumps(rounds, indent=2))
    print(
        f"\n| server (granian, {args.workers} worker(s), wrk -c{args.connections} {args.duration}s, "
        f"median of {args.rounds} round(s)) | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| vs raw (req/s) | vs raw (CPU/req) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, _, _, _ in targets:
        print(
            f"| {name} | {median(name, 'rps'):,.0f} | {median(name, 'p50_ms'):.2f} | "
            f"{median(name, 'p99_ms'):.2f} | {median(name, 'cpu_us'):.0f} | "
            f"{ratio(name, raw)[0]:.2f}x | {cpu_ratio(name, raw)[0]:.2f}x |"
        )

    def show(label: str, a: str, b: str, target: str) -> None:
        m, per = ratio(a, b)
        c, cper = cpu_ratio(a, b)
        print(
            f"{label} = {m:.2f} by req/s (rounds: {', '.join(f'{x:.2f}' for x in per)}), "
            f"{c:.2f} by server CPU/req (rounds: {', '.join(f'{x:.2f}' for x in cper)}); "
            f"target {target}"
        )

    mx = "maxage cached GET"
    print()
    show("maxage / raw", mx, raw, "≥ 0.85, goal 0.9")
    show("maxage --interface asgi / raw", ASGI_ROW, raw, "(the same app over ASGI)")
    show("maxage --auth keys / raw", "maxage cached GET, --auth keys", raw, "≥ 0.75")
    if not args.no_peer:
        print("(the Redis peer's CPU/req leaves out the Redis server's own CPU)")
    for name, _, env in PEERS:
        if not args.no_peer:
            show(
                f"maxage / {name}", mx, name, "≥ 10x" if env["BENCH_BACKEND"] == "redis" else "≥ 5x"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
