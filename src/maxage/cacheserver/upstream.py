"""Read-through to upstream HTTP services, one URL template per key prefix.

A miss under a configured prefix loads from the upstream through
``SingleFlight`` (one upstream call per key however many clients miss at once).
The load has a deadline (``timeout``): when it passes, the load task and with
it the in-flight httpx request are cancelled (the upstream sees the connection
close) and every waiter gets ``TimeoutError`` → ``504 upstream_timeout``.
Connection errors and upstream 5xx answers → ``502 upstream_error``; 404 →
``404 key_not_found``.

Keys are substituted into the template percent-encoded (``/`` kept), and a
key whose substituted part has a ``.`` or ``..`` path segment or a backslash
is never loaded (``Upstream.safe``; the app answers 400): the upstream or any
URL normaliser on the way (httpx resolves dot segments) could otherwise turn
``users/../../admin/secret`` into a request for ``/admin/secret``. The slot
must lie in the template's path or query, never in its scheme or authority.
Upstream answers are distrusted the same way: a non-numeric or over-long
``ETag`` is no version, ``max-age`` is capped at 365 days, and a
``Content-Type`` longer than 256 characters or not ASCII is an upstream error.

Fill guard: the fill's ``started_at`` is the moment the upstream call started,
so a prefix or tag invalidation that happens during the load refuses it (core
rule). A numeric upstream ``ETag`` is used as the version (``set_if_newer``: a
key tombstone refuses an older fill). For unversioned upstreams the loader
compares the key's tombstone before and after the call and does not store if
a delete/invalidation of the key happened meanwhile, and serves (without
storing) the value a client PUT while the load was in flight.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

import httpx

from maxage.core import MISSING, Cache, Entry, SetOutcome, SingleFlight
from maxage.logs import child_traceparent

from .metrics import Metrics
from .protocol import valid_request_id

if TYPE_CHECKING:
    from .protocol import CacheRequest

_MAX_AGE: Final = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d+)", re.IGNORECASE)
MAX_TTL: Final = 365 * 86400.0  # the longest TTL an upstream's max-age can give
MAX_CONTENT_TYPE: Final = 256
_NO_STORE: Final = re.compile(r"(?:^|,)\s*(?:no-store|private)\b", re.IGNORECASE)


class UpstreamError(Exception):
    """The upstream failed (connection error, 5xx, unusable answer)."""

    def __init__(self, detail: str, *, timeout: bool = False) -> None:
        super().__init__(detail)
        self.timeout = timeout


class UpstreamNotFound(Exception):
    """The upstream answered 404."""


@dataclass(frozen=True, slots=True)
class UpstreamSpec:
    prefix: str
    template: str

    @staticmethod
    def parse(text: str) -> UpstreamSpec:
        prefix, sep, template = text.partition("=")
        if not sep or not prefix or not template:
            raise ValueError(f"expected PREFIX=URL_TEMPLATE, got {text!r}")
        if not template.startswith(("http://", "https://")):
            raise ValueError(f"URL template must be http(s)://…, got {template!r}")
        slots = [i for i in (template.find("{key}"), template.find("{suffix}")) if i >= 0]
        if not slots:
            raise ValueError(f"URL template must contain {{key}} or {{suffix}}: {template!r}")
        authority_end = template.find("/", template.index("://") + 3)
        if authority_end < 0 or min(slots) < authority_end:
            raise ValueError(
                f"URL template must have {{key}}/{{suffix}} in its path or query, after "
                f"the host: {template!r}"
            )
        return UpstreamSpec(prefix, template)


class Upstream:
    """One prefix → URL template binding."""

    def __init__(self, spec: UpstreamSpec, owner: Upstreams) -> None:
        self.spec = spec
        self.prefix = spec.prefix
        self.owner = owner
        self.timeout = owner.timeout

    def safe(self, key: str) -> bool:
        """Whether ``key`` can be substituted without leaving the template's slot."""
        return _safe_part(key) and _safe_part(key[len(self.prefix) :])

    def url_for(self, key: str) -> str:
        if not self.safe(key):
            raise ValueError(f"unsafe key for an upstream URL: {key[:100]!r}")
        return self.spec.template.replace("{key}", quote(key, safe="/")).replace(
            "{suffix}", quote(key[len(self.prefix) :], safe="/")
        )

    async def load(self, key: str, caller: CacheRequest | None = None) -> tuple[Entry, bool]:
        """The entry for ``key`` and whether it was stored; raises on upstream failure.
        The upstream call carries ``caller``'s context (:func:`forwarded_headers`)."""
        headers = forwarded_headers(caller, self.timeout) if caller is not None else None
        return await self.owner.flights.do(
            key, lambda: self.owner.fetch(self, key, headers), timeout=self.timeout
        )


def forwarded_headers(caller: CacheRequest, timeout: float) -> dict[str, str]:
    """What travels with a read-through call: the caller's ``X-Request-ID``, a child
    ``traceparent`` (the caller's trace id, a new span id; a new trace when the caller
    sent none) and ``X-Request-Timeout``, the caller's remaining deadline (at most the
    upstream timeout), so the upstream does not work past it."""
    remaining = timeout
    if caller.deadline > 0:
        remaining = min(remaining, caller.deadline - time.perf_counter())
    headers = {
        "traceparent": child_traceparent(caller.traceparent),
        "x-request-timeout": f"{max(remaining, 0.001):.3f}",
    }
    rid = caller.request_id
    if rid is not None and valid_request_id(rid):
        headers["x-request-id"] = rid.decode("ascii")
    return headers


class Upstreams:
    """All configured upstreams sharing one httpx client and one single-flight table."""

    def __init__(
        self,
        specs: list[UpstreamSpec],
        *,
        cache: Cache,
        clock: Any,
        metrics: Metrics,
        meta_factory: Any,
        timeout: float,
        default_ttl: float,
        stale_if_error: float,
        max_value_bytes: int,
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.metrics = metrics
        self.meta_factory = meta_factory
        self.timeout = timeout
        self.default_ttl = default_ttl
        self.stale_if_error = stale_if_error
        self.max_value_bytes = max_value_bytes
        self.flights: SingleFlight[tuple[Entry, bool]] = SingleFlight()
        # Longest prefix first.
        self.bindings = sorted(
            (Upstream(s, self) for s in specs), key=lambda u: len(u.prefix), reverse=True
        )
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            trust_env=False,
            follow_redirects=False,
        )

    def match(self, key: str) -> Upstream | None:
        for up in self.bindings:
            if key.startswith(up.prefix):
                return up
        return None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def fetch(
        self, up: Upstream, key: str, forward: dict[str, str] | None = None
    ) -> tuple[Entry, bool]:
        cache = self.cache
        metrics = self.metrics
        metrics.upstream_loads += 1
        started = self.clock.now()
        tomb_before = cache.tombstone(key)
        held = cache.peek(key)
        version_before = held.version if held is not MISSING else None
        t0 = time.perf_counter()
        url = up.url_for(key)
        try:
            async with self.client.stream("GET", url, headers=forward) as r:
                status = r.status_code
                if status == 404:
                    metrics.upstream_error("not_found")
                    raise UpstreamNotFound(key)
                if status != 200:
                    metrics.upstream_error("status")
                    raise UpstreamError(f"the upstream answered {status}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_value_bytes:
                        metrics.upstream_error("too_large")
                        raise UpstreamError(
                            f"the upstream value exceeds {self.max_value_bytes} bytes"
                        )
                    chunks.append(chunk)
                body = b"".join(chunks)
                headers = r.headers
        except httpx.TimeoutException:
            metrics.upstream_error("timeout")
            raise UpstreamError("the upstream timed out", timeout=True) from None
        except httpx.HTTPError as exc:
            metrics.upstream_error("connect")
            raise UpstreamError(f"the upstream call failed ({type(exc).__name__})") from None
        except BaseException as exc:
            # Cancelled at the deadline (SingleFlight timeout) or by shutdown.
            if not isinstance(exc, UpstreamError | UpstreamNotFound):
                metrics.upstream_error("timeout")
            raise
        finally:
            metrics.upstream_latency.observe(time.perf_counter() - t0)

        ct = headers.get("content-type", "application/octet-stream")
        if len(ct) > MAX_CONTENT_TYPE or not ct.isascii() or not ct.isprintable():
            metrics.upstream_error("invalid")
            raise UpstreamError("the upstream's Content-Type is too long or not printable ASCII")
        content_type = ct.encode()
        cc = headers.get("cache-control", "")
        m = _MAX_AGE.search(cc)
        if m:
            digits = m.group(1)
            ttl = MAX_TTL if len(digits) > 9 else min(float(digits), MAX_TTL)
        else:
            ttl = self.default_ttl
        cacheable = ttl > 0 and not _NO_STORE.search(cc)
        version = _etag_version(headers.get("etag"))
        stale = self.stale_if_error
        fresh_until = started + ttl if stale > 0 else None
        store_ttl = ttl + stale
        stored = False
        if cacheable and cache.tombstone(key) == tomb_before:
            held = cache.peek(key)
            if version is None and (held.version if held is not MISSING else None) != (
                version_before
            ):
                # Written (PUT) while we were loading: that value is newer than ours.
                assert held is not MISSING
                return held, False
            if version is not None:
                meta = self.meta_factory(content_type, version, fresh_until)
                outcome = cache.set_if_newer(
                    key, version, body, started_at=started, ttl=store_ttl, meta=meta
                )
            else:
                meta = self.meta_factory(content_type, None, fresh_until)
                outcome, version = cache.put(
                    key, body, started_at=started, ttl=store_ttl, meta=meta
                )
            if outcome is SetOutcome.STORED or outcome is SetOutcome.UNCHANGED:
                e = cache.peek(key)
                if e is not MISSING:
                    return e, outcome is SetOutcome.STORED
        v = version if version is not None else 0
        meta = self.meta_factory(content_type, v, fresh_until)
        return Entry(key, v, body, meta, started, started + ttl, (), len(body)), stored


def _etag_version(etag: str | None) -> int | None:
    if not etag:
        return None
    e = etag.strip()
    if e.startswith("W/"):
        e = e[2:]
    e = e.strip('"')
    if e.isdigit() and e.isascii() and len(e) <= 19:
        v = int(e)
        if 1 <= v < 2**63:
            return v
    return None


def _safe_part(part: str) -> bool:
    if "\\" in part:
        return False
    if "." not in part:
        return True
    return not any(seg == "." or seg == ".." for seg in part.split("/"))
