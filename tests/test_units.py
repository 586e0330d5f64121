"""Issue 10: one size grammar and one duration grammar for every command (maxage.units)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from maxage.cli import build_parser
from maxage.units import (
    DURATION_HELP,
    SIZE_HELP,
    duration_arg,
    parse_duration,
    parse_size,
    positive_duration_arg,
    size_arg,
)

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1),
        ("1048576", 1048576),
        (" 4096 ", 4096),
        ("512B", 512),
        ("512b", 512),
        ("64K", 64 * KiB),
        ("64k", 64 * KiB),
        ("64KB", 64 * KiB),  # binary: KB = KiB = 1024
        ("64KiB", 64 * KiB),
        ("64kib", 64 * KiB),
        ("512M", 512 * MiB),
        ("512MB", 512 * MiB),
        ("512MiB", 512 * MiB),
        ("512 MiB", 512 * MiB),
        ("2G", 2 * GiB),
        ("2GB", 2 * GiB),
        ("2gib", 2 * GiB),
        ("1.5G", 3 * GiB // 2),  # worked for `serve`, not for `cache-server` (issue 10)
        ("1.5GiB", 3 * GiB // 2),
        ("0.5K", 512),
        ("1T", TiB),
        ("1TiB", TiB),
        ("1.1K", 1126),  # 1126.4 rounded down to a whole byte
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected
    assert size_arg(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0",
        "0B",
        "0K",
        "0.0001K",  # less than one byte
        "-1",
        "-1M",
        "1.5",  # bytes are whole
        "1.5B",
        "lots",
        "1X",
        "1 K B",
        "KiB",
        "1e6",
        "1,024",
        "1_024",
        ".5G",
        "1.G",
        "inf",
        "nan",
        "1ib",
        "1MiBs",
    ],
)
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_size(text)
    assert repr(text) in str(exc.value) or "empty" in str(exc.value)
    with pytest.raises(argparse.ArgumentTypeError):
        size_arg(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("250 ms", 0.25),
        ("10s", 10.0),  # worked for `serve --deadline`, not `cache-server`/`check` (issue 10)
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        ("10S", 10.0),
        ("250MS", 0.25),
        ("10", 10.0),  # a bare number is seconds
        ("2.5", 2.5),
        (" 30s ", 30.0),
        ("0s", 0.0),  # a config's "0s" = strong only
        ("0", 0.0),
        ("0ms", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)
    assert duration_arg(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("-1s", ">= 0"),
        ("-0.5", ">= 0"),
        ("inf", "finite"),
        ("infs", "finite"),
        ("+inf", "finite"),
        ("nan", "finite"),
        ("NaN s", "finite"),
        ("9" * 400 + "h", "finite"),
        ("1d", "not a duration"),
        ("5 minutes", "not a duration"),
        ("1e3s", "not a duration"),
        ("ten seconds", "not a duration"),
        ("s", "not a duration"),
        ("1s2", "not a duration"),
        ("1.s", "not a duration"),
        ("PT5S", "not a duration"),
    ],
)
def test_bad_durations(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as exc:
        parse_duration(text)
    if text.strip():
        assert repr(text) in str(exc.value)
    with pytest.raises(argparse.ArgumentTypeError):
        duration_arg(text)


def test_positive_durations() -> None:
    assert positive_duration_arg("250ms") == 0.25
    for text in ("0", "0s", "0ms"):
        with pytest.raises(argparse.ArgumentTypeError, match="> 0"):
            positive_duration_arg(text)


def test_non_strings_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_size(1024)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        parse_duration(10)  # type: ignore[arg-type]


# -- every command takes the same grammar ----------------------------------------------


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def test_serve_takes_the_grammar() -> None:
    args = _parse(["serve", "--cache-bytes", "1.5G", "--body-limit", "512KiB",
                   "--deadline", "10s", "--idempotency-ttl", "5m"])  # fmt: skip
    assert args.cache_bytes == 3 * GiB // 2
    assert args.body_limit == 512 * KiB
    assert args.deadline == 10.0
    assert args.idempotency_ttl == 300.0
    assert _parse(["serve", "--deadline", "250ms"]).deadline == 0.25
    assert _parse(["serve", "--deadline", "3"]).deadline == 3.0


def test_cache_server_takes_the_grammar() -> None:
    args = _parse(["cache-server", "--max-bytes", "1.5G", "--max-value-bytes", "1MB",
                   "--upstream-timeout", "10s", "--upstream-ttl", "5m", "--stale-if-error", "1h",
                   "--request-timeout", "250ms", "--keepalive-timeout", "1.5s"])  # fmt: skip
    assert args.max_bytes == 3 * GiB // 2
    assert args.max_value_bytes == MiB
    assert args.upstream_timeout == 10.0
    assert args.upstream_ttl == 300.0
    assert args.stale_if_error == 3600.0
    assert args.request_timeout == 0.25
    assert args.keepalive_timeout == 1.5
    # bare numbers keep meaning seconds, so existing command lines still work
    assert _parse(["cache-server", "--upstream-timeout", "1.0"]).upstream_timeout == 1.0
    assert _parse(["cache-server", "--stale-if-error", "0"]).stale_if_error == 0.0


def test_check_takes_the_grammar() -> None:
    args = _parse(["check", "--duration", "10s", "--converge-timeout", "5m",
                   "--staleness", "250ms"])  # fmt: skip
    assert args.duration == 10.0
    assert args.converge_timeout == 300.0
    assert args.staleness == "250ms"
    assert _parse(["check", "--duration", "15"]).duration == 15.0
    assert _parse(["check", "--staleness", "2"]).staleness == "2s"  # the config needs a unit
    assert _parse(["check"]).staleness == "500ms"


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--cache-bytes", "lots"],
        ["serve", "--body-limit", "0"],
        ["serve", "--deadline", "0s"],
        ["serve", "--deadline", "soon"],
        ["serve", "--idempotency-ttl", "-1s"],
        ["cache-server", "--max-bytes", "1.5"],
        ["cache-server", "--upstream-timeout", "0"],
        ["cache-server", "--request-timeout", "inf"],
        ["cache-server", "--stale-if-error", "1d"],
        ["check", "--duration", "0s"],
        ["check", "--converge-timeout", "nan"],
        ["check", "--staleness", "0ms"],
    ],
)
def test_bad_values_exit_2_naming_the_option(argv: list[str]) -> None:
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc, contextlib.redirect_stderr(err):
        _parse(argv)
    assert exc.value.code == 2
    assert f"argument {argv[1]}" in err.getvalue()
    assert "Traceback" not in err.getvalue()


@pytest.mark.parametrize(
    ("command", "sizes", "durations"),
    [
        ("serve", ["--cache-bytes", "--body-limit"], ["--deadline", "--idempotency-ttl"]),
        (
            "cache-server",
            ["--max-bytes", "--max-value-bytes"],
            [
                "--upstream-timeout",
                "--upstream-ttl",
                "--stale-if-error",
                "--request-timeout",
                "--keepalive-timeout",
            ],
        ),
        ("check", [], ["--duration", "--converge-timeout", "--staleness"]),
    ],
)
def test_help_says_the_accepted_forms(command: str, sizes: list[str], durations: list[str]) -> None:
    out = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(out):
        _parse([command, "--help"])
    text = " ".join(out.getvalue().split())  # undo argparse's line wrapping
    for option in sizes:
        assert f"{option} SIZE" in text, option
    for option in durations:
        assert f"{option} DURATION" in text, option
    if sizes:
        assert " ".join(SIZE_HELP.split()) in text
    assert " ".join(DURATION_HELP.split()) in text
