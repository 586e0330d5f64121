"""Cache-server benchmark: maxage cache-server vs a Go net/http + RWMutex map, plus Redis.

One run measures, each server pinned to one core (``taskset -c SERVER_CPU``) and
the load generator pinned to another (``taskset -c LOAD_CPU``):

* GET-hit and PUT throughput and p99 of ``maxage cache-server`` (``python -m
  maxage.cacheserver``) and of the Go reference (``bench/cacheserver/goref``,
  built with ``go`` when a toolchain is present; skipped with a message
  otherwise), both driven by the same ``wrk`` with the same Lua scripts;
* ``redis-benchmark`` GET/SET against the local Redis (127.0.0.1:6379), if up.

Usage::

    .venv/bin/python bench/cacheserver/run.py [--duration 10] [--connections 64]
        [--keys 1000] [--value-bytes 100] [--json out.json]

Ratios (maxage / Go) are what to compare across machines, not absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

GET_LUA = """
local keys = {keys}
request = function()
  return wrk.format("GET", "/v1/keys/k" .. math.random(keys))
end
"""

PUT_LUA = """
local keys = {keys}
local body = string.rep("x", {size})
request = function()
  return wrk.format("PUT", "/v1/keys/k" .. math.random(keys),
                    {{["Content-Type"] = "text/plain"}}, body)
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(cmd: list[str], cpu: int) -> tuple[subprocess.Popen[str], str]:
    full = ["taskset", "-c", str(cpu), *cmd] if shutil.which("taskset") else cmd
    proc = subprocess.Popen(
        full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    m = re.match(r"listening on (http://\S+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(
            f"{cmd[0]} did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )
    return proc, m.group(1)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _preload(base: str, keys: int, size: int) -> None:
    body = b"x" * size
    with httpx.Client(base_url=base, trust_env=False) as c:
        for i in range(1, keys + 1):
            r = c.put(f"/v1/keys/k{i}", content=body, headers={"content-type": "text/plain"})
            r.raise_for_status()


_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _parse_wrk(out: str) -> dict[str, Any]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    p99 = float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")
    m50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    p50 = float(m50.group(1)) * _UNIT[m50.group(2)] if m50 else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:(.*)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def _wrk(base: str, script: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    cmd = [
        "taskset", "-c", str(args.load_cpu),
        "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
        "-s", str(script), base,
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out), " ".join(cmd)


def _bench_server(
    name: str, cmd: list[str], scripts: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    proc, base = _start(cmd, args.server_cpu)
    try:
        _preload(base, args.keys, args.value_bytes)
        result: dict[str, Any] = {"command": " ".join(cmd)}
        # warm-up (JIT-free, but fills caches, connection pools, page faults)
        _wrk_warm = argparse.Namespace(**{**vars(args), "duration": 2})
        _wrk(base, scripts["get"], _wrk_warm)
        for op in ("get", "put"):
            res, wrk_cmd = _wrk(base, scripts[op], args)
            res["wrk"] = wrk_cmd
            result[op] = res
            print(
                f"  {name:8s} {op.upper():4s} {res['rps']:>10.0f} req/s  "
                f"p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms"
                + (f"  non-2xx {res['non_2xx']}" if res["non_2xx"] else "")
                + (f"  socket errors: {res['socket_errors']}" if res["socket_errors"] else ""),
                flush=True,
            )
        return result
    finally:
        _stop(proc)


def _build_go() -> str | None:
    if shutil.which("go") is None:
        print("go toolchain not found: skipping the Go reference (apt-get install golang-go)")
        return None
    out = Path(tempfile.gettempdir()) / "maxage-goref"
    env = {**os.environ, "GOCACHE": str(Path(tempfile.gettempdir()) / "maxage-gocache")}
    env.setdefault("GOPATH", str(Path(tempfile.gettempdir()) / "maxage-gopath"))
    subprocess.run(
        ["go", "build", "-o", str(out), str(HERE / "goref" / "main.go")], check=True, env=env
    )
    return str(out)


def _redis(args: argparse.Namespace) -> dict[str, Any] | None:
    if shutil.which("redis-benchmark") is None:
        print("redis-benchmark not found: skipping Redis")
        return None
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        print("no Redis on 127.0.0.1:6379: skipping Redis")
        return None
    cmd = [
        "taskset", "-c", str(args.load_cpu),
        "redis-benchmark", "-h", "127.0.0.1", "-p", "6379", "-t", "get,set",
        "-n", str(args.redis_requests), "-c", str(args.connections),
        "-d", str(args.value_bytes), "-r", str(args.keys), "--csv",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    res: dict[str, Any] = {"command": " ".join(cmd)}
    for line in out.splitlines():
        cols = [c.strip('"') for c in line.split(",")]
        if cols[0] in ("GET", "SET"):
            # "test","rps","avg_latency_ms","min","p50","p95","p99","max"
            res[cols[0].lower()] = {
                "rps": float(cols[1]),
                "p50_ms": float(cols[4]),
                "p99_ms": float(cols[6]),
            }
            print(
                f"  redis    {cols[0]:4s} {float(cols[1]):>10.0f} req/s  "
                f"p50 {float(cols[4]):.3f} ms  p99 {float(cols[6]):.3f} ms",
                flush=True,
            )
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=64, help="concurrent connections (64)")
    p.add_argument("--keys", type=int, default=1000, help="distinct keys (1000)")
    p.add_argument("--value-bytes", type=int, default=100, help="value size (100)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--redis-requests", type=int, default=500_000)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install wrk): cannot run the HTTP benchmarks")
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="maxage-bench-"))
    scripts = {
        "get": tmp / "get.lua",
        "put": tmp / "put.lua",
    }
    scripts["get"].write_text(GET_LUA.format(keys=args.keys))
    scripts["put"].write_text(PUT_LUA.format(keys=args.keys, size=args.value_bytes))
    print(
        f"cache-server bench: {args.connections} connections, {args.keys} keys, "
        f"{args.value_bytes}-byte values, {args.duration}s per run, server on cpu "
        f"{args.server_cpu}, load on cpu {args.load_cpu}",
        flush=True,
    )
    results: dict[str, Any] = {"params": vars(args) | {"json": str(args.json)}}
    results["maxage"] = _bench_server(
        "maxage",
        [
            sys.executable, "-m", "maxage.cacheserver", "--port", "0",
            "--max-bytes", "1GiB", "--request-timeout", "30",
        ],
        scripts,
        args,
    )  # fmt: skip
    go = _build_go()
    if go is not None:
        results["go"] = _bench_server("go", [go, "-addr", "127.0.0.1:0"], scripts, args)
        for op in ("get", "put"):
            m, g = results["maxage"][op], results["go"][op]
            ratio = m["rps"] / g["rps"]
            results[f"{op}_ratio"] = ratio
            print(
                f"  {op.upper()}: maxage/go throughput {ratio:.2f}x; "
                f"p99 maxage {m['p99_ms']:.3f} ms vs go {g['p99_ms']:.3f} ms"
            )
    results["redis"] = _redis(args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
