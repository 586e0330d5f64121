"""A tiny scriptable upstream HTTP server for read-through tests (runs in a thread).

Paths: ``/ok/{k}`` 200 with body ``value-of-{k}`` and ``ETag: "{version}"``;
``/slow/{k}`` the same after ``delay`` seconds (or at once when a test calls
:meth:`Upstream.release_slow`); ``/fail/{k}`` 500; ``/missing/{k}``
404; ``/flaky/{k}`` 200 or 500 depending on ``fail_flaky``; ``/hostile/{what}/...``
200 with a 5,000-digit ETag (``bigetag``), a 400-digit max-age (``hugeage``) or a
1,000-character Content-Type (``longtype``). Every call is counted
per path, and a call whose client disconnects before the answer is recorded in
``cancelled`` (that is how tests observe upstream-call cancellation).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter


class Upstream:
    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()
        self.delay = 0.5
        self.version = 1
        self.fail_flaky = False
        self.max_age: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def release_slow(self) -> None:
        """Answer the ``/slow/`` calls waiting now (a test that must act while a load is in
        flight holds it with a long ``delay`` and ends it here, instead of racing it)."""

        def release() -> None:
            self._released.set()  # wakes every waiting call; later ones wait again
            self._released.clear()

        self._loop.call_soon_threadsafe(release)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._released = asyncio.Event()
        server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1].decode()
                self.calls[path] = self.calls.get(path, 0) + 1
                kind = path.split("/")[1]
                if kind == "slow":
                    # Wait, but notice if the client goes away meanwhile.
                    eof = asyncio.ensure_future(reader.read(1))
                    released = asyncio.ensure_future(self._released.wait())
                    done, _ = await asyncio.wait(
                        {eof, released}, timeout=self.delay, return_when=asyncio.FIRST_COMPLETED
                    )
                    released.cancel()
                    if eof in done:
                        self.cancelled[path] += 1
                        writer.close()
                        return
                    eof.cancel()
                    # Awaited: until its cancellation has run, the read is still registered
                    # with the reader, and the next readuntil() would raise RuntimeError
                    # (another coroutine is already waiting), dropping the connection.
                    with contextlib.suppress(asyncio.CancelledError):
                        await eof
                if kind == "fail" or (kind == "flaky" and self.fail_flaky):
                    status, body, extra = 500, b"boom", ""
                elif kind == "missing":
                    status, body, extra = 404, b"nope", ""
                elif kind == "hostile":  # answers that must not be trusted blindly
                    status, body = 200, b"value-of-" + path.encode()
                    what = path.split("/")[2]
                    extra = {
                        "bigetag": f'ETag: "{"9" * 5000}"\r\n',
                        "hugeage": f"Cache-Control: max-age={'9' * 400}\r\n",
                        "longtype": f"Content-Type: text/{'x' * 1000}\r\n",
                    }.get(what, "")
                else:
                    status, body = 200, b"value-of-" + path.encode()
                    extra = f'ETag: "{self.version}"\r\nContent-Type: text/x-up\r\n'
                    if self.max_age is not None:
                        extra += f"Cache-Control: max-age={self.max_age}\r\n"
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
