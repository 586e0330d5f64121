"""Instructions (callgrind) and CPU per request of the cached GET, the strong GET and the
POST on PostgreSQL, maxage against its references, in process (issue 17).

    python bench/scaleout/inproc.py [--requests 2000] [--callers 50] [--paths strong,post]
        [--who maxage,ref] [--cpu] [--rounds 3] [--keep PREFIX] [--cprofile PREFIX]
        [--baseline-src DIR] [--db postgresql://postgres@127.0.0.1:5432/test]
        [--cache redis://127.0.0.1:6379/15]

No granian and no sockets between client and server: each child process builds the
server's application as a worker does and calls it directly, ``callers`` concurrent
callers doing ``requests`` requests between them, on uvloop, against real PostgreSQL:

* maxage: ``maxage.cli.rsgi_app()`` (what ``maxage serve`` runs in each worker, built from
  the settings of ``maxage serve --db … --access-log off --max-loop-lag 0``, as
  ``primary.py`` runs it), called through ``__rsgi__`` with a scope and protocol object
  shaped as granian's (``response_bytes`` keeps the answer);
* asgi (``--who``, cached GET only): the same app's ASGI callable (``App.__call__``, what
  ``--interface asgi`` runs), with granian's ASGI scope shape (``baseline-asgi`` with
  ``--baseline-src``);
* ref-rsgi (``--who``, cached GET only): ``bench/api/raw_rsgi.py`` through the RSGI
  caller, for scale (the RSGI harness's own cost);
* ref: ``pk_asgi.py`` (strong GET: one pooled ``fetchrow``), ``txn_asgi.py`` (POST: a
  2-insert transaction) and, for the cached GET, ``bench/api/raw_asgi.py`` (the same body
  bytes, precomputed headers: the wall-clock benchmarks' reference) called through ASGI
  with granian's scope shape.

The request shapes are the ones ``primary.py`` and ``run.py`` make wrk send: ``GET
/v1/products/<id>`` (``cached``: an L1 hit, the bounded read's hot path), ``GET
/v1/products/<id>?consistency=strong`` and ``POST /v1/products`` with ``post.lua``'s body.
``--cache``: maxage runs with that Redis as its shared tier (as ``run.py`` does).
What granian itself costs (HTTP parsing, building the scope, writing the answer) is in
neither figure; it is about the same for both servers.

By default each (server, path) runs in a fresh interpreter under ``valgrind
--tool=callgrind`` (``bench/callgrind_core.py``): start-up and a warm-up of the same
requests outside the count, then the measured requests inside one
``itertools.starmap`` call (``--toggle-collect=starmap_next``): everything the process
executes meanwhile is counted (the app, asyncpg, uvloop, background tasks), PostgreSQL's
own work is not. Instructions do not move with the neighbours' load; wall time under
valgrind is ~50x, so timer-driven background work weighs less than in a real run (the
in-service monitor's checking passes, at most one per 0.1 s, are spaced 50x wider under
valgrind to keep their weight per request).
``--cpu``: no valgrind, CPU µs per request (``process_time``), ``--rounds`` alternating
children, medians. ``--cprofile PREFIX``: a cProfile of the measured phase per child
(``PREFIX.<who>.<path>``, read with ``pstats``). ``--baseline-src DIR``: also maxage run
from another ``src/`` tree (``PYTHONPATH``), on its own schema.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from itertools import starmap
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from callgrind_core import callgrind_count  # noqa: E402  (bench/)

POST_BODY = b'{"name":"chair","price":49.5,"currency":"EUR","tags":["wood"]}'
PATHS = ("cached", "strong", "post")
VALGRIND_SLOWDOWN = 50


# -- the child: one server, one path ------------------------------------------------------


class _Headers:
    """granian's RSGI header map, as much of it as maxage reads."""

    __slots__ = ("_items", "_keys")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._keys = [k for k, _ in items]

    def keys(self) -> list[str]:
        return self._keys

    def items(self) -> list[tuple[str, str]]:
        return self._items

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, name: str) -> bool:
        return name in self._keys


class _Scope:
    __slots__ = (
        "client",
        "headers",
        "http_version",
        "method",
        "path",
        "proto",
        "query_string",
        "scheme",
    )

    def __init__(self, method: str, path: str, query: str, headers: list[tuple[str, str]]):
        self.proto, self.http_version, self.scheme = "http", "1.1", "http"
        self.client = "127.0.0.1:40000"
        self.method, self.path, self.query_string = method, path, query
        self.headers = _Headers(headers)


class _Proto:
    """granian's RSGI protocol object: the body in one chunk, the answer kept."""

    __slots__ = ("_body", "headers", "status")

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.status = 0
        self.headers: list[tuple[str, str]] = []

    def __aiter__(self) -> Any:
        return self._chunks()

    async def _chunks(self) -> Any:
        if self._body:
            yield self._body

    async def client_disconnect(self) -> None:
        await asyncio.Future()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Any:
        raise AssertionError("no streams here")


def _rsgi_caller(app: Any, path: str, setup: dict[str, Any]) -> Any:
    host = ("host", "127.0.0.1:8000")
    body = b""
    if path == "cached":
        scope = _Scope("GET", f"/v1/products/{setup['id']}", "", [host])
    elif path == "strong":
        scope = _Scope("GET", f"/v1/products/{setup['id']}", "consistency=strong", [host])
    else:
        body = POST_BODY
        headers = [
            host,
            ("content-type", "application/json"),
            ("content-length", str(len(POST_BODY))),
        ]
        scope = _Scope("POST", "/v1/products", "", headers)

    async def one() -> int:
        proto = _Proto(body)
        await app.__rsgi__(scope, proto)
        return proto.status

    return one


def _asgi_caller(app: Any, path: str, target: str = "/") -> Any:
    method, body = ("POST", POST_BODY) if path == "post" else ("GET", b"")
    headers = [(b"host", b"127.0.0.1:8000")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def one() -> int:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 40000),
            "scheme": "http",
            "method": method,
            "root_path": "",
            "path": target,
            "raw_path": target.encode(),
            "query_string": b"",
            "headers": headers,
        }
        status = 0
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Future()
            return {}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)
        return status

    return one


def child(
    who: str,
    path: str,
    requests: int,
    callers: int,
    setup: dict[str, Any],
    mode: str,
    out: str | None,
) -> None:
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    if who == "ref-rsgi":
        sys.path.insert(0, str(HERE.parent / "api"))
        os.environ.update(setup["cached_env"])
        import types

        import raw_rsgi

        one = _rsgi_caller(types.SimpleNamespace(__rsgi__=raw_rsgi.app), path, setup["maxage"])
    elif who == "ref":
        sys.path.insert(0, str(HERE))
        sys.path.insert(0, str(HERE.parent / "api"))
        os.environ.update(setup[f"{path}_env"])
        import importlib

        name = {"cached": "raw_asgi", "strong": "pk_asgi", "post": "txn_asgi"}[path]
        one = _asgi_caller(importlib.import_module(name).app, path)
    else:
        from maxage import cli

        base = "baseline" if who.startswith("baseline") else "maxage"
        schema = setup["schema"][base]
        serve = ["serve", "--db", setup["db"], "--pg-schema", schema, "--access-log", "off",
                 "--max-loop-lag", "0"]  # fmt: skip
        if setup["cache"] and path == "cached":
            serve += ["--cache", setup["cache"]]
        args = cli.build_parser().parse_args(serve)
        settings = cli.serve_settings(args)
        settings["main_pid"] = os.getppid()  # the worker watches its parent: this one's
        os.environ[cli.SETTINGS_ENV] = json.dumps(settings)
        app = cli.rsgi_app()
        if mode == "callgrind":
            # Everything runs ~50x slower under valgrind: the disconnect watcher, started
            # once a request's work has run WATCH_DISCONNECT_AFTER (50 ms), would start for
            # every request, as it does not for requests that end within 50 ms in a real
            # run. Scaled by the same factor.
            from maxage.api import app as app_module

            app_module.WATCH_DISCONNECT_AFTER *= VALGRIND_SLOWDOWN
        loop.run_until_complete(app.app.startup())
        if mode == "callgrind" and app.app._status_task is not None:
            # The /status recorder renders the metrics every 2 s of wall time (~1 ms of
            # CPU, 0.05% of a core in a real run): ~50x more per request under valgrind,
            # and as many times as the run lasts. Off in the count.
            app.app._status_task.cancel()
        monitor = app.app.service.reads.monitor
        if mode == "callgrind" and monitor is not None:
            monitor.pass_interval *= VALGRIND_SLOWDOWN  # its real rate per request
        doc = setup[base]
        if who.endswith("asgi"):
            one = _asgi_caller(app.app, path, f"/v1/products/{doc['id']}")
        else:
            one = _rsgi_caller(app, path, doc)

    async def run(n: int) -> list[int]:
        statuses: list[int] = []

        async def caller(k: int) -> None:
            for _ in range(k):
                statuses.append(await one())

        await asyncio.gather(*(caller(n // callers) for _ in range(callers)))
        return statuses

    warm = loop.run_until_complete(run(max(requests // 2, callers * 4)))
    assert set(warm) <= {200, 201}, sorted(set(warm))
    profiler = None
    if mode == "cprofile":
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    t0 = time.process_time()
    # The measured requests are the only ones run through itertools.starmap (callgrind
    # counts from its first ``starmap_next`` to the last).
    done: deque[list[int]] = deque(maxlen=1)
    done.extend(starmap(loop.run_until_complete, [(run(requests),)]))
    cpu = time.process_time() - t0
    if profiler is not None:
        profiler.disable()
        assert out is not None
        profiler.dump_stats(out)
    statuses = done[0]
    assert set(statuses) <= {200, 201}, sorted(set(statuses))
    if path == "cached" and who == "maxage":  # after the count: the answers were L1 hits
        proto = _Proto(b"")
        loop.run_until_complete(app.__rsgi__(_Scope("GET", f"/v1/products/{doc['id']}", "",
                                                    []), proto))  # fmt: skip
        assert ("cache-status", "maxage; hit; detail=l1") in proto.headers, proto.headers
    print(json.dumps({"cpu_us": cpu / len(statuses) * 1e6, "n": len(statuses)}), flush=True)
    os._exit(0)  # the app's shutdown would wait for the drain grace


# -- the parent -----------------------------------------------------------------------------


async def _setup(db: str, schemas: dict[str, str], cache: str | None) -> dict[str, Any]:
    """Each maxage schema made by a maxage app, one document in it (its id, and the strong
    and cached reads' bytes for the references), and the reference's own tables for the
    POST."""
    import asyncpg

    setup: dict[str, Any] = {"db": db, "schema": schemas, "cache": cache}
    conn = await asyncpg.connect(db)
    try:
        for who, schema in schemas.items():
            setup[who] = json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--make-doc", db, schema],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**os.environ, **_src_env(who)},
                ).stdout
            )
        main = schemas["maxage"]
        ref = f"{main}_ref"
        for st in (
            f'CREATE SCHEMA IF NOT EXISTS "{ref}"',
            f'CREATE TABLE IF NOT EXISTS "{ref}".documents (LIKE "{main}".documents INCLUDING ALL)',
            f'CREATE TABLE IF NOT EXISTS "{ref}".changes (LIKE "{main}".changes INCLUDING ALL)',
        ):
            await conn.execute(st)
        doc = setup["maxage"]
        data = bytes(
            await conn.fetchval(
                f'SELECT data FROM "{main}".documents WHERE collection = $1 AND id = $2',
                "products",
                doc["id"],
            )
        )
    finally:
        await conn.close()
    head, sep, tail = doc["strong_body"].encode("latin-1").partition(data)
    assert sep, "the document's data is not in the strong body"
    setup["cached_env"] = {"BENCH_BODY": doc["cached_body"]}
    setup["strong_env"] = {
        "BENCH_DSN": db,
        "BENCH_SCHEMA": main,
        "BENCH_COLLECTION": "products",
        "BENCH_ID": doc["id"],
        "BENCH_HEAD": head.decode(),
        "BENCH_TAIL": tail.decode(),
    }
    setup["post_env"] = {"BENCH_DSN": db, "BENCH_SCHEMA": ref}
    return setup


def _make_doc(db: str, schema: str) -> None:
    """(child) Start maxage on ``schema`` (making it), POST one document, read it strong."""
    import uvloop

    from maxage import cli

    args = cli.build_parser().parse_args(
        ["serve", "--db", db, "--pg-schema", schema, "--access-log", "off"]
    )
    settings = cli.serve_settings(args)
    settings["main_pid"] = os.getppid()
    os.environ[cli.SETTINGS_ENV] = json.dumps(settings)
    app = cli.asgi_app()
    loop = uvloop.new_event_loop()
    loop.run_until_complete(app.startup())
    got: list[dict[str, Any]] = []

    async def call(method: str, path: str, query: bytes, body: bytes) -> bytes:
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Future()
            return {}

        async def send(message: dict[str, Any]) -> None:
            got.append(message)

        got.clear()
        headers = [(b"content-type", b"application/json")] if body else []
        await app(
            {
                "type": "http",
                "http_version": "1.1",
                "method": method,
                "scheme": "http",
                "path": path,
                "query_string": query,
                "headers": headers,
                "client": ("127.0.0.1", 1),
            },
            receive,
            send,
        )
        return b"".join(m.get("body", b"") for m in got)

    created = json.loads(loop.run_until_complete(call("POST", "/v1/products", b"", POST_BODY)))
    strong = loop.run_until_complete(
        call("GET", f"/v1/products/{created['id']}", b"consistency=strong", b"")
    )
    cached = loop.run_until_complete(call("GET", f"/v1/products/{created['id']}", b"", b""))
    print(
        json.dumps(
            {
                "id": created["id"],
                "strong_body": strong.decode("latin-1"),
                "cached_body": cached.decode("latin-1"),
            }
        ),
        flush=True,
    )
    os._exit(0)


_BASELINE: dict[str, str] = {}


def _src_env(who: str) -> dict[str, str]:
    """The child's import path: the baseline's src first for "baseline"; valgrind runs the
    interpreter by its resolved path, outside the venv, so the child gets the parent's."""
    paths = [p for p in sys.path if p]
    if who.startswith("baseline"):
        paths.insert(0, _BASELINE["src"])
    return {"PYTHONPATH": os.pathsep.join(paths)}


def measure(
    who: str,
    path: str,
    args: argparse.Namespace,
    setup_file: str,
    mode: str,
    keep: str | None = None,
) -> float:
    argv = [
        __file__,
        "--child",
        who,
        path,
        str(args.requests),
        str(args.callers),
        setup_file,
        mode,
        keep or "",
    ]
    env = _src_env(who)
    if mode == "callgrind":
        cg_keep = keep
        argv[-1] = ""
        return callgrind_count("starmap_next", argv, env, keep=cg_keep) / args.requests
    proc = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=True,
    )
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["cpu_us"])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--make-doc":
        _make_doc(argv[1], argv[2])
        return 0
    if argv and argv[0] == "--child":
        who, path, n, c, setup_file, mode, out = argv[1:8]
        setup = json.loads(Path(setup_file).read_text())
        child(who, path, int(n), int(c), setup, mode, out or None)
        return 0
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--paths", default=",".join(PATHS))
    ap.add_argument("--who", default="maxage,ref")
    ap.add_argument("--cpu", action="store_true", help="CPU µs/request, no valgrind")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--keep", help="save callgrind profiles as KEEP.<who>.<path>")
    ap.add_argument("--cprofile", help="save cProfile stats as PREFIX.<who>.<path>")
    ap.add_argument("--baseline-src", type=Path)
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--cache", help="maxage's shared tier for the cached GET (Redis URL)")
    args = ap.parse_args(argv)
    whos = args.who.split(",")
    if args.baseline_src is not None:
        _BASELINE["src"] = str(args.baseline_src.resolve())
        whos.insert(1, "baseline")
        if "asgi" in whos:
            whos.insert(whos.index("asgi") + 1, "baseline-asgi")
    schemas = {"maxage": f"bench_inproc_{os.getpid()}"}
    if "baseline" in whos:
        schemas["baseline"] = f"bench_inproc_{os.getpid()}_base"
    mode = "cprofile" if args.cprofile else "cpu" if args.cpu else "callgrind"
    results: dict[str, dict[str, list[float]]] = {}
    import tempfile

    try:
        setup = asyncio.run(_setup(args.db, schemas, args.cache))
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(setup, f)
        for r in range(args.rounds):
            for path in args.paths.split(","):
                for who in whos if r % 2 == 0 else whos[::-1]:
                    if who.endswith(("asgi", "rsgi")) and path != "cached":
                        continue
                    prefix = args.cprofile or args.keep
                    keep = f"{prefix}.{who}.{path}" if prefix else None
                    value = measure(who, path, args, f.name, mode, keep)
                    results.setdefault(path, {}).setdefault(who, []).append(value)
                    print(f"{path} {who}: {value:,.1f}", file=sys.stderr, flush=True)
    finally:
        asyncio.run(_drop(args.db, [*schemas.values(), f"{schemas['maxage']}_ref"]))
    unit = "CPU µs/req" if mode != "callgrind" else "instructions/req"
    print(
        f"\n{args.requests} requests, {args.callers} callers, {args.rounds} round(s); {unit}; "
        f"load average {os.getloadavg()[0]:.1f}\n"
    )
    print(f"| path | server | {unit} (rounds) | vs ref |\n|---|---|---|---|")
    for path, by_who in results.items():
        ref = statistics.median(by_who["ref"]) if "ref" in by_who else None
        for who, values in by_who.items():
            med = statistics.median(values)
            rounds = ", ".join(_num(v) for v in values)
            vs = f"{med / ref:.2f}x" if ref and who != "ref" else ""
            if ref and who == "ref-rsgi":
                vs = f"{med / ref:.2f}x"
            print(f"| {path} | {who} | {_num(med)} ({rounds}) | {vs} |")
    return 0


def _num(v: float) -> str:
    return f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


async def _drop(db: str, schemas: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(db)
    try:
        for s in schemas:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
