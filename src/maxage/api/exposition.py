"""``/metrics`` of the API: the HTTP families (request durations by route template,
in-flight requests, cancels, deadlines, drain, shedding), then the service's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from maxage import __version__
from maxage.api import workers_metrics
from maxage.core.metrics import Exposition, labels, runtime
from maxage.service import metrics as service_metrics

if TYPE_CHECKING:
    from maxage.api.app import App


def render(app: App) -> bytes:
    """This worker's families, merged with the other workers' when ``--workers`` > 1
    (:mod:`maxage.api.workers_metrics`)."""
    own = render_worker(app)
    shared = workers_metrics.shared_for(app)
    return own if shared is None else shared.gather(own)


def start_sharing(app: App) -> None:
    """Lifespan start-up: publish this worker's metrics for the others' scrapes."""
    workers_metrics.start(app, lambda: render_worker(app))


async def stop_sharing(app: App) -> None:
    await workers_metrics.stop(app)


def render_worker(app: App) -> bytes:
    """The HTTP families (OpenTelemetry HTTP semantic-convention names), the service's
    (``maxage.service.metrics``), then the process and runtime families."""
    out = Exposition()
    out.family(
        "http_server_request_duration_seconds",
        "histogram",
        "Duration of HTTP server requests by method, route template and status code.",
    )
    out.histogram(
        "http_server_request_duration_seconds",
        (
            (labels(http_request_method=m, http_route=r, http_response_status_code=s), h)
            for (m, r, s), h in sorted(app.histograms.items())
        ),
    )
    out.family("http_server_active_requests", "gauge", "Requests in flight.")
    out.sample("http_server_active_requests", app.in_flight)
    service_metrics.collect(app.service, out)
    out.family(
        "maxage_requests_cancelled_total",
        "counter",
        "Requests cancelled by a client disconnect.",
    )
    out.sample("maxage_requests_cancelled_total", app.cancelled_requests)
    out.family(
        "maxage_deadline_exceeded_total", "counter", "Requests that ran past their deadline."
    )
    out.sample("maxage_deadline_exceeded_total", app.deadline_exceeded)
    out.family("maxage_draining", "gauge", "1 while the server drains for shutdown.")
    out.sample("maxage_draining", 1 if app.draining else 0)
    out.family("maxage_shed_total", "counter", "Requests answered 503 overloaded (shed).")
    out.sample("maxage_shed_total", app.shedder.shed)
    out.family("maxage_queued_total", "counter", "Requests that waited for a slot.")
    out.sample("maxage_queued_total", app.shedder.queued)
    out.family("maxage_queue_seconds_total", "counter", "Time requests waited for a slot.")
    out.sample("maxage_queue_seconds_total", round(app.shedder.queue_seconds, 6))
    out.family("maxage_event_loop_lag_seconds", "gauge", "The last event-loop lag sample.")
    out.sample("maxage_event_loop_lag_seconds", round(app.shedder.lag, 6))
    runtime(out, __version__)
    return out.render()
