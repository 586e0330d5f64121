"""maxage.status: the reduction of an exposition, quantiles, nines, the page."""

from __future__ import annotations

import math

from maxage import status
from maxage.core.metrics import Exposition, Histogram, labels


def exposition(requests: int, errors: int, hits: int, misses: int, slow: float) -> bytes:
    out = Exposition()
    ok, bad = Histogram(), Histogram()
    for _ in range(requests):
        ok.observe(0.002)
    for _ in range(errors):
        bad.observe(slow)
    out.family(status.HTTP, "histogram", "x")
    out.histogram(
        status.HTTP,
        [
            (
                labels(
                    http_request_method="GET",
                    http_route="/v1/p/{id}",
                    http_response_status_code=200,
                ),
                ok,
            ),
            (
                labels(
                    http_request_method="GET",
                    http_route="/v1/p/{id}",
                    http_response_status_code=503,
                ),
                bad,
            ),
        ],
    )
    out.family("maxage_cache_hits_total", "counter", "x")
    out.sample("maxage_cache_hits_total", hits, labels(tier="l1"))
    out.sample("maxage_cache_hits_total", 0, labels(tier="l2"))
    out.family("maxage_cache_misses_total", "counter", "x")
    out.sample("maxage_cache_misses_total", misses)
    out.family("maxage_tailer_lag_seconds", "gauge", "x")
    out.sample("maxage_tailer_lag_seconds", 0.25, labels(worker="1"))
    out.sample("maxage_tailer_lag_seconds", 0.75, labels(worker="2"))
    return out.render()


def test_reduce_and_windows() -> None:
    a = status.reduce(status.parse(exposition(100, 0, 50, 50, 1.0)), 1000.0)
    b = status.reduce(status.parse(exposition(300, 10, 230, 70, 1.0)), 1010.0)
    assert b.requests == 310 and b.errors == 10
    assert b.hits == {"l1": 230}  # no shared tier configured: no l2 series on the page
    assert b.tailer_lag == 0.75  # the worst worker
    w = status._window(a, b)
    assert w.requests_per_s == 21.0 and w.errors_per_s == 1.0
    assert w.hit_ratio["l1"] == 180 / 200
    assert 1.0 <= w.p50_ms <= 2.5  # 200 fast requests in the (1 ms, 2.5 ms] bucket
    assert w.p99_ms >= 500  # the 10 slow ones are the top 5 %


def test_quantile_matches_histogram_quantile() -> None:
    assert status.quantile((1.0, 2.0), (0.0, 10.0, 10.0), 0.5) == 1.5
    assert math.isnan(status.quantile((1.0,), (0.0, 0.0), 0.5))
    assert status.quantile((1.0, 2.0), (0.0, 0.0, 4.0), 0.99) == 2.0  # in +Inf: the top bound


def test_nines() -> None:
    assert status.nines(0, 0)["within"] is None
    assert status.nines(30_000, 0) == {"within": 1.0, "nines": 4.0, "at_least": True}
    three = status.nines(10_000, 10)
    assert three["nines"] == 3.0 and not three["at_least"]


def test_recorder_keeps_the_window_and_pages_render() -> None:
    now = [1000.0]
    text = [exposition(0, 0, 0, 0, 1.0)]
    rec = status.Recorder(lambda: text[0], interval=2.0, window=10.0, clock=lambda: now[0])
    for i in range(20):
        now[0] += 2.0
        text[0] = exposition(10 * i, 0, 5 * i, 5 * i, 1.0)
        rec.tick()
    assert len(rec.points) == 6 and rec.points[0].t == now[0] - 10.0
    contracts = [
        status.CollectionContract("p<x>", 0.5, ("bounded", "strong"), "write-through", None)
    ]
    model = status.api_model(rec.current(), contracts, version="1", started=1000.0)
    page = status.render_page(model).decode()
    assert "p&lt;x&gt;" in page and "<svg" in page and "status.json" in page
    assert model["last_minute"]["requests_per_s"] == 5.0
