"""Load shedding under 5x overload: admitted latency, 503 latency, /livez, memory.

    python bench/api/overload.py [--duration 8] [--factor 5] [--max-concurrency 256]

1. Capacity: wrk (closed loop, 64 connections) on a strong GET of maxage (every request
   reads the primary), server pinned to CPU 0, wrk to CPU 1.
2. Unloaded: an open-loop generator (this file, uvloop, CPU 1) at 30% of capacity;
   latency is measured from each request's *scheduled* time (no coordinated omission).
3. Overloaded: the same generator at ``factor`` x capacity, while a probe asks /livez
   every 50 ms. Reported: admitted (200) p50/p99 against the unloaded p99, 503 p99,
   /livez answers, and the server's RSS before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, free_port, server


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding (like a real client:
    no pipelining); it goes back to the idle pool when its answer is complete."""

    def __init__(self, request: bytes, results: list[tuple[int, float]], idle: deque[Conn]) -> None:
        self.request = request
        self.results = results
        self.idle = idle
        self.scheduled = 0.0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.pending: float | None = None  # a request scheduled before the connection opened

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pending is not None:
            self.send(self.pending)

    def send(self, scheduled: float) -> None:
        if self.transport is None:
            self.pending = scheduled
            return
        self.scheduled = scheduled
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end]
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        size = int(m.group(1)) if m else 0
        if len(self.buf) < head_end + 4 + size:
            return
        self.results.append((int(head[9:12]), time.perf_counter() - self.scheduled))
        self.buf = b""
        self.idle.append(self)


async def open_loop(port: int, path: str, rate: float, duration: float, conns: int) -> dict[str, float]:
    """Open loop: request i is due at ``start + i/rate`` and goes out on an idle connection,
    or a new one (at most ``conns``; beyond that it is counted as not sent)."""
    loop = asyncio.get_running_loop()
    request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    results: list[tuple[int, float]] = []
    idle: deque[Conn] = deque()
    opened = 0

    opening: set[asyncio.Future[object]] = set()

    def connect(req: bytes, out: list[tuple[int, float]], pool: deque[Conn]) -> Conn:
        c = Conn(req, out, pool)
        task = asyncio.ensure_future(loop.create_connection(lambda: c, "127.0.0.1", port))
        opening.add(task)
        task.add_done_callback(opening.discard)
        return c

    livez: list[tuple[int, float]] = []
    probe_idle: deque[Conn] = deque()
    probe = connect(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", livez, probe_idle)
    await asyncio.sleep(0.2)
    probe_idle.append(probe)
    start = time.perf_counter()
    n = dropped = 0
    next_probe = start
    while True:
        now = time.perf_counter()
        if now - start >= duration:
            break
        due = int((now - start) * rate)
        while n < due:
            scheduled = start + n / rate
            n += 1
            if idle:
                idle.popleft().send(scheduled)
            elif opened < conns:
                opened += 1
                connect(request, results, idle).send(scheduled)
            else:
                dropped += 1
        if now >= next_probe and probe_idle:
            probe_idle.popleft().send(now)
            next_probe = now + 0.05
        await asyncio.sleep(0.0005)
    await asyncio.sleep(2.0)  # let answers drain
    ok = sorted(lat for st, lat in results if st == 200)
    shed = sorted(lat for st, lat in results if st == 503)
    other = sum(1 for st, _ in results if st not in (200, 503))

    def pct(xs: list[float], p: float) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * p))] * 1000 if xs else float("nan")

    return {
        "sent": n - dropped,
        "not_sent": dropped,
        "connections": opened,
        "answered": len(results),
        "ok": len(ok),
        "shed": len(shed),
        "other": other,
        "ok_p50_ms": pct(ok, 0.5),
        "ok_p99_ms": pct(ok, 0.99),
        "shed_p99_ms": pct(shed, 0.99),
        "livez_ok": sum(1 for st, _ in livez if st == 200),
        "livez_sent": len(livez),
        "livez_p99_ms": pct(sorted(lat for _, lat in livez), 0.99),
    }


def generator(port: int, path: str, rate: float, duration: float, conns: int) -> dict[str, float]:
    """Run the open-loop generator in a process of its own pinned to CPU 1."""
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    out = subprocess.run(pin + [sys.executable, __file__, "--generate", str(port), path, str(rate),
                                str(duration), str(conns)], capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def rss_kib(port: int) -> int:
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pids = [int(p) for p in re.findall(r"pid=(\d+)", out)]
    total = 0
    for pid in set(pids):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def capacity(url: str, duration: int) -> float:
    pin = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    out = subprocess.run(pin + ["wrk", "-t1", "-c64", "-d", f"{duration}s", url],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--factor", type=float, default=5.0)
    ap.add_argument("--max-concurrency", type=int, default=None)
    ap.add_argument("--max-loop-lag", default=None, help="e.g. 10ms (default: the server's)")
    ap.add_argument("--connections", type=int, default=2000, help="most client connections")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maxage-overload-"))
    port = free_port()
    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", f"sqlite:///{tmp}/db.sqlite",
           "--access-log", "off"]  # fmt: skip
    if args.max_concurrency:
        cmd += ["--max-concurrency", str(args.max_concurrency)]
    if args.max_loop_lag:
        cmd += ["--max-loop-lag", args.max_loop_lag]
    with server(cmd, port):
        base = f"http://127.0.0.1:{port}"
        req = urllib.request.Request(f"{base}/v1/products", method="POST",
                                     data=b'{"name": "chair", "price": 49.5}',
                                     headers={"content-type": "application/json"})  # fmt: skip
        doc = json.loads(urllib.request.urlopen(req).read())["id"]
        path = f"/v1/products/{doc}?consistency=strong"
        cap = capacity(base + path, int(args.duration))
        rss0 = rss_kib(port)
        calm = generator(port, path, cap * 0.3, args.duration, args.connections)
        hot = generator(port, path, cap * args.factor, args.duration, args.connections)
        rss1 = rss_kib(port)
    print(f"\ncapacity (wrk -c64, strong GET): {cap:,.0f} req/s; offered at {args.factor}x: "
          f"{cap * args.factor:,.0f} req/s\n")  # fmt: skip
    print("| run | sent | not sent | conns | 200 | 503 | other | 200 p50 ms | 200 p99 ms | 503 p99 ms | /livez 200 | /livez p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in (("0.3x (unloaded)", calm), (f"{args.factor}x", hot)):
        print(f"| {name} | {r['sent']:,} | {r['not_sent']:,} | {r['connections']:,} | {r['ok']:,} | {r['shed']:,} | {r['other']:,} | {r['ok_p50_ms']:.2f} | "
              f"{r['ok_p99_ms']:.2f} | {r['shed_p99_ms']:.2f} | {r['livez_ok']}/{r['livez_sent']} | {r['livez_p99_ms']:.2f} |")  # fmt: skip
    print(f"\nadmitted p99 / unloaded p99 = {hot['ok_p99_ms'] / calm['ok_p99_ms']:.2f} (target <= 2); "
          f"503 p99 = {hot['shed_p99_ms']:.2f} ms (target < 5); RSS {rss0} -> {rss1} KiB")  # fmt: skip
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        p, path, rate, dur, conns = sys.argv[2:7]
        print(json.dumps(asyncio.run(open_loop(int(p), path, float(rate), float(dur), int(conns)))))
        raise SystemExit(0)
    raise SystemExit(main())
