"""The API's vocabulary: ASGI callables, the per-request view, settings, the errors
handlers raise, and the protocol the fault-control endpoint is reached through."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from maxage.contracts import DEFAULT_BATCH_OPERATIONS
from maxage.service import ANYONE, Principal

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

ACCESS_LOG_MODES = ("all", "sampled", "errors-and-slow", "off")


@dataclass(frozen=True)
class Settings:
    """HTTP-level settings (the contract's own live in the config and the service)."""

    body_limit: int = 1024 * 1024
    deadline: float = 10.0
    default_page_size: int = 20
    max_page_size: int = 100
    max_batch_operations: int = DEFAULT_BATCH_OPERATIONS
    idempotency_keep: float = 24 * 3600.0
    access_log: str = "errors-and-slow"
    access_log_sample: float = 0.01
    slow_request: float = 1.0
    drain_grace: float = 10.0
    # Load shedding: requests in progress per process beyond which new ones wait in a
    # queue for at most queue_deadline seconds, then get a fast 503 (docs/operations.md).
    max_concurrency: int = 256
    queue_deadline: float = 0.002
    # ... or while the event loop runs this late (0 = off): requests queue before the app.
    max_loop_lag: float = 0.05
    body_timeout: float = 30.0  # longest pause between two pieces of a request body


class Request:
    """What the handlers need of one request; built by one scan of the headers."""

    __slots__ = (
        "accept",
        "authorization",
        "cache_control",
        "client",
        "content_length",
        "content_type",
        "cors_method",
        "deadline",
        "extra_headers",
        "idempotency_key",
        "if_match",
        "if_none_match",
        "l1_missed",
        "last_event_id",
        "method",
        "origin",
        "path",
        "principal",
        "query",
        "request_id",
        "route",
        "source",
        "started",
        "trace_out",
        "traceparent",
    )

    def __init__(self, method: str, path: str, query: bytes, request_id: str, started: float):
        self.method = method
        self.path = path
        self.query = query
        self.request_id = request_id
        self.started = started
        self.route = "unmatched"
        self.source = "-"
        self.cache_control: bytes | None = None
        self.accept: bytes | None = None
        self.last_event_id: bytes | None = None
        self.l1_missed = False
        self.content_type: bytes | None = None
        self.content_length: int | None = None
        self.if_match: bytes | None = None
        self.if_none_match: bytes | None = None
        self.idempotency_key: str | None = None
        self.traceparent: bytes | None = None
        self.trace_out: bytes | None = None  # with tracing on: our server span, sent back
        self.deadline = 0.0
        self.client: tuple[str, int] | None = None  # (host, port) from the ASGI scope
        self.authorization: bytes | None = None
        self.origin: bytes | None = None
        self.cors_method: bytes | None = None  # Access-Control-Request-Method (preflight)
        self.principal: Principal = ANYONE
        # Headers every response to this request carries (rate-limit state, CORS).
        self.extra_headers: Headers = []


class ClientDisconnected(Exception):
    """The client went away while its request waited on the primary; its work was cancelled."""


class HTTPProblem(Exception):
    """An HTTP-level refusal (the contract's own are ``maxage.service.errors``)."""

    def __init__(
        self, code: str, detail: str, headers: Headers | None = None, **extra: Any
    ) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.headers = headers or []
        self.extra = extra


class FaultControl(Protocol):
    """The test-only fault-injection state behind ``/_maxage/faults`` (``maxage.faults``)."""

    def describe(self) -> dict[str, Any]: ...

    def replace(self, state: object) -> None:
        """Validate ``state`` completely, then apply it; ValueError leaves everything as it was."""
        ...

    def heal(self) -> None: ...
