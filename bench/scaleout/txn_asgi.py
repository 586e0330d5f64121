"""The write reference: a bare asyncpg transaction doing maxage's two inserts, behind a
minimal ASGI app.

Each ``POST`` reads the request body, takes a random id and runs, on one pooled
connection, ``BEGIN; INSERT INTO documents ...; INSERT INTO changes ...; COMMIT``: the
document row (``data`` and its ``jsonb`` copy, as maxage writes it) and its change-log
row (``seq`` from the transaction id, as maxage numbers it), in tables of the same
definition as maxage's (``BENCH_SCHEMA``, made by ``primary.py``). It answers 201 with
the id, the version and the body. No validation, no advisory lock, no read of the
current row, no caches: what any application storing a document and an outbox row pays.
Env: ``BENCH_SCHEMA`` and the pool's (``bare_pool.py``).
"""

import os
import time
import uuid

from bare_pool import pool

S = f'"{os.environ["BENCH_SCHEMA"]}"'
INSERT_DOC = (
    f"INSERT INTO {S}.documents (collection, id, version, data, body, created_at, updated_at,"
    " deleted) VALUES ($1, $2, 1, $3, convert_from($3, 'UTF8')::jsonb, $4, $4, false)"
)
INSERT_CHANGE = (
    f"INSERT INTO {S}.changes (seq, collection, id, version, op, committed_at, data)"
    " VALUES (pg_current_xact_id()::text::bigint * 1024, $1, $2, 1, 'put', $3, $4)"
)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    doc_id = str(uuid.uuid4())
    now = time.time()
    async with (await pool()).acquire() as conn, conn.transaction():
        await conn.execute(INSERT_DOC, "products", doc_id, body, now)
        await conn.execute(INSERT_CHANGE, "products", doc_id, now, body)
    out = b'{"id":"%s","version":1,"data":%s}' % (doc_id.encode(), body)
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(out)),
                (b"etag", b'"1"'),
                (b"location", b"/v1/products/%s" % doc_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": out})
