"""The reference: a raw ASGI app answering every request with the same pre-encoded bytes.

``BENCH_BODY`` (env) is the exact body maxage returns for the benchmarked document,
so both servers send the same bytes; headers are precomputed once.
"""

import os

BODY = os.environ.get("BENCH_BODY", '{"ok":true}').encode()
START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"etag", b'"1"'),
        (b"cache-control", b"max-age=30"),
    ],
}
MESSAGE = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send(START)
    await send(MESSAGE)
