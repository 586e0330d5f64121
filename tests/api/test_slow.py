"""Issue 4, black box with a deliberately slowed primary (MAXAGE_TEST_SLOW_STORE_SECONDS, test
only): deadlines (504), disconnect cancellation, concurrent same-key requests (one 201, one
409), SIGTERM drain, and the idempotency-key purge."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import SLOW_ENV, MaxageServer, metric, wait_for

STALL = "1.0"  # seconds each document read/write waits before reaching the primary


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaxageServer]:
    s = MaxageServer(tmp_path_factory.mktemp("slow"), env={SLOW_ENV: STALL})
    yield s
    assert s.stop() == 0, s.stderr()


def metrics(c: httpx.Client) -> str:
    return c.get("/metrics").text


def test_request_timeout_header_gives_504_and_writes_nothing(slow: MaxageServer) -> None:
    with slow.client() as c:
        doc = f"/v1/products/dl-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        r = c.put(doc, json={"name": "x", "price": 1}, headers={"x-request-timeout": "0.2"})
        elapsed = time.monotonic() - t0
        assert r.status_code == 504, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "deadline_exceeded"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        assert elapsed < 0.9
        assert metric(metrics(c), "maxage_deadline_exceeded_total") >= 1
        # The write was cancelled before it reached the primary.
        assert c.get(doc, params={"consistency": "strong"}).status_code == 404
        # A longer header than the server deadline cannot lengthen it; ignored values are ignored.
        ok = c.put(doc, json={"name": "x", "price": 1}, headers={"x-request-timeout": "99999"})
        assert ok.status_code == 201


def test_default_deadline_504(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, "--deadline", "0.3", env={SLOW_ENV: STALL})
    try:
        with s.client() as c:
            t0 = time.monotonic()
            r = c.get("/v1/products")
            assert r.status_code == 504, r.text
            assert r.json()["code"] == "deadline_exceeded"
            assert time.monotonic() - t0 < 0.9
            assert c.get("/livez").status_code == 200  # no I/O, not slowed
    finally:
        assert s.stop() == 0, s.stderr()


def test_disconnect_cancels_work(slow: MaxageServer) -> None:
    with slow.client() as c:
        before = metric(metrics(c), "maxage_requests_cancelled_total")
        doc = f"/v1/profiles/gone-{uuid.uuid4().hex}"
        with slow.client(timeout=0.2) as impatient:
            with pytest.raises(httpx.TimeoutException):
                impatient.get("/v1/products", params={"consistency": "strong"})
            with pytest.raises(httpx.TimeoutException):
                impatient.put(doc, json={"name": "never"})

        def counted() -> bool:
            return metric(metrics(c), "maxage_requests_cancelled_total") >= before + 2

        wait_for(counted, 5, "cancellations in metrics")
        assert 'http_response_status_code="499"' in metrics(c)
        # The cancelled write never reached the primary.
        assert c.get(doc, params={"consistency": "strong"}).status_code == 404


def test_concurrent_same_key_one_201_one_409(slow: MaxageServer) -> None:
    key = uuid.uuid4().hex
    body = {"name": "once", "price": 1}
    results: dict[str, httpx.Response] = {}
    with slow.client() as c:
        claims = metric(metrics(c), "maxage_store_operations_total", op="idempotency_claim")

        def first() -> None:
            with slow.client() as c1:
                results["first"] = c1.post("/v1/products", json=body,
                                           headers={"idempotency-key": key})  # fmt: skip

        t = threading.Thread(target=first)
        t.start()
        # The first request has claimed the key (claims are not slowed) and now waits in the
        # slowed write: the second arrives while it is certainly in flight.
        wait_for(
            lambda: (
                metric(metrics(c), "maxage_store_operations_total", op="idempotency_claim") > claims
            ),
            5,
            "the first claim",
        )
        second = c.post("/v1/products", json=body, headers={"idempotency-key": f'"{key}"'})
        t.join()
        first_r = results["first"]
        assert first_r.status_code == 201, first_r.text
        assert second.status_code == 409, second.text
        assert second.json()["code"] == "idempotency_key_in_use"
        assert second.headers["retry-after"]
        # After the first finished, the retry is a replay of it.
        replay = c.post("/v1/products", json=body, headers={"idempotency-key": key})
        assert replay.status_code == 201
        assert replay.content == first_r.content
        assert replay.headers["idempotent-replayed"] == "true"


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, env={SLOW_ENV: STALL})
    results: dict[str, object] = {}
    with s.client() as c:
        c.post("/v1/profiles", json={"name": "feed"})

        def slow_write() -> None:
            with s.client() as c1:
                results["write"] = c1.post("/v1/products", json={"name": "late", "price": 1})

        def follow() -> None:
            with s.client() as c2, c2.stream("GET", "/v1/profiles/changes",
                                             params={"follow": "true"}) as r:  # fmt: skip
                results["feed_status"] = r.status_code
                results["feed"] = b"".join(r.iter_bytes())

        threads = [threading.Thread(target=slow_write), threading.Thread(target=follow)]
        for t in threads:
            t.start()
        wait_for(lambda: metric(metrics(c), "http_server_active_requests") >= 3, 5, "in flight")
    t0 = time.monotonic()
    rc = s.stop(signal.SIGTERM)
    for t in threads:
        t.join(10)
    assert rc == 0, s.stderr()
    write = results["write"]
    assert isinstance(write, httpx.Response) and write.status_code == 201  # finished, not cut
    # The follow stream ends on drain instead of holding the shutdown to the kill timeout.
    assert results["feed_status"] == 200
    assert b'"op":"put"' in results["feed"]  # type: ignore[operator]
    assert time.monotonic() - t0 < 8
    with pytest.raises(httpx.ConnectError):
        httpx.get(s.url + "/livez", timeout=1)


def test_idempotency_keys_expire_and_are_purged(tmp_path: Path) -> None:
    s = MaxageServer(tmp_path, "--idempotency-ttl", "1")
    try:
        with s.client() as c:
            key = uuid.uuid4().hex
            assert c.post("/v1/inventory", json={"sku": "a", "quantity": 1},
                          headers={"idempotency-key": key}).status_code == 201  # fmt: skip

            def rows() -> int:
                with sqlite3.connect(s.db, timeout=5) as db:
                    return int(db.execute("SELECT count(*) FROM idempotency").fetchone()[0])

            assert rows() == 1
            wait_for(lambda: rows() == 0, 10, "the periodic purge")
            # Expired: the key names a new request now.
            r = c.post("/v1/inventory", json={"sku": "b", "quantity": 2},
                       headers={"idempotency-key": key})  # fmt: skip
            assert r.status_code == 201
            assert "idempotent-replayed" not in r.headers
    finally:
        assert s.stop() == 0, s.stderr()
