"""Checked start-up of ``maxage serve`` (black box).

* an unreachable primary exits 2 with one line, before any worker starts (no password);
* a Redis that is down or misconfigured at start-up: the server serves from the primary
  and L1, warns once, and says ``l2: degraded`` in ``/readyz`` and
  ``maxage_l2_available 0`` in ``/metrics``; when Redis comes up, both say so without
  other traffic; a malformed ``--cache`` URL is a usage error (exit 2);
* ``--db-file`` keeps the password out of everything printed; ``--pg-schema``;
* the default data directory is printed as an absolute path; a config's relative
  ``schema_file`` resolves against the config file, not the working directory.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.api.conftest import metric
from tests.support.launcher import ServerProcess, launch, python_m
from tests.support.services import (
    RedisServer,
    drop_postgres_schema,
    free_port,
    redis_server,
    require_postgres,
    require_redis,
    unique_name,
)


def run_serve(*args: str, cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_")}
    return subprocess.run(python_m("serve", "--port", "0", *args), capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)  # fmt: skip


def poll(predicate: object, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a server's state against a deadline


# -- the primary -------------------------------------------------------------------------


def test_an_unreachable_postgres_exits_2_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://maxage:s3cret@127.0.0.1:{free_port()}/test"  # nothing listens there
    out = run_serve("--db", url, cwd=tmp_path)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("maxage serve: the primary postgresql://maxage:***@127.0.0.1:")
    assert "does not answer" in lines[0]
    assert "s3cret" not in out.stderr + out.stdout
    assert "listening" not in out.stdout  # no worker was started


def test_an_unopenable_sqlite_file_exits_2_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()  # a directory where the database file should be
    out = run_serve("--db", f"sqlite:///{tmp_path / 'adir'}", cwd=tmp_path)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "the primary" in lines[0] and "cannot be opened" in lines[0]


def test_postgres_from_a_db_file_with_a_schema_of_its_own(tmp_path: Path) -> None:
    import asyncio

    dsn = asyncio.run(require_postgres())
    schema = unique_name("startup")
    # the password is ignored by a trust setup, and must never be printed
    with_password = dsn.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    if with_password == dsn:
        pytest.skip("the test DSN is not postgresql://postgres@...")
    (tmp_path / "db-url").write_text(with_password + "\n")
    (tmp_path / "db-url").chmod(0o600)
    server = launch("serve", "--port", "0", "--db-file", str(tmp_path / "db-url"),
                    "--pg-schema", schema, workdir=tmp_path, timeout=60)  # fmt: skip
    try:
        with server.client() as http:
            assert http.get("/readyz").json() == {"status": "ready"}
            assert http.post("/v1/profiles", json={"name": "x"}).status_code == 201
        assert f"(schema {schema})" in server.stdout()
        assert server.stop() == 0, server.stderr()
        assert "s3cret" not in server.stdout() + server.stderr()
        assert "postgres:***@" in server.stdout()
    finally:
        server.kill()
        asyncio.run(drop_postgres_schema(dsn, schema))


# -- the shared cache (L2) ---------------------------------------------------------------


def ready(server: ServerProcess) -> dict[str, str]:
    with server.client() as http:
        r = http.get("/readyz")
    assert r.status_code == 200, r.text  # the contract holds without L2: still ready
    body: dict[str, str] = r.json()
    return body


def l2_available(server: ServerProcess) -> float:
    with server.client() as http:
        return metric(http.get("/metrics").text, "maxage_l2_available")


def test_redis_down_at_start_up_serves_degraded_and_recovers(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet
    server = launch("serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite",
                    "--cache", f"redis://127.0.0.1:{port}/0", workdir=tmp_path)  # fmt: skip
    try:
        assert ready(server) == {"status": "ready", "l2": "degraded"}
        assert l2_available(server) == 0
        poll(lambda: "does not answer at start-up" in server.stderr(), what="the warning")
        assert server.stderr().count("does not answer at start-up") == 1  # warned once
        with server.client() as http:  # serving from the primary and L1
            created = http.post("/v1/profiles", json={"name": "ada"})
            assert created.status_code == 201, created.text
            location = created.headers["location"]
            for _ in range(3):
                got = http.get(location)
                assert got.status_code == 200 and got.json()["data"]["name"] == "ada"
            changed = http.patch(location, json={"name": "grace"},
                                 headers={"if-match": created.headers["etag"],
                                          "content-type": "application/merge-patch+json"})  # fmt: skip
            assert changed.status_code == 200, changed.text
            strong = http.get(location, params={"consistency": "strong"})
            assert strong.json()["data"]["name"] == "grace"
        # Redis comes up: readiness sees it without any other traffic
        redis = RedisServer(port)
        redis.start()
        try:
            poll(lambda: ready(server).get("l2") == "ok", what="l2 ok in /readyz")
            assert l2_available(server) == 1
        finally:
            redis.stop()
        assert server.stop() == 0, server.stderr()
    finally:
        server.kill()


def test_a_misconfigured_redis_is_degraded_not_fatal(tmp_path: Path) -> None:
    import asyncio

    url = asyncio.run(require_redis())
    wrong_db = url.rsplit("/", 1)[0] + "/9999"  # DB index out of range
    server = launch("serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite",
                    "--cache", wrong_db, workdir=tmp_path)  # fmt: skip
    try:
        assert ready(server) == {"status": "ready", "l2": "degraded"}
        assert l2_available(server) == 0
        poll(lambda: "does not answer at start-up" in server.stderr(), what="the warning")
        with server.client() as http:
            assert http.get("/v1/profiles").status_code == 200
    finally:
        server.kill()


def test_a_healthy_redis_is_ok_in_readyz(tmp_path: Path) -> None:
    with redis_server() as redis:
        server = launch("serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite",
                        "--cache", redis.url, workdir=tmp_path)  # fmt: skip
        try:
            assert ready(server) == {"status": "ready", "l2": "ok"}
            assert l2_available(server) == 1
            assert "WARNING" not in server.stderr()
        finally:
            server.kill()


def test_a_malformed_cache_url_exits_2(tmp_path: Path) -> None:
    out = run_serve("--db", f"sqlite:///{tmp_path}/db.sqlite", "--cache",
                    "redis://:pw@127.0.0.1:notaport/0", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out
    assert out.stderr.startswith("maxage serve: --cache redis://:***@127.0.0.1:notaport/0")
    assert "pw" not in out.stderr.replace("maxage", "")


# -- paths -------------------------------------------------------------------------------


def test_default_data_dir_is_printed_absolute(tmp_path: Path) -> None:
    server = launch("serve", "--port", "0", workdir=tmp_path, cwd=tmp_path)
    try:
        expected = tmp_path.resolve() / "maxage-data" / "maxage.db"
        assert f"maxage: data in {expected}\n" in server.stdout()
        assert expected.exists()
    finally:
        server.kill()


def test_relative_schema_file_resolves_against_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "things.schema.json").write_text(
        '{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}'
    )
    (conf / "things.toml").write_text(
        '[collections.things]\nmax_staleness = "1s"\nschema_file = "things.schema.json"\n'
    )
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    server = launch("serve", "--port", "0", "--config", "../conf/things.toml", "--db",
                    "sqlite:///./db.sqlite", workdir=tmp_path, cwd=cwd)  # fmt: skip
    try:
        with server.client() as http:
            assert http.post("/v1/things", json={"n": 1}).status_code == 201
            assert http.post("/v1/things", json={"n": "one"}).status_code == 422
    finally:
        server.kill()
    assert (cwd / "db.sqlite").exists()  # a relative --db is the working directory's


def test_readyz_without_cache_has_no_l2(tmp_path: Path) -> None:
    server = launch("serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite",
                    workdir=tmp_path)  # fmt: skip
    try:
        assert ready(server) == {"status": "ready"}
    finally:
        server.kill()
