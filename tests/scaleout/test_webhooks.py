"""Webhooks against a real ``maxage serve`` and a real local HTTP receiver (in this test
process): every change delivered in per-document order with valid signatures despite
failures, retries then the dead-letter queue, replay (API and CLI), restart mid-retry."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.scaleout.conftest import Server, metric
from tests.support.launcher import python_m, server_env

SECRET = "whsec-test-0123456789abcdef"


class Receiver:
    """A local webhook receiver: ``fail(n)`` answers 500 to the next ``n`` deliveries
    (``fail(None)``: to every one until told otherwise); records what it accepted."""

    def __init__(self) -> None:
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.refused = 0
        self._failures: int | None = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver._lock:
                    failing = receiver._failures is None or receiver._failures > 0
                    if failing:
                        receiver.refused += 1
                        if receiver._failures is not None:
                            receiver._failures -= 1
                    else:
                        receiver.accepted.append(
                            ({k.lower(): v for k, v in self.headers.items()}, body)
                        )
                self.send_response(500 if failing else 204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/hook"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def fail(self, n: int | None) -> None:
        with self._lock:
            self._failures = n

    def bodies(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(b) for _, b in self.accepted]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.http.shutdown()


def _config(url: str, attempts: int) -> str:
    return f"""
[collections.orders]
max_staleness = "1s"
write_policy = "write-through"

[collections.orders.schema]
type = "object"

[[collections.orders.webhooks]]
name = "billing"
url = "{url}"
secret = "env:ORDERS_HOOK_SECRET"
max_attempts = {attempts}
backoff = "50ms"
"""


def _server(work: Path, receiver: Receiver, attempts: int, name: str = "a") -> Server:
    (work / "maxage.toml").write_text(_config(receiver.url, attempts))
    s = Server(work, db=f"sqlite:///{work}/db.sqlite", cache=None, schema="unused",
               fault_injection=False, name=name)  # fmt: skip
    s.env["ORDERS_HOOK_SECRET"] = SECRET
    return s.start().ready()


def _until(what: str, ok: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _letters(c: httpx.Client) -> list[dict[str, Any]]:
    r = c.get("/v1/_deadletters")
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert isinstance(data, list)
    return data


def _verify(headers: dict[str, str], body: bytes) -> None:
    signed = b"%s.%s.%s" % (
        headers["webhook-id"].encode(),
        headers["webhook-timestamp"].encode(),
        body,
    )
    expected = base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest())
    assert headers["webhook-signature"] == "v1," + expected.decode()
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 300
    assert headers["webhook-id"] == json.loads(body)["id"]


def test_failures_then_success_deliver_everything_in_order(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.fail(3)  # the first three attempts fail: retried, never dead-lettered
    a = _server(tmp_path, receiver, attempts=6)
    with a.client() as c:
        for round_ in range(3):
            for doc in ("o1", "o2"):
                assert c.put(f"/v1/orders/{doc}", json={"n": round_}).status_code in (200, 201)
        assert c.delete("/v1/orders/o2").status_code == 204
    _until("7 deliveries", lambda: len(receiver.accepted) >= 7)
    for headers, body in receiver.accepted:
        _verify(headers, body)
    got = receiver.bodies()
    # Every change, in commit order (so per document in version order), once each here.
    assert [(b["documentId"], b["version"], b["op"]) for b in got] == [
        ("o1", 1, "put"), ("o2", 1, "put"), ("o1", 2, "put"), ("o2", 2, "put"),
        ("o1", 3, "put"), ("o2", 3, "put"), ("o2", 4, "delete"),
    ]  # fmt: skip
    assert len({b["id"] for b in got}) == 7 and receiver.refused == 3
    # Each carries the document's data at that version (null for a delete).
    assert [b["data"] for b in got if b["documentId"] == "o1"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert got[-1]["data"] is None
    with a.client() as c:
        assert _letters(c) == []
        text = c.get("/metrics").text
    labels = {"collection": "orders", "subscription": "billing"}
    assert metric(text, "maxage_webhook_deliveries_total", **labels, outcome="delivered") == 7
    assert metric(text, "maxage_webhook_deliveries_total", **labels, outcome="failed") == 3
    a.stop()


def test_dead_letters_replay_and_restart_mid_retry(tmp_path: Path, receiver: Receiver) -> None:
    receiver.fail(None)  # refuses everything
    a = _server(tmp_path, receiver, attempts=3)
    with a.client() as c:
        assert c.put("/v1/orders/x1", json={"n": 1}).status_code == 201
        assert c.put("/v1/orders/x2", json={"n": 1}).status_code == 201
        # Writers never wait for the receiver.
        _until("two dead letters", lambda: len(_letters(c)) == 2)
        letters = _letters(c)
        assert [d["change"]["id"] for d in letters] == ["x1", "x2"]
        assert letters[0]["attempts"] == 3 and letters[0]["error"] == "HTTP 500"
        one = c.get(f"/v1/_deadletters/{letters[0]['id']}")
        assert one.status_code == 200 and one.json() == letters[0]
        # A replay while the receiver still refuses: 502, the letter stays.
        failed = c.post(f"/v1/_deadletters/{letters[0]['id']}:replay")
        assert failed.status_code == 502 and failed.json()["code"] == "replay_failed"
        receiver.fail(0)
        replayed = c.post(f"/v1/_deadletters/{letters[0]['id']}:replay")
        assert replayed.status_code == 200 and replayed.json()["delivered"] is True
        assert c.get(f"/v1/_deadletters/{letters[0]['id']}").status_code == 404
        assert c.delete(f"/v1/_deadletters/{letters[1]['id']}").status_code == 204
        assert c.delete(f"/v1/_deadletters/{letters[1]['id']}").status_code == 404
        assert c.get("/v1/_deadletters/nope").status_code == 400
    assert [(b["documentId"], b["version"]) for b in receiver.bodies()] == [("x1", 1)]
    # A restart while a change is being retried loses nothing.
    receiver.fail(None)
    with a.client() as c:
        assert c.put("/v1/orders/x3", json={"n": 1}).status_code == 201
    _until("a refused attempt at x3", lambda: receiver.refused >= 5)
    assert a.stop() == 0
    receiver.fail(0)
    b = _server(tmp_path, receiver, attempts=3, name="b")
    _until("x3 delivered after the restart",
           lambda: ("x3", 1) in [(x["documentId"], x["version"]) for x in receiver.bodies()])  # fmt: skip
    with b.client() as c:
        assert _letters(c) == []
        # The deliverer's cursor is exported like a consumer's.
        _until("caught up", lambda: "maxage_consumer_behind_changes{collection=\"orders\","
               "consumer=\"_webhook.billing\"} 0" in c.get("/metrics").text)  # fmt: skip
    # The CLI lists, replays and drops dead letters straight in the primary.
    receiver.fail(None)
    with b.client() as c:
        assert c.put("/v1/orders/x4", json={"n": 1}).status_code == 201
        _until("a dead letter for x4", lambda: len(_letters(c)) == 1)
    receiver.fail(0)
    env = server_env({"ORDERS_HOOK_SECRET": SECRET})
    common = ["--db", f"sqlite:///{tmp_path}/db.sqlite", "--config", str(tmp_path / "maxage.toml")]
    listed = subprocess.run(python_m("deadletters", "list", *common[:2]), env=env,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert "x4" in listed.stdout and "HTTP 500" in listed.stdout
    done = subprocess.run(python_m("deadletters", "replay", "--all", *common), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert ("x4", 1) in [(x["documentId"], x["version"]) for x in receiver.bodies()]
    with b.client() as c:
        assert _letters(c) == []
    b.stop()


def test_one_deliverer_across_processes_and_failover(tmp_path: Path, receiver: Receiver) -> None:
    a = _server(tmp_path, receiver, attempts=3, name="a")
    b = _server(tmp_path, receiver, attempts=3, name="b")
    with a.client() as ca, b.client() as cb:
        for i in range(10):
            client = ca if i % 2 else cb
            assert client.put(f"/v1/orders/m{i}", json={"n": i}).status_code == 201
    _until("ten deliveries", lambda: len(receiver.accepted) >= 10)
    time.sleep(1.0)  # any second deliverer would have sent duplicates by now
    got = [(x["documentId"], x["version"]) for x in receiver.bodies()]
    assert got == [(f"m{i}", 1) for i in range(10)]  # each once, in commit order
    # Exactly one process delivered; after it dies (kill -9, its lease left to lapse) the
    # other takes over from the cursor.
    counts = {}
    for s in (a, b):
        with s.client() as c:
            counts[s.name] = metric(c.get("/metrics").text, "maxage_webhook_deliveries_total",
                                    collection="orders", subscription="billing",
                                    outcome="delivered")  # fmt: skip
    assert sorted(counts.values()) == [0, 10], counts
    deliverer, other = (a, b) if counts["a"] == 10 else (b, a)
    deliverer.stop(signal.SIGKILL, group=True)
    with other.client() as c:
        assert c.put("/v1/orders/after", json={"n": 1}).status_code == 201
    _until("the survivor delivers", lambda: len(receiver.accepted) >= 11, timeout=60)
    assert receiver.bodies()[-1]["documentId"] == "after"
    assert len(receiver.accepted) == 11
    other.stop()
