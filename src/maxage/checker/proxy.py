"""Server-side disconnects of the change feed: a TCP proxy in front of the target that
closes a connection from the server's side, after a seeded number of bytes of the
answer (usually in the middle of a line).

Invariant: what the client receives is a prefix of what the server sent, then the
connection ends (a FIN, or a reset), as when the server, a load balancer or the
network drops a long-lived stream; the server sees its client go away. The feed
reader must keep only complete lines and resume after the last one (P7: nothing
replayed, nothing skipped). Plain ``http://`` targets only: a proxy that cut TLS
would also have to terminate it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

CHUNK = 65536


class CuttingProxy:
    """``start()`` listens on ``url`` (127.0.0.1, a free port); each connection is piped to
    ``host:port`` and cut after ``min_bytes..max_bytes`` bytes of the answer."""

    def __init__(
        self, host: str, port: int, rng: random.Random, min_bytes: int = 300, max_bytes: int = 4000
    ) -> None:
        self.upstream = (host, port)
        self.rng = rng
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.url = ""
        self.cuts = 0  # connections this proxy cut
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        # Ended by cancellation when the checker's loop closes: end quietly (asyncio's
        # stream callback asks a cancelled connection task for its exception, and logs
        # the CancelledError that raises).
        with contextlib.suppress(asyncio.CancelledError):
            await self._pipe_and_cut(client_r, client_w)

    async def _pipe_and_cut(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        budget = self.rng.randint(self.min_bytes, self.max_bytes)
        reset = self.rng.random() < 0.5  # a reset, else an orderly close (FIN)
        try:
            server_r, server_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_w.close()
            return
        up = asyncio.ensure_future(_pipe(client_r, server_w))
        self._pipes.add(up)
        up.add_done_callback(self._pipes.discard)
        cut = False
        try:
            while True:
                data = await server_r.read(CHUNK)
                if not data:
                    break
                if len(data) >= budget:
                    client_w.write(data[:budget])
                    cut = True
                    break
                budget -= len(data)
                client_w.write(data)
                await client_w.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            up.cancel()
            if cut:
                self.cuts += 1
                with contextlib.suppress(OSError):
                    await client_w.drain()
            if cut and reset:
                client_w.transport.abort()
            else:
                client_w.close()
            server_w.close()  # the server sees its client go away


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
