"""Composition of the cache server: config → cache, app, transport → a running loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass, field

from maxage.core import Cache, SystemClock
from maxage.core.clock import OffsetClock

from .app import CacheApp, make_meta, meta_charge
from .metrics import Metrics
from .protocol import Limits, ServerState
from .upstream import Upstreams, UpstreamSpec


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    max_bytes: int = 256 * 1024 * 1024
    upstreams: list[UpstreamSpec] = field(default_factory=list)
    upstream_timeout: float = 2.0
    upstream_ttl: float = 60.0
    stale_if_error: float = 0.0
    token: str | None = None
    max_value_bytes: int = 8 * 1024 * 1024
    max_key_length: int = 1024
    request_timeout: float = 10.0
    keepalive_timeout: float = 30.0
    max_connections: int = 4096
    drain_timeout: float = 5.0
    policy: str = "adaptive"
    debug_clock: bool = False
    access_log: str = "errors-and-slow"


def host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def serve(cfg: ServerConfig, *, ready: asyncio.Event | None = None) -> int:
    """Run until SIGINT/SIGTERM; returns the exit status."""
    loop = asyncio.get_running_loop()
    clock = OffsetClock() if cfg.debug_clock else SystemClock()
    cache = Cache(
        cfg.max_bytes,
        clock=clock,
        policy=cfg.policy,
        thread_safe=False,
        prefix_index=True,  # prefix invalidation costs O(affected keys), not O(all keys)
        meta_size=meta_charge,  # the precomputed header lines count against the bound
    )
    metrics = Metrics()
    upstreams = None
    if cfg.upstreams:
        upstreams = Upstreams(
            cfg.upstreams,
            cache=cache,
            clock=clock,
            metrics=metrics,
            meta_factory=make_meta,
            timeout=cfg.upstream_timeout,
            default_ttl=cfg.upstream_ttl,
            stale_if_error=cfg.stale_if_error,
            max_value_bytes=cfg.max_value_bytes,
        )
    app = CacheApp(
        cache,
        clock,
        metrics,
        max_key_length=cfg.max_key_length,
        max_value_bytes=cfg.max_value_bytes,
        token=cfg.token,
        upstreams=upstreams,
        debug_clock=cfg.debug_clock,
    )
    limits = Limits(
        max_value_bytes=cfg.max_value_bytes,
        request_timeout=cfg.request_timeout,
        keepalive_timeout=cfg.keepalive_timeout,
        max_connections=cfg.max_connections,
    )

    def on_tick() -> None:
        cache.housekeep()  # release expired tombstones and guards even if nobody writes
        app.status.tick()  # record the status page's minutes

    state = ServerState(app, limits, metrics, loop, on_tick=on_tick, access_log=cfg.access_log)
    try:
        server = await loop.create_server(
            state.factory, cfg.host, cfg.port, backlog=2048, reuse_address=True
        )
    except OSError as exc:
        print(
            f"maxage cache-server: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr
        )
        if upstreams is not None:
            await upstreams.aclose()
        return 1
    state.start()
    port = server.sockets[0].getsockname()[1]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"listening on http://{host_for_url(cfg.host)}:{port}", flush=True)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        # Drain: stop accepting, refuse keep-alive, let in-flight requests finish.
        app.ready = False
        server.close()
        state.drain()
        deadline = loop.time() + cfg.drain_timeout
        while state.connections and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(state.connections):
            if conn.transport is not None:
                conn.transport.abort()
        state.stop()
        if upstreams is not None:
            await upstreams.aclose()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    return 0


def run_server(cfg: ServerConfig) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - non-Linux fallback
        return asyncio.run(serve(cfg))
    return int(uvloop.run(serve(cfg)))
