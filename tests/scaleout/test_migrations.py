"""Schema creation and migration are safe from several processes at once."""

from __future__ import annotations

import time

from tests.scaleout.conftest import Cluster, create, version_of, wait_for


def test_servers_started_together_on_a_fresh_schema_all_come_up(cluster_factory: object) -> None:
    cluster: Cluster = cluster_factory(None)  # type: ignore[operator]
    servers = [cluster.server(f"m{i}", workers=2 if i == 0 else 1) for i in range(3)]
    for s in servers:  # all at the same moment, none waits for another
        s.start()
    for s in servers:
        s.ready()
    with servers[0].client() as a, servers[-1].client() as b:
        doc = create(a)
        assert version_of(b.get(f"/v1/items/{doc}", params={"consistency": "strong"})) == 1
    for s in servers:
        with s.client() as c:
            r = c.get("/readyz")
            assert r.status_code == 200, r.text
        assert "Traceback" not in s.stderr(), s.stderr()


def test_start_up_waits_out_a_migration_slower_than_the_statement_timeout(
    cluster_factory: object,
) -> None:
    """Another process holds the schema's migration lock for longer than the store's 5 s
    statement timeout (a slow migration, a loaded host): the waiting servers keep waiting
    and come up once it is released, instead of failing their start-up."""
    import asyncio
    import threading

    import asyncpg

    cluster: Cluster = cluster_factory(None)  # type: ignore[operator]
    held = threading.Event()
    release = threading.Event()

    async def hold() -> None:
        conn = await asyncpg.connect(cluster.db)
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext('maxage.migrate'), hashtext($1))",
                    cluster.schema,
                )
                held.set()
                await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        finally:
            await conn.close()

    holder = threading.Thread(target=asyncio.run, args=(hold(),), daemon=True)
    holder.start()
    assert held.wait(10)
    servers = [cluster.server(f"slow{i}").start() for i in range(2)]

    async def waiting() -> int:
        conn = await asyncpg.connect(cluster.db)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE '%maxage.migrate%' AND application_name = 'maxage'"
                )
            )
        finally:
            await conn.close()

    wait_for(lambda: asyncio.run(waiting()) >= 2, 20, "both servers waiting on the lock")
    blocked_at = time.monotonic()
    # keep the lock past the 5 s statement timeout: the forced interleaving under test
    wait_for(lambda: time.monotonic() - blocked_at > 6.0, 10, "the statement timeout to pass")
    release.set()
    holder.join(10)
    for s in servers:
        s.ready()
    with servers[0].client() as a, servers[1].client() as b:
        doc = create(a)
        assert version_of(b.get(f"/v1/items/{doc}", params={"consistency": "strong"})) == 1
