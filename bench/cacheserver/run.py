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
    .venv/bin/python bench/cacheserver/run.py --entries 1000,1000000   # big caches

Ratios (maxage / Go) are what to compare across machines, not absolute numbers.
The servers are measured in alternating rounds (medians reported), and each run
also records the server's CPU time per request (utime+stime from /proc), which
stays meaningful when other processes compete for the cores.
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

# --entries: also the tail beyond wrk's --latency table (p99.9 and max, microseconds).
TAIL_LUA = """
done = function(summary, latency, requests)
  io.write(string.format("p999_us %d\\nmax_us %d\\n", latency:percentile(99.9), latency.max))
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


RT: list[str] = []  # ["chrt", "-f", "50"] with --realtime


def _start(cmd: list[str], cpu: int) -> tuple[subprocess.Popen[str], str]:
    full = [*RT, "taskset", "-c", str(cpu), *cmd] if shutil.which("taskset") else cmd
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
    res: dict[str, Any] = {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }
    for name in ("p999_us", "max_us"):  # printed by TAIL_LUA
        m = re.search(rf"^{name} (\d+)$", out, re.MULTILINE)
        if m:
            res[name.replace("_us", "_ms")] = int(m.group(1)) / 1000
    return res


def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (Linux /proc), or NaN where unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wrk(
    base: str, script: Path, args: argparse.Namespace, pid: int | None = None
) -> tuple[dict[str, Any], str]:
    cmd = [
        *RT, "taskset", "-c", str(args.load_cpu),
        "wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency",
        "-s", str(script), base,
    ]  # fmt: skip
    c0 = _cpu_seconds(pid) if pid else float("nan")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    c1 = _cpu_seconds(pid) if pid else float("nan")
    res = _parse_wrk(out)
    m = re.search(r"(\d+) requests in", out)
    n = int(m.group(1)) if m else 0
    # Server CPU time per request: robust against other load on a shared machine.
    res["cpu_us_per_req"] = (c1 - c0) / n * 1e6 if n else float("nan")
    return res, " ".join(cmd)


def _print(name: str, op: str, res: dict[str, Any]) -> None:
    print(
        f"  {name:8s} {op.upper():4s} {res['rps']:>10.0f} req/s  "
        f"p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  "
        f"server cpu {res.get('cpu_us_per_req', float('nan')):.1f} us/req"
        + (f"  non-2xx {res['non_2xx']}" if res["non_2xx"] else "")
        + (f"  socket errors: {res['socket_errors']}" if res["socket_errors"] else ""),
        flush=True,
    )


def _median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


def _bench_servers(
    servers: dict[str, list[str]], scripts: dict[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """Start every server (all pinned to the server CPU; only the one under load is busy),
    then alternate wrk runs between them round by round, so that background load on a
    shared machine hits each of them alike. Reports medians over the rounds."""
    procs: dict[str, subprocess.Popen[str]] = {}
    bases: dict[str, str] = {}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"get": [], "put": []} for n in servers}
    try:
        for name, cmd in servers.items():
            procs[name], bases[name] = _start(cmd, args.server_cpu)
            _preload(bases[name], args.keys, args.value_bytes)
            warm = argparse.Namespace(**{**vars(args), "duration": 2})
            _wrk(bases[name], scripts["get"], warm)
        wrk_cmds: dict[str, str] = {}
        for rnd in range(args.rounds):
            print(f" round {rnd + 1}/{args.rounds}", flush=True)
            for op in ("get", "put"):
                for name in servers:
                    res, wrk_cmds[op] = _wrk(bases[name], scripts[op], args, procs[name].pid)
                    runs[name][op].append(res)
                    _print(name, op, res)
    finally:
        for proc in procs.values():
            _stop(proc)
    out: dict[str, Any] = {}
    for name, cmd in servers.items():
        out[name] = {"command": " ".join(cmd)}
        for op in ("get", "put"):
            rs = runs[name][op]
            out[name][op] = {
                "rps": _median([r["rps"] for r in rs]),
                "p50_ms": _median([r["p50_ms"] for r in rs]),
                "p99_ms": _median([r["p99_ms"] for r in rs]),
                "cpu_us_per_req": _median([r["cpu_us_per_req"] for r in rs]),
                "socket_errors": "; ".join(r["socket_errors"] for r in rs if r["socket_errors"]),
                "non_2xx": sum(r["non_2xx"] for r in rs),
                "rounds": rs,
                "wrk": wrk_cmds[op].replace(bases[name], "URL"),
            }
    return out


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


def _fill(base: str, keys: int, size: int) -> None:
    """PUT ``k1``..``kN`` (``size``-byte values) pipelined on one connection, in batches:
    a million entries in seconds, where one request at a time would take minutes."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    body = b"x" * size
    batch = 2000
    with socket.create_connection((host.strip("[]"), int(port))) as sock:
        for first in range(1, keys + 1, batch):
            last = min(first + batch, keys + 1)
            sock.sendall(
                b"".join(
                    b"PUT /v1/keys/k%d HTTP/1.1\r\nhost: b\r\ncontent-type: text/plain\r\n"
                    b"content-length: %d\r\n\r\n%s" % (i, size, body)
                    for i in range(first, last)
                )
            )
            want, seen, buf = last - first, 0, b""
            while seen < want:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise RuntimeError("the server closed the connection during the fill")
                buf += chunk
                # Count whole status lines only; keep a possible partial one for the next read.
                cut = buf.rfind(b"\r\n")
                done, buf = buf[: cut + 2], buf[cut + 2 :]
                seen += done.count(b"HTTP/1.1 201 ")
                if b"HTTP/1.1 4" in done or b"HTTP/1.1 5" in done:
                    raise RuntimeError(f"fill refused: {done[:300]!r}")


def _rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _bench_entries(sizes: list[int], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """GET-hit of ``maxage cache-server`` with each number of entries (one server per size,
    all up at once), in alternating rounds: the big-cache p99 against the small one's,
    with every other condition equal. Values and keys are uniform over the entries."""
    procs: dict[int, subprocess.Popen[str]] = {}
    bases: dict[int, str] = {}
    out: dict[str, Any] = {}
    runs: dict[int, list[dict[str, Any]]] = {n: [] for n in sizes}
    scripts = {n: tmp / f"get-{n}.lua" for n in sizes}
    try:
        for n in sizes:
            scripts[n].write_text(GET_LUA.format(keys=n) + TAIL_LUA)
            cmd = [
                sys.executable, "-m", "maxage.cacheserver", "--port", "0",
                "--max-bytes", args.entries_max_bytes, "--request-timeout", "30",
            ]  # fmt: skip
            procs[n], bases[n] = _start(cmd, args.server_cpu)
            rss0 = _rss_bytes(procs[n].pid)
            _fill(bases[n], n, args.value_bytes)
            rss1 = _rss_bytes(procs[n].pid)
            with httpx.Client(base_url=bases[n], trust_env=False) as c:
                text = c.get("/metrics").text
            m = re.search(r"^maxage_cache_entries (\d+)", text, re.MULTILINE)
            entries = int(m.group(1)) if m else -1
            if entries != n:
                raise RuntimeError(f"filled {n} keys but the server holds {entries}")
            out[str(n)] = {"entries": entries, "rss_bytes_per_entry": (rss1 - rss0) / n}
            print(f"  {n:,} entries: {(rss1 - rss0) / n:.0f} B of RSS per entry", flush=True)
            warm = argparse.Namespace(**{**vars(args), "duration": 2})
            _wrk(bases[n], scripts[n], warm)
        for rnd in range(args.rounds):
            print(f" round {rnd + 1}/{args.rounds}", flush=True)
            for n in sizes:
                res, wrk_cmd = _wrk(bases[n], scripts[n], args, procs[n].pid)
                runs[n].append(res)
                _print(f"{n:,}", "get", res)
                out[str(n)]["wrk"] = wrk_cmd.replace(bases[n], "URL")
    finally:
        for proc in procs.values():
            _stop(proc)
    print("medians over rounds:")
    for n in sizes:
        rs = runs[n]
        keys = ("rps", "p50_ms", "p99_ms", "p999_ms", "max_ms", "cpu_us_per_req")
        row = {k: _median([r.get(k, float("nan")) for r in rs]) for k in keys}
        out[str(n)].update(row, rounds=rs)
        print(
            f"  {n:>9,} entries  {out[str(n)]['rss_bytes_per_entry']:.0f} B/entry  "
            f"{row['rps']:.0f} req/s  p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
            f"p99.9 {row['p999_ms']:.3f} ms  max {row['max_ms']:.1f} ms  "
            f"cpu {row['cpu_us_per_req']:.1f} us/req"
        )
    small, big = sizes[0], sizes[-1]
    per_round = [b["p99_ms"] / a["p99_ms"] for a, b in zip(runs[small], runs[big], strict=True)]
    out["p99_ratio"] = _median(per_round)
    print(
        f"  GET p99 {big:,} / {small:,} entries: {out['p99_ratio']:.2f}x "
        f"(per round: {', '.join(f'{r:.2f}' for r in per_round)}; target <= 1.5x)"
    )
    return out


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
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="run servers and wrk under SCHED_FIFO (chrt -f 50; needs root), so that other\n"
        "processes on a shared machine do not preempt them: approximates idle cores.\n"
        "Both servers get the same treatment; the kernel's RT throttling (95%%) keeps\n"
        "the machine responsive",
    )
    p.add_argument("--redis-requests", type=int, default=500_000)
    p.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also run maxage cache-server from this src/ directory (PYTHONPATH), e.g. a\n"
        "`git archive` of the commit before a change, in the same alternating rounds\n"
        "(the way to show a change did not regress on a shared machine)",
    )
    p.add_argument(
        "--entries",
        default=None,
        help="comma-separated entry counts, e.g. 1000,1000000: instead of the Go comparison,\n"
        "measure maxage's GET-hit with that many entries each (smallest first; p99 ratio\n"
        "largest / smallest, same rounds)",
    )
    p.add_argument(
        "--entries-max-bytes", default="4GiB", help="--max-bytes of the --entries servers"
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    if args.realtime:
        if shutil.which("chrt") is None:
            print("--realtime needs chrt (util-linux)")
            return 1
        RT[:] = ["chrt", "-f", "50"]
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
        f"{args.server_cpu}, load on cpu {args.load_cpu}"
        + (", SCHED_FIFO (chrt -f 50)" if args.realtime else ", normal scheduling"),
        flush=True,
    )
    results: dict[str, Any] = {
        "params": vars(args) | {"json": str(args.json), "baseline_src": str(args.baseline_src)}
    }
    if args.entries:
        sizes = sorted(int(x) for x in args.entries.split(","))
        results["entries"] = _bench_entries(sizes, args, tmp)
        if args.json is not None:
            args.json.write_text(json.dumps(results, indent=2))
        shutil.rmtree(tmp, ignore_errors=True)
        return 0
    servers = {
        "maxage": [
            sys.executable, "-m", "maxage.cacheserver", "--port", "0",
            "--max-bytes", "1GiB", "--request-timeout", "30",
        ],
    }  # fmt: skip
    if args.baseline_src is not None:
        src = args.baseline_src.resolve()
        if not (src / "maxage" / "cacheserver").is_dir():
            print(f"--baseline-src {src}: no maxage/cacheserver package there")
            return 1
        servers["baseline"] = ["env", f"PYTHONPATH={src}", *servers["maxage"]]
    go = _build_go()
    if go is not None:
        servers["go"] = [go, "-addr", "127.0.0.1:0"]
    results.update(_bench_servers(servers, scripts, args))
    print("medians over rounds:")
    for name in servers:
        for op in ("get", "put"):
            _print(name, op, results[name][op])
    if "baseline" in servers:
        for op in ("get", "put"):
            m, b = results["maxage"][op], results["baseline"][op]
            per_round = [x["rps"] / y["rps"] for x, y in zip(m["rounds"], b["rounds"], strict=True)]
            results[f"{op}_vs_baseline"] = m["rps"] / b["rps"]
            print(
                f"  {op.upper()}: maxage/baseline throughput {m['rps'] / b['rps']:.2f}x "
                f"(per round: {', '.join(f'{r:.2f}' for r in per_round)}); server cpu/request "
                f"{m['cpu_us_per_req'] / b['cpu_us_per_req']:.2f}x"
            )
    if go is not None:
        for op in ("get", "put"):
            m, g = results["maxage"][op], results["go"][op]
            ratio = m["rps"] / g["rps"]
            per_round = [a["rps"] / b["rps"] for a, b in zip(m["rounds"], g["rounds"], strict=True)]
            results[f"{op}_ratio"] = ratio
            print(
                f"  {op.upper()}: maxage/go throughput {ratio:.2f}x "
                f"(per round: {', '.join(f'{r:.2f}' for r in per_round)}); "
                f"p99 maxage {m['p99_ms']:.3f} ms vs go {g['p99_ms']:.3f} ms; "
                f"server cpu/request maxage/go {m['cpu_us_per_req'] / g['cpu_us_per_req']:.2f}x"
            )
    results["redis"] = _redis(args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
