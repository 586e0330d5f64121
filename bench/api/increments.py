"""Increments per second on one hot document: write-back vs write-through, same server.

    python bench/api/increments.py [--seconds 5] [--clients 8] [--rounds 3] [--db URL]

One ``maxage serve`` (1 worker, pinned to CPU 0 when taskset exists) with two
collections that differ only in ``write_policy``; ``--clients`` concurrent
HTTP/1.1 keep-alive connections (httpx, one thread each, pinned to CPU 1)
POST ``:increment`` to one document of each in turn, ``--rounds`` times. Reported:
increments/s of each and their ratio (the median round), and, as a check, that the
primary holds exactly every acknowledged increment after the run (SIGTERM flushes).
The client is Python, so it caps both numbers alike: the ratio understates the gain.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import serve_config, server

CONFIG = """
[collections.wt]
max_staleness = "1s"
write_policy = "write-through"
[collections.wt.schema]
type = "object"
properties = {views = {type = "integer"}}

[collections.wb]
max_staleness = "1s"
write_policy = "write-back"
flush_interval = "250ms"
[collections.wb.schema]
type = "object"
properties = {views = {type = "integer"}}
"""


def hammer(url: str, collection: str, clients: int, seconds: float) -> int:
    """Acknowledged increments of ``collection``/hot in ``seconds`` (one keep-alive
    connection per client thread)."""
    counts = [0] * clients
    end = time.monotonic() + seconds

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < end:
                r = c.post(f"/v1/{collection}/hot:increment", json={"field": "/views"})
                if r.status_code == 200:
                    counts[i] += 1
                else:  # shed (503 overloaded) on a busy machine: not acknowledged, not counted
                    assert r.status_code == 503, r.text
                    time.sleep(0.01)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="", help="primary URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    cmd, port, url, db = serve_config(CONFIG, args.db)
    rates: dict[str, list[float]] = {"wt": [], "wb": []}
    total = {"wt": 0, "wb": 0}
    with server(cmd, port):
        with httpx.Client(base_url=url) as c:
            for col in rates:
                c.put(f"/v1/{col}/hot", json={"views": 0}).raise_for_status()
        for _ in range(args.rounds):
            for col in rates:
                n = hammer(url, col, args.clients, args.seconds)
                total[col] += n
                rates[col].append(n / args.seconds)
    # The server was stopped with SIGINT (a clean stop: the buffer is flushed).
    with server(cmd, port), httpx.Client(base_url=url) as c:
        held = {
            col: c.get(f"/v1/{col}/hot", params={"consistency": "strong"}).json()["data"]["views"]
            for col in rates
        }
    wt, wb = statistics.median(rates["wt"]), statistics.median(rates["wb"])
    print(f"db {db.split(':')[0]}, {args.clients} clients, {args.rounds} x {args.seconds:g}s")
    print(f"write-through: {wt:8.0f} increments/s  (rounds: {[round(r) for r in rates['wt']]})")
    print(f"write-back:    {wb:8.0f} increments/s  (rounds: {[round(r) for r in rates['wb']]})")
    print(f"ratio write-back / write-through: {wb / wt:.2f}")
    print(f"primary holds exactly what was acknowledged: {held == total} ({held} vs {total})")
    return 0 if held == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
