"""The composition root: command line → config → objects → servers.

``maxage serve`` validates everything it can in the parent process (config,
options, database URL) so a mistake exits 2 with a clear message before any
worker starts; the settings then travel to the ASGI workers as one JSON
environment variable read by :func:`asgi_app`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from maxage import __version__, logs
from maxage.contracts import (
    DEFAULT_BATCH_OPERATIONS,
    MAX_BATCH_OPERATIONS,
    ConfigError,
    load_config,
)
from maxage.faults.mutants import MUTANTS
from maxage.hooks import Hooks, SlowStoreHooks
from maxage.units import DURATION_HELP, SIZE_HELP, duration_arg, positive_duration_arg, size_arg

BUNDLED_CONFIG = Path(__file__).parent / "examples" / "catalog.toml"
DEFAULT_DATA_DIR = "./maxage-data"
DEFAULT_DB_FILE = "maxage.db"
DEFAULT_DB = f"sqlite:///{DEFAULT_DATA_DIR}/{DEFAULT_DB_FILE}"
DEFAULT_PG_SCHEMA = "maxage"
PG_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")  # as maxage.store.postgres checks it
PRIMARY_CHECK_TIMEOUT = 5.0  # seconds for the pre-flight connect to the primary
SETTINGS_ENV = "MAXAGE_SERVE_SETTINGS"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
FAULTS_FILE_ENV = "MAXAGE_FAULTS_FILE"  # TEST ONLY: where the fault state lives (see _faults_file)


class UsageError(Exception):
    pass


class PrimaryUnavailable(UsageError):
    """The primary store cannot be reached or opened (exit 2, one line)."""


# -- options from the environment ----------------------------------------------------------
#
# Every option of every command also reads an environment variable: MAXAGE_ and the
# option's name in capitals with dashes as underscores (--cache-bytes: MAXAGE_CACHE_BYTES).
# `serve` and `keys` share their variables (one primary, one config, one authorization
# bound); the options of `cache-server`, `check` and `config check` would collide with them
# (--host, --port, --workers, --mutant) so their variables carry the command's name
# (MAXAGE_CACHE_SERVER_PORT, MAXAGE_CHECK_WORKERS, MAXAGE_CONFIG_AGAINST). Two keep their
# older names. An option given on the command line wins over its variable.

ENV_PREFIX = {
    "cache-server": "MAXAGE_CACHE_SERVER_",
    "check": "MAXAGE_CHECK_",
    "config": "MAXAGE_CONFIG_",
    "sim": "MAXAGE_SIM_",
}
ENV_NAMES = {
    ("cache-server", "--token"): "MAXAGE_CACHE_TOKEN",
    ("check", "--api-key"): "MAXAGE_API_KEY",
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvValue(str):
    """An option's value taken from the environment variable ``var``."""

    var: str

    def __new__(cls, value: str, var: str) -> EnvValue:
        made = super().__new__(cls, value)
        made.var = var
        return made


class _AppendAfterEnv(argparse._AppendAction):
    """``action="append"`` whose first value on the command line replaces the environment's."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if isinstance(getattr(namespace, self.dest, None), EnvValue):
            setattr(namespace, self.dest, [])
        super().__call__(parser, namespace, values, option_string)


def env_var(command: str, action: argparse.Action) -> str | None:
    """The environment variable of an option of ``command`` (None for --help and hidden ones)."""
    longs = [o for o in action.option_strings if o.startswith("--")]
    if (
        not longs
        or action.help == argparse.SUPPRESS
        or (action.nargs == 0 and action.const is None)
    ):
        return None  # positionals, --help, --version, test-only hidden options
    top = command.split()[0]
    named = ENV_NAMES.get((top, longs[0]))
    if named:
        return named
    return ENV_PREFIX.get(top, "MAXAGE_") + longs[0][2:].upper().replace("-", "_")


def _env_converter(action: argparse.Action, var: str) -> Any:
    """``action.type`` wrapped: values from the command line as before; a value from ``var``
    is converted, checked against the choices, and an error names the variable."""
    original = action.type
    flag = action.nargs == 0
    many = isinstance(action, argparse._AppendAction)

    def convert(text: str) -> Any:
        if not isinstance(text, EnvValue):
            return text if original is None else original(text)  # type: ignore[operator]
        try:
            if flag:
                word = text.strip().lower()
                if word not in _TRUE | _FALSE:
                    raise ValueError("expected 1, 0, true or false")
                return (word in _TRUE) == bool(action.const)
            if many:
                return [x if original is None else original(x) for x in text.split()]  # type: ignore[operator]
            value = text if original is None else original(text)  # type: ignore[operator]
            if action.choices is not None and value not in action.choices:
                raise ValueError(f"choose from {', '.join(map(str, action.choices))}")
            return value
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(f"{var}: {exc or 'invalid value'}") from None

    convert.__name__ = getattr(original, "__name__", "str")
    return convert


def apply_env(command: str, parser: argparse.ArgumentParser) -> list[tuple[str, str]]:
    """Let every option of ``parser`` default to its environment variable; list the
    variables in the parser's epilog. Returns ``(option, variable)`` pairs."""
    pairs: list[tuple[str, str]] = []
    for action in parser._actions:
        var = env_var(command, action)
        if var is None:
            continue
        pairs.append((action.option_strings[-1], var))
        action.type = _env_converter(action, var)
        raw = os.environ.get(var)
        if raw is None:
            continue
        if isinstance(action, argparse._AppendAction):
            action.__class__ = _AppendAfterEnv
        action.default = EnvValue(raw, var)
        action.required = False
    if pairs:
        width = max(len(option) for option, _ in pairs) + 2
        lines = "\n".join(f"  {option:<{width}}{var}" for option, var in pairs)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.epilog = (
            "environment: every option can also be set by a variable (the command line "
            "wins;\nflags take 1/0/true/false):\n" + lines
        )
    return pairs


def from_command_line(value: object) -> bool:
    """True when an option's value was given on the command line (not its variable or default)."""
    return value is not None and not isinstance(value, EnvValue)


def _add_primary_options(parser: argparse.ArgumentParser) -> None:
    """--db, --db-file, --data-dir, --pg-schema: where the primary is (serve and keys)."""
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="primary store: sqlite:///PATH (relative to the current directory) or "
        "postgresql://USER:PASSWORD@HOST:PORT/DB (default: the embedded SQLite file "
        f"{DEFAULT_DB_FILE} in --data-dir)",
    )
    parser.add_argument(
        "--db-file",
        metavar="PATH",
        default=None,
        help="read the --db URL from this file instead (for a password; the URL is never "
        "printed with it)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=DEFAULT_DATA_DIR,
        help="directory of the embedded SQLite primary when no --db is given; relative to "
        "the current directory; its absolute path is printed at start (default: %(default)s)",
    )
    parser.add_argument(
        "--pg-schema",
        metavar="NAME",
        default=DEFAULT_PG_SCHEMA,
        help="PostgreSQL schema of maxage's tables; created and migrated on first start "
        "(default: %(default)s)",
    )


def _add_serve(sub: Any) -> None:
    """``maxage serve``: every option, with its default and grammar. (Long on purpose: one
    ``add_argument`` per option, in the order ``--help`` shows them.)"""
    serve = sub.add_parser(
        "serve",
        help="serve collections of JSON documents as a REST API",
        description="Serve the collections of a TOML config as a REST API with contract-keeping caches.",
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"collections config (TOML); default: the bundled example ({BUNDLED_CONFIG.name})",
    )
    _add_primary_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--port",
        type=int,
        default=8080,
        help="port to bind; 0 picks a free one (default: %(default)s)",
    )
    serve.add_argument(
        "--cache",
        metavar="URL",
        default=None,
        help="shared cache tier behind the in-process one: redis://HOST:PORT/DB",
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    serve.add_argument(
        "--interface",
        choices=("rsgi", "asgi"),
        default="rsgi",
        help="how granian hands requests to the workers: rsgi answers a cached GET in one "
        "call, asgi runs the same app over ASGI (default: %(default)s; docs/benchmarks.md)",
    )
    serve.add_argument(
        "--cache-bytes",
        type=size_arg,
        default=64 * 1024**2,
        metavar="SIZE",
        help=f"byte bound of the in-process cache per worker; {SIZE_HELP} (default: 64MiB)",
    )
    serve.add_argument(
        "--body-limit",
        type=size_arg,
        default=1024**2,
        metavar="SIZE",
        help=f"largest accepted request body; {SIZE_HELP} (default: 1MiB)",
    )
    serve.add_argument(
        "--max-batch-operations",
        type=int,
        default=DEFAULT_BATCH_OPERATIONS,
        metavar="N",
        help=f"most operations in one POST /v1/{{collection}}:batch, 1..{MAX_BATCH_OPERATIONS}; "
        "the body limit applies too (default: %(default)s)",
    )
    serve.add_argument(
        "--deadline",
        type=positive_duration_arg,
        default=10.0,
        metavar="DURATION",
        help=f"request deadline, {DURATION_HELP}; clients may shorten it with "
        "X-Request-Timeout (default: 10s)",
    )
    serve.add_argument(
        "--access-log",
        choices=["all", "sampled", "errors-and-slow", "off"],
        default="errors-and-slow",
        help="access log lines (JSON on stderr): all, sampled (1%%), errors-and-slow "
        "(status >= 500 or slower than 1 s; default) or off",
    )
    serve.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=None,
        help="log lines on stderr: json (one object per line) or text (for a terminal); "
        "default: text when stderr is a terminal, json otherwise",
    )
    serve.add_argument(
        "--idempotency-ttl",
        type=duration_arg,
        default=86400.0,
        metavar="DURATION",
        help=f"how long idempotency keys are kept, {DURATION_HELP} (default: 24h)",
    )
    serve.add_argument(
        "--monitor-sample",
        type=int,
        default=100,
        metavar="N",
        help="in-service consistency monitor: check one cache hit in N against the "
        "primary's change log (0 = off; default: %(default)s)",
    )
    serve.add_argument(
        "--auth",
        choices=["keys", "none", "auto"],
        default="auto",
        help="keys: every data request needs an API key (`maxage keys create`); none: anyone "
        "may read and write everything; auto (default): none on a loopback address, keys "
        "otherwise",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow --auth none on a non-loopback address (a warning is printed at every start)",
    )
    serve.add_argument(
        "--auth-staleness",
        type=positive_duration_arg,
        default=1.0,
        metavar="DURATION",
        help="the authorization bound A: how stale a cached key record may be; a revoke is "
        f"acknowledged A after it commits; {DURATION_HELP} (default: 1s)",
    )
    serve.add_argument(
        "--max-concurrency",
        type=int,
        default=256,
        metavar="N",
        help="requests in progress per worker beyond which new ones wait up to "
        "--queue-deadline for a slot, then get a fast 503 overloaded (default: %(default)s)",
    )
    serve.add_argument(
        "--queue-deadline",
        type=duration_arg,
        default=0.002,
        metavar="DURATION",
        help=f"longest wait for a slot at the concurrency limit; {DURATION_HELP} (default: 2ms)",
    )
    serve.add_argument(
        "--max-loop-lag",
        type=duration_arg,
        default=0.05,
        metavar="DURATION",
        help="shed new requests while the event loop runs this late (requests are queuing "
        f"before they are counted); 0 = off; {DURATION_HELP} (default: 50ms)",
    )
    serve.add_argument(
        "--header-timeout",
        type=positive_duration_arg,
        default=10.0,
        metavar="DURATION",
        help="longest wait for a request's head, also on an idle keep-alive connection; "
        f"{DURATION_HELP} (default: 10s)",
    )
    serve.add_argument(
        "--body-timeout",
        type=positive_duration_arg,
        default=30.0,
        metavar="DURATION",
        help="longest pause while a request body arrives; then 408 and the connection is "
        f"closed; {DURATION_HELP} (default: 30s)",
    )
    serve.add_argument(
        "--fault-injection",
        action="store_true",
        help="TEST ONLY: expose the loopback-only fault control endpoint used by "
        "`maxage check`; refused on a non-loopback bind",
    )
    serve.add_argument(
        "--mutant",
        choices=MUTANTS,
        default=None,
        help="TEST ONLY (needs --fault-injection): run a known-broken variant so the "
        "checker can show it catches it",
    )


def _add_keys(sub: Any) -> None:
    """``maxage keys create|list|revoke``."""
    keys = sub.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="API keys for `maxage serve --auth keys`, managed directly in the primary.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    create = keys_sub.add_parser("create", help="create a key; prints its secret once, last")
    _add_primary_options(create)
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: read:<collection>, write:<collection>, read:*, write:*, admin",
    )
    create.add_argument("--name", default="", help="a label for people (not secret)")
    create.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="check the scopes' collections against this config (default: any valid name)",
    )
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    _add_primary_options(listing)
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", help="the key's id (from create or list)")
    _add_primary_options(revoke)
    revoke.add_argument(
        "--auth-staleness",
        type=positive_duration_arg,
        default=1.0,
        metavar="DURATION",
        help="the servers' authorization bound A: the command returns A after the revoke "
        "commits, when no server can still accept the key (default: 1s)",
    )


def _add_deadletters(sub: Any) -> None:
    """``maxage deadletters list|replay|drop``."""
    dl = sub.add_parser(
        "deadletters",
        help="list, replay and drop webhook dead letters",
        description="The webhook dead-letter queue, straight in the primary (no server needed).",
    )
    dl_sub = dl.add_subparsers(dest="deadletters_command", metavar="ACTION", required=True)
    listing = dl_sub.add_parser("list", help="list dead letters (oldest first)")
    _add_primary_options(listing)
    listing.add_argument("--collection", default=None, help="only this collection's")
    for action, what in (("replay", "deliver again now (dropped once delivered)"),
                         ("drop", "delete without delivering")):  # fmt: skip
        p = dl_sub.add_parser(action, help=what)
        p.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (from list)")
        p.add_argument("--all", action="store_true", help="every dead letter")
        _add_primary_options(p)
        if action == "replay":
            p.add_argument(
                "--config",
                metavar="FILE",
                required=True,
                help="the servers' config: the webhook URLs and signing secrets",
            )


def _add_config(sub: Any) -> None:
    """``maxage config check FILE [--against OLD_FILE]``."""
    config = sub.add_parser(
        "config",
        help="check a config, and what changing it would break for clients",
        description="Collections configs, checked before a deploy.",
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = config_sub.add_parser(
        "check",
        help="report every problem of a config at once; print its contract table",
        description="Report every problem of FILE at once (exit 2) or print the effective "
        "contract of each collection (exit 0). With --against, also list the changes from "
        "OLD_FILE that would break existing clients (exit 1 when there is one).",
    )
    check.add_argument("file", metavar="FILE", help="the config (TOML) to check")
    check.add_argument(
        "--against",
        metavar="OLD_FILE",
        default=None,
        help="the config now deployed: exit 1 if FILE removes or renames a field, narrows "
        "a type or an enum, makes a field required, changes a field's nullability, removes "
        "a read mode or a collection, or loosens a staleness bound",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maxage",
        description="A JSON API server and cache server whose caches keep a declared, "
        "enforced and measured consistency contract.",
    )
    parser.add_argument("--version", action="version", version=f"maxage {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    _add_serve(sub)

    cs = sub.add_parser(
        "cache-server",
        help="run the standalone HTTP cache server",
        description="The contract-keeping cache engine as a standalone HTTP service.",
    )
    try:
        from maxage.cacheserver.cli import configure_parser

        configure_parser(cs)
    except ImportError:  # pragma: no cover - built in parallel
        cs.set_defaults(unavailable=True)

    _add_keys(sub)
    _add_deadletters(sub)
    _add_config(sub)

    check = sub.add_parser(
        "check",
        help="drive a running server with concurrent clients and faults; check the contract",
        description="Consistency checker: records a history and checks properties P0-P7.",
    )
    try:
        from maxage.checker.cli import configure_parser as configure_check

        configure_check(check)
    except ImportError:  # pragma: no cover
        check.set_defaults(unavailable=True)
    sim = sub.add_parser(
        "sim",
        help="simulate K nodes of the real code with faults on virtual time; check the contract",
        description="Deterministic simulation: the real service on a seeded event loop with "
        "virtual time, a simulated primary and shared tier, faults from the seed; the history "
        "is checked by maxage check's own checks (P0-P6).",
    )
    from maxage.sim.cli import configure_parser as configure_sim

    configure_sim(sim)
    # Every option also reads an environment variable (listed in each command's help).
    for name, sub_parser in sub.choices.items():
        nested = [
            (f"{name} {action_name}", action_parser)
            for action in sub_parser._actions
            if isinstance(action, argparse._SubParsersAction)
            for action_name, action_parser in action.choices.items()
        ]
        for command, command_parser in nested or [(name, sub_parser)]:
            apply_env(command, command_parser)
    # `maxage --help` explains every option: append each command's own help.
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n".join(
        f"---- maxage {name} ----\n{sub_parser.format_help()}"
        for name, sub_parser in sub.choices.items()
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "unavailable", False):
        print(f"maxage {args.command}: not available in this build", file=sys.stderr)
        return 2
    try:
        if args.command == "serve":
            return serve(args)
        if args.command == "cache-server":
            from maxage.cacheserver.cli import run

            return int(run(args))
        if args.command == "check":
            from maxage.checker.cli import run as run_check

            return run_check(args)
        if args.command == "sim":
            from maxage.sim.cli import run_command as run_sim

            return run_sim(args, default_config=str(BUNDLED_CONFIG))
        if args.command == "keys":
            return keys_command(args)
        if args.command == "deadletters":
            return deadletters_command(args)
        if args.command == "config":
            return config_command(args)
    except (UsageError, ConfigError) as exc:
        print(f"maxage {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    parser.print_help()
    return 2


# -- serve -----------------------------------------------------------------------------


def serve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the options; return the JSON-able settings every worker builds from."""
    config_path = Path(args.config) if args.config else BUNDLED_CONFIG
    load_config(config_path)  # raises ConfigError: exit 2 naming file, collection, field
    if args.workers < 1:
        raise UsageError("--workers must be >= 1")
    if not 0 <= args.port <= 65535:
        raise UsageError("--port must be 0..65535")
    if args.monitor_sample < 0:
        raise UsageError("--monitor-sample must be >= 0 (0 = off)")
    if args.mutant and not args.fault_injection:
        raise UsageError("--mutant is test-only and needs --fault-injection")
    if args.fault_injection and args.host not in LOOPBACK:
        raise UsageError("--fault-injection is refused on a non-loopback bind")
    if args.max_concurrency < 1:
        raise UsageError("--max-concurrency must be >= 1")
    if not 1 <= args.max_batch_operations <= MAX_BATCH_OPERATIONS:
        raise UsageError(f"--max-batch-operations must be 1..{MAX_BATCH_OPERATIONS}")
    auth = args.auth
    if auth == "auto":
        auth = "none" if args.host in LOOPBACK else "keys"
    if auth == "none" and args.host not in LOOPBACK and not args.insecure_no_auth:
        raise UsageError(
            f"--auth none on {args.host} would let anyone who can reach it read and write "
            "everything; use --auth keys, or add --insecure-no-auth if you mean it"
        )
    db = primary_url(args)
    if args.cache is not None:
        _check_cache_url(args.cache)
    return {
        "config": str(config_path.resolve()),
        "db": db,
        "pg_schema": args.pg_schema,
        "cache": args.cache,
        "cache_bytes": args.cache_bytes,
        "settings": {
            "body_limit": args.body_limit,
            "max_batch_operations": args.max_batch_operations,
            "deadline": args.deadline,
            "access_log": args.access_log,
            "idempotency_keep": args.idempotency_ttl,
            "max_concurrency": args.max_concurrency,
            "queue_deadline": args.queue_deadline,
            "max_loop_lag": args.max_loop_lag,
            "body_timeout": args.body_timeout,
        },
        "auth": auth,
        "auth_staleness": args.auth_staleness,
        "main_pid": os.getpid(),
        "faults_file": _faults_file() if args.fault_injection else None,
        "metrics_dir": _metrics_dir() if args.workers > 1 else None,
        "mutant": args.mutant,
        "monitor_sample": args.monitor_sample,
    }


def primary_url(args: argparse.Namespace) -> str:
    """The primary's URL, checked and made absolute: ``--db`` or the contents of
    ``--db-file`` (the command line before the environment), else the embedded SQLite file
    in ``--data-dir``. Also checks ``--pg-schema``."""
    if not PG_SCHEMA.match(args.pg_schema):
        raise UsageError(f"--pg-schema must match {PG_SCHEMA.pattern}")
    given = [(n, v) for n, v in (("--db", args.db), ("--db-file", args.db_file)) if v is not None]
    chosen = [(n, v) for n, v in given if from_command_line(v)] or given
    if len(chosen) == 2:
        if from_command_line(args.db):
            raise UsageError("give --db or --db-file, not both")
        raise UsageError(f"set {args.db.var} or {args.db_file.var}, not both")
    if not chosen:
        return _database_url(f"sqlite:///{Path(args.data_dir).expanduser() / DEFAULT_DB_FILE}")
    option, value = chosen[0]
    if option == "--db":
        return _database_url(value)
    named = value.var if isinstance(value, EnvValue) else option
    try:
        url = Path(value).expanduser().read_text("utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise UsageError(f"cannot read {named} {value}: {reason}") from None
    if not url:
        raise UsageError(f"{named} {value} is empty")
    return _database_url(url)


def _check_cache_url(url: str) -> None:
    """``--cache``: a Redis URL the client can parse (nothing is connected here: a Redis
    that does not answer is a degraded L2 at run time, not a reason to refuse to start)."""
    if not url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        raise UsageError("--cache must be redis://HOST:PORT/DB (or redis+cluster://…)")
    from maxage.core.clock import SystemClock
    from maxage.tiers.redis import RedisTier

    try:
        RedisTier(url, clock=SystemClock())
    except (ValueError, TypeError) as exc:
        raise UsageError(f"--cache {_redact(url)}: {exc}") from None


def check_primary(db: str, timeout: float = PRIMARY_CHECK_TIMEOUT) -> None:
    """Pre-flight: raise :class:`PrimaryUnavailable` (one line, no password) unless the
    primary opens: a connect with ``timeout`` for PostgreSQL, an open for SQLite (fast)."""
    if db.startswith("sqlite:///"):
        import sqlite3

        path = db[len("sqlite:///") :]
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=timeout)) as conn:
                conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            raise PrimaryUnavailable(f"the primary {path} cannot be opened: {exc}") from None
        return
    import asyncio

    import asyncpg

    async def connect() -> None:
        conn = await asyncpg.connect(db, timeout=timeout)
        await conn.close(timeout=timeout)

    try:
        asyncio.run(asyncio.wait_for(connect(), timeout + 1.0))
    except Exception as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {timeout:g}s"
        with contextlib.suppress(ValueError):
            password = urlsplit(db).password
            if password:
                reason = reason.replace(password, "***")
        raise PrimaryUnavailable(f"the primary {_redact(db)} does not answer: {reason}") from None


def _database_url(db: str) -> str:
    """``--db`` checked and made absolute (a SQLite file's directory is created)."""
    if db.startswith("sqlite:///"):
        db_path = Path(db[len("sqlite:///") :]).expanduser()
        if not db_path.name:
            raise UsageError("--db sqlite:///PATH needs a file path")
        db_path = db_path.resolve()
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create {db_path.parent}: {exc.strerror}") from None
        db = f"sqlite:///{db_path}"
    elif not db.startswith(("postgresql://", "postgres://")):
        raise UsageError("--db must be sqlite:///PATH or postgresql://…")
    return db


def _private_dir(prefix: str) -> Path:
    """A fresh directory only this server's processes use (mode 0700, a new name, so
    nobody else can plant files in it), removed when ``maxage serve`` exits."""
    import atexit
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, True)
    return Path(path)


def _faults_file() -> str:
    """The fault state file shared by this server's workers: in a private directory, or
    where ``MAXAGE_FAULTS_FILE`` says (a test's own temporary directory)."""
    chosen = os.environ.get(FAULTS_FILE_ENV)
    if chosen:
        return str(Path(chosen).resolve())
    return str(_private_dir("maxage-faults-") / "faults.json")


def _metrics_dir() -> str:
    """The private directory where ``--workers`` > 1 workers share their metrics."""
    return str(_private_dir("maxage-metrics-"))


def _redact(url: str) -> str:
    """Hide a password in a database or Redis URL before printing it."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _announce_when_accepting(host: str, port: int, stop: threading.Event) -> None:
    shown = f"[{host}]" if ":" in host else host
    while not stop.is_set():
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            print(f"listening on http://{shown}:{port}", flush=True)
            return
        time.sleep(0.02)


def _refuse_busy_port(host: str, port: int) -> None:
    """Exit 2 when something listens on ``host:port`` already. granian binds with
    SO_REUSEPORT, so without this a second server would silently share the port; this
    probe binds without it, so any listener there makes it fail."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve(args: argparse.Namespace) -> int:
    settings = serve_settings(args)
    port = args.port or _free_port(args.host)
    _refuse_busy_port(args.host, port)
    check_primary(settings["db"])
    log_format = logs.setup(args.log_format)
    settings["log_format"] = log_format
    os.environ[SETTINGS_ENV] = json.dumps(settings)
    where = settings["db"]
    print(f"maxage {__version__}: config {settings['config']}", flush=True)
    if where.startswith("sqlite:///"):
        print(f"maxage: data in {where.removeprefix('sqlite:///')}", flush=True)
    else:
        print(f"maxage: data in {_redact(where)} (schema {settings['pg_schema']})", flush=True)
    if settings["auth"] == "keys":
        print("maxage: auth keys (every data request needs an API key)", flush=True)
    elif args.host in LOOPBACK:
        print(
            "maxage: auth none (loopback only: anyone on this host may read and write)", flush=True
        )
    else:
        print(
            f"maxage: WARNING: auth none on {args.host}: anyone who can reach this address may "
            "read, write and delete everything (--insecure-no-auth)",
            flush=True,
        )

    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    # Workers start by "spawn", not "fork": a fork while another thread of this process
    # (the announcer below, granian's watchers) holds an import lock left a worker
    # deadlocked importing asyncpg. Spawned workers inherit no locks.
    multiprocessing.set_start_method("spawn", force=True)
    stop = threading.Event()
    announcer = threading.Thread(
        target=_announce_when_accepting, args=(args.host, port, stop), daemon=True
    )
    announcer.start()
    rsgi = args.interface == "rsgi"
    server = Server(
        "maxage.cli:rsgi_app" if rsgi else "maxage.cli:asgi_app",
        address=args.host,
        port=port,
        interface=Interfaces.RSGI if rsgi else Interfaces.ASGI,
        workers=args.workers,
        loop=Loops.uvloop if _has_uvloop() else Loops.asyncio,
        factory=True,
        log_level=LogLevels.warning,
        log_dictconfig=logs.granian_dictconfig(log_format),
        log_access=False,
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=int(args.header_timeout * 1000)),
        workers_kill_timeout=int(args.deadline) + 5,
    )
    try:
        server.serve()
    finally:
        stop.set()
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def rsgi_app() -> Any:
    """RSGI factory run in each worker: the ASGI app behind granian's RSGI interface."""
    from maxage.api.rsgi import RSGIApp

    return RSGIApp(asgi_app())


# The collector's thresholds in a serve worker. CPython's (700, 10, 10) run a young pass
# every 700 container allocations, a few requests' worth, and the passes' pauses set
# the strong GET's p99 on PostgreSQL: 58.7 ms with them, 17.8 ms with these (reference
# 14.0 ms), CPU 157 -> 136 us/req (docs/benchmarks.md). Garbage without cycles is freed
# by reference counting at once whatever these are.
WORKER_GC_THRESHOLDS = (50_000, 20, 100)


def asgi_app() -> Any:
    """ASGI factory run in each worker: build every object from the settings env var."""
    from maxage.api import workers_metrics
    from maxage.api.app import build_app
    from maxage.api.types import Settings
    from maxage.core.cache import Cache
    from maxage.core.clock import SystemClock
    from maxage.service import Service

    raw = json.loads(os.environ[SETTINGS_ENV])
    gc.set_threshold(*WORKER_GC_THRESHOLDS)
    workers_metrics.configure(raw.get("metrics_dir"))
    logs.setup(raw.get("log_format"))
    config = load_config(raw["config"])
    settings = Settings(**raw["settings"])
    clock = SystemClock()
    postgres = not raw["db"].startswith("sqlite:///")
    cache_class: type[Cache] = Cache
    hooks: Hooks | None = _test_hooks()
    faults = None
    if raw.get("faults_file"):
        from maxage import faults as fault_injection

        bounds = [c.max_staleness for c in config.collections.values() if c.max_staleness > 0]
        faults = fault_injection.build(
            Path(raw["faults_file"]),
            postgres=postgres,
            bound=min(bounds, default=1.0),
            mutant=raw.get("mutant"),
            shared_tier=bool(raw.get("cache")),
        )
        hooks, cache_class = faults.hooks, faults.cache_class
    store = _make_store(raw["db"], clock, hooks, raw.get("pg_schema") or DEFAULT_PG_SCHEMA)
    cache = cache_class(raw["cache_bytes"], clock=clock, thread_safe=False)
    l2 = None
    if raw.get("cache"):
        from maxage.tiers.redis import RedisTier

        tier_class = faults.redis_tier_class if faults is not None else RedisTier
        l2 = tier_class(raw["cache"], clock=clock)
    monitor = None
    sample_every = int(raw.get("monitor_sample", 100))
    if sample_every > 0:
        from maxage.invalidation.monitor import ConsistencyMonitor

        monitor = ConsistencyMonitor(store, clock, sample_every=sample_every)
    from maxage import tracing

    tracing.configure()  # on only with the otel extra and OTEL_* set (docs/operations.md)
    service = Service(
        config.collections,
        store,
        cache,
        clock,
        l2=l2,
        monitor=monitor,
        hooks=hooks,
        idempotency_keep=settings.idempotency_keep,
        default_page_size=settings.default_page_size,
        max_page_size=settings.max_page_size,
        max_batch_operations=settings.max_batch_operations,
        auth=raw.get("auth") == "keys",
        auth_bound=float(raw.get("auth_staleness", 1.0)),
        rate_limits=config.rate_limits,
    )
    if faults is not None:
        faults.plant(service)
    sender = None
    if any(spec.webhooks for spec in config.collections.values()):
        from maxage.api.webhook_sender import HttpxSender

        sender = service.webhooks.sender = HttpxSender()
    _end_with_parent(int(raw.get("main_pid", 0)) or os.getppid())

    async def startup() -> None:
        await store.open()
        if l2 is not None and not await l2.check_at_start():
            logging.getLogger("maxage.cli").warning(
                "maxage: WARNING: the shared cache %s does not answer at start-up; serving "
                "from the primary and the in-process cache (the contract holds), /readyz "
                "says l2 degraded and maxage_l2_available is 0 until it answers",
                _redact(raw["cache"]),
            )
        await service.start()

    async def shutdown() -> None:
        try:
            await service.stop()
            if sender is not None:
                await sender.aclose()
            await store.close()
            if l2 is not None:
                await l2.close()
        finally:
            _exit_after(WORKER_EXIT_GRACE)

    control = faults.control if faults is not None else None
    return build_app(
        service,
        settings,
        on_startup=startup,
        on_shutdown=shutdown,
        faults=control,
        cors=config.cors,
    )


WORKER_EXIT_GRACE = 3.0
PARENT_WATCH_EVERY = 0.5


def _end_with_parent(parent: int) -> None:
    """A worker never outlives ``parent`` (the ``maxage serve`` process that started it),
    whatever killed that one: a thread notices we were re-parented (also when that
    happened before this worker got here) and sends us SIGTERM, which drains and exits
    like a normal stop."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_EVERY)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(WORKER_EXIT_GRACE * 4)  # the drain did not end us: force it
        os._exit(1)

    threading.Thread(target=watch, name="maxage-parent-watch", daemon=True).start()


def config_command(args: argparse.Namespace) -> int:
    """``maxage config check FILE [--against OLD_FILE]``: exit 2 listing every problem of
    either file; else the contract table, then (with --against) every change, exit 1 when
    one would break existing clients."""
    from maxage.config_check import compare, contract_table, load_problems

    files = [("", args.file)] + ([("--against ", args.against)] if args.against else [])
    configs = []
    bad = 0
    for label, path in files:
        config, problems = load_problems(path)
        for problem in problems:
            print(f"maxage config check: {label}{problem}", file=sys.stderr)
        bad += len(problems)
        configs.append(config)
    if bad:
        print(f"maxage config check: {bad} problem(s); `maxage serve` refuses such a config",
              file=sys.stderr)  # fmt: skip
        return 2
    new = configs[0]
    assert new is not None
    print(f"{Path(args.file).resolve()}: {len(new.collections)} collection(s)")
    print(contract_table(new))
    if not args.against:
        return 0
    old = configs[1]
    assert old is not None
    changes = compare(old, new)
    breaking = [c for c in changes if c.breaking]
    print(f"\nchanges from {Path(args.against).resolve()}:")
    for change in changes:
        print(f"  {change}")
    if not changes:
        print("  none visible to clients")
    if breaking:
        print(f"{len(breaking)} breaking change(s): existing clients may fail")
        return 1
    print("no breaking change")
    return 0


def keys_command(args: argparse.Namespace) -> int:
    """``maxage keys create|list|revoke``: straight to the primary (no server needed)."""
    import asyncio

    from maxage.core.cache import Cache
    from maxage.core.clock import SystemClock
    from maxage.invalidation.tailer import L1Holder
    from maxage.service.access import Access
    from maxage.service.errors import DomainError

    db = primary_url(args)
    check_primary(db)
    schema = args.pg_schema
    config = getattr(args, "config", None)
    collections = load_config(config).collections if config else None
    bound = float(getattr(args, "auth_staleness", 0.0))

    async def run() -> int:
        clock = SystemClock()
        store = _make_store(db, clock, None, schema)
        await store.open()
        try:
            cache = Cache(1 << 20, clock=clock)
            access = Access(
                store, cache, clock, L1Holder(cache, clock.now()), collections,
                enabled=True, bound=bound,
            )  # fmt: skip
            if args.keys_command == "create":
                scopes = [x.strip() for x in args.scopes.split(",") if x.strip()]
                info, secret = await access.create(scopes, args.name)
                print(f"created key {info.id} ({info.name or 'no name'}): {','.join(info.scopes)}")
                print("the secret is shown once; store it now:")
                print(secret)
            elif args.keys_command == "list":
                for k in await access.list():
                    state = "revoked" if k.revoked else "active"
                    print(f"{k.id}\t{state}\t{','.join(k.scopes)}\t{k.name}")
            else:
                info = await access.revoke(args.key_id)
                print(f"revoked key {info.id}")
            return 0
        except DomainError as exc:
            print(f"maxage keys {args.keys_command}: {exc.detail}", file=sys.stderr)
            return 2
        finally:
            await store.close()

    return asyncio.run(run())


def deadletters_command(args: argparse.Namespace) -> int:
    """``maxage deadletters list|replay|drop``: straight to the primary (no server needed);
    replay POSTs with the config's URLs and secrets, like a server's deliverer."""
    import asyncio

    from maxage.core.clock import SystemClock
    from maxage.service.errors import DomainError
    from maxage.service.representation import iso
    from maxage.service.webhooks import Webhooks

    db = primary_url(args)
    check_primary(db)
    action = args.deadletters_command
    if action != "list" and not args.ids and not args.all:
        raise UsageError(f"deadletters {action}: give dead letter ids or --all")
    try:
        ids = [int(i) for i in getattr(args, "ids", [])]
    except ValueError:
        raise UsageError("dead letter ids are integers (see `maxage deadletters list`)") from None
    config = getattr(args, "config", None)
    collections = load_config(config).collections if config else {}

    async def run() -> int:
        clock = SystemClock()
        store = _make_store(db, clock, None, args.pg_schema)
        await store.open()
        webhooks = Webhooks(store, clock, collections)
        sender = None
        try:
            if action == "list":
                for d in await store.deadletters(args.collection, 0, 1_000_000):
                    c = d.change
                    print(f"{d.id}\t{d.collection}/{c.id} v{c.version} {c.op.value}\t"
                          f"{d.subscription}\t{d.attempts} attempts\t{iso(d.failed_at)}\t{d.error}")  # fmt: skip
                return 0
            targets = ids or [d.id for d in await store.deadletters(None, 0, 1_000_000)]
            if action == "replay":
                from maxage.api.webhook_sender import HttpxSender

                sender = webhooks.sender = HttpxSender()
            failed = 0
            for id_ in targets:
                try:
                    if action == "drop":
                        await webhooks.drop(id_)
                        print(f"dropped {id_}")
                        continue
                    letter, error = await webhooks.replay(id_)
                except DomainError as exc:
                    print(f"maxage deadletters {action}: {exc.detail}", file=sys.stderr)
                    failed += 1
                    continue
                if error:
                    failed += 1
                    print(f"{id_}: not delivered: {error}", file=sys.stderr)
                else:
                    print(f"delivered {id_} ({letter.collection}/{letter.change.id} "
                          f"v{letter.change.version} to {letter.subscription})")  # fmt: skip
            return 1 if failed else 0
        finally:
            if sender is not None:
                await sender.aclose()
            await store.close()

    return asyncio.run(run())


def _exit_after(seconds: float) -> None:
    """End this worker ``seconds`` from now unless it has exited by itself.

    Called when the lifespan shutdown is done: connections are closed and the store
    and tiers are flushed, so nothing is lost. granian's worker can still hang in its
    last step before exiting (emmett-framework/granian#875, seen here as a test
    server that outlived its SIGTERM by 15 s); this bounds a clean stop at a few
    seconds instead of ``workers_kill_timeout``.
    """

    def end() -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(seconds, end)
    timer.daemon = True
    timer.start()


TEST_SLOW_STORE_ENV = "MAXAGE_TEST_SLOW_STORE_SECONDS"


def _test_hooks() -> Hooks | None:
    """TEST ONLY: ``MAXAGE_TEST_SLOW_STORE_SECONDS=N`` stalls every document read and write
    by N seconds before it reaches the primary (:class:`maxage.hooks.SlowStoreHooks`). Used by
    tests/api for deadlines (504), disconnect cancellation, concurrent idempotency keys (409)
    and SIGTERM drain; never set it in production."""
    try:
        delay = float(os.environ.get(TEST_SLOW_STORE_ENV, "") or 0)
    except ValueError:
        return None
    return SlowStoreHooks(delay) if delay > 0 else None


def _make_store(db: str, clock: Any, hooks: Hooks | None, schema: str) -> Any:
    if db.startswith("sqlite:///"):
        from maxage.store.sqlite import SQLiteStore

        return SQLiteStore(db[len("sqlite:///") :], clock=clock, hooks=hooks)
    from maxage.store.postgres import PostgresStore

    return PostgresStore(db, clock=clock, schema=schema, hooks=hooks)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
