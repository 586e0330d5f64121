"""The RSGI reference: the raw app of ``raw_asgi.py`` on granian's RSGI interface.

``BENCH_BODY`` (env) is the exact body maxage returns for the benchmarked document;
headers are precomputed once, and one call answers (no ASGI message dicts).
"""

import os

BODY = os.environ.get("BENCH_BODY", '{"ok":true}').encode()
HEADERS = [
    ("content-type", "application/json"),
    ("content-length", str(len(BODY))),
    ("etag", '"1"'),
    ("cache-control", "max-age=30"),
]


async def app(scope, proto):  # type: ignore[no-untyped-def]
    proto.response_bytes(200, HEADERS, BODY)
