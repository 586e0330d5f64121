"""Prometheus exposition without per-request objects: plain counters, rendered at scrape time."""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


class Exposition:
    """Collects lines for one scrape."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, label_text: str = "") -> None:
        self.lines.append(f"{name}{label_text} {_num(value)}")

    def histogram(self, name: str, items: Iterable[tuple[str, Histogram]]) -> None:
        for label_text, h in items:
            inner = label_text[1:-1]
            sep = "," if inner else ""
            cumulative = 0
            for bound, n in zip(h.buckets, h.counts, strict=False):
                cumulative += n
                self.lines.append(f'{name}_bucket{{{inner}{sep}le="{bound}"}} {cumulative}')
            cumulative += h.counts[-1]
            self.lines.append(f'{name}_bucket{{{inner}{sep}le="+Inf"}} {cumulative}')
            self.lines.append(f"{name}_sum{label_text} {_num(h.sum)}")
            self.lines.append(f"{name}_count{label_text} {h.count}")

    def render(self) -> bytes:
        return ("\n".join(self.lines) + "\n").encode()


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):  # e.g. a holder's lag before its start-up replay completes
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return str(int(v)) if v.is_integer() else repr(v)


Collector = Callable[[Exposition], None]
