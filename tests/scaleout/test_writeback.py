"""Write-back and increments against real ``maxage serve`` processes (SQLite and PostgreSQL).

The loss window of the contract (docs/consistency.md "Write-back"): N clients on two
processes increment one counter M times each; after SIGTERM of both the primary holds
exactly N x M; after kill -9 of both it holds at least every increment acknowledged
before the last flush window began (and never more than was sent).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx

from tests.scaleout.conftest import Server, metric

FLUSH = 0.2  # flush_interval of the write-back collection, seconds
CONFIG = f"""
[collections.counters]
max_staleness = "1s"
write_policy = "write-back"
flush_interval = "{int(FLUSH * 1000)}ms"

[collections.counters.schema]
type = "object"
required = ["views"]

[collections.counters.schema.properties.views]
type = "integer"
minimum = 0

[collections.counters.schema.properties.title]
type = "string"

[collections.likes]
max_staleness = "1s"
write_policy = "write-back"
flush_interval = "3s"

[collections.likes.schema]
type = "object"

[collections.plain]
max_staleness = "1s"
write_policy = "write-through"

[collections.plain.schema]
type = "object"

[collections.plain.schema.properties.views]
type = "integer"
"""
INC = {"field": "/views", "by": 1}


def _server(work: Path, db: tuple[str, str], name: str) -> Server:
    (work / "maxage.toml").write_text(CONFIG)
    return Server(work, db=db[0], cache=None, schema=db[1], fault_injection=False, name=name)


def _start(work: Path, db: tuple[str, str], *names: str) -> list[Server]:
    servers = [_server(work, db, n).start() for n in names]
    return [s.ready() for s in servers]


def _views(server: Server, doc: str = "c") -> int:
    with server.client() as c:
        r = c.get(f"/v1/counters/{doc}", params={"consistency": "strong"})
        assert r.status_code == 200, r.text
        views = r.json()["data"]["views"]
        assert isinstance(views, int)
        return views


class Clients:
    """``n`` threads, each incrementing ``counters/c`` on its server until it has sent
    ``m`` (or until stopped); every acknowledged increment is recorded with its time."""

    def __init__(self, servers: list[Server], n: int, m: int | None) -> None:
        self.acks: list[float] = []
        self.errors: list[str] = []
        self.sent = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(servers[i % len(servers)].url, m))
            for i in range(n)
        ]

    def _run(self, url: str, m: int | None) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as c:
            i = 0
            while (m is None or i < m) and not self.stop.is_set():
                i += 1
                with self._lock:
                    self.sent += 1
                try:
                    r = c.post("/v1/counters/c:increment", json=INC)
                except httpx.TransportError:
                    return  # the server was killed under us: this one was not acknowledged
                if r.status_code != 200:
                    self.errors.append(f"{r.status_code} {r.text}")
                    return
                with self._lock:
                    self.acks.append(time.time())

    def __enter__(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def _create(server: Server) -> None:
    with server.client() as c:
        assert c.put("/v1/counters/c", json={"views": 0}).status_code == 201


def test_sigterm_of_two_processes_loses_nothing(tmp_path: Path, primary: tuple[str, str]) -> None:
    n, m = 8, 40
    a, b = _start(tmp_path, primary, "a", "b")
    _create(a)
    with Clients([a, b], n, m) as clients:
        for t in clients.threads:
            t.join(120)
    assert clients.errors == []
    assert len(clients.acks) == n * m
    # Both stop with writes still buffered (the window is 200 ms): SIGTERM flushes them.
    assert a.stop() == 0 and b.stop() == 0
    (c,) = _start(tmp_path, primary, "c")
    try:
        assert _views(c) == n * m
    finally:
        c.stop()


def test_kill_9_loses_at_most_the_flush_window(tmp_path: Path, primary: tuple[str, str]) -> None:
    a, b = _start(tmp_path, primary, "a", "b")
    _create(a)
    with Clients([a, b], 6, None) as clients:
        began, deadline = time.monotonic(), time.monotonic() + 60
        # Enough traffic, for long enough, for many flushes before the kill.
        while len(clients.acks) < 300 or time.monotonic() - began < 3.0:
            assert time.monotonic() < deadline and not clients.errors, clients.errors
            time.sleep(0.05)
        killed_at = time.time()
        a.stop(signal.SIGKILL, group=True)
        b.stop(signal.SIGKILL, group=True)
    acked = sorted(clients.acks)
    (c,) = _start(tmp_path, primary, "c")
    try:
        views = _views(c)
    finally:
        c.stop()
    # Flushes start at most FLUSH after an ack; what a crash loses was acknowledged after
    # the last flush began. The slack covers that flush's own transaction and the gap
    # between the two kills on a loaded machine (it is generous, not the contract).
    slack = 1.0
    safe = sum(1 for t in acked if t < killed_at - FLUSH - slack)
    assert safe > 0
    assert safe <= views <= clients.sent, (safe, views, len(acked), clients.sent)


def test_increment_on_write_through_sums_exactly(tmp_path: Path) -> None:
    (a,) = _start(tmp_path, (f"sqlite:///{tmp_path}/db.sqlite", "unused"), "a")
    try:
        with a.client() as c:
            assert c.put("/v1/plain/p", json={"views": 5}).status_code == 201
            r = c.post("/v1/plain/p:increment", json={"field": "/views", "by": 3})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["views"] == 8 and r.headers["etag"] == '"2"'
            assert r.json()["meta"]["consistency"] == "strong"
            # A missing field counts from 0; nested parents are created.
            r = c.post("/v1/plain/p:increment", json={"field": "/stats/likes"})
            assert r.json()["data"] == {"views": 8, "stats": {"likes": 1}}
            # Preconditions and idempotency work as on any primary write.
            stale = c.post("/v1/plain/p:increment", json=INC, headers={"If-Match": '"1"'})
            assert stale.status_code == 412
            key = {"Idempotency-Key": "inc-1"}
            first = c.post("/v1/plain/p:increment", json=INC, headers=key)
            again = c.post("/v1/plain/p:increment", json=INC, headers=key)
            assert first.json()["data"]["views"] == 9 and again.content == first.content
            assert again.headers["idempotent-replayed"] == "true"
            # Refusals: bad body (every error with its pointer), not a number, no document.
            bad = c.post("/v1/plain/p:increment", json={"field": "views", "by": "1", "x": 0})
            assert bad.status_code == 422
            assert {e["pointer"] for e in bad.json()["errors"]} == {"/field", "/by", "/x"}
            assert c.put("/v1/plain/q", json={"views": "many"}).status_code == 422
            assert c.put("/v1/plain/q", json={"name": "x"}).status_code == 201
            nan = c.post("/v1/plain/q:increment", json={"field": "/name"})
            assert nan.status_code == 422 and nan.json()["errors"][0]["pointer"] == "/name"
            assert c.post("/v1/plain/zz:increment", json=INC).status_code == 404
            assert c.get("/v1/plain/p:increment").status_code == 405
            assert c.get("/v1/plain/p").json()["data"]["views"] == 9
    finally:
        a.stop()


def test_write_back_contract_on_one_process(tmp_path: Path) -> None:
    (a,) = _start(tmp_path, (f"sqlite:///{tmp_path}/db.sqlite", "unused"), "a")
    try:
        with a.client() as c:
            assert c.put("/v1/counters/c", json={"views": 1}).status_code == 201
            r = c.post("/v1/counters/c:increment", json={"field": "/views", "by": 2})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["data"]["views"] == 3 and "etag" not in r.headers
            assert body["meta"]["consistency"] == "write-back"
            assert body["meta"]["pendingWrites"] >= 1 and body["version"] == 1
            # Read-your-writes on this process, before the flush.
            patched = c.patch("/v1/counters/c", json={"title": "t"},
                              headers={"content-type": "application/merge-patch+json"})  # fmt: skip
            assert patched.status_code == 200 and patched.json()["data"]["title"] == "t"
            seen = c.get("/v1/counters/c").json()
            assert seen["data"] == {"views": 3, "title": "t"}
            # A strong read flushes this document first, then reads the primary.
            strong = c.get("/v1/counters/c", params={"consistency": "strong"}).json()
            assert strong["data"] == {"views": 3, "title": "t"} and strong["version"] == 2
            assert strong["meta"]["consistency"] == "strong"
            # Preconditions and idempotency keys need the primary: refused, nothing buffered.
            for headers in ({"If-Match": '"2"'}, {"Idempotency-Key": "k1"}):
                refused = c.post("/v1/counters/c:increment", json=INC, headers=headers)
                assert refused.status_code == 400
                assert refused.json()["code"] == "write_back_unsupported"
            # Validated when acknowledged: a write the schema refuses is not buffered.
            neg = c.post("/v1/counters/c:increment", json={"field": "/views", "by": -10})
            assert neg.status_code == 422
            assert c.post("/v1/counters/none:increment", json=INC).status_code == 404
            # PUT goes to the primary at once, after this document's buffer.
            assert c.post("/v1/counters/c:increment", json=INC).status_code == 200
            put = c.put("/v1/counters/c", json={"views": 100})
            assert put.status_code == 200 and put.json()["version"] == 4
            assert c.post("/v1/counters/c:increment", json=INC).json()["data"]["views"] == 101
            # Within the window the buffer is flushed without anyone asking.
            deadline = time.monotonic() + 10
            while True:
                seen = c.get("/v1/counters/c")
                assert seen.status_code == 200, seen.text
                if seen.json()["meta"]["consistency"] != "write-back":
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            after = seen.json()
            assert after["data"]["views"] == 101 and after["version"] == 5
            text = c.get("/metrics").text
            labels = {"collection": "counters"}
            assert metric(text, "maxage_writeback_acknowledged_total", **labels) == 4
            assert metric(text, "maxage_writeback_flushed_total", **labels) == 4
            assert metric(text, "maxage_writeback_pending", **labels) == 0
            assert metric(text, "maxage_writeback_flush_interval_seconds", **labels) == FLUSH
    finally:
        assert a.stop() == 0


def test_one_flush_transaction_and_a_document_deleted_meanwhile(
    tmp_path: Path, primary: tuple[str, str]
) -> None:
    a, b = _start(tmp_path, primary, "a", "b")
    try:
        with a.client() as ca, b.client() as cb:
            for doc in ("l1", "l2", "l3"):
                assert ca.put(f"/v1/likes/{doc}", json={"n": 0}).status_code == 201
            for doc in ("l1", "l2", "l3"):
                for _ in range(2):
                    inc = ca.post(f"/v1/likes/{doc}:increment", json={"field": "/n"})
                    assert inc.status_code == 200, inc.text
            # Another process deletes l2 while A still holds two increments of it.
            assert cb.delete("/v1/likes/l2").status_code == 204
            labels = {"collection": "likes"}
            deadline = time.monotonic() + 30
            while metric(ca.get("/metrics").text, "maxage_writeback_pending", **labels):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            text = ca.get("/metrics").text
            # l1 and l3 committed (the batch aborted on l2 and each went on its own); the
            # two increments of l2 were dropped, counted and logged.
            assert metric(text, "maxage_writeback_flushed_total", **labels) == 4
            assert metric(text, "maxage_writeback_dropped_total", **labels, reason="not_found") == 2
            for doc in ("l1", "l3"):
                got = cb.get(f"/v1/likes/{doc}", params={"consistency": "strong"}).json()
                assert got["data"]["n"] == 2 and got["version"] == 2
            assert cb.get("/v1/likes/l2").status_code == 404
            # Without a casualty, the documents of a flush commit in one transaction.
            for doc in ("l1", "l3"):
                assert (
                    ca.post(f"/v1/likes/{doc}:increment", json={"field": "/n"}).status_code == 200
                )
            before = metric(text, "maxage_writeback_flushes_total", **labels)
            while metric(ca.get("/metrics").text, "maxage_writeback_pending", **labels):
                assert time.monotonic() < deadline + 30
                time.sleep(0.1)
            after = metric(ca.get("/metrics").text, "maxage_writeback_flushes_total", **labels)
            assert after == before + 1
        assert "dropped at the flush: not found" in a.stderr()
    finally:
        a.stop()
        b.stop()
