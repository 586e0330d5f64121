"""The one retry, deadline and propagation machinery of both clients (the JSON API's and
the cache server's): :class:`RetryPolicy`, :func:`request_context` and :class:`Caller`.

Invariants:

* a call has one deadline (its ``timeout``, shortened by an enclosing
  :func:`request_context`); every attempt tells the server what is left of it in
  ``X-Request-Timeout``, and no attempt or back-off sleep is started past it;
* an attempt is retried only when the caller's ``retryable`` says so (a transport failure,
  or a response the server documents as worth retrying); the request is sent again
  byte for byte (same body, same ``Idempotency-Key``), never rebuilt;
* a back-off is full jitter over an exponentially growing cap, and never shorter than
  the server's ``Retry-After``; a wait that would pass the deadline is not started (the
  last answer is returned, or the transport error raised).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

TRACEPARENT: Final = re.compile(rb"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

# How much longer than the deadline it told the server the client waits for the answer:
# the server's own verdict (504 deadline_exceeded, with its request id) is worth more than
# a client-side timeout, and it needs a moment to arrive.
ANSWER_GRACE: Final = 0.5


def child_traceparent(parent: bytes | str | None) -> str:
    """A ``traceparent`` for a call made on behalf of ``parent``: the same trace id and
    flags with a new span id; a new trace when ``parent`` is missing or malformed."""
    span = os.urandom(8).hex()
    if parent is not None:
        raw = parent.encode("latin-1") if isinstance(parent, str) else parent
        m = TRACEPARENT.match(raw.strip().lower())
        if m is not None and m.group(1) != b"0" * 32 and m.group(2) != b"0" * 16:
            return f"00-{m.group(1).decode()}-{span}-{m.group(3).decode()}"
    return f"00-{os.urandom(16).hex()}-{span}-01"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before sending a request again.

    ``attempts`` counts every try (1 = never retry). Before retry ``n`` (1, 2, ...) the
    client sleeps a uniformly random time in ``[0, min(max_backoff, backoff * 2**(n-1))]``
    (full jitter, so clients that failed together do not retry together), or the
    server's ``Retry-After`` when that is longer."""

    attempts: int = 4
    backoff: float = 0.1
    max_backoff: float = 5.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ValueError("backoff and max_backoff must be >= 0")

    def delay(self, retry: int, retry_after: float | None) -> float:
        cap = min(self.max_backoff, self.backoff * 2 ** (retry - 1))
        jittered = self.rng.uniform(0, cap)
        return max(jittered, retry_after) if retry_after is not None else jittered


NO_RETRY: Final = RetryPolicy(attempts=1)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), ``None`` when absent or bad."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# -- propagation ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CallContext:
    request_id: str | None
    traceparent: str | None
    deadline: float | None  # time.monotonic()


_CONTEXT: ContextVar[_CallContext | None] = ContextVar("maxage_client_call", default=None)


@contextmanager
def request_context(
    *,
    request_id: str | None = None,
    traceparent: str | None = None,
    timeout: float | None = None,
) -> Iterator[None]:
    """Calls made inside carry the work's context to the server: ``X-Request-ID:
    request_id``, a child ``traceparent`` (the same trace, a new span id) and a deadline
    ``timeout`` seconds from entering (retries included; sent as ``X-Request-Timeout``, and
    never later than the call's own timeout). Works for threads and asyncio tasks alike::

        with request_context(request_id=rid, traceparent=tp, timeout=remaining):
            post = posts.get(post_id)
    """
    deadline = time.monotonic() + timeout if timeout is not None else None
    token = _CONTEXT.set(_CallContext(request_id, traceparent, deadline))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


class DeadlinePassed(Exception):
    """No time is left for (another) attempt; carries the last transport error, if any."""

    def __init__(self, cause: httpx.HTTPError | None) -> None:
        super().__init__("the call's deadline passed")
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Prepared:
    """One request as it is sent on every attempt."""

    method: str
    url: str
    params: httpx.QueryParams | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None
    replayable: bool = True
    """Whether sending it twice is harmless (a read, or a write with an ``Idempotency-Key``).
    A request that is not is retried only when it surely had no effect: an answer the
    server gives before doing anything (429, 503) or a connection that was never made."""


# Failures that happen before a request is sent: retrying them cannot apply it twice.
NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

Retryable = Callable[[httpx.Response], bool]
OnRetry = Callable[[int, float, str], None]
"""Called before each retry's sleep with (retry number, delay in seconds, reason)."""


class _Attempts:
    """The attempt loop's bookkeeping, shared by the sync and the async executor."""

    def __init__(self, caller: Caller, prepared: Prepared, timeout: float | None) -> None:
        ctx = _CONTEXT.get()
        now = time.monotonic()
        deadline = now + (caller.timeout if timeout is None else timeout)
        if ctx is not None and ctx.deadline is not None:
            deadline = min(deadline, ctx.deadline)
        self.deadline = deadline
        self.policy = caller.retry
        self.retry = 0
        headers = dict(prepared.headers)
        if ctx is not None and ctx.request_id and "x-request-id" not in headers:
            headers["x-request-id"] = ctx.request_id
        if ctx is not None and ctx.traceparent and "traceparent" not in headers:
            headers["traceparent"] = child_traceparent(ctx.traceparent)
        self.headers = headers
        self.on_retry = caller.on_retry

    def next_send(self, last_error: httpx.HTTPError | None) -> tuple[dict[str, str], float]:
        """The headers and transport timeout of the next attempt."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0.001:
            raise DeadlinePassed(last_error)
        headers = dict(self.headers)
        headers["x-request-timeout"] = f"{remaining:.3f}"
        return headers, remaining + ANSWER_GRACE

    def wait_before_retry(self, reason: str, after: float | None) -> float | None:
        """The sleep before the next attempt, or ``None`` when there is none to make."""
        if self.retry + 1 >= self.policy.attempts:
            return None
        delay = self.policy.delay(self.retry + 1, after)
        if time.monotonic() + delay >= self.deadline:
            return None
        self.retry += 1
        if self.on_retry is not None:
            self.on_retry(self.retry, delay, reason)
        return delay


def _reason(response: httpx.Response) -> str:
    return f"HTTP {response.status_code}"


@dataclass(slots=True)
class Caller:
    """Sends :class:`Prepared` requests under a :class:`RetryPolicy` and a deadline
    (``timeout`` seconds per call unless the call gives its own)."""

    timeout: float
    retry: RetryPolicy
    retryable: Retryable
    on_retry: OnRetry | None = None

    def send(
        self, http: httpx.Client, prepared: Prepared, timeout: float | None = None
    ) -> httpx.Response:
        """The final response (retryable or not); raises :class:`DeadlinePassed`, or the
        last ``httpx.TransportError`` once no retry is left."""
        attempts = _Attempts(self, prepared, timeout)
        error: httpx.HTTPError | None = None
        while True:
            headers, wait = attempts.next_send(error)
            try:
                response = http.request(
                    prepared.method, prepared.url, params=prepared.params, headers=headers,
                    content=prepared.content, timeout=wait,
                )  # fmt: skip
            except httpx.TransportError as exc:
                error = exc
                if not prepared.replayable and not isinstance(exc, NOT_SENT):
                    raise
                delay = attempts.wait_before_retry(type(exc).__name__, None)
                if delay is None:
                    raise
                time.sleep(delay)
                continue
            if not self.retryable(response):
                return response
            delay = attempts.wait_before_retry(_reason(response), retry_after(response))
            if delay is None:
                return response
            response.close()
            time.sleep(delay)

    async def asend(
        self, http: httpx.AsyncClient, prepared: Prepared, timeout: float | None = None
    ) -> httpx.Response:
        """:meth:`send` for ``httpx.AsyncClient`` (the same loop, awaiting)."""
        attempts = _Attempts(self, prepared, timeout)
        error: httpx.HTTPError | None = None
        while True:
            headers, wait = attempts.next_send(error)
            try:
                response = await http.request(
                    prepared.method, prepared.url, params=prepared.params, headers=headers,
                    content=prepared.content, timeout=wait,
                )  # fmt: skip
            except httpx.TransportError as exc:
                error = exc
                if not prepared.replayable and not isinstance(exc, NOT_SENT):
                    raise
                delay = attempts.wait_before_retry(type(exc).__name__, None)
                if delay is None:
                    raise
                await asyncio.sleep(delay)
                continue
            if not self.retryable(response):
                return response
            delay = attempts.wait_before_retry(_reason(response), retry_after(response))
            if delay is None:
                return response
            await response.aclose()
            await asyncio.sleep(delay)


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header for an API key or token (none without one)."""
    return {"authorization": f"Bearer {token}"} if token else {}
