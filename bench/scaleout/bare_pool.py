"""The references' asyncpg pool (``pk_asgi.py``, ``txn_asgi.py``), made on first use.

Env: ``BENCH_DSN``, ``BENCH_POOL`` (size, default 10, as maxage), ``BENCH_POOL_RESET``
(``default``: asyncpg's reset query on every release, what a bare pool does; ``off``: no
reset query, as in maxage's pool).
"""

import asyncio
import os

import asyncpg

DSN = os.environ["BENCH_DSN"]
POOL_SIZE = int(os.environ.get("BENCH_POOL", "10"))
LEAN = os.environ.get("BENCH_POOL_RESET", "default") == "off"
_pool = None
_lock = asyncio.Lock()


async def _no_reset(conn):  # type: ignore[no-untyped-def]
    pass


async def pool():  # type: ignore[no-untyped-def]
    global _pool
    if _pool is None:
        async with _lock:
            if _pool is None:
                _pool = await asyncpg.create_pool(
                    DSN, min_size=1, max_size=POOL_SIZE, reset=_no_reset if LEAN else None
                )
    return _pool
