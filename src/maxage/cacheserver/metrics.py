"""The cache server's counters and its ``/metrics`` families.

Nothing here allocates on the hot path beyond a dict increment; the Prometheus text
exposition (:mod:`maxage.core.metrics`, shared with the API and the consistency monitor)
is rendered only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from typing import Final

from maxage import __version__
from maxage.core.metrics import Exposition, Histogram, labels, runtime

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


ROUTES: Final = (
    "get", "put", "delete", "invalidate", "metrics", "health", "openapi", "status", "docs",
    "other",
)  # fmt: skip

# The OpenTelemetry HTTP attributes of each route (``http.request.method``, ``http.route``):
# the method the route serves (HEAD is counted as GET; a 405 is labelled ``_OTHER``) and its
# path template; unmatched paths have no route (an empty label, as OpenTelemetry omits it).
OTEL_ROUTES: Final = {
    "get": ("GET", "/v1/keys/{key}"),
    "put": ("PUT", "/v1/keys/{key}"),
    "delete": ("DELETE", "/v1/keys/{key}"),
    "invalidate": ("POST", "/v1/invalidate"),
    "metrics": ("GET", "/metrics"),
    "health": ("GET", "/livez|/readyz"),
    "openapi": ("GET", "/openapi.json"),
    "status": ("GET", "/status|/status.json"),
    "docs": ("GET", "/docs|/docs/{asset}"),
    "other": ("_OTHER", ""),
}


class Metrics:
    """All server-side counters. Cache-engine numbers are read from the cache at scrape."""

    __slots__ = (
        "connections_open",
        "connections_refused",
        "connections_total",
        "first_bound",
        "latency",
        "parse_errors",
        "stale_served",
        "upstream_errors",
        "upstream_latency",
        "upstream_loads",
    )

    def __init__(self) -> None:
        # Per (route, status): the request count is each histogram's ``count``.
        self.latency: dict[tuple[str, int], Histogram] = {}
        # The upper bound of ``latency``'s first bucket (the transport's inlined observe).
        self.first_bound = LATENCY_BUCKETS[0]
        self.upstream_latency = Histogram(LATENCY_BUCKETS)
        self.upstream_loads = 0
        self.upstream_errors: dict[str, int] = {}
        self.stale_served = 0
        self.connections_open = 0
        self.connections_total = 0
        self.connections_refused = 0
        self.parse_errors = 0

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        k = (route, status)
        h = self.latency.get(k)
        if h is None:
            h = self.latency[k] = Histogram(LATENCY_BUCKETS)
        # Histogram.observe, inlined (hot path)
        h.counts[bisect_left(h.buckets, seconds)] += 1
        h.sum += seconds
        h.count += 1

    def upstream_error(self, kind: str) -> None:
        self.upstream_errors[kind] = self.upstream_errors.get(kind, 0) + 1


def render(metrics: Metrics, cache_numbers: Callable[[], dict[str, object]]) -> bytes:
    """The Prometheus text exposition (version 0.0.4).

    (Long: the cache server's metric families in exposition order, one after another.)
    """
    out = Exposition()
    c = cache_numbers()
    hits = _int(c["hits"])
    misses = _int(c["misses"])
    out.family("maxage_cache_hits_total", "counter", "Cache lookups that found a live entry.")
    out.sample("maxage_cache_hits_total", hits)
    out.family("maxage_cache_misses_total", "counter", "Cache lookups that found nothing.")
    out.sample("maxage_cache_misses_total", misses)
    out.family("maxage_cache_hit_ratio", "gauge", "Hits over lookups since start.")
    out.sample("maxage_cache_hit_ratio", hits / (hits + misses) if hits + misses else 0.0)
    out.family("maxage_cache_stores_total", "counter", "Writes that stored a value.")
    out.sample("maxage_cache_stores_total", _int(c["stores"]))
    out.family("maxage_cache_refusals_total", "counter", "Writes refused, by outcome.")
    refusals = c["refusals"]
    assert isinstance(refusals, dict)
    for outcome, n in sorted(refusals.items()):
        out.sample("maxage_cache_refusals_total", n, labels(outcome=outcome))
    out.family("maxage_cache_evictions_total", "counter", "Entries removed, by reason.")
    evictions = c["evictions"]
    assert isinstance(evictions, dict)
    for reason, n in sorted(evictions.items()):
        out.sample("maxage_cache_evictions_total", n, labels(reason=reason))
    entry_bytes = _int(c["bytes_used"])
    guard_bytes = _int(c["guard_bytes"])
    out.family(
        "maxage_cache_memory_bytes",
        "gauge",
        "Bytes accounted against the byte bound: entries (with their tags) plus guards.",
    )
    out.sample("maxage_cache_memory_bytes", entry_bytes + guard_bytes)
    out.family("maxage_cache_entry_bytes", "gauge", "Bytes accounted to entries and their tags.")
    out.sample("maxage_cache_entry_bytes", entry_bytes)
    out.family(
        "maxage_cache_guard_bytes",
        "gauge",
        "Bytes accounted to tombstones and prefix/tag invalidation guards.",
    )
    out.sample("maxage_cache_guard_bytes", guard_bytes)
    out.family("maxage_cache_guard_max_bytes", "gauge", "The most guards may use.")
    out.sample("maxage_cache_guard_max_bytes", _int(c["guard_max_bytes"]))
    out.family("maxage_cache_max_bytes", "gauge", "Configured byte bound.")
    out.sample("maxage_cache_max_bytes", _int(c["max_bytes"]))
    out.family("maxage_cache_entries", "gauge", "Live entries.")
    out.sample("maxage_cache_entries", _int(c["entries"]))
    out.family("maxage_cache_tags", "gauge", "Distinct tags in the tag index.")
    out.sample("maxage_cache_tags", _int(c["tags"]))
    out.family("maxage_cache_tombstones", "gauge", "Live key tombstones.")
    out.sample("maxage_cache_tombstones", _int(c["tombstones"]))
    out.family("maxage_cache_invalidation_guards", "gauge", "Live prefix and tag guards.")
    out.sample(
        "maxage_cache_invalidation_guards", _int(c["prefix_tombstones"]), labels(kind="prefix")
    )
    out.sample("maxage_cache_invalidation_guards", _int(c["tag_tombstones"]), labels(kind="tag"))
    out.family(
        "maxage_cache_guards_expired_total", "counter", "Guards released at the end of their life."
    )
    out.sample("maxage_cache_guards_expired_total", _int(c["guards_expired"]))
    out.family(
        "maxage_cache_guards_folded_total",
        "counter",
        "Guards pushed out early by the guard bound (fills that started before them are "
        "still refused).",
    )
    out.sample("maxage_cache_guards_folded_total", _int(c["guards_folded"]))
    out.family(
        "http_server_request_duration_seconds",
        "histogram",
        "Time from parsed request to response, by method, route template and status code.",
    )
    out.histogram("http_server_request_duration_seconds", _http_series(metrics))
    out.family("maxage_upstream_loads_total", "counter", "Read-through loads started.")
    out.sample("maxage_upstream_loads_total", metrics.upstream_loads)
    out.family("maxage_upstream_errors_total", "counter", "Failed read-through loads, by kind.")
    for kind, n in sorted(metrics.upstream_errors.items()):
        out.sample("maxage_upstream_errors_total", n, labels(kind=kind))
    out.family("maxage_upstream_duration_seconds", "histogram", "Upstream call latency.")
    out.histogram("maxage_upstream_duration_seconds", [("", metrics.upstream_latency)])
    out.family(
        "maxage_stale_served_total",
        "counter",
        "Stale entries served because the upstream failed.",
    )
    out.sample("maxage_stale_served_total", metrics.stale_served)
    out.family("maxage_connections_open", "gauge", "Open client connections.")
    out.sample("maxage_connections_open", metrics.connections_open)
    out.family("maxage_connections_total", "counter", "Client connections accepted.")
    out.sample("maxage_connections_total", metrics.connections_total)
    out.family(
        "maxage_connections_refused_total",
        "counter",
        "Client connections closed at once because --max-connections were open.",
    )
    out.sample("maxage_connections_refused_total", metrics.connections_refused)
    out.family(
        "maxage_http_parse_errors_total",
        "counter",
        "Connections closed for a malformed request.",
    )
    out.sample("maxage_http_parse_errors_total", metrics.parse_errors)
    runtime(out, __version__)
    return out.render()


def _http_series(metrics: Metrics) -> list[tuple[str, Histogram]]:
    series = []
    for (route, status), h in sorted(metrics.latency.items()):
        method, template = OTEL_ROUTES.get(route, OTEL_ROUTES["other"])
        if status == 405:
            method = "_OTHER"
        text = labels(
            http_request_method=method, http_route=template, http_response_status_code=status
        )
        series.append((text, h))
    return series


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value
