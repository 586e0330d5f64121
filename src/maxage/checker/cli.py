"""``maxage check``: drive a target with concurrent clients and faults (random phases and
targeted rounds, :mod:`maxage.checker.races`), follow its change feed
(:mod:`maxage.checker.feed`), then check P0-P8; stop at the first violation unless
``--keep-going``.

Without ``--target`` it starts ``maxage serve --fault-injection`` itself on a
temporary SQLite database with a generated config in which ``ttl`` is much
longer than ``max_staleness`` (so the guards, not expiry, keep the bound).
Exit status: 0 no violation, 1 a violation, 2 usage or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from maxage.checker import revocation
from maxage.checker.checks import HTTP_AGE_SLACK, check
from maxage.checker.feed import DISCONNECTS, FeedReader
from maxage.checker.history import FAULT, OK, HistoryWriter, Op
from maxage.checker.html_report import render_html
from maxage.checker.races import Schedule
from maxage.checker.races import control as control_call
from maxage.checker.report import build_report, render_text
from maxage.checker.workload import Client, Collection, DiscoveryError, Workload, discover
from maxage.progress import Progress
from maxage.units import DURATION_HELP, duration_arg, has_unit, positive_duration_arg

FEED_PATIENCE = 10.0  # seconds the final feed reading waits for an acknowledged change
# the longest a targeted round started before the end may run past it (a safety net for
# a hung target: every step of a round has a timeout of its own)
ROUND_GRACE = 60.0


class CheckError(Exception):
    """A usage or connection problem: exit 2."""


def _staleness(text: str) -> str:
    """``--staleness``: a positive duration, kept as text with its unit for the config."""
    positive_duration_arg(text)
    text = text.strip()
    return text if has_unit(text) else f"{text}s"


API_KEY_ENV = "MAXAGE_API_KEY"


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", metavar="URL", help="a running maxage API (default: start one)")
    p.add_argument(
        "--duration",
        type=positive_duration_arg,
        default=30.0,
        metavar="DURATION",
        help=f"how long the workload runs (a targeted round started before the end runs to "
        f"its end); {DURATION_HELP} (default: 30s)",
    )
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default: 8)")
    p.add_argument(
        "--seed", type=int, default=None, help="workload and fault seed (default: random)"
    )
    p.add_argument(
        "--faults",
        default="all",
        help="comma-separated faults, 'all' (default) or 'none'; the target lists the ones it "
        "supports at /_maxage/faults (drop, duplicate, delay, reorder, pause-fill, stall-tailer, "
        "invalidation-error, slow-primary; slow-commit on PostgreSQL; pause-shared-fill with a "
        "shared tier); targeted rounds aim pause-fill, pause-shared-fill, invalidation-error + "
        "drop and stall-tailer + drop at the race windows",
    )
    p.add_argument("--json", metavar="REPORT_FILE", help="write the report as JSON")
    p.add_argument("--history", metavar="FILE", help="write the history (JSONL)")
    p.add_argument(
        "--html",
        metavar="FILE",
        help="write the report as one self-contained HTML page with charts (staleness per "
        "mode with the bound, operations over time with fault phases, violations)",
    )
    p.add_argument("--plot", metavar="FILE", help=argparse.SUPPRESS)  # removed: see run()
    p.add_argument("--keys", type=int, default=4, help="hot keys per collection (default: 4)")
    p.add_argument(
        "--collections", default=None, help="comma-separated collections to drive (default: all)"
    )
    p.add_argument(
        "--staleness",
        type=_staleness,
        default="500ms",
        metavar="DURATION",
        help=f"max_staleness of the generated config when no --target; {DURATION_HELP} "
        "(default: 500ms)",
    )
    p.add_argument(
        "--mutant",
        default=None,
        help="TEST ONLY, without --target: start the server with a known-broken variant "
        "(`maxage serve --help` lists them)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="server workers when no --target (default: 1)"
    )
    p.add_argument(
        "--converge-timeout",
        type=duration_arg,
        default=60.0,
        metavar="DURATION",
        help=f"longest wait for convergence after healing; {DURATION_HELP} (default: 60s)",
    )
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="run for the whole --duration and report every violation (default: stop at the "
        "first one, found by a check after every targeted round and every 2 s)",
    )
    p.add_argument(
        "--stop-on-violation", action="store_true", help=argparse.SUPPRESS
    )  # the default
    p.add_argument(
        "--fault-probability",
        type=float,
        default=None,
        help="probability of each enabled fault per opportunity (default: per fault)",
    )
    p.add_argument(
        "--feed-disconnects",
        choices=DISCONNECTS,
        default="both",
        help="how the change-feed reader's connections end (P7 resumes after each): "
        "'client' (the reader drops them), 'server' (a proxy cuts them from the server's "
        "side, mid-line; http:// targets) or 'both' (default)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")  # fmt: skip
    p.add_argument(
        "--api-key",
        default=None,
        help=f"with --target on a server run with --auth keys: an API key with the scopes "
        f"admin, read:* and write:* (or set {API_KEY_ENV}); the checker then also revokes "
        "keys while clients use them and checks P8",
    )


def run(args: argparse.Namespace) -> int:
    if args.plot:
        print(
            "maxage check: --plot (a PNG) was replaced by --html FILE: a self-contained HTML "
            "report with the staleness distribution, operations over time and violations",
            file=sys.stderr,
        )
        return 2
    try:
        return asyncio.run(_main(args))
    except CheckError as exc:
        print(f"maxage check: {exc}", file=sys.stderr)
        return 2


def _parse_faults(text: str, supported: list[str]) -> list[str]:
    t = text.strip().lower()
    if t in ("", "none"):
        return []
    if t == "all":
        return list(supported)
    names = [x.strip() for x in t.split(",") if x.strip()]
    bad = [n for n in names if n not in supported]
    if supported and bad:
        raise CheckError(f"unknown or unsupported faults {bad}; the target supports: "
                         f"{','.join(supported)}")  # fmt: skip
    return names


def generated_config(staleness: str) -> str:
    schema = """
[collections.{name}.schema]
type = "object"
required = ["tok"]
[collections.{name}.schema.properties.tok]
type = "string"
maxLength = 100
[collections.{name}.schema.properties.n]
type = "integer"
"""
    out = []
    for name, policy in (("around", "write-around"), ("through", "write-through")):
        out.append(f'[collections.{name}]\nmax_staleness = "{staleness}"\n'
                   f'read_modes = ["bounded", "strong", "session"]\nwrite_policy = "{policy}"\nttl = "120s"\n')  # fmt: skip
        out.append(schema.format(name=name))
    out.append('[collections.strongonly]\nmax_staleness = "0s"\nread_modes = ["strong"]\n'
               'write_policy = "write-around"\n')  # fmt: skip
    out.append(schema.format(name="strongonly"))
    return "\n".join(out)


class Server:
    """A ``maxage serve --fault-injection`` subprocess on a temporary SQLite file."""

    def __init__(self, staleness: str, mutant: str | None, workers: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="maxage-check-")
        cfg = Path(self.dir.name) / "check.toml"
        cfg.write_text(generated_config(staleness))
        db = f"sqlite:///{self.dir.name}/check.db"
        # The server runs with API keys, so revocation (P8) is checked too; the admin key
        # is made with the command line, as a user would.
        # The checker's own server is a fresh one: none of the operator's MAXAGE_* settings
        # (a real database, a real Redis, a host) may leak into it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_")}
        made = subprocess.run([sys.executable, "-m", "maxage", "keys", "create", "--db", db,
                               "--scopes", "admin,read:*,write:*", "--name", "check"],
                              capture_output=True, text=True, timeout=60, check=False, env=env)  # fmt: skip
        if made.returncode != 0:
            raise CheckError(f"cannot create an API key: {made.stderr.strip()}")
        self.api_key = made.stdout.strip().splitlines()[-1]
        cmd = [sys.executable, "-m", "maxage", "serve", "--fault-injection", "--port", "0",
               "--config", str(cfg), "--db", db, "--auth", "keys", "--auth-staleness", "250ms",
               "--access-log", "off", "--workers", str(workers)]  # fmt: skip
        if mutant:
            cmd += ["--mutant", mutant]
        env["MAXAGE_FAULTS_FILE"] = str(Path(self.dir.name) / "faults.json")
        self.errors = open(Path(self.dir.name) / "server.err", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.errors, env=env,
                                     text=True, start_new_session=True)  # fmt: skip
        self.url = ""

    def wait_listening(self, timeout: float = 30.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                return self.url
        # Read what the server said before stop() closes the file.
        self.errors.seek(0)
        said = [line.strip() for line in self.errors.read().splitlines() if line.strip()]
        self.stop()
        raise CheckError(
            "the server did not start" + (f": {said[-1]}" if said else " (no 'listening on' line)")
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.errors.close()
        self.dir.cleanup()


async def _main(args: argparse.Namespace) -> int:
    if args.clients < 1 or args.duration <= 0 or args.keys < 1:
        raise CheckError("--clients, --duration and --keys must be positive")
    if args.mutant and args.target:
        raise CheckError("--mutant starts its own server; it cannot be used with --target")
    for flag, path in (("--json", args.json), ("--html", args.html), ("--history", args.history)):
        folder = Path(path).resolve().parent if path else None
        if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
            raise CheckError(f"{flag} {path}: cannot write there ({folder} is not a writable directory)")  # fmt: skip
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    server: Server | None = None
    target = args.target
    if not target:
        server = Server(args.staleness, args.mutant, args.workers)
        target = await asyncio.to_thread(server.wait_listening)
        args.api_key = server.api_key
    try:
        return await _drive(args, target.rstrip("/"), seed, server)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)


async def _drive(args: argparse.Namespace, target: str, seed: int, server: Server | None) -> int:
    """Discover, drive the workload with faults and the revocation probe, heal, read every
    key, check, report. (Long: one run's phases in order, sharing the run's state.)"""
    # the clients, the targeted rounds' concurrent probes, a feed stream per collection
    limits = httpx.Limits(
        max_connections=args.clients + 32, max_keepalive_connections=args.clients + 32
    )
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    async with httpx.AsyncClient(
        base_url=target, limits=limits, timeout=10.0, headers=headers
    ) as http:
        spec = await _openapi(http, target)
        try:
            cols, notes = discover(spec)
        except (DiscoveryError, KeyError, TypeError) as exc:
            raise CheckError(f"cannot discover the collections: {exc}") from None
        if args.collections:
            wanted = set(args.collections.split(","))
            cols = [c for c in cols if c.name in wanted]
        if not cols:
            raise CheckError("no collection to drive (see the OpenAPI document)")
        keys_needed = bool(spec.get("components", {}).get("securitySchemes")) and any(
            "security" in op for item in spec.get("paths", {}).values()
            for op in item.values() if isinstance(op, dict)
        )  # fmt: skip
        if keys_needed and not api_key:
            raise CheckError(
                f"the target requires API keys: give an admin key with --api-key or {API_KEY_ENV}"
            )
        if not keys_needed:
            notes.append("the target runs without API keys (--auth none): P8 not exercised")
        bounds = {c.name: c.max_staleness for c in cols}
        # fault control
        control: dict[str, Any] | None = None
        try:
            r = await control_call(http, "GET")
            if r.status_code == 200:
                control = r.json()
        except httpx.HTTPError:
            control = None
        supported = list(control["supported"]) if control else []
        faults = _parse_faults(args.faults, supported)
        if faults and control is None:
            if args.faults.strip().lower() == "all":
                faults = []
                notes.append("the target has no fault injection (start it with --fault-injection)")
            else:
                raise CheckError(
                    "the target does not expose fault injection (serve --fault-injection)"
                )
        unsupported = [f for f in faults if control and f not in supported]
        if unsupported:
            raise CheckError(
                f"faults {unsupported} are not supported by the target's"
                f" {control.get('store') if control else ''} store"
            )
        if control and control.get("mutant") and not control.get("mutant_applicable", True):
            needs = control.get("mutant_needs") or "another store"
            raise CheckError(
                f"mutant {control['mutant']} is not applicable to this target "
                f"({control.get('store')}): it needs {needs}"
            )
        if control:
            await control_call(http, "DELETE")

        history = HistoryWriter(args.history)
        ops: list[Op] = []

        def record(op: Op) -> None:
            ops.append(op)
            history.write(op)

        wl = Workload(http, cols, {}, seed, record)
        watch = Watch(
            wl, ops, bounds, stop=not args.keep_going, quiet=args.quiet, budget=args.duration
        )
        for c in cols:
            wl.keys[c.name] = [f"chk-{wl.run_tag}-{k}" for k in range(args.keys)]
        seeder = Client(wl, 0)
        for c in cols:
            for k in wl.keys[c.name]:
                await seeder.write("create", c, k)
        end = wl.now() + args.duration
        clients = [Client(wl, i + 1) for i in range(args.clients)]
        tasks = [asyncio.create_task(cl.run(end)) for cl in clients]
        schedule = Schedule(wl, http, cols, faults, seed, args.fault_probability,
                            on_round=watch.wake.set)  # fmt: skip
        fault_task = asyncio.create_task(schedule.run(end)) if faults else None
        progress = asyncio.create_task(watch.run())
        feed = FeedReader(http, wl, cols, seed, args.feed_disconnects)
        feed_task = asyncio.create_task(feed.follow())
        prober = (
            asyncio.create_task(
                revocation.probe(http, wl, cols[0], wl.keys[cols[0].name][0], end, seed)
            )
            if keys_needed
            else None
        )
        started = time.monotonic()
        try:
            await asyncio.gather(*tasks)
            if prober is not None:
                await prober
            if fault_task is not None:
                await _round_ends(wl, fault_task, notes)
        finally:
            wl.stop = True
            if prober is not None:
                prober.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prober
            if fault_task is not None:
                fault_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fault_task
            for task in (progress, feed_task):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # heal, wait out the bound, then read every key (P6)
        server_faults: dict[str, Any] | None = None
        if control:
            heal = Op(wl.new_id(), 0, FAULT, invoke=wl.now())
            server_faults = (await control_call(http, "DELETE")).json()
            heal.ret = wl.now()
            heal.detail = "heal"
            record(heal)
        if watch.caught_at is None:
            settle = min(args.converge_timeout, max(bounds.values(), default=0.0) + 0.5)
            await asyncio.sleep(settle)
            final = Client(wl, args.clients + 1)
            probed = schedule.keys() if faults else {}
            for c in cols:
                for k in wl.keys[c.name] + probed.get(c.name, []):
                    await final.read(c, k, "strong", phase="final")
                    for mode in ("bounded", "bounded", "bounded", "session"):
                        if mode in c.modes:
                            await final.read(c, k, mode, phase="final")
        else:
            notes.append("stopped at the first violation: convergence (P6) was not checked")
        acked = {(o.collection, o.key, o.version) for o in ops
                 if o.is_write and o.outcome == OK and o.version is not None and o.key}  # fmt: skip
        await feed.drain(acked, patience=FEED_PATIENCE if watch.caught_at is None else 1.0)
        history.close()
        elapsed = time.monotonic() - started
        created = {c.name: wl.keys[c.name] + (schedule.keys().get(c.name, []) if faults else [])
                   for c in cols}  # fmt: skip
        notes.append(
            await _clean_up(http, created, own=server is not None, faults=control is not None)
        )
    if not args.quiet and sys.stderr.isatty():
        print(f"maxage check: checking {len(ops):,} operations…", file=sys.stderr, flush=True)
    res = await asyncio.to_thread(check, ops, bounds, age_slack=HTTP_AGE_SLACK)
    rep = build_report(ops, res, bounds=bounds, seed=seed, duration=elapsed, faults_requested=faults,
                       server_faults=server_faults, target=target, mutant=args.mutant,
                       notes=notes)  # fmt: skip
    rep["targeted"] = schedule.tally.to_json() if faults else None
    rep["stopped_at_s"] = watch.caught_at
    rep["feed"] = feed.counts()
    print(render_text(rep))
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2, default=str))
    if args.html:
        page = render_html(rep, ops, res, bounds, title=f"maxage check {target}")
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"report: {args.html}", file=sys.stderr)
    return 1 if res.violations else 0


async def _round_ends(wl: Workload, fault_task: asyncio.Task[None], notes: list[str]) -> None:
    """Let a targeted round that started before the end run to its end: its windows are
    only counted when done, and a cut round would leave a probe write in flight that the
    target may still apply. On a loaded machine a round takes several times its nominal
    length, and cutting it at the end lost its windows (and coverage) for good. Waits at
    most ``ROUND_GRACE``; a violation (``wl.stop``) ends the wait at once."""
    deadline = wl.now() + ROUND_GRACE
    while not fault_task.done() and not wl.stop:
        left = deadline - wl.now()
        if left <= 0:
            notes.append(f"a targeted round was cut: still running {ROUND_GRACE:g}s after the end")
            return
        await asyncio.wait({fault_task}, timeout=min(0.1, left))


async def _openapi(http: httpx.AsyncClient, target: str) -> dict[str, Any]:
    """The target's OpenAPI document (the contracts: bounds and modes). A busy server's
    ``503`` is retried for up to 10 s, as its ``Retry-After`` asks."""
    deadline = time.monotonic() + 10.0
    while True:
        try:
            r = await http.get("/openapi.json")
            if r.status_code == 503 and time.monotonic() < deadline:
                await asyncio.sleep(min(1.0, float(r.headers.get("retry-after", "0.2") or 0.2)))
                continue
            if r.status_code != 200:
                raise CheckError(f"cannot read {target}/openapi.json: status {r.status_code}")
            spec = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CheckError(f"cannot read {target}/openapi.json: {exc}") from None
        if not isinstance(spec, dict):
            raise CheckError(f"{target}/openapi.json is not an OpenAPI document")
        return spec


async def _clean_up(
    http: httpx.AsyncClient, created: dict[str, list[str]], *, own: bool, faults: bool
) -> str:
    """Delete the documents the run created on a target without fault injection (a real
    deployment); say what happened to them (the note of the report)."""
    n = sum(len(ids) for ids in created.values())
    if own:
        return f"the checker's own server and database (with its {n} documents) are removed"
    if faults:
        return (f"left the {n} documents the checker created on the target (ids chk-<run>-*, "
                "and those made by POST): it runs with fault injection, so it is a test server")  # fmt: skip
    deleted = failed = 0
    for name, ids in created.items():
        for id in ids:
            try:
                r = await http.delete(f"/v1/{name}/{id}")
            except httpx.HTTPError:
                failed += 1
                continue
            if r.status_code in (204, 404):
                deleted += r.status_code == 204
            else:
                failed += 1
    return (f"cleaned up: deleted the {deleted} documents the checker created that still existed"
            f"{f' ({failed} deletes failed)' if failed else ''}; their rows stay in the primary "
            "marked deleted, and the change log keeps their changes")  # fmt: skip


class Watch:
    """The progress line (on a terminal only: maxage.progress) and, unless --keep-going,
    the check that ends the workload at the first violation (after every targeted
    round, and every 2 s)."""

    def __init__(
        self,
        wl: Workload,
        ops: list[Op],
        bounds: dict[str, float],
        *,
        stop: bool,
        quiet: bool,
        budget: float,
    ) -> None:
        self.wl = wl
        self.ops = ops
        self.bounds = bounds
        self.stop = stop
        self.quiet = quiet
        self.budget = budget
        self.wake = asyncio.Event()
        self.caught_at: float | None = None  # workload time the first violation was found

    async def run(self) -> None:
        meter = Progress("maxage check", budget=self.budget, enabled=False if self.quiet else None)
        active = ""
        seen = checked = 0
        checked_at = self.wl.now()
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self.wake.wait()
                due = self.wake.is_set() or self.wl.now() - checked_at >= 2.0
                self.wake.clear()
                ops = self.ops
                for o in ops[seen:]:
                    if o.kind == FAULT:
                        active = ",".join(o.faults) or "-"
                seen = len(ops)
                if self.stop and due and len(ops) > checked:
                    checked, checked_at = len(ops), self.wl.now()
                    res = await asyncio.to_thread(
                        check, list(ops), self.bounds, age_slack=HTTP_AGE_SLACK
                    )
                    if res.violations:
                        self.caught_at = round(self.wl.now(), 3)
                        self.wl.stop = True
                reads = sum(1 for o in ops if o.kind == "read")
                meter.update(
                    len(ops),
                    f"reads {reads:,}, writes {len(ops) - reads:,}, faults {active or '-'}",
                )
        finally:
            meter.close()


__all__ = ["CheckError", "Collection", "configure_parser", "run"]
