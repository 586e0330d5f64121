"""Streamed responses through ``maxage serve``'s RSGI bridge, against ``--interface asgi``.

A change-feed stream whose store fails after its first lines: the app answers the
failure with a problem response, but the stream's status and headers are gone already.
ASGI refuses the second response (granian drops the connection: the client sees the
stream cut); RSGI has no way to cut a stream, so the bridge ends it there. Either way no
line of the stream is anything but a change: never a problem document glued to it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MaxageServer


@pytest.fixture(params=["rsgi", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MaxageServer]:
    s = MaxageServer(tmp_path, "--interface", request.param)
    try:
        yield s
    finally:
        s.kill()  # its store is broken on purpose: no clean stop to check


def test_a_store_failure_mid_stream_ends_it_without_a_foreign_line(server: MaxageServer) -> None:
    with server.client(timeout=20) as c:
        for i in range(3):
            assert c.post("/v1/products", json={"name": f"p{i}", "price": 1}).status_code == 201
        lines: list[bytes] = []
        with c.stream("GET", "/v1/products/changes", params={"follow": "true"}) as r:
            assert r.status_code == 200
            try:
                for line in r.iter_lines():
                    lines.append(line.encode())
                    if len(lines) == 3:  # the store fails under the follower
                        db = sqlite3.connect(server.db)
                        db.execute("ALTER TABLE changes RENAME TO changes_gone")
                        db.commit()
                        db.close()
            except httpx.RemoteProtocolError:
                pass  # cut (ASGI): the client knows the stream did not end well
    changes = [json.loads(line) for line in lines if line]
    assert [c.get("cursor") for c in changes] == ["1", "2", "3"], lines
