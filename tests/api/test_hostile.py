"""Hostile clients against a real ``maxage serve`` (issue "Hardening", the API half):
bounded metric labels, slow and vanishing bodies, deep nesting, non-ASCII digits,
oversized pages, session reads ahead of the primary, dot ids, If-Match: *, 406, 428,
and the fault endpoint's all-or-nothing validation."""

from __future__ import annotations

import http.client
import json
import random
import socket
import string
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import MaxageServer, metric

CONFIG = """
[collections.notes]
max_staleness = "5s"
read_modes = ["bounded", "strong", "session"]
require_if_match = true
[collections.notes.schema]
type = "object"
properties = { text = { type = "string" }, deep = { type = "array" } }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaxageServer]:
    work = tmp_path_factory.mktemp("hostile")
    (work / "c.toml").write_text(CONFIG)
    s = MaxageServer(work, "--config", str(work / "c.toml"), "--body-limit", "3MiB",
                     "--body-timeout", "1s", "--fault-injection")  # fmt: skip
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()


def _raw(server: MaxageServer, data: bytes, *, wait: float = 5.0) -> bytes:
    with socket.create_connection((server.host, server.port), timeout=wait) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_unknown_methods_share_one_series(server: MaxageServer) -> None:
    rng = random.Random(7)

    def storm() -> int:
        with server.client() as c:
            for _ in range(200):
                method = "".join(rng.choice(string.ascii_uppercase) for _ in range(8))
                r = c.request(method, "/v1/notes")
                assert r.status_code in (405, 501), r.status_code
            c.get("/metrics")
            text = c.get("/metrics").text
            assert 'http_request_method="_OTHER"' in text
            return len(text.splitlines())

    first = storm()
    assert storm() == first  # 200 new method tokens, not one new series


def test_a_stalled_body_gets_408_and_a_vanished_client_is_no_500(server: MaxageServer) -> None:
    head = (b"POST /v1/notes HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")  # fmt: skip
    t0 = time.monotonic()
    out = _raw(server, head + b'{"text": "sl', wait=10)
    assert out.startswith(b"HTTP/1.1 408"), out[:80]
    assert time.monotonic() - t0 < 8
    for _ in range(20):  # clients that go away mid-body
        with socket.create_connection((server.host, server.port)) as sock:
            sock.sendall(head + b'{"te')
    with server.client() as c:
        text = c.get("/metrics").text
        assert metric(text, "http_server_request_duration_seconds_count",
                      http_request_method="POST", http_route="/v1/notes",
                      http_response_status_code="500") == 0  # fmt: skip


def test_bad_input_is_a_400_not_a_500(server: MaxageServer) -> None:
    with server.client() as c:
        deep = b'{"deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        r = c.post("/v1/notes", content=deep, headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["code"] == "malformed_json"
        doc = c.post("/v1/notes", json={"text": "x"}).json()["id"]
        for url in (f"/v1/notes/{doc}?min_version=%C2%B2", "/v1/notes/changes?after=%C2%B2",
                    "/v1/notes/changes?limit=%C2%B2", "/v1/notes/changes?limit=" + "9" * 5000):  # fmt: skip
            r = c.get(url)
            assert r.status_code == 400 and r.json()["code"] == "invalid_parameter", url


def test_a_page_stops_at_its_byte_budget(server: MaxageServer) -> None:
    with server.client() as c:
        big = "x" * (2_500_000)
        for i in range(3):
            assert c.put(f"/v1/notes/big-{i}", json={"text": big}).status_code == 201
        page = c.get("/v1/notes", params={"page_size": 100}).json()
        assert page["meta"]["shortened"] is True and page["next_page_token"]
        assert len(page["data"]) < 100
        seen = [d["id"] for d in page["data"]]
        while page["next_page_token"]:
            page = c.get("/v1/notes", params={"page_size": 100,
                                              "page_token": page["next_page_token"]}).json()  # fmt: skip
            seen += [d["id"] for d in page["data"]]
        assert {"big-0", "big-1", "big-2"} <= set(seen) and len(seen) == len(set(seen))


def test_a_session_read_ahead_of_the_primary_is_refused(server: MaxageServer) -> None:
    with server.client() as c:
        doc = c.post("/v1/notes", json={"text": "v1"}).json()["id"]
        r = c.get(f"/v1/notes/{doc}", params={"min_version": 5})
        assert r.status_code == 409 and r.json()["code"] == "min_version_unavailable"
        assert r.json()["current_version"] == 1
        assert c.get(f"/v1/notes/{doc}", params={"min_version": 1}).status_code == 200
        assert r.headers["retry-after"] == "1"
        assert c.delete(f"/v1/notes/{doc}", headers={"if-match": '"1"'}).status_code == 204
        gone = c.get(f"/v1/notes/{doc}", params={"min_version": 5})
        assert gone.status_code == 404 and gone.json()["code"] == "document_not_found"
        r = c.post("/v1/notes", json={"text": "x"}, headers={"if-match": '"1"'})
        assert r.status_code == 400 and r.json()["code"] == "invalid_parameter"


def test_dot_ids_are_refused(server: MaxageServer) -> None:
    for doc in (".", "..", "abc%0A"):
        conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
        conn.request("PUT", f"/v1/notes/{doc}", body=b'{"text":"x"}',
                     headers={"content-type": "application/json"})  # fmt: skip
        r = conn.getresponse()
        body = json.loads(r.read())
        conn.close()
        assert r.status == 400 and body["code"] == "invalid_parameter", (doc, body)


def test_if_match_star_and_require_if_match(server: MaxageServer) -> None:
    with server.client() as c:
        doc = c.post("/v1/notes", json={"text": "a"}).json()["id"]
        patch = {"content-type": "application/merge-patch+json"}
        r = c.patch(f"/v1/notes/{doc}", content=b'{"text":"b"}', headers=patch)
        assert r.status_code == 428 and r.json()["code"] == "precondition_required"
        r = c.patch(f"/v1/notes/{doc}", content=b'{"text":"b"}', headers={**patch, "if-match": "*"})
        assert r.status_code == 200 and r.headers["etag"] == '"2"'
        r = c.patch("/v1/notes/nope", content=b'{"text":"b"}', headers={**patch, "if-match": "*"})
        assert r.status_code == 412
        assert c.delete(f"/v1/notes/{doc}").status_code == 428
        assert c.delete(f"/v1/notes/{doc}", headers={"if-match": '"2"'}).status_code == 204


def test_accept_without_json_is_406(server: MaxageServer) -> None:
    with server.client() as c:
        doc = c.post("/v1/notes", json={"text": "a"}).json()["id"]
        c.get(f"/v1/notes/{doc}")
        assert c.get(f"/v1/notes/{doc}").headers["cache-status"].endswith("detail=l1")  # hot
        r = c.get(f"/v1/notes/{doc}", headers={"accept": "text/html"})
        assert r.status_code == 406 and r.json()["code"] == "not_acceptable"
        for accept in (
            "application/json",
            "*/*",
            "application/*",
            "text/html, application/json;q=0.5",
        ):
            assert c.get(f"/v1/notes/{doc}", headers={"accept": accept}).status_code == 200
        assert (
            c.get("/v1/notes/changes", headers={"accept": "application/x-ndjson"}).status_code
            == 200
        )


def test_fault_endpoint_validates_everything_before_applying(
    server: MaxageServer, tmp_path: Path
) -> None:
    with server.client() as c:
        assert (
            c.put("/_maxage/faults", json={"faults": {"drop": 0.5}, "seed": 3}).status_code == 200
        )
        for bad in ({"faults": {"drop": 0.1}, "seed": "x"}, {"faults": {"drop": 0.1}, "params": {"nope": 1}},
                    {"faults": {"drop": 2}}, {"faults": {"drop": 0.1}, "extra": 1}, [1, 2],
                    {"targets": {"delay": ["notes/a"]}}, {"targets": {"drop": "notes/a"}},
                    {"targets": {"drop": [1]}}, {"targets": ["drop"]}):  # fmt: skip
            r = c.put("/_maxage/faults", json=bad)
            assert r.status_code == 400, bad
        state = c.get("/_maxage/faults").json()
        assert state["faults"] == {"drop": 0.5} and state["seed"] == 3
        assert state["targets"] == {} and state["holding"] == []
        aimed = {"faults": {}, "targets": {"drop": ["notes/a"], "pause-fill": ["notes/b"]}}
        assert c.put("/_maxage/faults", json=aimed).status_code == 200
        assert c.get("/_maxage/faults").json()["targets"] == aimed["targets"]
        assert c.delete("/_maxage/faults").status_code == 200
