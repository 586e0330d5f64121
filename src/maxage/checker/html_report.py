"""The HTML report of a checked history (``maxage check --html FILE``): one
self-contained page (inline CSS, SVG charts from :mod:`maxage.charts`, no script, nothing
fetched) that a person reads after a run.

What it shows: the verdict and the run's summary; each property's outcome; the staleness
distribution of each read mode with the bounds marked; operations over time with the
fault phases shaded and violations marked; every violation with the operations that
show it. Any driver that has the checker's :class:`~maxage.checker.history.Op` history,
its :class:`~maxage.checker.checks.Result` and a :func:`~maxage.checker.report.build_report`
dict can call :func:`render_html` (``maxage check`` does; ``maxage sim`` may).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from maxage import charts
from maxage.charts import Band, Line, Series, escape, format_seconds
from maxage.checker.checks import TITLES, Result
from maxage.checker.history import FAULT, Op

__all__ = ["fault_phases", "render_html"]

TIME_BINS = 120  # operations-over-time resolution
STALENESS_BINS = 40
SHOWN_VIOLATIONS = 50  # per property; the JSON report and the history have them all
_OP_FIELDS = ("id", "client", "kind", "mode", "collection", "key", "invoke", "ret", "outcome",
              "status", "version", "if_match", "min_version", "tier", "age", "token",
              "idem_key", "replay", "phase", "detail")  # fmt: skip

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#14213d;color:#fff;padding:.9rem 1rem}header h1{margin:0;font-size:1.2rem}
header p{margin:.2rem 0 0;font-size:.9rem;opacity:.9}
main{max-width:72rem;margin:0 auto;padding:.5rem .8rem 2rem}
h2{font-size:1.05rem;margin:1.5rem 0 .5rem}
.verdict{display:inline-block;padding:.1rem .6rem;border-radius:4px;font-weight:700}
.ok{background:#d8f3e6;color:#0a5c3d}.violation{background:#ffe1d6;color:#9b2c00}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.88rem}
th,td{border-bottom:1px solid #e3e6ea;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
.tablewrap{overflow-x:auto}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr));gap:.6rem}
figure{margin:0;background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.3rem}
figure.wide{grid-column:1/-1}
svg.chart{width:100%;height:auto;display:block}
.v{background:#fff;border:1px solid #f0c0b0;border-radius:8px;padding:.5rem .8rem;margin:.6rem 0}
.note{color:#555;font-size:.85rem}
code{font-family:ui-monospace,monospace;font-size:.85em}
"""


def fault_phases(ops: Sequence[Op], end: float) -> list[Band]:
    """The stretches of time during which faults were enabled: each fault event starts a
    phase with its set of faults (an empty set or a heal ends the previous one)."""
    events = sorted((o for o in ops if o.kind == FAULT), key=lambda o: o.invoke)
    stops = [e.invoke for e in events[1:]] + [end]
    bands = []
    for ev, stop in zip(events, stops[: len(events)], strict=True):
        if ev.faults:
            label = ", ".join(f"{k} {v:g}" for k, v in sorted(ev.faults.items()))
            bands.append(Band(ev.invoke, stop, label))
    return bands


def _operations_chart(ops: Sequence[Op], res: Result) -> str:
    real = [o for o in ops if o.kind != FAULT]
    if not real:
        return charts.line_chart(
            [], title="Operations over time", x_label="time (s)", y_label="operations per second"
        )
    start = min(o.invoke for o in real)
    end = max(o.ret for o in real)
    width = max((end - start) / TIME_BINS, 1e-3)
    n = int((end - start) / width) + 1

    def per_second(selected: Sequence[Op]) -> list[tuple[float, float]]:
        counts = [0] * n
        for o in selected:
            counts[min(n - 1, int((o.invoke - start) / width))] += 1
        return [(start + (i + 0.5) * width, c / width) for i, c in enumerate(counts)]

    reads = [o for o in real if o.kind == "read"]
    writes = [o for o in real if o.is_write]
    failed = [o for o in real if o.outcome != "ok"]
    series = [
        Series("reads/s", per_second(reads)),
        Series("writes/s", per_second(writes)),
        Series("failed or unknown/s", per_second(failed), dashed=True),
    ]
    marks = []
    for v in res.violations[:20]:
        if v.ops:  # at the latest of its operations: the one that showed it
            marks.append(Line(max(o.invoke for o in v.ops), v.prop))
    return charts.line_chart(
        series,
        title="Operations over time (fault phases shaded, violations marked)",
        x_label="time since the run started (s)",
        y_label="operations per second",
        bands=fault_phases(ops, end),
        lines=marks,
        x_format=charts.format_number,
        width=960,
        height=300,
    )


def _staleness_charts(res: Result, bounds: Mapping[str, float]) -> list[str]:
    positive = sorted({b for b in bounds.values() if b > 0})
    marks = [Line(b, "S = " + format_seconds(b) + _named(b, bounds)) for b in positive[:4]]
    out = []
    for mode in ("bounded", "session", "strong"):
        values = [v for v in res.staleness_seconds.get(mode, []) if math.isfinite(v)]
        if not values:
            continue
        top = max([*(b * 1.5 for b in positive), 0.001, max(values)])
        width = top / STALENESS_BINS
        counts = [0] * STALENESS_BINS
        for v in values:
            counts[min(STALENESS_BINS - 1, int(v / width))] += 1
        points = [(i * width, float(c)) for i, c in enumerate(counts)] + [(top, float(counts[-1]))]
        stale = sum(1 for v in values if v > 0)
        out.append(
            charts.line_chart(
                [Series(f"{mode} reads ({len(values)}, {stale} stale)", points, step=True)],
                title=f"Staleness of {mode} reads",
                x_label="staleness: time since a newer version was acknowledged (s)",
                y_label="reads (log scale)",
                lines=marks if mode == "bounded" else [],
                log_y=True,
                x_format=charts.format_number,
                y_format=charts.format_number,
            )
        )
    return out


def _named(bound: float, bounds: Mapping[str, float]) -> str:
    names = sorted(n for n, b in bounds.items() if b == bound)
    return f" ({', '.join(names)})" if len(bounds) > 1 else ""


def _kv(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def _op_rows(ops: Sequence[Op]) -> str:
    rows = []
    for o in ops:
        d = o.brief()
        cells = []
        for k in _OP_FIELDS:
            v = d.get(k, "")
            cells.append(f"<td>{escape(round(v, 4) if isinstance(v, float) else v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{k}</th>" for k in _OP_FIELDS)
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def render_html(
    rep: Mapping[str, Any],
    ops: Sequence[Op],
    res: Result,
    bounds: Mapping[str, float],
    *,
    title: str = "maxage check",
    timeline_note: str = "",
) -> str:
    """The whole report page. ``rep``: :func:`maxage.checker.report.build_report`'s dict
    (or another driver's with the keys it has: ``maxage sim``'s); ``ops``: the history
    drawn over time (fault events included); ``res``: the violations and staleness of the
    whole run; ``bounds``: seconds per collection; ``timeline_note``: what ``ops`` covers
    when it is not the whole run."""
    verdict = str(rep.get("verdict", "ok"))
    where = rep.get("target") or rep.get("config") or "-"
    sub = (
        f"{escape(where)} · seed {escape(rep.get('seed', '-'))}"
        + (f" · {escape(format_seconds(float(rep['duration_s'])))}" if "duration_s" in rep else "")
        + (f" · MUTANT {escape(rep['mutant'])}" if rep.get("mutant") else "")
    )
    summary = [
        ("verdict", f'<span class="verdict {escape(verdict)}">{escape(verdict.upper())}</span>')
    ]
    kinds = rep.get("by_kind")
    summary.append(
        (
            "operations",
            escape(f"{rep.get('operations', len(ops))}" + (f" ({_kv(kinds)})" if kinds else "")),
        )
    )
    faults = rep.get("faults", {})
    shown = faults.get("phases_enabled", faults) if isinstance(faults, dict) else {}
    for label, value in (
        ("outcomes", rep.get("by_outcome")),
        ("reads by mode", rep.get("reads_by_mode")),
        ("reads by tier", rep.get("reads_by_tier")),
        ("faults", {k: v for k, v in shown.items() if v} or None),
    ):
        if value is not None:
            summary.append((label, escape(_kv(value))))
    summary.append(
        (
            "collections",
            escape(", ".join(f"{k} (S = {format_seconds(v)})" for k, v in sorted(bounds.items()))),
        )
    )
    lin = rep.get("linearizability")
    if lin:
        summary.append(
            ("linearizability", escape(f"{lin.get('linearizable')} of {lin.get('keys')} keys"))
        )
    for key in ("epochs", "nodes", "clients", "history_sha256"):
        if key in rep:
            summary.append((key.replace("_", " "), escape(rep[key])))
    if timeline_note:
        summary.append(("timeline", escape(timeline_note)))
    parts = [
        "<h2>Summary</h2>",
        '<div class="tablewrap"><table><tbody>'
        + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in summary)
        + "</tbody></table></div>",
    ]
    by_prop = res.by_property()
    rows = []
    for prop, title_text in TITLES.items():
        found = by_prop.get(prop, [])
        state = (
            '<span class="verdict ok">ok</span>'
            if not found
            else f'<span class="verdict violation">violated &times; {len(found)}</span>'
        )
        rows.append(
            f"<tr><td>{escape(prop)}</td><td>{escape(title_text)}</td><td>{state}</td></tr>"
        )
    parts.append("<h2>Properties</h2>")
    parts.append(
        '<div class="tablewrap"><table><thead><tr><th>property</th><th>what</th><th>outcome</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )
    figures = [f'<figure class="wide">{_operations_chart(ops, res)}</figure>']
    figures += [f"<figure>{svg}</figure>" for svg in _staleness_charts(res, bounds)]
    parts.append("<h2>Charts</h2>")
    parts.append(f'<div class="charts">{"".join(figures)}</div>')
    parts.append(
        '<p class="note">Staleness of a read: how long before the read started a version newer '
        "than the one it returned had been acknowledged (0: it returned the newest). Bounded reads "
        "may be up to S stale; session and strong reads have their own rules (P3, P4).</p>"
    )
    parts.append(f"<h2>Violations ({len(res.violations)})</h2>")
    if not res.violations:
        parts.append("<p>None.</p>")
    for prop in TITLES:
        for v in by_prop.get(prop, [])[:SHOWN_VIOLATIONS]:
            parts.append(
                f'<div class="v"><b>{escape(v.prop)} {escape(TITLES.get(v.prop, ""))}</b>: '
                f"{escape(v.message)}{_op_rows(v.ops)}</div>"
            )
        extra = len(by_prop.get(prop, [])) - SHOWN_VIOLATIONS
        if extra > 0:
            parts.append(
                f'<p class="note">… and {extra} more {escape(prop)} violations (see --json).</p>'
            )
    notes = rep.get("notes") or []
    if notes:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{escape(title)} report</title><style>{_CSS}</style></head>'
        f"<body><header><h1>{escape(title)} report</h1><p>{sub}</p></header>"
        f"<main>{''.join(parts)}</main></body></html>"
    )
