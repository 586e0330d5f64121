"""Revocation is never stale across processes (P8), and rate limits hold across processes
sharing Redis: two real ``maxage serve`` processes on the real PostgreSQL (and Redis)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.scaleout.conftest import pg_dsn, redis_db_url
from tests.support.launcher import ServerProcess, python_m
from tests.support.services import drop_postgres_schema, unique_name

REDIS_DB = 13
BOUND_A = 0.3  # --auth-staleness: short, so a revoke answers fast
CONFIG = """
[collections.items]
max_staleness = "1s"
ttl = "5m"
[collections.items.schema]
type = "object"
properties = { n = { type = "integer" } }

[[rate_limits.override]]
collection = "items"
method = "PUT"
rate = "1/m"
burst = 4
"""


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    admin: str
    schema: str


def _cli(dsn: str, schema: str, *args: str) -> str:
    env = {**os.environ, "MAXAGE_PG_SCHEMA": schema}
    out = subprocess.run(python_m("keys", *args, "--db", dsn), capture_output=True, text=True,
                         env=env, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def _server(work: Path, name: str, dsn: str, schema: str, *extra: str) -> ServerProcess:
    argv = python_m("serve", "--port", "0", "--config", str(work / "c.toml"), "--db", dsn,
                    "--auth", "keys", "--auth-staleness", f"{int(BOUND_A * 1000)}ms", *extra)  # fmt: skip
    return ServerProcess(argv, workdir=work, env={"MAXAGE_PG_SCHEMA": schema}, name=name)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    dsn = pg_dsn()
    cache = redis_db_url(REDIS_DB)
    schema = unique_name("access")
    work = tmp_path_factory.mktemp("access")
    (work / "c.toml").write_text(CONFIG)
    # Migrate once, then create the admin key, then start both servers.
    first = _server(work, "a", dsn, schema, "--cache", cache).start().wait_listening(30)
    admin = _cli(dsn, schema, "create", "--scopes", "admin,read:*,write:*")
    second = _server(work, "b", dsn, schema, "--cache", cache).start().wait_listening(30)
    try:
        yield Pair(first, second, admin, schema)
        assert first.stop() == 0 and second.stop() == 0
    finally:
        first.kill()
        second.kill()
        asyncio.run(drop_postgres_schema(dsn, schema))


def _client(server: ServerProcess, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {secret}"},
                        trust_env=False, timeout=10)  # fmt: skip


def test_revoke_through_a_is_refused_by_b_on_the_next_request(pair: Pair) -> None:
    """Many rounds, each with B's cache holding the key and readers hammering B while A
    revokes: every request that starts after the revoke's 204 is refused."""
    with _client(pair.a, pair.admin) as admin_a, _client(pair.b, pair.admin) as admin_b:
        doc = admin_a.post("/v1/items", json={"n": 1}).json()["id"]
        late_accepts: list[tuple[float, float, int]] = []
        for _ in range(12):
            key = admin_a.post("/v1/_keys", json={"scopes": ["read:items"]}).json()
            with _client(pair.b, key["secret"]) as reader:
                for _ in range(3):  # B caches the key record (and the document)
                    assert reader.get(f"/v1/items/{doc}").status_code == 200
            acked = threading.Event()
            ack_at = [0.0]
            stop = threading.Event()

            def hammer(
                secret: str = key["secret"],
                stop: threading.Event = stop,
                acked: threading.Event = acked,
                ack_at: list[float] = ack_at,
            ) -> None:
                with _client(pair.b, secret) as c:
                    while not stop.is_set():
                        started = time.monotonic()
                        status = c.get(f"/v1/items/{doc}").status_code
                        if acked.is_set() and started > ack_at[0] and status != 401:
                            late_accepts.append((started, ack_at[0], status))

            threads = [threading.Thread(target=hammer) for _ in range(3)]
            for t in threads:
                t.start()
            r = admin_a.delete(f"/v1/_keys/{key['id']}")
            ack_at[0] = time.monotonic()
            acked.set()
            assert r.status_code == 204
            with _client(pair.b, key["secret"]) as reader:
                assert reader.get(f"/v1/items/{doc}").status_code == 401
            stop.set()
            for t in threads:
                t.join(30)
        assert late_accepts == []
        assert admin_b.get("/v1/_keys").status_code == 200


def test_rate_limits_hold_across_processes(pair: Pair) -> None:
    with _client(pair.a, pair.admin) as a, _client(pair.b, pair.admin) as b:
        statuses = [
            c.put("/v1/items/limited", json={"n": 1}).status_code for c in (a, b, a, b, a, b)
        ]
        assert statuses[:4] == [201, 200, 200, 200] and statuses[4:] == [429, 429], statuses
        r = b.put("/v1/items/limited", json={"n": 1})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.headers["ratelimit-policy"] == '"items.PUT";q=4;w=240'
        assert a.get("/v1/items").status_code == 200  # other routes are not limited
