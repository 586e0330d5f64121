"""Routing and handlers of the cache server (no I/O except the upstream loader).

Handlers return ``(status, header_lines, body)`` synchronously for every cache
operation; only a read-through miss returns a coroutine (see ``protocol``).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import math
import operator
import time
from collections.abc import Iterable
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote_to_bytes

import msgspec

from maxage import __version__, docs_page, status
from maxage.core import MISSING, Cache, Entry, SetOutcome
from maxage.core.cache import MAX_VERSION, Invalidation, VersionExhausted
from maxage.etags import if_none_match

from . import metrics as metrics_mod
from .openapi import OPENAPI_JSON
from .problems import problem
from .protocol import CacheRequest, Handled, Result
from .upstream import Upstreams

KEYS_PREFIX: Final = b"/v1/keys/"
MAX_TAGS: Final = 64  # per entry (413 too_many_tags beyond)
MAX_TAG_LEN: Final = 256  # characters (400 invalid_parameter beyond)
MAX_INVALIDATE_TAGS: Final = 1024  # per POST /v1/invalidate (413 too_many_tags beyond)
MAX_CONTENT_TYPE: Final = 256
MAX_TTL: Final = 365 * 86400.0  # seconds; no ttl at all means no expiry
MAX_QUERY_FIELDS: Final = 16
INVALIDATION_STEP: Final = 2048  # keys examined per event-loop turn by a large invalidation
META_OVERHEAD: Final = 200
"""Bytes charged per entry for its ``Meta`` on top of its header lines (measured ~170 B:
the tuple, two bytes objects' headers, a float; ``test_meta_overhead_is_measured``)."""
DEFAULT_CONTENT_TYPE: Final = b"application/octet-stream"

_JSON: Final = b"content-type: application/json\r\ncache-control: no-store\r\n"
_JSON_ETAG: Final = _JSON + b'etag: "'
_HTML: Final = b"content-type: text/html; charset=utf-8\r\ncache-control: no-store\r\n"
TOP_TAGS: Final = 10  # tags listed on the status page
# Seconds between two walks of the tag index for the status page (O(tags) on the loop).
TOP_TAGS_EVERY: Final = 10.0
_TEXT_METRICS: Final = b"content-type: text/plain; version=0.0.4; charset=utf-8\r\n"
_HIT: Final = b"cache-status: maxage; hit\r\n"
_STALE: Final = b"cache-status: maxage; fwd=stale; fwd-status=502\r\n"
_STALE_TIMEOUT: Final = b"cache-status: maxage; fwd=stale; fwd-status=504\r\n"
_MISS_STORED: Final = b"cache-status: maxage; fwd=miss; stored\r\n"
_MISS_NOT_STORED: Final = b"cache-status: maxage; fwd=miss\r\n"
_ALLOW_KEY: Final = b"allow: GET, HEAD, PUT, DELETE\r\n"
_ALLOW_POST: Final = b"allow: POST\r\n"
_ALLOW_GET: Final = b"allow: GET, HEAD\r\n"
_WWW_AUTH: Final = b'www-authenticate: Bearer realm="maxage"\r\n'

# ``b"%" in raw`` first tries ``b"%"`` as an int and raises (and clears) a TypeError:
# ~2,000 instructions, against ~50 for an int (measured with callgrind).
_PERCENT: Final = ord("%")
_QUESTION: Final = ord("?")
# Enum members as module constants: ``SetOutcome.STORED`` goes through EnumType's
# ``__getattr__`` hook on Python 3.11 (~170 ns a look-up, against ~10 ns for a global).
_STORED: Final = SetOutcome.STORED
_UNCHANGED: Final = SetOutcome.UNCHANGED
_REFUSED_OLDER: Final = SetOutcome.REFUSED_OLDER
_REFUSED_TOMBSTONE: Final = SetOutcome.REFUSED_TOMBSTONE

_encode = msgspec.json.Encoder().encode
_join = b"".join
# The PUT answer's fixed parts: {"key":…,"version":…,"outcome":"stored"}.
_KEY: Final = b'{"key":'
_VERSION: Final = b',"version":'
_STORED_END: Final = b',"outcome":"stored"}'
_UNCHANGED_END: Final = b',"outcome":"unchanged"}'
_DOCS_PAGE = functools.cache(lambda: docs_page.render(msgspec.json.decode(OPENAPI_JSON)))


class Meta(NamedTuple):
    """What an entry needs besides its body: precomputed header lines.

    Immutable, so entries written with the same content type and no version of
    their own share one ``Meta`` (``make_meta``): one object per content type
    instead of one per entry (a ``NamedTuple`` stays tracked by the cyclic GC).

    ``head`` is the content-type line, plus the ETag line when the version was
    known up front (``etag``); for unversioned puts the version is assigned by
    the cache, so the ETag is formatted from ``Entry.version`` at read time.
    ``fresh_until`` is set for read-through entries kept past their freshness
    for stale-if-error.
    """

    head: bytes
    etag: bytes | None
    fresh_until: float | None
    size: int
    """What the entry is charged for this ``Meta`` (``meta_size``), computed once."""


def meta_size(meta: object) -> int:
    """What an entry's ``Meta`` costs, for the byte bound (``Cache(meta_size=...)``)."""
    if not isinstance(meta, Meta):
        return 0
    return meta.size


meta_charge: Final = operator.attrgetter("size")
"""``meta_size`` for a cache whose every entry has a ``Meta`` (the cache server's: all
come from ``make_meta``), as a C callable: the engine calls it on every store, and a
Python function costs ~1,400 instructions more per PUT there (callgrind)."""


def _meta(head: bytes, etag: bytes | None, fresh_until: float | None) -> Meta:
    size = META_OVERHEAD + len(head) + (len(etag) if etag is not None else 0)
    return Meta(head, etag, fresh_until, size)


def make_meta(content_type: bytes, version: int | None, fresh_until: float | None) -> Meta:
    if version is None and fresh_until is None:
        meta = _SHARED_META.get(content_type)
        if meta is None:
            meta = _meta(b"content-type: " + content_type + b"\r\n", None, None)
            if len(_SHARED_META) < SHARED_META_TYPES:
                _SHARED_META[content_type] = meta
        return meta
    ct_line = b"content-type: " + content_type + b"\r\n"
    if version is None:
        return _meta(ct_line, None, fresh_until)
    etag = b'"%d"' % version
    return _meta(ct_line + b"etag: " + etag + b"\r\n", etag, fresh_until)


SHARED_META_TYPES: Final = 256
"""Distinct content types whose unversioned ``Meta`` is shared (the rest get their own)."""
_SHARED_META: dict[bytes, Meta] = {}

# Header lines of a hit for small ages and max-ages (an index instead of formatting
# ints per response); larger ones are formatted.
_TABLE: Final = 4096
_AGE: Final = tuple(b"age: %d\r\n" % n for n in range(_TABLE))
_MAX_AGE: Final = tuple(b"cache-control: max-age=%d\r\n" % n for n in range(_TABLE))


class _BadParam(Exception):
    pass


class _TooManyTags(Exception):
    pass


class InvalidateBody(msgspec.Struct, forbid_unknown_fields=True):
    tags: list[str] | None = None
    prefix: str | None = None


class CacheApp:
    """The request handler; one per server process."""

    def __init__(
        self,
        cache: Cache,
        clock: Any,
        metrics: metrics_mod.Metrics,
        *,
        max_key_length: int,
        max_value_bytes: int,
        token: str | None,
        upstreams: Upstreams | None = None,
        debug_clock: bool = False,
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.metrics = metrics
        self.max_key_length = max_key_length
        self.max_value_bytes = max_value_bytes
        self.token = token.encode() if token else None
        self.upstreams = upstreams
        self.debug_clock = debug_clock
        self.ready = True
        self._now = clock.now
        # /status: the last minutes of this server's own /metrics (maxage.status); the
        # transport's tick calls status.tick.
        self.status = status.Recorder(self.render_metrics)
        self._top_tags: tuple[float, list[tuple[str, int]]] = (-math.inf, [])
        # Invalidations that outlive their request (a deadline or a client gone):
        # they always finish; referenced here so that they are not collected.
        self._invalidations: set[asyncio.Task[None]] = set()

    # -- entry point ------------------------------------------------------

    def __call__(self, req: CacheRequest) -> Handled:
        if self.token is not None and not _bearer_ok(req.authorization, self.token):
            return problem(
                "unauthorized",
                "this server requires 'Authorization: Bearer <token>'",
                _path(req.url),
                extra_headers=_WWW_AUTH,
            )
        url = req.url
        method = req.method
        if url.startswith(KEYS_PREFIX):
            # ``in`` with an int is a memchr (~50 instructions); ``find`` with a start
            # index parses its arguments (~400).
            q = url.find(b"?", 9) if _QUESTION in url else -1
            raw = url[9:] if q < 0 else url[9:q]
            query = b"" if q < 0 else url[q + 1 :]
            key: str | Result
            if _PERCENT in raw or not raw or len(raw) > self.max_key_length:
                key = self._decode_key(raw, url)
                if type(key) is not str:
                    assert isinstance(key, tuple)
                    return key
            else:
                try:
                    key = raw.decode()
                except UnicodeDecodeError:
                    return problem("invalid_key", "key is not valid UTF-8", _path(url))
            assert type(key) is str
            if method == b"GET" or method == b"HEAD":
                req.route = "get"
                if query:
                    try:
                        _params(query, _NO_PARAMS)
                    except _BadParam as exc:
                        return problem("invalid_parameter", str(exc), "/v1/keys/" + key)
                return self.get(req, key)
            if method == b"PUT":
                req.route = "put"
                return self.put(req, key, query)
            if method == b"DELETE":
                req.route = "delete"
                return self.delete(req, key, query)
            return problem(
                "method_not_allowed",
                f"{method.decode('latin-1')} is not allowed on keys",
                _path(url),
                extra_headers=_ALLOW_KEY,
            )
        return self.other(req)

    # -- keys -------------------------------------------------------------

    def _decode_key(self, raw: bytes, url: bytes) -> str | Result:
        try:
            if _PERCENT in raw:
                raw = unquote_to_bytes(raw)
            key = raw.decode()
        except UnicodeDecodeError:
            return problem("invalid_key", "key is not valid UTF-8", _path(url))
        if not key:
            return problem("invalid_key", "key must not be empty", _path(url))
        if len(key) > self.max_key_length:
            return problem(
                "key_too_long",
                f"key has {len(key)} characters; the limit is {self.max_key_length}",
                _path(url),
                max_key_length=self.max_key_length,
            )
        return key

    def get(self, req: CacheRequest, key: str) -> Handled:
        e = self.cache.get(key)
        if e is not MISSING:
            meta = e.meta
            assert isinstance(meta, Meta)
            now = self._now()
            fresh_until = meta.fresh_until
            if fresh_until is None:
                return self._hit(req, e, meta, now, e.expires_at, _HIT)
            if now < fresh_until:
                return self._hit(req, e, meta, now, fresh_until, _HIT)
            stale: Entry | None = e
        else:
            stale = None
        ups = self.upstreams
        if ups is not None:
            up = ups.match(key)
            if up is not None:
                if not up.safe(key):
                    return problem(
                        "invalid_key",
                        "this key cannot be loaded from the upstream: a '.' or '..' path "
                        "segment or a backslash would leave the URL template's slot",
                        "/v1/keys/" + key,
                    )
                return self._read_through(req, key, up, stale)
        return problem("key_not_found", "no live entry for this key", "/v1/keys/" + key)

    def _hit(
        self, req: CacheRequest, e: Entry, meta: Meta, now: float, until: float, status_hdr: bytes
    ) -> Result:
        inm = req.if_none_match
        etag = meta.etag
        head = meta.head
        if etag is None:
            etag = b'"%d"' % e.version
            head = head + b"etag: " + etag + b"\r\n"
        age = int(now - e.filled_at)
        if age < 0:
            age = 0
        extra = _AGE[age] if age < _TABLE else b"age: %d\r\n" % age
        if until != math.inf:
            left = int(until - now)
            if left < 0:
                left = 0
            extra += _MAX_AGE[left] if left < _TABLE else b"cache-control: max-age=%d\r\n" % left
        if inm is not None and if_none_match(inm, etag):
            return 304, head + extra + status_hdr, b""
        return 200, head + extra + status_hdr, e.body

    async def _read_through(
        self, req: CacheRequest, key: str, up: Any, stale: Entry | None
    ) -> Result:
        from .upstream import UpstreamError, UpstreamNotFound

        instance = "/v1/keys/" + key
        try:
            entry, stored = await up.load(key, req)
        except UpstreamNotFound:
            return problem("key_not_found", "the upstream has no value for this key", instance)
        except (UpstreamError, TimeoutError) as exc:
            timeout = isinstance(exc, TimeoutError) or getattr(exc, "timeout", False)
            if stale is not None:
                now = self._now()
                if now < stale.expires_at:
                    self.metrics.stale_served += 1
                    meta = stale.meta
                    assert isinstance(meta, Meta)
                    return self._hit(
                        req, stale, meta, now, now, _STALE_TIMEOUT if timeout else _STALE
                    )
            if timeout:
                return problem(
                    "upstream_timeout",
                    f"the upstream did not answer within {up.timeout}s",
                    instance,
                )
            return problem("upstream_error", str(exc), instance)
        meta = entry.meta
        assert isinstance(meta, Meta)
        now = self._now()
        until = meta.fresh_until if meta.fresh_until is not None else entry.expires_at
        return self._hit(req, entry, meta, now, until, _MISS_STORED if stored else _MISS_NOT_STORED)

    def put(self, req: CacheRequest, key: str, query: bytes) -> Result:
        if query:
            try:
                ttl, version, tags = _put_params(query)
            except _BadParam as exc:
                return problem("invalid_parameter", str(exc), "/v1/keys/" + key)
            except _TooManyTags as exc:
                return problem("too_many_tags", str(exc), "/v1/keys/" + key, max_tags=MAX_TAGS)
        else:
            ttl = version = None
            tags = ()
        body = req.body
        if len(body) > self.max_value_bytes:  # the transport enforces this already
            return problem(
                "value_too_large",
                f"value of {len(body)} bytes exceeds the limit of {self.max_value_bytes} bytes",
                "/v1/keys/" + key,
            )
        ct = req.content_type
        if not ct:
            ct = DEFAULT_CONTENT_TYPE
        elif len(ct) > MAX_CONTENT_TYPE:
            return problem("invalid_parameter", "content type too long", "/v1/keys/" + key)
        cache = self.cache
        now = self._now()
        if version is None:
            # The cache assigns the version; make_meta's shared Meta, looked up inline.
            meta = _SHARED_META.get(ct)
            if meta is None:
                meta = make_meta(ct, None, None)
            try:
                if query:
                    outcome, version = cache.put(
                        key, body, started_at=now, ttl=ttl, meta=meta, tags=tags
                    )
                else:  # the common call: no ttl, no tags
                    outcome, version = cache.put(key, body, started_at=now, meta=meta)
            except VersionExhausted:
                cur = cache.peek(key)
                return problem(
                    "version_conflict",
                    f"the key is at version {MAX_VERSION}, the highest there is: "
                    "an unversioned write cannot go above it",
                    "/v1/keys/" + key,
                    current_version=cur.version if cur is not MISSING else None,
                )
        else:
            meta = make_meta(ct, version, None)
            outcome = cache.set_if_newer(
                key, version, body, started_at=now, ttl=ttl, meta=meta, tags=tags
            )
        if outcome is _STORED:
            v = _encode(version)  # msgspec's int formatting: ~3x faster than b"%d" %
            # One join: one allocation and copy instead of one per +.
            return (
                201,
                _JSON_ETAG + v + b'"\r\n',
                _join((_KEY, _encode(key), _VERSION, v, _STORED_END)),
            )
        if outcome is _UNCHANGED:
            v = _encode(version)
            return (
                200,
                _JSON_ETAG + v + b'"\r\n',
                _join((_KEY, _encode(key), _VERSION, v, _UNCHANGED_END)),
            )
        instance = "/v1/keys/" + key
        if outcome is _REFUSED_OLDER:
            cur = cache.peek(key)
            current = cur.version if cur is not MISSING else None
            return problem(
                "version_conflict",
                f"version {version} is older than the stored version {current}",
                instance,
                current_version=current,
            )
        if outcome is _REFUSED_TOMBSTONE:
            tomb = cache.tombstone(key)
            return problem(
                "tombstoned",
                f"version {version} was invalidated (tombstone {tomb}) or its key's "
                "prefix/tag was invalidated at the same instant",
                instance,
                tombstone_version=tomb,
            )
        return problem(
            "value_too_large",
            f"value of {len(body)} bytes does not fit in the cache's byte bound",
            instance,
        )

    def delete(self, req: CacheRequest, key: str, query: bytes) -> Result:
        instance = "/v1/keys/" + key
        version: int | None = None
        try:
            value = _params(query, _DELETE_PARAMS).get("version")
            if value is not None:
                version = _parse_version(value)
        except _BadParam as exc:
            return problem("invalid_parameter", str(exc), instance)
        cache = self.cache
        deleted = cache.delete(key) if version is None else cache.invalidate(key, version)
        doc = {"key": key, "deleted": deleted, "tombstone": self.cache.tombstone(key)}
        return 200, _JSON, _encode(doc)

    # -- everything else ----------------------------------------------------

    def other(self, req: CacheRequest) -> Handled:
        url = req.url
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        method = req.method
        read = method == b"GET" or method == b"HEAD"
        if path == b"/v1/invalidate":
            req.route = "invalidate"
            if method != b"POST":
                return _not_allowed(method, path, _ALLOW_POST)
            return self.invalidate(req, url[q + 1 :] if q >= 0 else b"")
        if path == b"/metrics":
            req.route = "metrics"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            return 200, _TEXT_METRICS, self.render_metrics()
        if path == b"/status" or path == b"/status.json":
            req.route = "status"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            model = self.status_model()
            if path == b"/status":
                return 200, _HTML, status.render_page(model)
            return 200, _JSON, _encode(model)
        if path == b"/livez":
            req.route = "health"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            return 200, _JSON, b'{"status":"ok"}'
        if path == b"/readyz":
            req.route = "health"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            if not self.ready:
                return problem("not_ready", "draining for shutdown", "/readyz")
            return 200, _JSON, b'{"status":"ready"}'
        if path == b"/docs" or path.startswith(b"/docs/"):
            req.route = "docs"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            return self._docs(req, path)
        if path == b"/openapi.json":
            req.route = "openapi"
            if not read:
                return _not_allowed(method, path, _ALLOW_GET)
            return 200, b"content-type: application/json\r\n", OPENAPI_JSON
        if self.debug_clock and path == b"/debug/clock":
            if method != b"POST":
                return _not_allowed(method, path, _ALLOW_POST)
            return self._advance_clock(url[q + 1 :] if q >= 0 else b"")
        return problem("route_not_found", "no such route", _path(url))

    def _docs(self, req: CacheRequest, path: bytes) -> Handled:
        """``/docs`` (Swagger UI over this server's OpenAPI document) and its two assets."""
        if path == b"/docs":
            return 200, _HTML, _DOCS_PAGE()
        name = path[len(b"/docs/") :].decode("latin-1")
        body = docs_page.asset(name) if name in docs_page.ASSETS else None
        if body is None:
            return problem("route_not_found", "no such route", _path(req.url))
        head = (
            b"content-type: "
            + docs_page.ASSETS[name]
            + b"\r\ncache-control: public, max-age=86400\r\n"
        )
        return 200, head, body

    def render_metrics(self) -> bytes:
        return metrics_mod.render(self.metrics, self.cache.stats_snapshot)

    def top_tags(self) -> list[tuple[str, int]]:
        """The status page's top tags, recomputed at most every TOP_TAGS_EVERY seconds:
        every open page polls, and the walk is O(tags) on the event loop."""
        at, tags = self._top_tags
        now = time.monotonic()
        if now - at >= TOP_TAGS_EVERY or not tags:  # none yet: cheap to look again
            tags = self.cache.top_tags(TOP_TAGS)
            self._top_tags = (now, tags)
        return tags

    def status_model(self) -> dict[str, Any]:
        """``/status.json``: the recorded minutes, the top tags, and the rendered page."""
        self.status.tick()
        model = status.cache_model(
            self.status.current(),
            version=__version__,
            started=self.status.started,
            top_tags=self.top_tags(),
        )
        model["html"] = status.body_html(model)
        return model

    def invalidate(self, req: CacheRequest, query: bytes) -> Handled:
        where = "/v1/invalidate"
        tags: list[str] = []
        prefix: str | None = None
        if req.body:
            ct = (req.content_type or b"").split(b";", 1)[0].strip().lower()
            if ct != b"application/json":
                return problem("unsupported_media_type", "the body must be application/json", where)
            try:
                parsed = msgspec.json.decode(req.body, type=InvalidateBody)
            except msgspec.ValidationError as exc:
                return problem("invalid_body", str(exc), where)
            except msgspec.DecodeError as exc:
                return problem("malformed_json", str(exc), where)
            tags = list(parsed.tags or ())
            prefix = parsed.prefix
        try:
            params = _params(query, _INVALIDATE_PARAMS)
            if "tags" in params:
                tags.extend(_split_tags(params["tags"]))
            if "prefix" in params:
                if prefix is not None:
                    raise _BadParam("give 'prefix' in the body or the query, not both")
                prefix = params["prefix"]
            tags = _check_tags(tags, MAX_INVALIDATE_TAGS)
        except _BadParam as exc:
            return problem("invalid_parameter", str(exc), where)
        except _TooManyTags as exc:
            return problem("too_many_tags", str(exc), where, max_tags=MAX_INVALIDATE_TAGS)
        if not tags and prefix is None:
            return problem(
                "invalid_body", "give 'tags' (list or comma-separated) and/or 'prefix'", where
            )
        if prefix is not None and not prefix:
            return problem("invalid_body", "prefix must not be empty", where)
        if prefix is not None and len(prefix) > self.max_key_length:
            return problem(
                "invalid_parameter",
                f"prefix has {len(prefix)} characters; keys have at most {self.max_key_length}",
                where,
            )
        inv = self.cache.begin_invalidation(tags, prefix, budget=INVALIDATION_STEP)
        doc: dict[str, object] = {"tags": tags, "prefix": prefix}
        if inv.done:
            return 200, _JSON, _encode({"invalidated": inv.dropped, **doc})
        # Large: drop the rest in steps, serving other requests in between. The
        # work runs in its own task, so a request deadline or a client that goes
        # away cannot leave it half done.
        task = asyncio.get_running_loop().create_task(_finish(inv))
        self._invalidations.add(task)
        task.add_done_callback(self._invalidations.discard)
        return self._await_invalidation(task, inv, doc)

    async def _await_invalidation(
        self, task: asyncio.Task[None], inv: Invalidation, doc: dict[str, object]
    ) -> Result:
        await asyncio.shield(task)
        return 200, _JSON, _encode({"invalidated": inv.dropped, **doc})

    def _advance_clock(self, query: bytes) -> Result:
        try:
            value = _params(query, frozenset({"advance"})).get("advance")
        except _BadParam as exc:
            return problem("invalid_parameter", str(exc), "/debug/clock")
        if value is not None:
            try:
                seconds = float(value)
            except ValueError:
                seconds = -1.0
            if not seconds >= 0 or not math.isfinite(seconds):
                return problem("invalid_parameter", "advance must be >= 0", "/debug/clock")
            self.clock.advance(seconds)
        return 200, _JSON, _encode({"now": self.clock.now(), "offset": self.clock.offset})


def _bearer_ok(header: bytes | None, token: bytes) -> bool:
    """``Authorization: Bearer <token>`` (scheme case-insensitive), constant-time compare."""
    if header is None:
        return False
    scheme, _, value = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(value.strip(), token)


def _not_allowed(method: bytes, path: bytes, allow: bytes) -> Result:
    return problem(
        "method_not_allowed",
        f"{method.decode('latin-1')} is not allowed here",
        path.decode("latin-1"),
        extra_headers=allow,
    )


def _path(url: bytes) -> str:
    q = url.find(b"?")
    return (url if q < 0 else url[:q]).decode("latin-1")[:512]


_NO_PARAMS: Final = frozenset[str]()
_PUT_PARAMS: Final = frozenset({"ttl", "version", "tags"})
_DELETE_PARAMS: Final = frozenset({"version"})
_INVALIDATE_PARAMS: Final = frozenset({"tags", "prefix"})


async def _finish(inv: Invalidation) -> None:
    while not inv.step(INVALIDATION_STEP):
        await asyncio.sleep(0)  # let the loop serve other connections


def _params(query: bytes, allowed: frozenset[str]) -> dict[str, str]:
    """The query's parameters; unknown, repeated or undecodable ones are a ``_BadParam``
    (a misspelt ``?verison=5`` must not turn into an unconditional write)."""
    if not query:
        return {}
    try:
        pairs = parse_qsl(
            query.decode(),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except UnicodeDecodeError:
        raise _BadParam("the query string is not valid UTF-8") from None
    except ValueError:
        raise _BadParam(f"at most {MAX_QUERY_FIELDS} query parameters") from None
    out: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise _BadParam(f"unknown query parameter {name[:64]!r} (known: {known})")
        if name in out:
            raise _BadParam(f"query parameter {name!r} given twice")
        out[name] = value
    return out


def _parse_version(value: str) -> int:
    # At most 19 digits before int(): a 5,000-digit string must not reach int().
    if not value.isascii() or not value.isdigit() or len(value) > 19:
        raise _BadParam(f"version must be an integer between 1 and {MAX_VERSION}")
    v = int(value)
    if v < 1 or v > MAX_VERSION:
        raise _BadParam(f"version must be an integer between 1 and {MAX_VERSION}")
    return v


def _parse_ttl(value: str) -> float:
    try:
        ttl = float(value)
    except ValueError:
        raise _BadParam("ttl must be a number of seconds") from None
    if not 0 < ttl <= MAX_TTL:
        raise _BadParam(f"ttl must be > 0 and at most {MAX_TTL:.0f} seconds (365 days)")
    return ttl


def _split_tags(value: str) -> list[str]:
    return [t for t in (s.strip() for s in value.split(",")) if t]


def _check_tags(tags: Iterable[str], limit: int) -> list[str]:
    """Distinct tags, in order; raises on too many or too long ones."""
    out = list(dict.fromkeys(tags))
    if len(out) > limit:
        raise _TooManyTags(f"{len(out)} distinct tags; the limit is {limit}")
    for t in out:
        if not t:
            raise _BadParam("a tag must not be empty")
        if len(t) > MAX_TAG_LEN:
            raise _BadParam(f"a tag may have at most {MAX_TAG_LEN} characters")
    return out


def _put_params(query: bytes) -> tuple[float | None, int | None, tuple[str, ...]]:
    params = _params(query, _PUT_PARAMS)
    ttl = _parse_ttl(params["ttl"]) if "ttl" in params else None
    version = _parse_version(params["version"]) if "version" in params else None
    tags = tuple(_check_tags(_split_tags(params["tags"]), MAX_TAGS)) if "tags" in params else ()
    return ttl, version, tags
