"""The one metrics module: a fixed-bucket :class:`Histogram` and the Prometheus text
exposition (format 0.0.4), used by the API (``maxage serve``), the cache server and the
in-service consistency monitor. Standard library only.

Nothing here allocates per observation: a histogram is a list of per-bucket counts, a
sum and a count, and the text is rendered only when ``/metrics`` is scraped.

Field names, one set everywhere:

* ``Histogram.buckets`` - the upper bounds (Prometheus ``le``), ascending, without +Inf;
* ``Histogram.counts`` - observations per bucket, *not* cumulative, ``len(buckets) + 1``
  long (the last one counts what fell above every bound);
* ``Histogram.sum`` and ``Histogram.count``.

Rendering follows the Prometheus text format: ``# HELP`` text escapes ``\\`` and newline;
label values escape ``\\``, ``"`` and newline; sample values are integers as integers,
``+Inf``, ``-Inf`` and ``NaN`` for the non-finite ones; bucket lines are cumulative, end
with ``le="+Inf"`` equal to ``_count``.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

__all__ = [
    "DEFAULT_BUCKETS",
    "Collector",
    "Exposition",
    "Histogram",
    "format_value",
    "labels",
]

# Seconds: HTTP request latencies from half a millisecond to ten seconds.
DEFAULT_BUCKETS: Final[tuple[float, ...]] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Histogram:
    """Per-bucket counts, a sum and a count; cumulative only when rendered.

    A value equal to a bound falls in that bound's bucket (Prometheus ``le``)."""

    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = DEFAULT_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


def _escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def labels(**kv: str | int) -> str:
    """``labels(route="/v1/x", status=200)`` → ``{route="/v1/x",status="200"}`` (escaped)."""
    return "{" + ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in kv.items()) + "}"


def format_value(value: float) -> str:
    """A sample value: ``3``, ``0``, ``0.25``, ``1e-05``, ``+Inf``, ``-Inf``, ``NaN``."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):  # e.g. a holder's lag before its start-up replay completes
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return str(int(value)) if value.is_integer() else repr(value)


def _format_bound(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf" if bound > 0 else "-Inf"
    return str(float(bound))


class Exposition:
    """The lines of one scrape: families, samples and histograms, in call order."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        """The ``# HELP`` and ``# TYPE`` lines (``kind``: counter, gauge, histogram...)."""
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, label_text: str = "") -> None:
        """One sample; ``label_text`` is ``""`` or the output of :func:`labels`."""
        self.lines.append(f"{name}{label_text} {format_value(value)}")

    def histogram(self, name: str, items: Iterable[tuple[str, Histogram]]) -> None:
        """``_bucket``, ``_sum`` and ``_count`` lines for each ``(label_text, histogram)``."""
        lines = self.lines
        for label_text, h in items:
            inner = label_text[1:-1]
            sep = "," if inner else ""
            cumulative = 0
            for bound, n in zip(h.buckets, h.counts, strict=False):
                cumulative += n
                lines.append(
                    f'{name}_bucket{{{inner}{sep}le="{_format_bound(bound)}"}} {cumulative}'
                )
            cumulative += h.counts[-1]
            lines.append(f'{name}_bucket{{{inner}{sep}le="+Inf"}} {cumulative}')
            lines.append(f"{name}_sum{label_text} {format_value(h.sum)}")
            lines.append(f"{name}_count{label_text} {h.count}")

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


Collector = Callable[[Exposition], None]
"""Something that adds its families to a scrape."""
