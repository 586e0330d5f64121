"""Small self-contained SVG charts: the one drawing module of the status pages
(``maxage serve`` and ``maxage cache-server`` ``/status``) and the HTML reports
(``maxage check --html``).

A leaf: standard library only, imports nothing of maxage, so the black-box checker and
the servers may both use it. Every chart is one ``<svg>`` element (a string) with a
title, labelled axes with units, a legend, and ``viewBox`` scaling so it fits a phone's
width. Nothing is fetched: no fonts, scripts or styles from elsewhere.

Invariants: every text that reaches the SVG goes through :func:`escape`; non-finite
values are dropped, never drawn; a chart with no data says so in its plot area instead
of drawing an empty frame. Each drawn series is a ``<path class="series">`` carrying
``data-series`` (its name) and ``data-points`` (how many points it drew), so a test (or a
person with the inspector) can see what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape as _html_escape

__all__ = [
    "PALETTE",
    "Band",
    "Line",
    "Series",
    "bar_chart",
    "escape",
    "format_number",
    "format_seconds",
    "line_chart",
    "nice_ticks",
]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
_BAND_FILL = "#f3c9c0"
_MARK = "#c0392b"

# A phone shows a chart ~360 px wide: at this size its 12 px text stays above 8 px.
W, H = 520, 250
LEFT, RIGHT, TOP, BOTTOM = 60, 12, 38, 46


def escape(text: object) -> str:
    return _html_escape(str(text), quote=True)


@dataclass(frozen=True, slots=True)
class Series:
    """One line: ``points`` are ``(x, y)``; ``step`` draws it as a histogram outline
    (each ``(x, y)`` holds from ``x`` to the next point's ``x``)."""

    name: str
    points: Sequence[tuple[float, float]]
    color: str | None = None
    step: bool = False
    dashed: bool = False


@dataclass(frozen=True, slots=True)
class Band:
    """A shaded stretch of the x axis, e.g. a fault phase."""

    start: float
    end: float
    label: str = ""


@dataclass(frozen=True, slots=True)
class Line:
    """A marked value: vertical (``axis="x"``) or horizontal (``axis="y"``), e.g. a bound."""

    value: float
    label: str
    axis: str = "x"


@dataclass(slots=True)
class _Frame:
    x0: float
    x1: float
    y0: float
    y1: float
    log_y: bool = False
    width: int = W
    height: int = H
    parts: list[str] = field(default_factory=list)

    def px(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return LEFT + (x - self.x0) / span * (self.width - LEFT - RIGHT)

    def py(self, y: float) -> float:
        if self.log_y:
            y = math.log10(max(y, 10**self.y0))
        span = self.y1 - self.y0 or 1.0
        return self.height - BOTTOM - (y - self.y0) / span * (self.height - TOP - BOTTOM)


def format_number(v: float) -> str:
    """A tick or value label: ``0``, ``0.25``, ``1.5k``, ``2M``, ``1e-4``."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e4:
        return f"{v / 1e3:g}k"
    if a < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def format_seconds(v: float) -> str:
    """A duration label: ``0``, ``250ms``, ``1.5s``, ``2m``, ``1.5h``."""
    a = abs(v)
    if a == 0:
        return "0"
    if a < 1:
        return f"{v * 1000:.3g}ms"
    if a < 120:
        return f"{v:.3g}s"
    if a < 7200:
        return f"{v / 60:.3g}m"
    return f"{v / 3600:.3g}h"


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round values (1, 2, 2.5 or 5 times a power of ten) from at or
    below ``lo`` to at or above ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _open(title: str, width: int, height: int) -> list[str]:
    t = escape(title)
    return [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{t}" preserveAspectRatio="xMidYMid meet" '
        f'font-family="system-ui,sans-serif" font-size="12">',
        f"<title>{t}</title>",
        f'<text x="{LEFT}" y="15" font-size="14" font-weight="600">{t}</text>',
    ]


def _legend(names: Sequence[tuple[str, str, bool]]) -> list[str]:
    """One row of swatches under the title (name, colour, dashed), right of the axis."""
    out = []
    x = float(LEFT)
    for name, color, dashed in names:
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        out.append(
            f'<g class="legend-item"><line x1="{x:.0f}" y1="27" x2="{x + 16:.0f}" y2="27" '
            f'stroke="{color}" stroke-width="2.5"{dash}/>'
            f'<text x="{x + 20:.0f}" y="31">{escape(name)}</text></g>'
        )
        x += 30 + 6.8 * len(name)  # never dropped: a long legend runs to the edge
    return out


def _axes(
    f: _Frame,
    x_label: str,
    y_label: str,
    x_ticks: Sequence[float],
    y_ticks: Sequence[float],
    x_format: Callable[[float], str],
    y_format: Callable[[float], str],
) -> list[str]:
    out = []
    bottom = f.height - BOTTOM
    for t in y_ticks:
        y = f.py(10**t if f.log_y else t)
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{f.width - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{LEFT - 5}" y="{y + 3.5:.1f}" text-anchor="end">'
            f"{escape(y_format(10**t if f.log_y else t))}</text>"
        )
    for t in x_ticks:
        x = f.px(t)
        out.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{escape(x_format(t))}</text>'
        )
    out.append(
        f'<path d="M{LEFT},{TOP} V{bottom} H{f.width - RIGHT}" fill="none" stroke="#555"/>'
        f'<text x="{(LEFT + f.width - RIGHT) / 2:.0f}" y="{f.height - 6}" text-anchor="middle">'
        f"{escape(x_label)}</text>"
        f'<text transform="translate(13 {(TOP + bottom) / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(y_label)}</text>'
    )
    return out


def _empty(parts: list[str], width: int, height: int, note: str) -> str:
    parts.append(
        f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" text-anchor="middle" '
        f'fill="#777">{escape(note)}</text></svg>'
    )
    return "".join(parts)


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    bands: Sequence[Band] = (),
    lines: Sequence[Line] = (),
    x_range: tuple[float, float] | None = None,
    x_format: Callable[[float], str] = format_number,
    y_format: Callable[[float], str] = format_number,
    log_y: bool = False,
    width: int = W,
    height: int = H,
    empty_note: str = "no data yet",
) -> str:
    """Lines (or step outlines) over a numeric x axis, with shaded bands and marked
    values. The y axis starts at 0 (linear) and always shows the marked ``y`` lines;
    ``log_y`` plots positive values only, for counts spanning decades."""
    parts = _open(title, width, height)
    clean = [
        (s, [(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)]) for s in series
    ]
    if log_y:
        clean = [(s, [(x, y) for x, y in pts if y > 0]) for s, pts in clean]
    xs = [x for _, pts in clean for x, _ in pts]
    ys = [y for _, pts in clean for _, y in pts]
    ys += [ln.value for ln in lines if ln.axis == "y" and math.isfinite(ln.value)]
    if x_range is not None:
        xs += list(x_range)
    if not xs or not ys:
        return _empty(parts, width, height, empty_note)
    x0, x1 = x_range if x_range is not None else (min(xs), max(xs))
    x0 = min([x0] + [ln.value for ln in lines if ln.axis == "x" and math.isfinite(ln.value)])
    x1 = max([x1] + [ln.value for ln in lines if ln.axis == "x" and math.isfinite(ln.value)])
    x_ticks = [t for t in nice_ticks(x0, x1) if x0 - 1e-9 <= t <= x1 + 1e-9]
    if log_y:
        # A little below 1 (or the smallest fraction): a count of 1 is a visible bar.
        decade = min(0, math.floor(math.log10(min(ys))))
        hi = max(math.ceil(math.log10(max(ys))), decade + 1)
        f = _Frame(x0, x1, decade - 0.3, hi, True, width, height)
        y_ticks: list[float] = list(range(decade, hi + 1))
    else:
        y_hi = max(ys) if max(ys) > 0 else 1.0
        y_ticks = nice_ticks(0.0, y_hi, 4)
        f = _Frame(x0, x1, 0.0, max(y_ticks[-1], y_hi), False, width, height)
    bottom = height - BOTTOM
    for b in bands:
        a, z = f.px(max(b.start, x0)), f.px(min(b.end, x1))
        if z > a:
            label = f"<title>{escape(b.label)}</title>" if b.label else ""
            parts.append(
                f'<rect class="band" x="{a:.1f}" y="{TOP}" width="{z - a:.1f}" '
                f'height="{bottom - TOP}" fill="{_BAND_FILL}" fill-opacity="0.55">{label}</rect>'
            )
    parts += _axes(f, x_label, y_label, x_ticks, y_ticks, x_format, y_format)
    legend: list[tuple[str, str, bool]] = []
    for i, (s, pts) in enumerate(clean):
        color = s.color or PALETTE[i % len(PALETTE)]
        legend.append((s.name, color, s.dashed))
        if not pts:
            continue
        d = _step_path(f, s.points, log_y) if s.step else _line_path(f, sorted(pts))
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        fill = f'fill="{color}" fill-opacity="0.3"' if s.step else 'fill="none"'
        parts.append(
            f'<path class="series" data-series="{escape(s.name)}" data-points="{len(pts)}" '
            f'd="{"".join(d)}" {fill} stroke="{color}" stroke-width="{1.5 if s.step else 2}"'
            f'{dash} stroke-linejoin="round"/>'
        )
    for i, ln in enumerate(ln for ln in lines if ln.axis == "x"):
        x = f.px(ln.value)
        label_y = TOP + 12 + 14 * (i % 3)  # staggered: close marks keep readable labels
        parts.append(
            f'<line class="mark" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="{_MARK}" stroke-width="1.5" stroke-dasharray="6 3"/>'
            f'<text x="{x + 4:.1f}" y="{label_y}" fill="{_MARK}">{escape(ln.label)}</text>'
        )
    for ln in (ln for ln in lines if ln.axis != "x"):
        y = f.py(ln.value)
        parts.append(
            f'<line class="mark" x1="{LEFT}" y1="{y:.1f}" x2="{width - RIGHT}" y2="{y:.1f}" '
            f'stroke="{_MARK}" stroke-width="1.5" stroke-dasharray="6 3"/>'
            f'<text x="{width - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" '
            f'fill="{_MARK}">{escape(ln.label)}</text>'
        )
    if bands and any(b.label for b in bands):
        legend.append(("fault phase", _BAND_FILL, False))
    parts += _legend(legend)
    parts.append("</svg>")
    return "".join(parts)


def _line_path(f: _Frame, pts: Sequence[tuple[float, float]]) -> list[str]:
    d = [f"M{f.px(pts[0][0]):.1f},{f.py(pts[0][1]):.1f}"]
    d += [f"L{f.px(x):.1f},{f.py(y):.1f}" for x, y in pts[1:]]
    if len(pts) == 1:  # a lone point: a short tick so it is visible
        d.append("h2")
    return d


def _step_path(f: _Frame, points: Sequence[tuple[float, float]], log_y: bool) -> list[str]:
    """Histogram bars: each ``(x, y)`` holds until the next point's ``x``, closed down to
    the axis (filled by the caller); a value that cannot be drawn (zero on a log scale)
    leaves a gap instead of a false plateau."""
    pts = sorted((x, y) for x, y in points if math.isfinite(x) and math.isfinite(y))
    base = f.height - BOTTOM
    d: list[str] = []
    joined = False
    ends = [x for x, _ in pts[1:]] + [pts[-1][0]] if pts else []
    for (x, y), end in zip(pts, ends, strict=True):
        if log_y and y <= 0:
            joined = False
            continue
        if joined:
            d.append(f"V{f.py(y):.1f}H{f.px(end):.1f}")
        else:
            if d:
                d.append(f"V{base:.1f}")
            d.append(f"M{f.px(x):.1f},{base:.1f}V{f.py(y):.1f}H{f.px(end):.1f}")
        joined = True
    if d:
        d.append(f"V{base:.1f}")
    return d


def bar_chart(
    categories: Sequence[str],
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    mark_after: int | None = None,
    mark_label: str = "",
    y_format: Callable[[float], str] = format_number,
    width: int = W,
    height: int = H,
    empty_note: str = "no data yet",
) -> str:
    """Grouped bars over named categories (e.g. histogram buckets ``≤ 10ms``). A marker
    line after category ``mark_after`` (0-based) shows a threshold such as the bound."""
    parts = _open(title, width, height)
    values = [v for _, vs in series for v in vs if math.isfinite(v)]
    if not categories or not values or max(values) <= 0:
        return _empty(parts, width, height, empty_note)
    y_ticks = nice_ticks(0.0, max(values), 4)
    f = _Frame(
        0.0, float(len(categories)), 0.0, max(y_ticks[-1], max(values)), False, width, height
    )
    bottom = height - BOTTOM
    parts += _axes(f, x_label, y_label, [], y_ticks, format_number, y_format)
    slot = (width - LEFT - RIGHT) / len(categories)
    bar = slot * 0.8 / max(1, len(series))
    every = max(1, math.ceil(len(categories) * 42 / (width - LEFT - RIGHT)))
    for i, cat in enumerate(categories):
        if i % every == 0:
            x = f.px(i + 0.5)
            parts.append(
                f'<text x="{x:.1f}" y="{bottom + 15}" text-anchor="middle">{escape(cat)}</text>'
            )
    legend = []
    for k, (name, vs) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        legend.append((name, color, False))
        rects = []
        drawn = 0
        for i, v in enumerate(vs[: len(categories)]):
            if not math.isfinite(v) or v <= 0:
                continue
            drawn += 1
            x = f.px(i) + slot * 0.1 + k * bar
            y = f.py(v)
            rects.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar - 1, 1):.1f}" '
                f'height="{bottom - y:.1f}"><title>{escape(categories[i])}: '
                f"{escape(y_format(v))}</title></rect>"
            )
        parts.append(
            f'<g class="series" data-series="{escape(name)}" data-points="{drawn}" '
            f'fill="{color}">{"".join(rects)}</g>'
        )
    if mark_after is not None and 0 <= mark_after < len(categories):
        x = f.px(mark_after + 1)
        parts.append(
            f'<line class="mark" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{bottom}" '
            f'stroke="{_MARK}" stroke-width="1.5" stroke-dasharray="6 3"/>'
            f'<text x="{x + 4:.1f}" y="{TOP + 11}" fill="{_MARK}">{escape(mark_label)}</text>'
        )
    if len(series) > 1 or mark_label:
        parts += _legend(legend)
    parts.append("</svg>")
    return "".join(parts)
