"""The strong-read reference: a bare asyncpg primary-key lookup behind a minimal ASGI app.

Each request fetches the benchmarked document's row from the maxage ``documents``
table by primary key (one pooled asyncpg ``fetchrow``, the same query maxage's store
runs) and answers ``BENCH_HEAD + data + BENCH_TAIL``: the same bytes maxage sends
for that document. Env: ``BENCH_DSN``, ``BENCH_SCHEMA``, ``BENCH_COLLECTION``,
``BENCH_ID``, ``BENCH_HEAD``, ``BENCH_TAIL``, and the pool's (``bare_pool.py``).
"""

import os

from bare_pool import pool

SQL = (
    f'SELECT collection, id, version, data, created_at, updated_at, deleted FROM "{os.environ["BENCH_SCHEMA"]}".documents'
    " WHERE collection = $1 AND id = $2 AND NOT deleted"
)
ARGS = (os.environ["BENCH_COLLECTION"], os.environ["BENCH_ID"])
HEAD = os.environ["BENCH_HEAD"].encode()
TAIL = os.environ["BENCH_TAIL"].encode()
NOT_FOUND = {"type": "http.response.start", "status": 404, "headers": []}


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    row = await (await pool()).fetchrow(SQL, *ARGS)
    if row is None:
        await send(NOT_FOUND)
        await send({"type": "http.response.body", "body": b""})
        return
    body = HEAD + row["data"] + TAIL
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
                (b"etag", b'"%d"' % row["version"]),
                (b"cache-control", b"max-age=0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
