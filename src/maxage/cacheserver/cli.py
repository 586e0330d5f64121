"""Command line of ``maxage cache-server``: :func:`configure_parser` and :func:`run`.

The composition root (``maxage.cli``) adds these options to its ``cache-server``
sub-command; ``python -m maxage.cacheserver`` uses them standalone.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from maxage import logs
from maxage.units import (
    DURATION_HELP,
    SIZE_HELP,
    duration_arg,
    positive_duration_arg,
    size_arg,
)

from .server import ServerConfig, run_server
from .upstream import UpstreamSpec

TOKEN_ENV = "MAXAGE_CACHE_TOKEN"
MIN_MAX_BYTES = 64 * 1024  # below it, the guards' 16 KiB floor could exceed a quarter of it


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def _port(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("port must be 0..65535")
    return v


def _upstream(text: str) -> UpstreamSpec:
    try:
        return UpstreamSpec.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the cache server's options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=_port, default=8090, help="TCP port (default 8090; 0 picks a free one)"
    )
    parser.add_argument(
        "--max-bytes",
        type=size_arg,
        default=256 * 1024**2,
        metavar="SIZE",
        help=f"byte bound of the cache, entries and overhead; {SIZE_HELP} (default 256MiB)",
    )
    parser.add_argument(
        "--upstream",
        type=_upstream,
        action="append",
        default=[],
        metavar="PREFIX=URL_TEMPLATE",
        help="read-through: keys starting with PREFIX load from URL_TEMPLATE on a miss "
        "({key} = the key, {suffix} = the key without PREFIX); repeatable",
    )
    parser.add_argument(
        "--upstream-timeout",
        type=positive_duration_arg,
        default=2.0,
        metavar="DURATION",
        help="deadline of one upstream load; the call is cancelled when it passes; "
        f"{DURATION_HELP} (default 2s)",
    )
    parser.add_argument(
        "--upstream-ttl",
        type=positive_duration_arg,
        default=60.0,
        metavar="DURATION",
        help=f"TTL of upstream values without Cache-Control max-age; {DURATION_HELP} (default 60s)",
    )
    parser.add_argument(
        "--stale-if-error",
        type=duration_arg,
        default=0.0,
        metavar="DURATION",
        help="serve an upstream value up to this long past its TTL when the upstream "
        f"fails; {DURATION_HELP} (default 0s: never)",
    )
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token every request must carry (or env {TOKEN_ENV}); required "
        "when binding to a non-loopback address",
    )
    parser.add_argument(
        "--max-value-bytes",
        type=size_arg,
        default=8 * 1024**2,
        metavar="SIZE",
        help=f"largest value accepted (413 above); {SIZE_HELP} (default 8MiB)",
    )
    parser.add_argument(
        "--max-key-length",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="longest key in characters (default 1024)",
    )
    parser.add_argument(
        "--request-timeout",
        type=positive_duration_arg,
        default=10.0,
        metavar="DURATION",
        help="per-request deadline: receiving the request, and answering it; "
        f"{DURATION_HELP} (default 10s)",
    )
    parser.add_argument(
        "--max-connections",
        type=_positive_int,
        default=4096,
        metavar="N",
        help="open client connections at most; one more is closed at once (default 4096)",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=positive_duration_arg,
        default=30.0,
        metavar="DURATION",
        help=f"close idle keep-alive connections after this long; {DURATION_HELP} (default 30s)",
    )
    parser.add_argument(
        "--access-log",
        choices=["all", "sampled", "errors-and-slow", "off"],
        default="errors-and-slow",
        help="access log lines on stderr: all, sampled (1%%), errors-and-slow "
        "(status >= 500 or slower than 1 s; default) or off",
    )
    parser.add_argument(
        "--log-format",
        choices=["json", "text"],
        default=None,
        help="log lines on stderr: json (one object per line) or text (for a terminal); "
        "default: text when stderr is a terminal, json otherwise",
    )
    # TEST-ONLY: lets tests move the server's clock forward (POST /debug/clock?advance=S).
    parser.add_argument("--debug-clock", action="store_true", help=argparse.SUPPRESS)


def is_loopback(host: str) -> bool:
    h = host.strip("[]")
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def token_ok(token: str) -> bool:
    """At least 16 printable ASCII characters and no whitespace: a token of spaces (or
    one with spaces the ``Authorization`` header parsing would strip) is refused."""
    return (
        len(token) >= 16
        and token.isascii()
        and token.isprintable()
        and not any(c.isspace() for c in token)
    )


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    token = args.token or os.environ.get(TOKEN_ENV) or None
    return ServerConfig(
        host=args.host,
        port=args.port,
        max_bytes=args.max_bytes,
        upstreams=list(args.upstream),
        upstream_timeout=args.upstream_timeout,
        upstream_ttl=args.upstream_ttl,
        stale_if_error=args.stale_if_error,
        token=token,
        max_value_bytes=args.max_value_bytes,
        max_key_length=args.max_key_length,
        request_timeout=args.request_timeout,
        keepalive_timeout=args.keepalive_timeout,
        max_connections=args.max_connections,
        debug_clock=bool(args.debug_clock),
        access_log=args.access_log,
    )


def run(args: argparse.Namespace) -> int:
    """Start the server from parsed ``args``; returns the process exit status."""
    cfg = config_from_args(args)
    if not is_loopback(cfg.host) and not cfg.token:
        print(
            f"maxage cache-server: refusing to listen on non-loopback address {cfg.host!r} "
            f"without a bearer token; pass --token or set {TOKEN_ENV}",
            file=sys.stderr,
        )
        return 2
    if cfg.token is not None and not token_ok(cfg.token):
        print(
            "maxage cache-server: the token must be at least 16 printable ASCII characters "
            "without whitespace",
            file=sys.stderr,
        )
        return 2
    if cfg.max_bytes < MIN_MAX_BYTES:
        print(
            f"maxage cache-server: --max-bytes must be at least {MIN_MAX_BYTES // 1024}KiB",
            file=sys.stderr,
        )
        return 2
    logs.setup(args.log_format)
    return run_server(cfg)
