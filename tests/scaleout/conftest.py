"""Scale-out fixtures: real ``maxage serve`` processes on the real PostgreSQL and Redis.

Every server runs ``python -m maxage serve --db postgresql://… --cache redis://…`` as a
subprocess started by the shared launcher (``tests.support.launcher``: stdout/stderr to
files, inherited ``MAXAGE_*`` variables dropped), on a PostgreSQL schema of its own test
(``MAXAGE_PG_SCHEMA``, the environment form of ``--pg-schema``) and a Redis
database number of its own module (flushed at start). Servers are ready when
``/readyz`` answers 200. Nothing here sleeps to wait for a race: conditions are
polled against a bounded deadline.

Unreachable PostgreSQL/Redis skip these tests, except under ``CI=true`` where they fail
(``tests.support.services``).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.launcher import ServerProcess, python_m
from tests.support.services import (
    drop_postgres_schema,
    require_postgres,
    require_redis,
    unique_name,
)

# The bound every scale-out test relies on: small S, TTL much larger, so invalidation
# (not expiry) is what makes a bounded read fresh.
BOUND = 1.0
CONFIG = """
[collections.items]
max_staleness = "1s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-around"
ttl = "5m"

[collections.items.schema]
type = "object"
required = ["n"]

[collections.items.schema.properties.n]
type = "integer"

[collections.notes]
max_staleness = "1s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
ttl = "5m"

[collections.notes.schema]
type = "object"
required = ["n"]

[collections.notes.schema.properties.n]
type = "integer"
"""


def pg_dsn() -> str:
    return asyncio.run(require_postgres())


def redis_db_url(db: int) -> str:
    """``redis://host:port/<db>`` on the test Redis, flushed."""
    import redis

    base = asyncio.run(require_redis())
    url = re.sub(r"/\d*$", "", base.rstrip("/")) + f"/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


class Server(ServerProcess):
    """One ``maxage serve`` subprocess. ``start()`` returns at once; ``ready()`` waits."""

    def __init__(
        self,
        workdir: Path,
        *,
        db: str,
        cache: str | None,
        schema: str,
        workers: int = 1,
        fault_injection: bool = True,
        name: str = "s",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "maxage.toml"
        if not config.exists():
            config.write_text(CONFIG)
        argv = python_m(
            *("serve", "--port", "0"),
            *("--config", str(config), "--db", db, "--workers", str(workers)),
            *(("--cache", cache) if cache else ()),
            *(("--fault-injection",) if fault_injection else ()),
        )
        env = {
            "MAXAGE_PG_SCHEMA": schema,
            "MAXAGE_FAULTS_FILE": str(workdir / f"faults-{name}.json"),
        }
        super().__init__(argv, workdir=workdir, env=env, name=name)

    def start(self) -> Server:
        super().start()
        return self

    def ready(self, timeout: float = 30.0) -> Server:
        """Listening, then ``/readyz`` answers 200 (the store is open, migrations done)."""
        deadline = time.monotonic() + timeout
        if not self.url:
            self.wait_listening(timeout)
        with httpx.Client(base_url=self.url, trust_env=False, timeout=5) as c:
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                if not self.alive() or time.monotonic() > deadline:
                    rc = self.stop()
                    raise RuntimeError(
                        f"maxage serve {self.name} did not become ready "
                        f"(rc={rc}):\n{self.stdout()}\n{self.stderr()}"
                    )
                time.sleep(0.02)  # polling a child's start-up, not a race


@dataclass
class Cluster:
    """Servers sharing one PostgreSQL schema and one Redis database."""

    workdir: Path
    db: str
    cache: str | None
    schema: str = field(default_factory=lambda: unique_name("scaleout"))
    servers: list[Server] = field(default_factory=list)

    def server(self, name: str, *, workers: int = 1, cache: str | None = None) -> Server:
        s = Server(
            self.workdir,
            db=self.db,
            cache=cache if cache is not None else self.cache,
            schema=self.schema,
            workers=workers,
            name=name,
        )
        self.servers.append(s)
        return s

    def close(self) -> None:
        for s in self.servers:
            s.stop()
            s.kill()
        asyncio.run(drop_postgres_schema(self.db, self.schema))


@pytest.fixture(scope="module")
def cluster_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Cluster]]:
    """``make(redis_db)`` → a Cluster on a fresh schema (and flushed Redis db, if given)."""
    made: list[Cluster] = []

    def make(redis_db: int | None, cache: str | None = None) -> Cluster:
        url = cache if cache is not None else (redis_db_url(redis_db) if redis_db else None)
        c = Cluster(tmp_path_factory.mktemp("scaleout"), pg_dsn(), url)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# -- small helpers ------------------------------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        if head == name if not want else head == f"{name}{{{want}}}":
            return float(value)
    return 0.0


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``predicate()`` until true (a condition wait with a deadline, not a sleep)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def version_of(r: httpx.Response) -> int:
    assert r.status_code == 200, (r.status_code, r.text)
    v = int(r.headers["etag"].strip('"'))
    assert r.json()["version"] == v  # P0: the body is the version the ETag claims
    return v


MERGE = {"content-type": "application/merge-patch+json"}


def create(c: httpx.Client, collection: str = "items", n: int = 0) -> str:
    r = c.post(f"/v1/{collection}", json={"n": n})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def update(c: httpx.Client, collection: str, doc_id: str, n: int) -> tuple[int, float]:
    """PATCH; returns (new version, ack time — when the response was received)."""
    r = c.patch(f"/v1/{collection}/{doc_id}", json={"n": n}, headers=MERGE)
    acked = time.time()
    assert r.status_code == 200, r.text
    return int(r.headers["etag"].strip('"')), acked


@pytest.fixture(params=["sqlite", "postgres"])
def primary(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(database URL, PostgreSQL schema)`` for a test that runs on both primaries: a
    SQLite file in ``tmp_path``, or a fresh schema on the test PostgreSQL (dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/db.sqlite", "unused"
        return
    dsn = pg_dsn()
    schema = unique_name(request.node.module.__name__.rpartition(".")[2])
    yield dsn, schema
    asyncio.run(drop_postgres_schema(dsn, schema))
