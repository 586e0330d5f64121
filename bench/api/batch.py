"""Documents written per second: one batch of N creates vs N single POSTs, same server.

    python bench/api/batch.py [--seconds 5] [--clients 4] [--size 100] [--rounds 3] [--db URL]

One ``maxage serve`` (1 worker, pinned to CPU 0 when taskset exists); ``--clients``
concurrent keep-alive connections (httpx, one thread each, pinned to CPU 1) either POST
single documents or POST ``:batch`` with ``--size`` creates, in alternating rounds.
Reported: documents/s of each (median round) and their ratio; and, as a check, that the
change feed holds exactly one row per acknowledged document. The client is Python and
pays per request, so the ratio includes its saving too (as a real client's would).
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
[collections.docs]
max_staleness = "1s"
write_policy = "write-through"
[collections.docs.schema]
type = "object"
required = ["title"]
properties = {title = {type = "string"}, n = {type = "integer"}}
"""
DOC = {"title": "a document of a few dozen bytes, like a blog comment", "n": 1}


def hammer(url: str, size: int, clients: int, seconds: float) -> int:
    """Documents acknowledged in ``seconds``: single POSTs (``size`` 0) or batches."""
    counts = [0] * clients
    end = time.monotonic() + seconds
    body = {"operations": [{"op": "create", "data": DOC}] * size}

    def one(i: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < end:
                if size:
                    r = c.post("/v1/docs:batch", json=body)
                    ok, n = r.status_code == 200, size
                else:
                    r = c.post("/v1/docs", json=DOC)
                    ok, n = r.status_code == 201, 1
                if ok:
                    counts[i] += n
                else:  # shed (503 overloaded) on a busy machine: not acknowledged, not counted
                    assert r.status_code == 503, r.text
                    time.sleep(0.01)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def feed_rows(url: str) -> int:
    """The change log's rows of the collection (paged through the feed)."""
    rows, after = 0, "0"
    with httpx.Client(base_url=url, timeout=60) as c:
        while True:
            r = c.get("/v1/docs/changes", params={"after": after, "limit": "10000"})
            lines = r.text.splitlines()
            rows += len(lines)
            if len(lines) < 10000:
                return rows
            after = httpx.Response(200, content=lines[-1]).json()["cursor"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="", help="primary URL (default: a fresh SQLite file)")
    args = ap.parse_args()
    cmd, port, url, db = serve_config(
        CONFIG, args.db, "--max-batch-operations", str(max(args.size, 1))
    )
    rates: dict[str, list[float]] = {"single": [], "batch": []}
    total = 0
    with server(cmd, port):
        for _ in range(args.rounds):
            for kind, size in (("single", 0), ("batch", args.size)):
                n = hammer(url, size, args.clients, args.seconds)
                total += n
                rates[kind].append(n / args.seconds)
        logged = feed_rows(url)
    single, batch = statistics.median(rates["single"]), statistics.median(rates["batch"])
    print(f"db {db.split(':')[0]}, {args.clients} clients, batches of {args.size}, "
          f"{args.rounds} x {args.seconds:g}s")  # fmt: skip
    print(
        f"single POSTs:  {single:8.0f} documents/s  (rounds: {[round(r) for r in rates['single']]})"
    )
    print(
        f"batches:       {batch:8.0f} documents/s  (rounds: {[round(r) for r in rates['batch']]})"
    )
    print(f"ratio batch / single: {batch / single:.2f}")
    print(f"one change row per acknowledged document: {logged == total} ({logged} vs {total})")
    return 0 if logged == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
