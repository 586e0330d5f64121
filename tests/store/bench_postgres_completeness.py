"""Write throughput of the change-log completeness methods (docs/adr/0003). Not a test.

Run: ``.venv/bin/python tests/store/bench_postgres_completeness.py [writers] [writes]``.
Each method runs the store's write transaction shape (BEGIN; per-document
advisory lock; read; upsert document + insert change row; COMMIT) from
``writers`` concurrent connections on distinct documents:

* ``xid8``     seq = pg_current_xact_id() (what PostgresStore does);
* ``counter``  seq from ``UPDATE counter SET seq = seq + 1 RETURNING seq`` in the
  last statement before COMMIT: the row lock serializes appends, so seq order is
  commit order and ``seq > last`` is safe;
* ``sequence`` seq = nextval(): the unsound baseline (what the naive tailer assumes).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import asyncpg

DSN = os.environ.get("MAXAGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
S = "bench_completeness"

SEQ = {
    "xid8": "(SELECT pg_current_xact_id()::text::bigint)",
    "counter": "(SELECT seq FROM n)",
    "sequence": f"nextval('{S}.changes_seq')",
}


async def setup(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE; CREATE SCHEMA {S}")
    await conn.execute(
        f"CREATE TABLE {S}.documents (collection text, id text, version bigint, data bytea,"
        " updated_at float8, PRIMARY KEY (collection, id));"
        f"CREATE TABLE {S}.changes (seq bigint PRIMARY KEY, collection text, id text,"
        " version bigint, committed_at float8);"
        f"CREATE TABLE {S}.counter (one int PRIMARY KEY, seq bigint NOT NULL);"
        f"INSERT INTO {S}.counter VALUES (1, 0);"
        f"CREATE SEQUENCE {S}.changes_seq"
    )


async def run(method: str, writers: int, writes: int) -> float:
    pool = await asyncpg.create_pool(DSN, min_size=writers, max_size=writers)
    counter = f"n AS (UPDATE {S}.counter SET seq = seq + 1 WHERE one = 1 RETURNING seq), "
    write_sql = (
        f"WITH {counter if method == 'counter' else ''}"
        f"d AS (INSERT INTO {S}.documents VALUES ('c', $1, $2, $3, $4)"
        " ON CONFLICT (collection, id) DO UPDATE SET version = EXCLUDED.version,"
        " data = EXCLUDED.data, updated_at = EXCLUDED.updated_at)"
        f" INSERT INTO {S}.changes VALUES ({SEQ[method]}, 'c', $1, $2, $4)"
    )

    async def worker(k: int) -> None:
        async with pool.acquire() as conn:
            for i in range(writes // writers):
                doc = f"w{k}-{i % 50}"
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", doc)
                    await conn.fetchrow(
                        f"SELECT pg_current_xact_id(), d.* FROM (SELECT 1) o"
                        f" LEFT JOIN {S}.documents d ON d.collection = 'c' AND d.id = $1",
                        doc,
                    )
                    await conn.execute(write_sql, doc, i + 1, b'{"x":1}', time.time())

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(writers)))
    elapsed = time.perf_counter() - started
    await pool.close()
    return writes / elapsed


async def main() -> None:
    writers = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    writes = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    conn = await asyncpg.connect(DSN)
    results: dict[str, list[float]] = {}
    try:
        for _ in range(3):
            for method in SEQ:
                await setup(conn)
                results.setdefault(method, []).append(await run(method, writers, writes))
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {S} CASCADE")
        await conn.close()
    for method, rates in results.items():
        runs = ", ".join(f"{r:.0f}" for r in rates)
        print(f"{method:9s} writers={writers:3d} best {max(rates):7.0f} writes/s  ({runs})")


if __name__ == "__main__":
    asyncio.run(main())
