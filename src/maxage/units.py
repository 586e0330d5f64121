"""The one size grammar and the one duration grammar of every command (standard library only).

Sizes (:func:`parse_size`), case-insensitive, optional space before the unit::

    1048576      plain bytes (a whole number)
    512B         bytes (a whole number)
    64K 64KB 64KiB          x 1024
    512M 512MB 512MiB       x 1024**2
    1.5G 1.5GB 1.5GiB       x 1024**3
    2T 2TB 2TiB             x 1024**4

Every unit is **binary**: ``KB`` means 1024 bytes, exactly like ``K`` and ``KiB`` (the
memory convention, and what both of maxage's size options always meant). There are no
SI (1000-based) units. A number with a unit may have a decimal part (``1.5G``); the
result is rounded down to a whole byte and must be at least 1.

Durations (:func:`parse_duration`), case-insensitive, optional space before the unit::

    250ms  10s  1.5s  5m  1h    milliseconds, seconds, minutes, hours
    30     a bare number is seconds

A duration is finite and ``>= 0`` (``0s`` is allowed: a config's ``max_staleness = "0s"``
means strong reads only); callers that need ``> 0`` use :func:`positive_duration_arg`
or check it themselves. No exponents, signs, ``inf`` or ``nan``.

Both raise :class:`ValueError` quoting the input; :func:`size_arg`, :func:`duration_arg`
and :func:`positive_duration_arg` are the same parsers as argparse ``type=`` callables
(they raise :class:`argparse.ArgumentTypeError`). :data:`SIZE_HELP` and
:data:`DURATION_HELP` are the phrases every ``--help`` uses for them.
"""

from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction
from typing import Final

__all__ = [
    "DURATION_HELP",
    "SIZE_HELP",
    "duration_arg",
    "has_unit",
    "parse_duration",
    "parse_size",
    "positive_duration_arg",
    "size_arg",
]

SIZE_HELP: Final = (
    "a size such as 1048576, 64KiB, 512MiB or 1.5G (binary units: K = KB = KiB = 1024)"
)
DURATION_HELP: Final = "a duration such as 250ms, 10s, 1.5s, 5m or 1h (a bare number is seconds)"

_NUMBER = r"(\d+(?:\.\d+)?)"
_SIZE: Final = re.compile(rf"{_NUMBER}\s*([kmgt](?:i?b)?|b)?", re.IGNORECASE | re.ASCII)
_DURATION: Final = re.compile(rf"{_NUMBER}\s*(ms|s|m|h)?", re.IGNORECASE | re.ASCII)

_SIZE_UNITS: Final = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_DURATION_UNITS: Final = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_SIZE_EXAMPLES: Final = "e.g. 1048576, 64KiB, 512MiB or 1.5G"
_DURATION_EXAMPLES: Final = "e.g. 250ms, 10s, 5m or 1h"


def parse_size(text: str) -> int:
    """``"1048576"``, ``"64KiB"``, ``"512MiB"``, ``"1.5G"`` → bytes (binary units, > 0)."""
    if not isinstance(text, str):
        raise ValueError(f"expected a size like '512MiB', got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"expected a size ({_SIZE_EXAMPLES}), got an empty string")
    if stripped.startswith("-"):
        raise ValueError(f"a size must be > 0, got {text!r}")
    m = _SIZE.fullmatch(stripped)
    if not m:
        raise ValueError(f"not a size: {text!r} ({_SIZE_EXAMPLES}; units K, M, G, T, binary)")
    number, unit = m.group(1), (m.group(2) or "").lower()
    multiplier = _SIZE_UNITS[unit[:1]]
    if multiplier == 1 and "." in number:
        raise ValueError(f"a number of bytes must be whole, got {text!r}")
    value = int(Fraction(number) * multiplier)  # exact, then rounded down
    if value <= 0:
        raise ValueError(f"a size must be > 0, got {text!r}")
    return value


def parse_duration(text: str) -> float:
    """``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"``, ``"1.5"`` (seconds) → seconds (finite, >= 0)."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '10s', got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"expected a duration ({_DURATION_EXAMPLES}), got an empty string")
    if stripped.startswith("-"):
        raise ValueError(f"a duration must be >= 0, got {text!r}")
    m = _DURATION.fullmatch(stripped)
    if not m:
        lowered = stripped.lower().lstrip("+")
        if lowered.startswith(("inf", "nan")):
            raise ValueError(f"a duration must be finite, got {text!r}")
        raise ValueError(
            f"not a duration: {text!r} ({_DURATION_EXAMPLES}; units ms, s, m, h; "
            "a bare number is seconds)"
        )
    seconds = float(m.group(1)) * _DURATION_UNITS[(m.group(2) or "").lower()]
    if not math.isfinite(seconds):
        raise ValueError(f"a duration must be finite, got {text!r}")
    return seconds


def has_unit(text: str) -> bool:
    """Whether a duration string names its unit (``"5s"``, not ``"5"``)."""
    m = _DURATION.fullmatch(text.strip())
    return bool(m and m.group(2))


# -- argparse adapters -----------------------------------------------------------------


def size_arg(text: str) -> int:
    """:func:`parse_size` as an argparse ``type=``."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def duration_arg(text: str) -> float:
    """:func:`parse_duration` as an argparse ``type=`` (``0`` allowed)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_duration_arg(text: str) -> float:
    """:func:`parse_duration` as an argparse ``type=`` for options that must be > 0."""
    seconds = duration_arg(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a duration > 0, got {text!r}")
    return seconds
