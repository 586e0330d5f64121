"""Named consumers of the change feed against real ``maxage serve`` processes: resume
where acknowledged across disconnects and restarts (nothing skipped, nothing duplicated
past the acknowledged cursor), one reader per name on every process, lag under a paused
consumer."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx

from tests.scaleout.conftest import Server, metric

CONFIG = """
[collections.events]
max_staleness = "1s"
write_policy = "write-through"
consumer_lag_limit = "2s"

[collections.events.schema]
type = "object"
"""


def _start(work: Path, db: tuple[str, str], *names: str) -> list[Server]:
    (work / "maxage.toml").write_text(CONFIG)
    servers = []
    for n in names:
        server = Server(work, db=db[0], cache=None, schema=db[1], fault_injection=False, name=n)
        servers.append(server.start())
    return [s.ready() for s in servers]


def _write(server: Server, ids: list[str]) -> None:
    """PUT each id, then wait until the feed shows them: PostgreSQL holds back a commit
    while an older transaction is in flight anywhere on the (shared) cluster."""
    with server.client() as c:
        for id in ids:
            assert c.put(f"/v1/events/{id}", json={"id": id}).status_code in (200, 201)
        deadline = time.monotonic() + 10
        while True:
            shown = {json.loads(line)["id"] for line in c.get("/v1/events/changes").text.splitlines()}
            if set(ids) <= shown or time.monotonic() > deadline:
                return
            time.sleep(0.01)


def _read(server: Server, name: str, **params: str) -> list[dict[str, str]]:
    with server.client() as c:
        r = c.get("/v1/events/changes", params={"consumer": name, **params})
        assert r.status_code == 200, r.text
        return [json.loads(line) for line in r.text.splitlines()]


def _ack(server: Server, name: str, cursor: str) -> httpx.Response:
    with server.client() as c:
        return c.post("/v1/events/changes/ack", json={"consumer": name, "cursor": cursor})


def test_resume_after_disconnect_and_restart(tmp_path: Path, primary: tuple[str, str]) -> None:
    (a,) = _start(tmp_path, primary, "a")
    _write(a, [f"d{i}" for i in range(10)])
    processed: list[str] = []
    # First session: sees all ten, processes (and acknowledges) four, goes away.
    first = _read(a, "billing")
    assert [c["id"] for c in first] == [f"d{i}" for i in range(10)]
    processed += [c["id"] for c in first[:4]]
    assert _ack(a, "billing", first[3]["cursor"]).status_code == 200
    # Reconnect: exactly what follows the acknowledged cursor, nothing before it.
    second = _read(a, "billing")
    assert [c["id"] for c in second] == [f"d{i}" for i in range(4, 10)]
    processed += [c["id"] for c in second[:3]]
    assert _ack(a, "billing", second[2]["cursor"]).status_code == 200
    # An ack never moves back, and a cursor never sent is refused.
    assert _ack(a, "billing", first[0]["cursor"]).json()["cursor"] == second[2]["cursor"]
    too_far = _ack(a, "billing", str(int(second[-1]["cursor"]) + 1000))
    assert too_far.status_code == 422 and too_far.json()["errors"][0]["pointer"] == "/cursor"
    # Restart (SIGTERM, a new process on the same primary) with more writes meanwhile.
    assert a.stop() == 0
    (b,) = _start(tmp_path, primary, "b")
    _write(b, ["d10", "d11"])
    third = _read(b, "billing")
    assert [c["id"] for c in third] == ["d7", "d8", "d9", "d10", "d11"]
    processed += [c["id"] for c in third]
    assert _ack(b, "billing", third[-1]["cursor"]).status_code == 200
    assert _read(b, "billing") == []
    # Nothing skipped, nothing processed twice.
    assert processed == [f"d{i}" for i in range(12)]
    # ack=auto: a read first acknowledges what the previous read was sent.
    _write(b, ["d12", "d13"])
    assert [c["id"] for c in _read(b, "audit", ack="auto")][-2:] == ["d12", "d13"]
    assert _read(b, "audit", ack="auto") == []
    # Other names are independent; bad input is a clear problem.
    assert len(_read(b, "other")) == 14
    with b.client() as c:
        both = c.get("/v1/events/changes", params={"consumer": "x", "after": "3"})
        assert both.status_code == 400 and both.json()["parameter"] == "after"
        bad = c.get("/v1/events/changes", params={"consumer": "_webhook.x"})
        assert bad.status_code == 400
        assert c.post("/v1/events/changes/ack", json={"consumer": "nobody", "cursor": "1"}
                      ).status_code == 404  # fmt: skip
        body = c.post("/v1/events/changes/ack", json={"cursor": -1, "x": 1})
        assert body.status_code == 422
        assert {e["pointer"] for e in body.json()["errors"]} == {"/x", "/consumer", "/cursor"}
    b.stop()


def test_one_reader_per_name_on_every_process(tmp_path: Path, primary: tuple[str, str]) -> None:
    a, b = _start(tmp_path, primary, "a", "b")
    _write(a, ["x1"])
    opened = threading.Event()
    lines: list[str] = []

    def follow() -> None:
        with (
            a.client(timeout=30) as c,
            c.stream(
                "GET", "/v1/events/changes", params={"consumer": "solo", "follow": "true"}
            ) as r,
        ):
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(line)
                opened.set()
                if len(lines) == 2:
                    return

    reader = threading.Thread(target=follow)
    reader.start()
    assert opened.wait(20)
    with b.client() as c:
        busy = c.get("/v1/events/changes", params={"consumer": "solo"})
        assert busy.status_code == 409 and busy.json()["code"] == "consumer_busy"
        assert busy.headers["retry-after"] == "5"
    _write(b, ["x2"])  # the follower on A gets it, then hangs up
    reader.join(20)
    assert [json.loads(x)["id"] for x in lines] == ["x1", "x2"]
    # Once it went away, the name is free on every process.
    deadline = time.monotonic() + 10
    while True:
        with b.client() as c:
            r = c.get("/v1/events/changes", params={"consumer": "solo"})
        if r.status_code == 200:
            break
        assert r.status_code == 409 and time.monotonic() < deadline
        time.sleep(0.1)
    a.stop()
    b.stop()


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_lag_of_a_paused_consumer(tmp_path: Path) -> None:
    (a,) = _start(tmp_path, (f"sqlite:///{tmp_path}/db.sqlite", "unused"), "a")
    _write(a, ["p0", "p1"])
    seen = _read(a, "slow")
    assert _ack(a, "slow", seen[-1]["cursor"]).status_code == 200
    labels = {"collection": "events", "consumer": "slow"}

    def lag() -> tuple[float, float, float]:
        with a.client() as c:
            text = c.get("/metrics").text
        return (
            metric(text, "maxage_consumer_behind_changes", **labels),
            metric(text, "maxage_consumer_lag_seconds", **labels),
            metric(text, "maxage_consumer_over_limit", **labels),
        )

    def wait_for(behind: float) -> tuple[float, float, float]:
        deadline = time.monotonic() + 20
        while (got := lag())[0] != behind:
            assert time.monotonic() < deadline, got
            time.sleep(0.1)
        return got

    assert wait_for(0)[1:] == (0, 0)
    # Paused: five more commits, spread over time; it reads nothing.
    for i in range(5):
        _write(a, [f"q{i}"])
        time.sleep(0.1)
    _, seconds, over = wait_for(5)
    # What it missed, from the feed itself: newest commit minus the first unacknowledged.
    missed = [c for c in _read(a, "probe") if c["id"].startswith("q")]
    expected = _ts(missed[-1]["committedAt"]) - _ts(missed[0]["committedAt"])
    assert abs(seconds - expected) < 0.002 and seconds > 0.3 and over == 0
    # The status page shows it too (from the same metrics, recorded every 2 s).
    deadline = time.monotonic() + 20
    while True:
        with a.client() as c:
            shown = c.get("/status.json").json().get("consumers", [])
        mine = [x for x in shown if x["consumer"] == "slow"]
        if mine and mine[0]["behind"] == 5:
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    with a.client() as c:
        assert "Change-feed consumers" in c.get("/status").text
    # Writers were never held up, and falling behind the limit (2 s) is reported.
    time.sleep(2.1)
    _write(a, ["late"])
    _, seconds, over = wait_for(6)
    assert seconds > 2 and over == 1
    assert "beyond its limit" in a.stderr()
    # Catching up clears it.
    assert _ack(a, "slow", _read(a, "slow")[-1]["cursor"]).status_code == 200
    assert wait_for(0)[1:] == (0, 0)
    a.stop()
