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

import gc
import math
import os
import platform
import sys
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Final

__all__ = [
    "DEFAULT_BUCKETS",
    "Collector",
    "Exposition",
    "Histogram",
    "Sample",
    "format_value",
    "labels",
    "merge",
    "parse",
    "runtime",
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


# -- process and runtime families ---------------------------------------------------------


def _process_start_time() -> float:
    """When this process started (unix seconds): ``/proc/self/stat`` field 22 plus the
    boot time on Linux; elsewhere, when this module was imported (close enough)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            stat = f.read()
        ticks = int(stat[stat.rindex(b")") + 2 :].split()[19])
        with open("/proc/stat", "rb") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime "))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


_START_TIME: Final = _process_start_time()


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def runtime(out: Exposition, version: str) -> None:
    """The families every Prometheus client library exports (``process_*``,
    ``python_gc_*``, ``python_info``) plus ``maxage_build_info{version}``; the names and
    meanings are those of ``prometheus_client``'s process, GC and platform collectors.
    ``process_resident_memory_bytes`` and ``process_open_fds`` need ``/proc`` (Linux)."""
    times = os.times()
    out.family(
        "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds."
    )
    out.sample("process_cpu_seconds_total", round(times.user + times.system, 6))
    rss = _resident_bytes()
    if rss is not None:
        out.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
        out.sample("process_resident_memory_bytes", rss)
    fds = _open_fds()
    if fds is not None:
        out.family("process_open_fds", "gauge", "Number of open file descriptors.")
        out.sample("process_open_fds", fds)
    out.family(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
    )
    out.sample("process_start_time_seconds", round(_START_TIME, 2))
    stats = gc.get_stats()
    out.family("python_gc_objects_collected_total", "counter", "Objects collected during gc")
    for generation, st in enumerate(stats):
        out.sample(
            "python_gc_objects_collected_total", st["collected"], labels(generation=generation)
        )
    out.family(
        "python_gc_objects_uncollectable_total",
        "counter",
        "Uncollectable objects found during GC",
    )
    for generation, st in enumerate(stats):
        out.sample(
            "python_gc_objects_uncollectable_total",
            st["uncollectable"],
            labels(generation=generation),
        )
    out.family(
        "python_gc_collections_total",
        "counter",
        "Number of times this generation was collected",
    )
    for generation, st in enumerate(stats):
        out.sample("python_gc_collections_total", st["collections"], labels(generation=generation))
    v = sys.version_info
    out.family("python_info", "gauge", "Python platform information")
    out.sample(
        "python_info",
        1,
        labels(
            implementation=platform.python_implementation(),
            major=v.major,
            minor=v.minor,
            patchlevel=v.micro,
            version=platform.python_version(),
        ),
    )
    out.family("maxage_build_info", "gauge", "The running maxage version (always 1).")
    out.sample("maxage_build_info", 1, labels(version=version))


# -- one scrape from several processes ------------------------------------------------------


class _Family:
    __slots__ = ("help_line", "kind", "samples", "type_line")

    def __init__(self) -> None:
        self.help_line = ""
        self.type_line = ""
        self.kind = "untyped"
        self.samples: dict[str, float | str] = {}


def _number(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(text)  # also +Inf, -Inf, NaN


def _with_label(series: str, name: str, value: str) -> str:
    extra = f'{name}="{_escape_label_value(value)}"'
    if series.endswith("}"):
        return series[:-1] + "," + extra + "}"
    return series + "{" + extra + "}"


def merge(parts: Sequence[tuple[str, bytes, bool]]) -> bytes:
    """One exposition from several processes' expositions (as rendered by
    :class:`Exposition`): ``(worker, text, alive)`` each.

    Counters, histograms and summaries are summed per series (name and label set), so a
    scrape shows the whole server. Gauges keep one series per process with a ``worker``
    label added; the gauges of a process that is no longer ``alive`` are left out (its
    counters stay: a total never goes backwards). Families and series keep the order in
    which they first appear (put the answering process first)."""
    families: dict[str, _Family] = {}
    for worker, text, alive in parts:
        fam: _Family | None = None
        for line in text.decode().split("\n"):
            if not line:
                continue
            if line[0] == "#":
                bits = line.split(" ", 3)
                if len(bits) < 3 or bits[1] not in ("HELP", "TYPE"):
                    continue
                fam = families.get(bits[2])
                if fam is None:
                    fam = families[bits[2]] = _Family()
                if bits[1] == "HELP":
                    fam.help_line = line
                else:
                    fam.type_line = line
                    fam.kind = bits[3] if len(bits) > 3 else "untyped"
                continue
            if fam is None:
                continue
            series, _, value = line.rpartition(" ")
            if fam.kind in ("counter", "histogram", "summary"):
                prior = fam.samples.get(series, 0)
                assert not isinstance(prior, str)
                fam.samples[series] = prior + _number(value)
            elif alive:
                fam.samples[_with_label(series, "worker", worker)] = value
    lines: list[str] = []
    for fam in families.values():
        if fam.help_line:
            lines.append(fam.help_line)
        if fam.type_line:
            lines.append(fam.type_line)
        for series, v in fam.samples.items():
            lines.append(f"{series} {v if isinstance(v, str) else format_value(v)}")
    return ("\n".join(lines) + "\n").encode()


# -- reading an exposition back ----------------------------------------------------------


def _unescape_label_value(value: str) -> str:
    out = []
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            nxt = value[i + 1]
            out.append("\n" if nxt == "n" else nxt)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _parse_labels(text: str) -> dict[str, str]:
    """``a="x",b="y\\"z"`` (the inside of the braces) → ``{"a": "x", "b": 'y"z'}``."""
    found: dict[str, str] = {}
    i = 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq].strip().lstrip(",").strip()
        j = eq + 2  # past '="'
        k = j
        while text[k] != '"':
            k += 2 if text[k] == "\\" else 1
        found[name] = _unescape_label_value(text[j:k])
        i = k + 1
        while i < len(text) and text[i] in ", ":
            i += 1
    return found


Sample = tuple[str, dict[str, str], float]
"""One sample read back: ``(name, labels, value)``."""


def parse(text: bytes) -> list[Sample]:
    """The samples of an exposition rendered by :class:`Exposition` (or :func:`merge`),
    in order; comments are skipped. For readers of our own ``/metrics`` (the status
    pages): no timestamps, no exemplars."""
    samples: list[Sample] = []
    for line in text.decode().split("\n"):
        if not line or line[0] == "#":
            continue
        series, _, value = line.rpartition(" ")
        brace = series.find("{")
        if brace < 0:
            samples.append((series, {}, _number(value)))
        else:
            samples.append((series[:brace], _parse_labels(series[brace + 1 : -1]), _number(value)))
    return samples
