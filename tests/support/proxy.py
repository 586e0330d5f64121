"""A TCP proxy in front of a real server that can lose answers: the request reaches the
server and is served in full, but the client's connection is closed before the answer is
passed on, the way a load balancer or a network fault loses it. Used to show that a
client's retry of such a write takes effect once (the same ``Idempotency-Key``).

``DroppingProxy(upstream_port).start()`` listens on ``url``; ``drop_answers(n)`` loses the
answers of the next ``n`` connections (each connection carries one request when the client
opens it fresh); ``dropped`` counts what was lost."""

from __future__ import annotations

import contextlib
import socket
import threading


class DroppingProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.create_server((host, 0))
        self.url = f"http://{host}:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._to_drop = 0
        self.dropped = 0
        self.connections = 0
        self._closed = False

    def start(self) -> DroppingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def drop_answers(self, n: int) -> None:
        with self._lock:
            self._to_drop = n

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> DroppingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                drop = self._to_drop > 0
                if drop:
                    self._to_drop -= 1
            threading.Thread(target=self._serve, args=(client, drop), daemon=True).start()

    def _serve(self, client: socket.socket, drop: bool) -> None:
        server = socket.create_connection(self.upstream)
        threading.Thread(target=self._pump, args=(client, server), daemon=True).start()
        if drop:
            # Wait for the first bytes of the answer (the request has been served, a write
            # committed), then lose them and the connection.
            with contextlib.suppress(OSError):
                server.recv(65536)
            with self._lock:
                self.dropped += 1
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
            return
        self._pump(server, client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
