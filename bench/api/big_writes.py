"""Large documents do not stall other requests: /livez latency while clients POST
0.9 MB documents that take ~40 ms each to decode and validate.

    python bench/api/big_writes.py [--writers 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import BIN, free_port, server


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="maxage-big-"))
    port = free_port()
    body = json.dumps({"name": "x", "price": 1, "tags": ["t" * 20] * 40000}).encode()
    stop = threading.Event()
    done = [0]

    def writer() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            while not stop.is_set():
                try:
                    c.post("/v1/products", content=body, headers={"content-type": "application/json"})
                except httpx.HTTPError:
                    return  # the server is stopping
                done[0] += 1

    cmd = [str(BIN / "maxage"), "serve", "--port", str(port), "--db", f"sqlite:///{tmp}/db.sqlite",
           "--access-log", "off"]  # fmt: skip
    with server(cmd, port), httpx.Client(base_url=f"http://127.0.0.1:{port}") as probe:
        threads = [threading.Thread(target=writer) for _ in range(args.writers)]
        for t in threads:
            t.start()
        lat: list[float] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            probe.get("/livez")
            lat.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.01)
        stop.set()
        for t in threads:
            t.join()
    lat.sort()
    if not lat:
        return 1
    print(f"{args.writers} writers, {done[0]} big POSTs (each answered 422 after full validation); "
          f"/livez p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99)]:.1f} ms, "
          f"max {lat[-1]:.1f} ms over {len(lat)} probes")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
