"""Real-service helpers: PostgreSQL and Redis as the tests find them on this machine.

``MAXAGE_TEST_POSTGRES_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and ``MAXAGE_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``) point at them.
When a service is unreachable the test is skipped, except under ``CI=true``,
where it fails: CI must run these tests, not skip them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from maxage.core.types import Clock

if TYPE_CHECKING:
    from maxage.store.postgres import PostgresStore

DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def postgres_dsn() -> str:
    return os.environ.get("MAXAGE_TEST_POSTGRES_DSN", DEFAULT_POSTGRES_DSN)


def redis_url() -> str:
    return os.environ.get("MAXAGE_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def unavailable(what: str, reason: object) -> None:
    """Skip (or, under CI=true, fail) a test whose service is not reachable."""
    message = f"{what} unreachable: {reason}"
    if ci():
        pytest.fail(message + " (CI=true: service tests must run)")
    pytest.skip(message)


def unique_name(prefix: str) -> str:
    """A name unique to this test run: a lower-case identifier safe as a schema or key prefix."""
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:10]}"


async def require_postgres(dsn: str | None = None) -> str:
    import asyncpg

    dsn = dsn or postgres_dsn()
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        unavailable("PostgreSQL", exc)
    else:
        await conn.close()
    return dsn


async def fresh_postgres_store(clock: Clock, **kwargs: Any) -> PostgresStore:
    """An unopened PostgresStore on a schema of its own, dropped again by ``close()``."""
    from maxage.store.postgres import PostgresStore

    dsn = await require_postgres()
    options: dict[str, Any] = {"schema": unique_name("t"), "drop_schema_on_close": True}
    options.update(kwargs)
    return PostgresStore(dsn, clock=clock, **options)


async def require_redis(url: str | None = None) -> str:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    url = url or redis_url()
    client = aioredis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3)
    try:
        await client.ping()
    except (OSError, RedisError) as exc:
        unavailable("Redis", exc)
    finally:
        await client.aclose()
    return url


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RedisServer:
    """A throwaway ``redis-server`` on its own port (no persistence), for kill/restart tests."""

    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                tempfile.gettempdir(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.01)  # polling a child process's startup, not a race
        self.stop()
        unavailable("redis-server", f"did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    import shutil

    if shutil.which("redis-server") is None:
        unavailable("redis-server", "binary not installed")
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def drop_postgres_schema(dsn: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=3)
    try:
        await asyncio.wait_for(conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'), 10)
    finally:
        await conn.close()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[int]]:
    """A throwaway Redis Cluster of ``nodes`` masters (no replicas, no persistence).

    Yields the node ports; ``redis+cluster://127.0.0.1:<port>`` reaches it through any one.
    """
    import shutil

    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        unavailable("redis-server/redis-cli", "binaries not installed")
    workdir = tempfile.mkdtemp(prefix="maxage-redis-cluster-")
    ports = [_cluster_port() for _ in range(nodes)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = os.path.join(workdir, str(port))
            os.makedirs(node_dir)
            procs.append(
                subprocess.Popen(
                    [
                        *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
                        *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
                        *("--save", "", "--appendonly", "no", "--dir", node_dir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for port in ports:
            _wait_for_pong(port)
        create = subprocess.run(
            [
                *("redis-cli", "--cluster", "create"),
                *(f"127.0.0.1:{p}" for p in ports),
                *("--cluster-replicas", "0", "--cluster-yes"),
            ],
            capture_output=True,
            timeout=30,
        )
        if create.returncode != 0:
            unavailable("Redis Cluster", create.stdout.decode()[-500:])
        deadline = time.monotonic() + 15
        while True:
            info = subprocess.run(
                ["redis-cli", "-p", str(ports[0]), "cluster", "info"],
                capture_output=True,
                timeout=5,
            ).stdout
            if b"cluster_state:ok" in info:
                break
            if time.monotonic() > deadline:
                unavailable("Redis Cluster", "never reached cluster_state:ok")
            time.sleep(0.05)  # polling the cluster's own convergence, not a race
        yield ports
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, 50000)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _wait_for_pong(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.01)  # polling a child process's startup, not a race
    unavailable("redis-server", f"did not start on port {port}")
