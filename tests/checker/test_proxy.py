"""The checker's cutting proxy: a client receives exactly a prefix of what the server sent
(the seeded number of bytes), then the connection ends; the server sees its client go."""

from __future__ import annotations

import asyncio
import contextlib
import random

from maxage.checker.proxy import CuttingProxy

SENT = b"".join(b'{"cursor":%d,"id":"k","version":1,"op":"put"}\n' % i for i in range(500))


async def _cut_once(budget: int, seed: int) -> tuple[bytes, bool]:
    """What a client read through the proxy, and whether the server saw it go away."""
    server_saw_close = asyncio.Event()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()  # the request
        with contextlib.suppress(OSError):
            w.write(SENT)
            await w.drain()
            if not await r.read(1):  # EOF: the proxy closed our connection
                server_saw_close.set()
        w.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = await CuttingProxy("127.0.0.1", port, random.Random(seed), budget, budget).start()
    try:
        host, _, proxy_port = proxy.url.removeprefix("http://").partition(":")
        r, w = await asyncio.open_connection(host, int(proxy_port))
        w.write(b"GET / HTTP/1.1\r\n")
        await w.drain()
        got = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await r.read(65536):
                got += chunk
        w.close()
        await asyncio.wait_for(server_saw_close.wait(), 5)
        assert proxy.cuts == 1
        return got, server_saw_close.is_set()
    finally:
        await proxy.close()
        server.close()


def test_a_connection_is_cut_after_its_budget_mid_line() -> None:
    """Never more than the budget; all of it when the cut is an orderly close (a reset
    may discard what the client had not read yet)."""
    whole = 0
    for seed in range(8):  # both endings: a reset and an orderly close
        got, server_saw_close = asyncio.run(_cut_once(1000, seed))
        assert SENT[:1000].startswith(got) and server_saw_close
        whole += got == SENT[:1000]
    assert whole and not SENT[:1000].endswith(b"\n")  # cut inside a line
