"""The status pages of ``maxage serve`` and ``maxage cache-server`` (``GET /status``,
``GET /status.json``): what a person wants to see at a glance, drawn from the servers'
own ``/metrics`` exposition (no second set of counters).

:class:`Recorder` keeps the last :data:`WINDOW` seconds of scrapes, one every
:data:`INTERVAL` seconds, reduced to a :class:`Point` (cumulative counters and gauges);
rates, ratios and latency quantiles are differences between consecutive points. The
scrape is the same text ``/metrics`` answers (with ``--workers N`` the merged one), so
the page and Prometheus never disagree.

:func:`api_model` / :func:`cache_model` turn the points (plus what only the server
knows: the collections' contracts, the cache's top tags) into one JSON-able dict;
:func:`render_page` draws it as a self-contained HTML page (inline CSS, server-rendered
SVG from :mod:`maxage.charts`, a small inline script that re-fetches ``/status.json``
and swaps in its ``html``: live without JavaScript charts, and the same picture when
JavaScript is off). Standard library, :mod:`maxage.core.metrics` and
:mod:`maxage.charts` only.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from maxage import charts
from maxage.charts import Line, Series, escape, format_number, format_seconds
from maxage.core.metrics import Sample, parse

__all__ = [
    "INTERVAL",
    "WINDOW",
    "CollectionContract",
    "Point",
    "Recorder",
    "api_model",
    "cache_model",
    "render_page",
]

INTERVAL = 2.0  # seconds between two recorded scrapes
WINDOW = 600.0  # seconds of history kept (and charted)
SUMMARY_WINDOW = 60.0  # "now" numbers are over the last minute
NONE = "\u2013"  # shown for a number not known (yet)
HTTP = "http_server_request_duration_seconds"


@dataclass(slots=True)
class Point:
    """One scrape, reduced: cumulative counters and current gauges at ``t`` (unix s)."""

    t: float
    requests: float = 0.0
    errors: float = 0.0  # 5xx answers
    limited: float = 0.0  # 429 answers
    shed: float = 0.0
    latency_bounds: tuple[float, ...] = ()
    latency_cumulative: tuple[float, ...] = ()  # per bound, then +Inf
    hits: dict[str, float] = field(default_factory=dict)  # by tier
    misses: float = 0.0
    bypasses: float = 0.0
    tailer_lag: float | None = None
    evictions: dict[str, float] = field(default_factory=dict)
    bytes_used: float = 0.0
    max_bytes: float = 0.0
    entries: float = 0.0
    checked: dict[str, float] = field(default_factory=dict)  # by collection
    violations: dict[str, float] = field(default_factory=dict)
    staleness: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(
        default_factory=dict
    )  # collection -> (le bounds, cumulative counts per bound then +Inf)
    # (collection, consumer) -> {"behind", "lag_s", "over_limit"}: named consumers and
    # webhook subscriptions (maxage_consumer_*; every process reports the same figures)
    consumers: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)


_CONSUMER_FIGURES = {
    "maxage_consumer_behind_changes": "behind",
    "maxage_consumer_lag_seconds": "lag_s",
    "maxage_consumer_over_limit": "over_limit",
}


def reduce(samples: Iterable[Sample], t: float) -> Point:
    """The :class:`Point` of one parsed exposition (either server's families)."""
    p = Point(t)
    latency: dict[float, float] = {}
    stale: dict[str, dict[float, float]] = {}
    memory_seen = False
    l2_configured = False
    for name, lab, v in samples:
        if not math.isfinite(v) and name != "maxage_tailer_lag_seconds":
            continue
        if name == HTTP + "_count":
            p.requests += v
            status = lab.get("http_response_status_code", "")
            if status.startswith("5"):
                p.errors += v
            elif status == "429":
                p.limited += v
        elif name == HTTP + "_bucket":
            le = _le(lab["le"])
            latency[le] = latency.get(le, 0.0) + v
        elif name == "maxage_l2_available":
            l2_configured = True
        elif name == "maxage_shed_total":
            p.shed += v
        elif name == "maxage_cache_hits_total":
            tier = lab.get("tier", "cache")
            p.hits[tier] = p.hits.get(tier, 0.0) + v
        elif name == "maxage_cache_misses_total":
            p.misses += v
        elif name == "maxage_cache_bypasses_total":
            p.bypasses += v
        elif name == "maxage_tailer_lag_seconds":
            p.tailer_lag = v if p.tailer_lag is None else max(p.tailer_lag, v)
        elif name == "maxage_cache_evictions_total":
            reason = lab.get("reason", "?")
            p.evictions[reason] = p.evictions.get(reason, 0.0) + v
        elif name == "maxage_cache_memory_bytes":  # the cache server's whole accounting
            p.bytes_used, memory_seen = v, True
        elif name == "maxage_cache_bytes" and not memory_seen:
            p.bytes_used += v
        elif name == "maxage_cache_max_bytes":
            p.max_bytes = max(p.max_bytes, v)
        elif name == "maxage_cache_entries":
            p.entries += v
        elif name == "maxage_consistency_checked_total":
            c = lab.get("collection", "")
            p.checked[c] = p.checked.get(c, 0.0) + v
        elif name == "maxage_consistency_violations_total":
            c = lab.get("collection", "")
            p.violations[c] = p.violations.get(c, 0.0) + v
        elif name in _CONSUMER_FIGURES:
            key = (lab.get("collection", ""), lab.get("consumer", ""))
            p.consumers.setdefault(key, {})[_CONSUMER_FIGURES[name]] = v
        elif name == "maxage_consistency_staleness_seconds_bucket":
            per = stale.setdefault(lab.get("collection", ""), {})
            le = _le(lab["le"])
            per[le] = per.get(le, 0.0) + v
    if not l2_configured and not p.hits.get("l2"):
        p.hits.pop("l2", None)  # the API counts an l2 tier even without one
    if latency:
        bounds = sorted(latency)
        p.latency_bounds = tuple(b for b in bounds if math.isfinite(b))
        p.latency_cumulative = tuple(latency[b] for b in bounds)
    for c, per in stale.items():
        bounds = sorted(per)
        p.staleness[c] = (
            tuple(b for b in bounds if math.isfinite(b)),
            tuple(per[b] for b in bounds),
        )
    return p


def _le(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


class Recorder:
    """The last :data:`WINDOW` seconds of reduced scrapes of ``scrape()`` (the server's
    ``/metrics`` text). :meth:`tick` records when :data:`INTERVAL` has passed since the
    last point; call it from a timer and before answering ``/status``."""

    def __init__(
        self,
        scrape: Callable[[], bytes],
        *,
        interval: float = INTERVAL,
        window: float = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scrape = scrape
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self.points: deque[Point] = deque(maxlen=max(2, int(window / interval) + 1))

    def tick(self) -> None:
        now = self.clock()
        if not self.points or now - self.points[-1].t >= self.interval * 0.95:
            self.points.append(reduce(parse(self.scrape()), now))

    def current(self) -> list[Point]:
        """The recorded points plus a fresh one for "now" (not kept)."""
        pts = list(self.points)
        now = self.clock()
        if not pts or now - pts[-1].t > 0.05:
            pts.append(reduce(parse(self.scrape()), now))
        return pts


# -- derived numbers --------------------------------------------------------------------


def quantile(bounds: Sequence[float], cumulative: Sequence[float], q: float) -> float:
    """The ``q`` quantile of a cumulative histogram (Prometheus ``histogram_quantile``:
    linear within the bucket; the top finite bound when it falls in +Inf); NaN if empty."""
    total = cumulative[-1] if cumulative else 0.0
    if total <= 0:
        return math.nan
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in zip(bounds, cumulative, strict=False):
        if count >= rank:
            width = count - prev_count
            return prev_bound + (bound - prev_bound) * (
                (rank - prev_count) / width if width else 1.0
            )
        prev_bound, prev_count = bound, count
    return bounds[-1] if bounds else math.nan


def _delta(a: Sequence[float], b: Sequence[float]) -> list[float]:
    if len(a) != len(b):
        return list(b)
    return [max(0.0, y - x) for x, y in zip(a, b, strict=True)]


def _reads(p: Point) -> float:
    return sum(p.hits.values()) + p.misses + p.bypasses


@dataclass(slots=True)
class _Window:
    """Differences between two points: rates per second and the window's quantiles."""

    seconds: float
    requests_per_s: float
    errors_per_s: float
    limited_per_s: float
    shed_per_s: float
    p50_ms: float
    p99_ms: float
    hit_ratio: dict[str, float]
    evictions_per_s: float


def _window(a: Point, b: Point) -> _Window:
    dt = max(b.t - a.t, 1e-9)
    d_lat = _delta(a.latency_cumulative, b.latency_cumulative)
    reads = _reads(b) - _reads(a)
    tiers = sorted(set(a.hits) | set(b.hits))
    ratio = {
        t: (b.hits.get(t, 0.0) - a.hits.get(t, 0.0)) / reads if reads > 0 else math.nan
        for t in tiers
    }
    return _Window(
        dt,
        (b.requests - a.requests) / dt,
        (b.errors - a.errors) / dt,
        (b.limited - a.limited) / dt,
        (b.shed - a.shed) / dt,
        quantile(b.latency_bounds, d_lat, 0.5) * 1000,
        quantile(b.latency_bounds, d_lat, 0.99) * 1000,
        ratio,
        (sum(b.evictions.values()) - sum(a.evictions.values())) / dt,
    )


def _summary(points: Sequence[Point]) -> _Window | None:
    """The last minute (or what there is of it)."""
    if len(points) < 2:
        return None
    last = points[-1]
    first = next((p for p in points if last.t - p.t <= SUMMARY_WINDOW), points[-2])
    if first is last:
        first = points[-2]
    return _window(first, last)


def _series(points: Sequence[Point]) -> tuple[list[float], list[_Window]]:
    """x (seconds relative to the last point, ≤ 0) and the window ending there."""
    if len(points) < 2:
        return [], []
    end = points[-1].t
    xs = [b.t - end for b in points[1:]]
    return xs, [_window(a, b) for a, b in itertools.pairwise(points)]


def nines(checked: float, violations: float) -> dict[str, Any]:
    """ "N nines within S": the within-bound fraction and its nines; with no violation,
    the nines that ``checked`` hits support at 95 % confidence (rule of three)."""
    if checked <= 0:
        return {"within": None, "nines": None, "at_least": False}
    if violations <= 0:
        bound = 3.0 / checked
        return {
            "within": 1.0,
            "nines": round(max(0.0, -math.log10(bound)), 2) if bound < 1 else 0.0,
            "at_least": True,
        }
    rate = violations / checked
    return {"within": 1.0 - rate, "nines": round(-math.log10(rate), 2), "at_least": False}


# -- the models -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CollectionContract:
    """What the status page says of a collection's contract."""

    name: str
    max_staleness: float
    read_modes: tuple[str, ...]
    write_policy: str
    ttl: float | None


def _finite(v: float | None, digits: int = 3) -> float | None:
    return round(v, digits) if v is not None and math.isfinite(v) else None


def _common(points: Sequence[Point], kind: str, version: str, started: float) -> dict[str, Any]:
    last = points[-1]
    s = _summary(points)
    return {
        "server": kind,
        "version": version,
        "generated_at": round(last.t, 3),
        "uptime_s": round(last.t - started, 1),
        "window_s": round(last.t - points[0].t, 1),
        "interval_s": INTERVAL,
        "totals": {
            "requests": last.requests,
            "errors_5xx": last.errors,
            "rate_limited_429": last.limited,
            "shed_503": last.shed,
        },
        "last_minute": None
        if s is None
        else {
            "seconds": round(s.seconds, 1),
            "requests_per_s": _finite(s.requests_per_s, 2),
            "p50_ms": _finite(s.p50_ms),
            "p99_ms": _finite(s.p99_ms),
            "errors_per_s": _finite(s.errors_per_s),
            "rate_limited_per_s": _finite(s.limited_per_s),
            "shed_per_s": _finite(s.shed_per_s),
            "hit_ratio": {t: _finite(r, 4) for t, r in s.hit_ratio.items()},
            "evictions_per_s": _finite(s.evictions_per_s, 2),
        },
    }


def _traffic_series(points: Sequence[Point]) -> dict[str, list[Any]]:
    xs, ws = _series(points)
    tiers = sorted({t for w in ws for t in w.hit_ratio})
    out: dict[str, list[Any]] = {
        "t": [round(x, 1) for x in xs],
        "requests_per_s": [_finite(w.requests_per_s, 2) for w in ws],
        "p50_ms": [_finite(w.p50_ms) for w in ws],
        "p99_ms": [_finite(w.p99_ms) for w in ws],
        "errors_per_s": [_finite(w.errors_per_s) for w in ws],
        "rate_limited_per_s": [_finite(w.limited_per_s) for w in ws],
        "shed_per_s": [_finite(w.shed_per_s) for w in ws],
        "evictions_per_s": [_finite(w.evictions_per_s, 2) for w in ws],
    }
    for t in tiers:
        out[f"hit_ratio_{t}"] = [_finite(w.hit_ratio.get(t, math.nan), 4) for w in ws]
    return out


def api_model(
    points: Sequence[Point],
    collections: Sequence[CollectionContract],
    *,
    version: str,
    started: float,
) -> dict[str, Any]:
    """``/status.json`` of ``maxage serve`` (without ``html``; :func:`render_page` adds
    it). ``points``: :meth:`Recorder.current`."""
    last = points[-1]
    model = _common(points, "maxage serve", version, started)
    series = _traffic_series(points)
    xs = [p.t - last.t for p in points]
    series["tailer_lag_t"] = [round(x, 1) for x in xs]
    series["tailer_lag_s"] = [_finite(p.tailer_lag) for p in points]
    model["series"] = series
    model["tailer_lag_s"] = _finite(last.tailer_lag)
    model["hit_ratio_since_start"] = {
        t: _finite(n / _reads(last), 4) if _reads(last) else None
        for t, n in sorted(last.hits.items())
    }
    model["cache"] = {
        "bytes": last.bytes_used,
        "max_bytes": last.max_bytes,
        "entries": last.entries,
        "evictions": dict(sorted(last.evictions.items())),
    }
    cols = []
    for c in collections:
        checked = last.checked.get(c.name, 0.0)
        violations = last.violations.get(c.name, 0.0)
        bounds, cum = last.staleness.get(c.name, ((), ()))
        counts = [cum[0]] + [b - a for a, b in itertools.pairwise(cum)] if cum else []
        cols.append(
            {
                "name": c.name,
                "max_staleness_s": c.max_staleness,
                "read_modes": list(c.read_modes),
                "write_policy": c.write_policy,
                "ttl_s": c.ttl,
                "monitor": {
                    "checked": checked,
                    "violations": violations,
                    **nines(checked, violations),
                    "staleness_le_s": list(bounds) + ["+Inf"] if bounds else [],
                    "staleness_counts": counts,
                },
            }
        )
    model["collections"] = cols
    model["monitor_on"] = bool(last.staleness) or bool(last.checked)
    model["consumers"] = [
        {
            "collection": collection,
            "consumer": name,
            "behind": f.get("behind", 0.0),
            "lag_s": _finite(f.get("lag_s")),
            "over_limit": bool(f.get("over_limit")),
        }
        for (collection, name), f in sorted(last.consumers.items())
    ]
    return model


def cache_model(
    points: Sequence[Point],
    *,
    version: str,
    started: float,
    top_tags: Sequence[tuple[str, int]],
) -> dict[str, Any]:
    """``/status.json`` of ``maxage cache-server``."""
    last = points[-1]
    model = _common(points, "maxage cache-server", version, started)
    series = _traffic_series(points)
    series["bytes_t"] = [round(p.t - last.t, 1) for p in points]
    series["bytes"] = [p.bytes_used for p in points]
    model["series"] = series
    reads = _reads(last)
    model["cache"] = {
        "bytes": last.bytes_used,
        "max_bytes": last.max_bytes,
        "entries": last.entries,
        "hit_ratio_since_start": _finite(sum(last.hits.values()) / reads, 4) if reads else None,
        "evictions": dict(sorted(last.evictions.items())),
        "top_tags": [{"tag": t, "entries": n} for t, n in top_tags],
    }
    return model


# -- the page ---------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#f6f7f9}
header{background:#14213d;color:#fff;padding:.8rem 1rem}
header h1{font-size:1.15rem;margin:0}header p{margin:.2rem 0 0;font-size:.85rem;opacity:.85}
main{max-width:72rem;margin:0 auto;padding:.5rem .8rem 2rem}
h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(9.5rem,1fr));gap:.5rem}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.5rem .7rem}
.card .k{font-size:.75rem;color:#555;text-transform:uppercase;letter-spacing:.03em}
.card .v{font-size:1.35rem;font-weight:650}
.card.bad{border-color:#d55e00;background:#fff4ec}.card.ok .v{color:#0a6e4f}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr));gap:.6rem}
figure{margin:0;background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.3rem}
svg.chart{width:100%;height:auto;display:block}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
@media (max-width:40rem){table.stack thead{display:none}
table.stack tr{display:block;border-bottom:2px solid #dde1e6;padding:.2rem 0}
table.stack td{display:flex;justify-content:space-between;gap:1rem;border:0;padding:.15rem .5rem;text-align:right}
table.stack td::before{content:attr(data-label);font-weight:600;color:#555;text-align:left}}
th,td{border-bottom:1px solid #e3e6ea;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}
.tablewrap{overflow-x:auto}
.note{color:#555;font-size:.85rem}
code{font-family:ui-monospace,monospace;font-size:.85em}
form{margin:1rem 0}input{font:inherit;padding:.3rem;width:min(100%,24rem)}
"""

# Re-fetch /status.json every interval and swap in its server-rendered main; an admin
# key given in the form is kept for this tab only (sessionStorage).
_SCRIPT = """
(function(){
  var keyName='maxage-status-key', main=document.getElementById('main');
  var stamp=document.getElementById('updated');
  function headers(){var k=sessionStorage.getItem(keyName);return k?{'Authorization':'Bearer '+k}:{};}
  var form=document.getElementById('keyform');
  if(form){form.addEventListener('submit',function(e){e.preventDefault();
    sessionStorage.setItem(keyName,document.getElementById('key').value.trim());tick();});}
  function tick(){
    fetch('status.json',{headers:headers(),cache:'no-store'}).then(function(r){
      if(!r.ok){stamp.textContent='not updated: HTTP '+r.status;return null;}
      return r.json();
    }).then(function(m){
      if(!m)return;
      main.innerHTML=m.html;
      stamp.textContent='updated '+new Date(m.generated_at*1000).toLocaleTimeString();
      document.body.dataset.updates=String(Number(document.body.dataset.updates||0)+1);
    }).catch(function(){stamp.textContent='not updated: server unreachable';});
  }
  setInterval(tick,INTERVAL_MS);
  if(form&&sessionStorage.getItem(keyName))tick();
})();
"""


def _card(label: str, value: str, state: str = "") -> str:
    cls = f"card {state}".strip()
    return f'<div class="{cls}"><div class="k">{escape(label)}</div><div class="v">{escape(value)}</div></div>'


def _fmt(v: float | None, unit: str = "", digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return NONE
    if abs(v) >= 100:
        return f"{v:,.0f}{unit}"
    return f"{v:.{digits}g}{unit}"


def _pct(v: float | None) -> str:
    return NONE if v is None or not math.isfinite(v) else f"{v * 100:.1f} %"


def _bytes(v: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{v:.0f} B"


def _pairs(xs: Sequence[float], ys: Sequence[float | None]) -> list[tuple[float, float]]:
    return [(x, y) for x, y in zip(xs, ys, strict=False) if y is not None]


def _ago(v: float) -> str:
    return (
        "now" if v == 0 else format_seconds(v).lstrip("-") + " ago" if v < 0 else format_seconds(v)
    )


def _over_time(
    model: dict[str, Any], series: Sequence[Series], title: str, y_label: str, **kw: Any
) -> str:
    """A chart of the recorded minutes: x is time before now, the whole window shown."""
    return charts.line_chart(
        series,
        title=title,
        x_label="time (before now)",
        y_label=y_label,
        x_range=(-max(model["window_s"], 60.0), 0.0),
        x_format=_ago,
        **kw,
    )


def _traffic_charts(model: dict[str, Any]) -> list[str]:
    s = model["series"]
    xs = s["t"]
    tiers = sorted(k[len("hit_ratio_") :] for k in s if k.startswith("hit_ratio_"))
    percent = {t: [None if v is None else v * 100 for v in s[f"hit_ratio_{t}"]] for t in tiers}
    return [
        _over_time(
            model,
            [Series("requests/s", _pairs(xs, s["requests_per_s"]))],
            "Request rate",
            "requests per second",
        ),
        _over_time(
            model,
            [
                Series("p50", _pairs(xs, s["p50_ms"])),
                Series("p99", _pairs(xs, s["p99_ms"]), dashed=True),
            ],
            "Latency (p50, p99)",
            "milliseconds",
        ),
        _over_time(
            model,
            [Series(t, _pairs(xs, percent[t])) for t in tiers],
            "Hit ratio" + (" per tier" if len(tiers) > 1 else ""),
            "% of cacheable reads",
            empty_note="no cacheable reads yet",
        ),
        _over_time(
            model,
            [
                Series("5xx/s", _pairs(xs, s["errors_per_s"])),
                Series("429/s", _pairs(xs, s["rate_limited_per_s"])),
                Series("shed/s", _pairs(xs, s["shed_per_s"]), dashed=True),
            ],
            "Errors, rate-limited and shed",
            "responses per second",
        ),
    ]


_COLUMNS = (
    "collection", "bound S", "read modes", "writes", "TTL", "checked reads", "violations", "kept"
)  # fmt: skip


def _api_body(model: dict[str, Any]) -> str:
    lm = model["last_minute"] or {}
    totals = model["totals"]
    bounds = [c["max_staleness_s"] for c in model["collections"] if c["max_staleness_s"] > 0]
    tightest = min(bounds, default=None)
    lag = model["tailer_lag_s"]
    violations = sum(c["monitor"]["violations"] for c in model["collections"])
    cards = [
        _card("requests/s (1 min)", _fmt(lm.get("requests_per_s"))),
        _card("p50 latency", _fmt(lm.get("p50_ms"), " ms")),
        _card("p99 latency", _fmt(lm.get("p99_ms"), " ms")),
    ]
    for tier, r in sorted((lm.get("hit_ratio") or {}).items()):
        cards.append(_card(f"{tier} hit ratio (1 min)", _pct(r)))
    lag_state = "" if lag is None or tightest is None else ("bad" if lag > tightest else "ok")
    cards.append(
        _card(
            "tailer lag" + (f" / bound {format_seconds(tightest)}" if tightest else ""),
            NONE if lag is None else format_seconds(lag),
            lag_state,
        )
    )
    if model["monitor_on"]:
        cards.append(
            _card("violations (monitor)", format_number(violations), "bad" if violations else "ok")
        )
    cards.append(
        _card(
            "5xx errors", format_number(totals["errors_5xx"]), "bad" if totals["errors_5xx"] else ""
        )
    )
    if totals["rate_limited_429"]:
        cards.append(_card("429 rate-limited", format_number(totals["rate_limited_429"])))
    if totals["shed_503"]:
        cards.append(_card("503 shed", format_number(totals["shed_503"]), "bad"))
    parts = [f'<section><div class="cards">{"".join(cards)}</div></section>']
    parts.append("<h2>Collections: the contract and what was kept</h2>")
    rows = []
    for c in model["collections"]:
        m = c["monitor"]
        if c["max_staleness_s"] <= 0 and m["within"] is None:
            kept = "every read from the primary (S = 0): nothing cached to check"
        elif m["within"] is None:
            kept = "no checked reads yet" if model["monitor_on"] else "monitor off"
        elif m["at_least"]:
            kept = f"no violation in {format_number(m['checked'])} checked reads: ≥ {m['nines']:g} nines within S (95 %)"
        else:
            kept = f"{m['within'] * 100:.4g} % within S ({m['nines']:g} nines)"
        ttl = NONE if c["ttl_s"] is None else format_seconds(c["ttl_s"])
        cells = (
            (f"<b>{escape(c['name'])}</b>"),
            escape(format_seconds(c["max_staleness_s"])),
            escape(", ".join(c["read_modes"])),
            escape(c["write_policy"]),
            escape(ttl),
            format_number(m["checked"]),
            format_number(m["violations"]),
            escape(kept),
        )
        rows.append(
            "<tr>"
            + "".join(
                f'<td data-label="{h}">{v}</td>' for h, v in zip(_COLUMNS, cells, strict=True)
            )
            + "</tr>"
        )
    parts.append(
        '<div class="tablewrap"><table class="stack"><thead><tr>'
        + "".join(f"<th>{h}</th>" for h in _COLUMNS)
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )
    parts.append(
        '<p class="note">Checked reads: the in-service monitor re-checks one cache hit in N against the '
        "primary's change log; a violation is a hit that served a version older than one committed more "
        "than S before it. Latest = a hit that served the newest version.</p>"
    )
    if model.get("consumers"):
        parts.append("<h2>Change-feed consumers and webhooks</h2>")
        rows = [
            f"<tr><td><b>{escape(c['consumer'])}</b></td><td>{escape(c['collection'])}</td>"
            f"<td>{format_number(c['behind'])}</td><td>{escape(_fmt(c['lag_s'], ' s'))}</td>"
            f"<td>{'<b>over the limit</b>' if c['over_limit'] else 'within the limit'}</td></tr>"
            for c in model["consumers"]
        ]
        parts.append(
            '<div class="tablewrap"><table><thead><tr><th>consumer</th><th>collection</th>'
            "<th>changes behind</th><th>behind the newest commit</th><th>lag limit</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>"
        )
        parts.append(
            '<p class="note">Named consumers (<code>?consumer=NAME</code>) and webhook '
            "subscriptions (<code>_webhook.NAME</code>): changes after the acknowledged "
            "position, and the time from the first unacknowledged commit to the newest. "
            "They never hold writers up.</p>"
        )
    figs = [f"<figure>{svg}</figure>" for svg in _traffic_charts(model)]
    s = model["series"]
    figs.append(
        "<figure>"
        + _over_time(
            model,
            [Series("tailer lag", _pairs(s["tailer_lag_t"], s["tailer_lag_s"]))],
            "Tailer lag against the bound",
            "seconds",
            lines=[Line(tightest, f"tightest bound {format_seconds(tightest)}", "y")]
            if tightest
            else [],
        )
        + "</figure>"
    )
    for c in model["collections"]:
        m = c["monitor"]
        if not m["staleness_counts"]:
            continue
        les = m["staleness_le_s"]
        cats = [
            "latest"
            if le == 0
            else ("> " + format_seconds(les[-2]))
            if le == "+Inf"
            else "≤ " + format_seconds(le)
            for le in les
        ]
        finite = [le for le in les if le != "+Inf"]
        mark = max((i for i, le in enumerate(finite) if le <= c["max_staleness_s"]), default=None)
        figs.append(
            "<figure>"
            + charts.bar_chart(
                cats,
                [("checked reads", m["staleness_counts"])],
                title=f"{c['name']}: staleness of checked reads",
                x_label="staleness (time since a newer version was committed)",
                y_label="checked reads",
                mark_after=mark,
                mark_label=f"S = {format_seconds(c['max_staleness_s'])}",
                empty_note="no checked reads yet",
            )
            + "</figure>"
        )
    parts.append("<h2>Over the last minutes</h2>")
    parts.append(f'<div class="charts">{"".join(figs)}</div>')
    cache = model["cache"]
    parts.append(
        f'<p class="note">In-process cache: {escape(_bytes(cache["bytes"]))} of {escape(_bytes(cache["max_bytes"]))}, '
        f"{format_number(cache['entries'])} entries; evictions "
        + (
            escape(", ".join(f"{k} {format_number(v)}" for k, v in cache["evictions"].items()))
            or "none"
        )
        + ". Totals since start: "
        f'{format_number(totals["requests"])} requests. Machine-readable: <a href="status.json">status.json</a>, '
        '<a href="metrics">metrics</a>.</p>'
    )
    return "".join(parts)


def _cache_body(model: dict[str, Any]) -> str:
    lm = model["last_minute"] or {}
    cache = model["cache"]
    totals = model["totals"]
    used = cache["bytes"] / cache["max_bytes"] if cache["max_bytes"] else math.nan
    cards = [
        _card(
            "memory used",
            f"{_bytes(cache['bytes'])} of {_bytes(cache['max_bytes'])}",
            "bad" if used > 0.95 else "",
        ),
        _card("entries", format_number(cache["entries"])),
        _card("hit ratio (1 min)", _pct(next(iter((lm.get("hit_ratio") or {}).values()), None))),
        _card("hit ratio (since start)", _pct(cache["hit_ratio_since_start"])),
        _card("requests/s (1 min)", _fmt(lm.get("requests_per_s"))),
        _card("p50 latency", _fmt(lm.get("p50_ms"), " ms")),
        _card("p99 latency", _fmt(lm.get("p99_ms"), " ms")),
        _card(
            "5xx errors", format_number(totals["errors_5xx"]), "bad" if totals["errors_5xx"] else ""
        ),
    ]
    parts = [f'<section><div class="cards">{"".join(cards)}</div></section>']
    s = model["series"]
    figs = [
        _over_time(
            model,
            [Series("bytes used", _pairs(s["bytes_t"], [b / (1 << 20) for b in s["bytes"]]))],
            "Memory used against the bound",
            "MiB",
            lines=[
                Line(cache["max_bytes"] / (1 << 20), f"bound {_bytes(cache['max_bytes'])}", "y")
            ],
        )
    ]
    figs += _traffic_charts(model)
    figs.append(
        _over_time(
            model,
            [Series("evictions/s", _pairs(s["t"], s["evictions_per_s"]))],
            "Evictions",
            "evictions per second",
        )
    )
    parts.append("<h2>Over the last minutes</h2>")
    parts.append('<div class="charts">' + "".join(f"<figure>{f}</figure>" for f in figs) + "</div>")
    ev = cache["evictions"]
    parts.append("<h2>Evictions by reason (since start)</h2>")
    parts.append(
        '<div class="tablewrap"><table><thead><tr><th>reason</th><th>entries</th></tr></thead><tbody>'
        + (
            "".join(
                f"<tr><td>{escape(k)}</td><td>{format_number(v)}</td></tr>" for k, v in ev.items()
            )
            or '<tr><td colspan="2">none</td></tr>'
        )
        + "</tbody></table></div>"
    )
    parts.append("<h2>Top tags</h2>")
    tags = cache["top_tags"]
    parts.append(
        '<div class="tablewrap"><table><thead><tr><th>tag</th><th>entries</th></tr></thead><tbody>'
        + (
            "".join(
                f"<tr><td><code>{escape(t['tag'])}</code></td><td>{t['entries']}</td></tr>"
                for t in tags
            )
            or '<tr><td colspan="2">no tagged entries</td></tr>'
        )
        + "</tbody></table></div>"
    )
    parts.append(
        '<p class="note">Machine-readable: <a href="status.json">status.json</a>, <a href="metrics">metrics</a>.</p>'
    )
    return "".join(parts)


def body_html(model: Mapping[str, Any]) -> str:
    """The page's ``<main>`` content (also ``/status.json``'s ``html``)."""
    m = dict(model)
    return _cache_body(m) if m["server"] == "maxage cache-server" else _api_body(m)


def render_page(model: Mapping[str, Any] | None, *, locked: str = "") -> bytes:
    """The whole page. ``model`` None with ``locked``: the page a browser gets without
    the admin key (a form that keeps the key in this tab and fetches ``status.json``)."""
    if model is None:
        title = "maxage status"
        sub = escape(locked)
        main = (
            '<form id="keyform"><label>Admin API key: <input id="key" type="password" '
            'autocomplete="off" required></label> <button>Show</button></form>'
            f'<p class="note">{sub}</p>'
        )
    else:
        title = f"{model['server']} status"
        sub = f"version {escape(model['version'])} · up {escape(format_seconds(model['uptime_s']))}"
        main = body_html(model)
    script = _SCRIPT.replace("INTERVAL_MS", str(int(INTERVAL * 1000)))
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{_CSS}</style></head>'
        f'<body><header><h1>{escape(title)}</h1><p>{sub} · <span id="updated">live: refreshes every '
        f"{INTERVAL:g} s with JavaScript; reload otherwise</span></p></header>"
        f'<main id="main">{main}</main><script>{script}</script></body></html>'
    )
    return page.encode()
