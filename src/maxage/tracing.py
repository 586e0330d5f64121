"""Tracing with OpenTelemetry, optional: ``pip install 'maxage[otel]'`` and set
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_TRACES_EXPORTER``).

Invariant: without the extra, or without those variables, :data:`TRACER` stays None and
every call site costs one ``is None`` test (the cached-GET hot path has none at all:
with tracing on it takes the general path, which records the server span). With
tracing on, a request's server span continues the incoming ``traceparent``, and the
spans of its primary calls, tier calls, cache fills and invalidation applies are its
children (context variables carry the parent across awaits and into tasks).

Span names and attributes follow the OpenTelemetry semantic conventions: ``GET
/v1/products/{id}`` (``http.request.method``, ``http.route``,
``http.response.status_code``), ``sqlite get`` / ``postgresql write``
(``db.system.name``, ``db.operation.name``), ``redis <op>``, ``maxage fill``,
``maxage invalidate``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("maxage.tracing")

#: The tracer when tracing is on, else None (checked at every call site).
TRACER: Any = None
_EXTRACT: Any = None


def configure(exporter: Any = None, *, service_name: str = "maxage") -> bool:
    """Turn tracing on when the extra is installed and asked for (or ``exporter`` is
    given: tests pass the SDK's in-memory exporter). True if it is on."""
    global TRACER, _EXTRACT
    wanted = (
        exporter is not None
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_TRACES_EXPORTER", "none") not in ("", "none")
    )
    if not wanted:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import (
            TraceContextTextMapPropagator,
        )
    except ImportError:
        log.warning("OTEL_* is set but the otel extra is not installed: pip install 'maxage[otel]'")
        return False
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_exporter_from_env()))
    TRACER = provider.get_tracer("maxage")
    _EXTRACT = TraceContextTextMapPropagator().extract
    return True


def _exporter_from_env() -> Any:
    if os.environ.get("OTEL_TRACES_EXPORTER") == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def reset() -> None:
    """Turn tracing off (tests)."""
    global TRACER, _EXTRACT
    TRACER = None
    _EXTRACT = None


@contextlib.contextmanager
def server_span(
    name: str, traceparent: bytes | None, attributes: Mapping[str, Any]
) -> Iterator[Any]:
    """The span of one request, a child of the caller's ``traceparent`` when valid."""
    assert TRACER is not None
    from opentelemetry.trace import SpanKind

    carrier = {"traceparent": traceparent.decode("latin-1")} if traceparent else {}
    with TRACER.start_as_current_span(
        name, context=_EXTRACT(carrier), kind=SpanKind.SERVER, attributes=dict(attributes)
    ) as span:
        yield span


@contextlib.contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A child span of whatever is current; nothing at all when tracing is off."""
    if TRACER is None:
        yield None
        return
    with TRACER.start_as_current_span(name, attributes=attributes) as s:
        yield s


def traceparent_of(current: Any) -> bytes | None:
    """The ``traceparent`` naming ``current`` (a span), to send back or onward."""
    ctx = current.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()
