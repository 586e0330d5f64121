"""Cheap metrics: plain integer counters and fixed-bucket histograms.

Nothing here allocates on the hot path beyond a dict increment; the Prometheus
text exposition is rendered only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Final

# Seconds. Chosen for a cache: most hits are far below a millisecond.
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0001,
    0.00025,
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
    """A cumulative-at-render histogram: per-bucket counts, a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str, out: list[str]) -> None:
        sep = "," if labels else ""
        acc = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            acc += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {acc}')
        acc += self.counts[-1]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {acc}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.sum}")
        out.append(f"{name}_count{lab} {self.count}")


ROUTES: Final = ("get", "put", "delete", "invalidate", "metrics", "health", "openapi", "other")


class Metrics:
    """All server-side counters. Cache-engine numbers are read from the cache at scrape."""

    __slots__ = (
        "connections_open",
        "connections_total",
        "latency",
        "parse_errors",
        "requests",
        "stale_served",
        "upstream_errors",
        "upstream_latency",
        "upstream_loads",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.latency: dict[str, Histogram] = {r: Histogram() for r in ROUTES}
        self.upstream_latency = Histogram()
        self.upstream_loads = 0
        self.upstream_errors: dict[str, int] = {}
        self.stale_served = 0
        self.connections_open = 0
        self.connections_total = 0
        self.parse_errors = 0

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        k = (route, status)
        requests = self.requests
        requests[k] = requests.get(k, 0) + 1
        h = self.latency[route]  # Histogram.observe, inlined (hot path)
        h.counts[bisect_left(h.bounds, seconds)] += 1
        h.sum += seconds
        h.count += 1

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1


def _fmt_kv(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{k}="{v}"' for k, v in pairs)


def render(metrics: Metrics, cache_numbers: Callable[[], dict[str, object]]) -> bytes:
    """The Prometheus text exposition (version 0.0.4)."""
    out: list[str] = []
    c = cache_numbers()
    hits = int(c["hits"])  # type: ignore[call-overload]
    misses = int(c["misses"])  # type: ignore[call-overload]
    out += [
        "# HELP maxage_cache_hits_total Cache lookups that found a live entry.",
        "# TYPE maxage_cache_hits_total counter",
        f"maxage_cache_hits_total {hits}",
        "# HELP maxage_cache_misses_total Cache lookups that found nothing.",
        "# TYPE maxage_cache_misses_total counter",
        f"maxage_cache_misses_total {misses}",
        "# HELP maxage_cache_hit_ratio Hits over lookups since start.",
        "# TYPE maxage_cache_hit_ratio gauge",
        f"maxage_cache_hit_ratio {hits / (hits + misses) if hits + misses else 0.0}",
        "# HELP maxage_cache_stores_total Writes that stored a value.",
        "# TYPE maxage_cache_stores_total counter",
        f"maxage_cache_stores_total {c['stores']}",
        "# HELP maxage_cache_refusals_total Writes refused, by outcome.",
        "# TYPE maxage_cache_refusals_total counter",
    ]
    refusals = c["refusals"]
    assert isinstance(refusals, dict)
    for outcome, n in sorted(refusals.items()):
        out.append(f'maxage_cache_refusals_total{{outcome="{outcome}"}} {n}')
    out += [
        "# HELP maxage_cache_evictions_total Entries removed, by reason.",
        "# TYPE maxage_cache_evictions_total counter",
    ]
    evictions = c["evictions"]
    assert isinstance(evictions, dict)
    for reason, n in sorted(evictions.items()):
        out.append(f'maxage_cache_evictions_total{{reason="{reason}"}} {n}')
    out += [
        "# HELP maxage_cache_memory_bytes Bytes accounted to live entries.",
        "# TYPE maxage_cache_memory_bytes gauge",
        f"maxage_cache_memory_bytes {c['bytes_used']}",
        "# HELP maxage_cache_max_bytes Configured byte bound.",
        "# TYPE maxage_cache_max_bytes gauge",
        f"maxage_cache_max_bytes {c['max_bytes']}",
        "# HELP maxage_cache_entries Live entries.",
        "# TYPE maxage_cache_entries gauge",
        f"maxage_cache_entries {c['entries']}",
        "# HELP maxage_http_requests_total Requests answered, by route and status.",
        "# TYPE maxage_http_requests_total counter",
    ]
    for (route, status), n in sorted(metrics.requests.items()):
        out.append(f'maxage_http_requests_total{{route="{route}",status="{status}"}} {n}')
    out += [
        "# HELP maxage_http_request_duration_seconds Time from parsed request to response.",
        "# TYPE maxage_http_request_duration_seconds histogram",
    ]
    for route, h in metrics.latency.items():
        if h.count:
            h.render("maxage_http_request_duration_seconds", _fmt_kv([("route", route)]), out)
    out += [
        "# HELP maxage_upstream_loads_total Read-through loads started.",
        "# TYPE maxage_upstream_loads_total counter",
        f"maxage_upstream_loads_total {metrics.upstream_loads}",
        "# HELP maxage_upstream_errors_total Failed read-through loads, by kind.",
        "# TYPE maxage_upstream_errors_total counter",
    ]
    for kind, n in sorted(metrics.upstream_errors.items()):
        out.append(f'maxage_upstream_errors_total{{kind="{kind}"}} {n}')
    out += [
        "# HELP maxage_upstream_duration_seconds Upstream call latency.",
        "# TYPE maxage_upstream_duration_seconds histogram",
    ]
    metrics.upstream_latency.render("maxage_upstream_duration_seconds", "", out)
    out += [
        "# HELP maxage_stale_served_total Stale entries served because the upstream failed.",
        "# TYPE maxage_stale_served_total counter",
        f"maxage_stale_served_total {metrics.stale_served}",
        "# HELP maxage_connections_open Open client connections.",
        "# TYPE maxage_connections_open gauge",
        f"maxage_connections_open {metrics.connections_open}",
        "# HELP maxage_connections_total Client connections accepted.",
        "# TYPE maxage_connections_total counter",
        f"maxage_connections_total {metrics.connections_total}",
        "# HELP maxage_http_parse_errors_total Connections closed for a malformed request.",
        "# TYPE maxage_http_parse_errors_total counter",
        f"maxage_http_parse_errors_total {metrics.parse_errors}",
    ]
    out.append("")
    return "\n".join(out).encode()
