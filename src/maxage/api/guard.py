"""What stands between a matched route and its handler: authentication and scopes
(decided by ``maxage.service.access``), rate limits (``maxage.service.limits``), and
CORS. HTTP in and out only: the header syntax, the status codes, the header fields."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from maxage.api.types import Headers, HTTPProblem, Request
from maxage.contracts import Cors
from maxage.service import read_scope, write_scope
from maxage.service.limits import RateDecision

if TYPE_CHECKING:
    from maxage.api.routes import Match
    from maxage.service import Service

READS = frozenset({"GET", "HEAD"})
ALLOWED_HEADERS = (
    b"authorization, content-type, if-match, if-none-match, idempotency-key, x-request-id, "
    b"x-request-timeout, cache-control, traceparent, last-event-id"
)
EXPOSED_HEADERS = (
    b"etag, location, cache-status, age, ratelimit, ratelimit-policy, retry-after, "
    b"x-request-id, idempotent-replayed"
)


def bearer(header: bytes | None) -> str | None:
    """The secret of ``Authorization: Bearer <secret>`` (scheme case-insensitive)."""
    if header is None:
        return None
    scheme, _, value = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not value.strip():
        return None
    try:
        return value.strip().decode("ascii")
    except UnicodeDecodeError:
        return None


def needed_scope(match: Match, method: str) -> str:
    if match.route.access == "admin":
        return "admin"
    assert match.spec is not None
    name = match.spec.name
    if match.route.access == "read":  # e.g. a consumer's ack: part of reading the feed
        return read_scope(name)
    return read_scope(name) if method in READS else write_scope(name)


def partition(req: Request) -> str:
    """Whose budget a request spends: its key, else its client address."""
    key = req.principal.key_id
    if key is not None:
        return "key:" + key
    return "addr:" + (str(req.client[0]) if req.client else "-")


def rate_headers(d: RateDecision) -> Headers:
    name = d.limit.name.encode()
    return [
        (b"ratelimit-policy", b'"%s";q=%d;w=%d' % (name, d.limit.burst, math.ceil(d.limit.window))),
        (b"ratelimit", b'"%s";r=%d;t=%d' % (name, d.remaining, math.ceil(d.reset))),
    ]


async def authenticate(service: Service, req: Request, match: Match) -> None:
    """Who ``req`` is, and whether that key may use ``match``; raises the refusal. (Also
    what a long change-feed stream repeats every ``A``.)"""
    access = service.access
    if access.enabled:
        req.principal = await access.authenticate(bearer(req.authorization))
        access.authorize(req.principal, needed_scope(match, req.method))


async def admit(service: Service, req: Request, match: Match) -> None:
    """Authenticate, authorize and rate-limit ``req`` for ``match``; raises the refusal."""
    if match.route.access == "public":
        return
    if service.access.enabled:  # (authenticate's own test: no coroutine when off)
        await authenticate(service, req, match)
    limits = service.limits
    if limits.enabled:
        name = match.spec.name if match.spec is not None else None
        policy = limits.policy(name, req.method)
        if policy is not None:
            decision = await limits.take(policy, partition(req))
            req.extra_headers.extend(rate_headers(decision))
            if not decision.allowed:
                retry = str(max(1, math.ceil(decision.retry_after))).encode()
                raise HTTPProblem(
                    "rate_limited",
                    f"rate limit {policy.name!r} exceeded; retry in {retry.decode()} s",
                    [(b"retry-after", retry)],
                )


class CorsPolicy:
    def __init__(self, cors: Cors) -> None:
        self.cors = cors
        self.any = "*" in cors.allow_origins

    def allowed(self, origin: bytes) -> bool:
        return self.any or origin.decode("latin-1") in self.cors.allow_origins

    def response_headers(self, origin: bytes) -> Headers:
        """For an actual (non-preflight) request from ``origin``."""
        headers: Headers = [(b"vary", b"Origin")]
        if not self.allowed(origin):
            return headers
        headers.append((b"access-control-allow-origin", b"*" if self.any else origin))
        headers.append((b"access-control-expose-headers", EXPOSED_HEADERS))
        if self.cors.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    def preflight_headers(self, origin: bytes, allow: bytes) -> Headers:
        headers: Headers = [(b"vary", b"Origin")]
        if not self.allowed(origin):
            return headers
        headers += [
            (b"access-control-allow-origin", b"*" if self.any else origin),
            (b"access-control-allow-methods", allow),
            (b"access-control-allow-headers", ALLOWED_HEADERS),
            (b"access-control-max-age", b"%d" % self.cors.max_age),
        ]
        if self.cors.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers
