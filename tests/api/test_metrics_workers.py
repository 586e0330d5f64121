"""``/metrics`` shows the whole server whatever ``--workers`` (docs/adr/0006): black box,
every scrape parsed with ``prometheus_client``'s parser. Also the process and runtime
families, for one worker and for the cache server, and the merge rules themselves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from maxage.core.metrics import merge
from tests.support.launcher import launch

HTTP = "http_server_request_duration_seconds"
RUNTIME = (
    "process_cpu_seconds",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
    "python_gc_collections",
    "python_gc_objects_collected",
    "python_info",
    "maxage_build_info",
)

Series = tuple[str, tuple[tuple[str, str], ...]]


def parse(text: str) -> dict[str, tuple[str, dict[Series, float]]]:
    """family name → (type, {(sample name, sorted labels): value}); raises on bad text."""
    out: dict[str, tuple[str, dict[Series, float]]] = {}
    for fam in text_string_to_metric_families(text):
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in fam.samples}
        assert fam.name not in out, f"family {fam.name} twice"
        out[fam.name] = (fam.type, samples)
    return out


def monotonic(families: dict[str, tuple[str, dict[Series, float]]]) -> dict[Series, float]:
    """Every counter and histogram series (these must never go backwards)."""
    return {
        k: v
        for kind, samples in families.values()
        if kind in ("counter", "histogram")
        for k, v in samples.items()
    }


def requests_by_route(families: dict[str, tuple[str, dict[Series, float]]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for (name, lbls), v in families[HTTP][1].items():
        if name == HTTP + "_count":
            route = dict(lbls)["http_route"]
            totals[route] = totals.get(route, 0) + v
    return totals


def poll(check: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_two_workers_one_scrape_shows_the_whole_server(tmp_path: Path) -> None:
    server = launch(
        "serve", "--port", "0", "--workers", "2", "--db", f"sqlite:///{tmp_path}/db.sqlite",
        workdir=tmp_path,
    )  # fmt: skip
    fresh = httpx.Limits(max_keepalive_connections=0)  # a new connection: workers take turns
    threads, per_thread = 4, 60
    sent = threads * per_thread
    errors: list[BaseException] = []

    def load(t: int) -> None:
        try:
            with server.client(limits=fresh) as c:
                for i in range(per_thread):
                    path = "/livez" if i % 2 else f"/v1/products/none-{t}-{i}"
                    assert c.get(path).status_code in (200, 404)
        except BaseException as exc:  # reported below
            errors.append(exc)

    scrapes = 0
    workers_seen: set[str] = set()
    previous: dict[Series, float] = {}
    with server.client(limits=fresh) as scraper:

        def scrape() -> dict[str, tuple[str, dict[Series, float]]]:
            nonlocal scrapes, previous
            r = scraper.get("/metrics")
            scrapes += 1
            assert r.status_code == 200
            families = parse(r.text)
            now = monotonic(families)
            for series, value in previous.items():
                assert series in now, f"{series} vanished"
                assert now[series] >= value, f"{series} went backwards: {value} -> {now[series]}"
            previous = now
            for _, lbls in families["process_start_time_seconds"][1]:
                workers_seen.update(v for k, v in lbls if k == "worker")
            return families

        pool = [threading.Thread(target=load, args=(t,)) for t in range(threads)]
        for th in pool:
            th.start()
        for _ in range(50):
            scrape()
        for th in pool:
            th.join(30)
        assert not errors, errors

        def settled() -> bool:
            before = scrapes  # the scrapes answered before this one
            by_route = requests_by_route(scrape())
            served = sum(v for route, v in by_route.items() if route != "/metrics")
            assert served <= sent
            assert by_route.get("/metrics", 0) <= before
            return served == sent and by_route.get("/metrics", 0) == before

        # Slower than the workers' flush (250 ms), so every earlier scrape is published.
        poll(settled, 15, "the sums to equal the requests sent", every=0.4)
    assert len(workers_seen) == 2, workers_seen
    server.stop()


def test_one_worker_output_parses_with_runtime_families(tmp_path: Path) -> None:
    server = launch(
        "serve", "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite", workdir=tmp_path
    )
    with server.client() as c:
        c.get("/v1/products/nothing")
        families = parse(c.get("/metrics").text)
    server.stop()
    for name in RUNTIME:
        assert name in families, name
    (_, lbls), = (k for k in families["maxage_build_info"][1])  # fmt: skip
    assert "version" in dict(lbls)
    assert all("worker" not in dict(lbls) for _, lbls in families["process_open_fds"][1])
    kinds = {dict(lbls)["http_route"]: dict(lbls) for _, lbls in families[HTTP][1]}
    assert kinds["/v1/products/{id}"]["http_response_status_code"] == "404"
    assert kinds["/v1/products/{id}"]["http_request_method"] == "GET"


def test_cache_server_output_parses_with_otel_names(tmp_path: Path) -> None:
    server = launch("cache-server", "--port", "0", workdir=tmp_path)
    with server.client() as c:
        put = c.put("/v1/keys/k", content=b"v").status_code
        c.get("/v1/keys/k")
        c.get("/v1/keys/missing")
        families = parse(c.get("/metrics").text)
    server.stop()
    for name in RUNTIME:
        assert name in families, name
    counts = {
        (d["http_request_method"], d["http_route"], d["http_response_status_code"]): v
        for (name, lbls), v in families[HTTP][1].items()
        if name == HTTP + "_count"
        for d in [dict(lbls)]
    }
    assert counts[("GET", "/v1/keys/{key}", "200")] == 1
    assert counts[("GET", "/v1/keys/{key}", "404")] == 1
    assert counts[("PUT", "/v1/keys/{key}", str(put))] == 1


def test_merge_sums_counters_and_histograms_labels_gauges() -> None:
    a = (
        b'# HELP c_total C.\n# TYPE c_total counter\nc_total{x="1"} 3\n'
        b"# HELP g G.\n# TYPE g gauge\ng 5\n"
        b"# HELP h H.\n# TYPE h histogram\n"
        b'h_bucket{le="1.0"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1.5\nh_count 2\n'
    )
    b = (
        b'# HELP c_total C.\n# TYPE c_total counter\nc_total{x="1"} 4\nc_total{x="2"} 1\n'
        b'# HELP g G.\n# TYPE g gauge\ng{k="v"} 7\n'
        b"# HELP h H.\n# TYPE h histogram\n"
        b'h_bucket{le="1.0"} 0\nh_bucket{le="+Inf"} 1\nh_sum 2.25\nh_count 1\n'
    )
    merged = parse(merge([("10", a, True), ("11", b, True)]).decode())
    assert merged["c"][1] == {("c_total", (("x", "1"),)): 7, ("c_total", (("x", "2"),)): 1}
    assert merged["g"][1] == {
        ("g", (("worker", "10"),)): 5,
        ("g", (("k", "v"), ("worker", "11"))): 7,
    }
    h = merged["h"][1]
    assert h[("h_count", ())] == 3 and h[("h_sum", ())] == 3.75
    assert h[("h_bucket", (("le", "+Inf"),))] == 3
    gone = parse(merge([("10", a, True), ("11", b, False)]).decode())
    assert gone["c"][1][("c_total", (("x", "1"),))] == 7  # an exited worker's counters stay
    assert list(gone["g"][1]) == [("g", (("worker", "10"),))]  # its gauges do not
