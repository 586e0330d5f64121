"""Clients for ``maxage cache-server``: :class:`CacheClient` (sync) and :class:`AsyncCacheClient`.

Both speak the server's HTTP API over httpx and return typed results::

    from maxage_client.cache import CacheClient, VersionConflict

    with CacheClient("http://127.0.0.1:8090") as cache:
        cache.set("user:42", b'{"name":"Ada"}', version=7, ttl=300, tags=["users"],
                  content_type="application/json")
        entry = cache.get("user:42")            # CacheEntry | None (None on a miss)
        cache.invalidate(tags=["users"])
        value = cache.get_or_load("user:43", load_user_43, ttl=300)

Every error answer of the server (``application/problem+json``) raises a
:class:`CacheServerError` subclass carrying the problem's stable ``code``;
transport failures raise :class:`CacheUnavailable` (``code="unavailable"``, or
``deadline_exceeded`` when the call's deadline passed first).

Retries, deadlines and propagation are the JSON API client's (``maxage_client.transport``,
one implementation): every call has a deadline (``timeout``, retries included, shortened by
:func:`request_context`) sent as ``X-Request-Timeout``; connection failures, 429 and 503 are
retried with exponential back-off and full jitter, never before ``Retry-After``. Every
operation of the cache server is idempotent (a ``set`` of a stored version is a replay, a
delete or an invalidation again removes nothing more), so retrying any of them is safe.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import quote

import httpx

from maxage_client.problems import MaxageError, problem_of
from maxage_client.transport import (
    Caller,
    DeadlinePassed,
    OnRetry,
    Prepared,
    RetryPolicy,
    bearer,
    request_context,
)

__all__ = [
    "AsyncCacheClient",
    "BadRequest",
    "CacheClient",
    "CacheEntry",
    "CacheServerError",
    "CacheUnavailable",
    "DeleteResult",
    "InvalidateResult",
    "NotFound",
    "PayloadTooLarge",
    "RetryPolicy",
    "Tombstoned",
    "Unauthorized",
    "UpstreamFailed",
    "VersionConflict",
    "WriteResult",
    "request_context",
]

TOKEN_ENV: Final = "MAXAGE_CACHE_TOKEN"


# -- results ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A value read from the cache server."""

    key: str
    value: bytes
    version: int
    content_type: str
    age: int
    """Seconds since the value was known current (``Age``)."""
    max_age: int | None
    """Remaining TTL in seconds, ``None`` when the entry has no TTL."""
    cache_status: str = ""
    """The ``Cache-Status`` header: ``hit``, a read-through miss, or a stale answer."""

    @property
    def stale(self) -> bool:
        return "fwd=stale" in self.cache_status

    def text(self, encoding: str = "utf-8") -> str:
        return self.value.decode(encoding)

    def json(self) -> Any:
        return json.loads(self.value)


@dataclass(frozen=True, slots=True)
class WriteResult:
    key: str
    version: int
    stored: bool
    """False for an idempotent replay of the stored version (outcome ``unchanged``)."""
    outcome: str


@dataclass(frozen=True, slots=True)
class DeleteResult:
    key: str
    deleted: bool
    tombstone: int | None


@dataclass(frozen=True, slots=True)
class InvalidateResult:
    invalidated: int


# -- errors -----------------------------------------------------------------


class CacheServerError(MaxageError):
    """An error answer of the cache server; ``code`` is the stable problem code."""


class BadRequest(CacheServerError):
    """400/405/414/415/422/431: the request itself is wrong; do not retry it."""


class Unauthorized(CacheServerError):
    """401: missing or wrong bearer token."""


class NotFound(CacheServerError):
    """404 ``key_not_found`` (``get`` returns ``None`` instead) or ``route_not_found``."""


class VersionConflict(CacheServerError):
    """409 ``version_conflict``: a newer version is stored (``current_version``)."""

    @property
    def current_version(self) -> int | None:
        v = self.problem.get("current_version")
        return v if isinstance(v, int) else None


class Tombstoned(CacheServerError):
    """409 ``tombstoned``: the version was invalidated (``tombstone_version``)."""

    @property
    def tombstone_version(self) -> int | None:
        v = self.problem.get("tombstone_version")
        return v if isinstance(v, int) else None


class PayloadTooLarge(CacheServerError):
    """413 ``value_too_large`` / ``body_too_large`` / ``too_many_tags``."""


class UpstreamFailed(CacheServerError):
    """502 ``upstream_error`` / 504 ``upstream_timeout`` / ``deadline_exceeded``: retryable."""


class CacheUnavailable(CacheServerError):
    """The server could not be reached or did not answer (``code="unavailable"``)."""


_BY_CODE: Final[dict[str, type[CacheServerError]]] = {
    "unauthorized": Unauthorized,
    "key_not_found": NotFound,
    "route_not_found": NotFound,
    "version_conflict": VersionConflict,
    "tombstoned": Tombstoned,
    "value_too_large": PayloadTooLarge,
    "body_too_large": PayloadTooLarge,
    "too_many_tags": PayloadTooLarge,
    "upstream_error": UpstreamFailed,
    "upstream_timeout": UpstreamFailed,
    "deadline_exceeded": UpstreamFailed,
}


def _error(r: httpx.Response) -> CacheServerError:
    code, detail, problem = problem_of(r)
    cls = _BY_CODE.get(code)
    if cls is None:
        if r.status_code in (400, 405, 414, 415, 422, 431):
            cls = BadRequest
        elif r.status_code in (502, 503, 504):
            cls = UpstreamFailed if code.startswith("upstream") else CacheUnavailable
        else:
            cls = CacheServerError
    return cls(r.status_code, code, detail, problem)


def _unavailable(exc: httpx.HTTPError | DeadlinePassed) -> CacheUnavailable:
    if isinstance(exc, DeadlinePassed):
        why = f" (last: {type(exc.cause).__name__}: {exc.cause})" if exc.cause else ""
        return CacheUnavailable(0, "deadline_exceeded", "the call's deadline passed" + why)
    return CacheUnavailable(0, "unavailable", f"{type(exc).__name__}: {exc}")


def retryable(response: httpx.Response) -> bool:
    """The cache server's answers worth sending again: 429 and 503."""
    return response.status_code in (429, 503)


# -- request building (shared by both clients) --------------------------------


def _key_path(key: str) -> str:
    if not key:
        raise ValueError("key must not be empty")
    return "/v1/keys/" + quote(key, safe="")


def _set_request(
    value: bytes | str,
    version: int | None,
    ttl: float | None,
    tags: Iterable[str],
    content_type: str | None,
) -> tuple[dict[str, str], bytes, dict[str, str]]:
    params: dict[str, str] = {}
    if version is not None:
        params["version"] = str(int(version))
    if ttl is not None:
        params["ttl"] = repr(float(ttl))
    tag_list = [t for t in tags]
    if any("," in t for t in tag_list):
        raise ValueError("tags must not contain ','")
    if tag_list:
        params["tags"] = ",".join(tag_list)
    if isinstance(value, str):
        body = value.encode()
        content_type = content_type or "text/plain; charset=utf-8"
    else:
        body = bytes(value)
    headers = {"content-type": content_type or "application/octet-stream"}
    return params, body, headers


def _entry(key: str, r: httpx.Response) -> CacheEntry:
    etag = r.headers.get("etag", "").strip().removeprefix("W/").strip('"')
    cc = r.headers.get("cache-control", "")
    max_age: int | None = None
    for part in cc.split(","):
        name, _, val = part.strip().partition("=")
        if name == "max-age" and val.isdigit():
            max_age = int(val)
    age = r.headers.get("age", "0")
    return CacheEntry(
        key=key,
        value=r.content,
        version=int(etag) if etag.isdigit() else 0,
        content_type=r.headers.get("content-type", "application/octet-stream"),
        age=int(age) if age.isdigit() else 0,
        max_age=max_age,
        cache_status=r.headers.get("cache-status", ""),
    )


def _write_result(r: httpx.Response) -> WriteResult:
    doc = r.json()
    return WriteResult(
        key=doc["key"],
        version=int(doc["version"]),
        stored=doc["outcome"] == "stored",
        outcome=doc["outcome"],
    )


def _invalidate_body(tags: Iterable[str] | None, prefix: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if tags is not None:
        body["tags"] = list(tags)
    if prefix is not None:
        body["prefix"] = prefix
    if not body.get("tags") and prefix is None:
        raise ValueError("give tags and/or prefix")
    return body


def _prepared(
    method: str,
    url: str,
    *,
    params: dict[str, str] | None = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    json_body: object = None,
) -> Prepared:
    if json_body is not None:
        content = json.dumps(json_body, separators=(",", ":")).encode()
        headers = {**(headers or {}), "content-type": "application/json"}
    return Prepared(method, url, httpx.QueryParams(params or {}), headers or {}, content)


T = TypeVar("T")
Loaded = bytes | str


# -- sync -------------------------------------------------------------------


class CacheClient:
    """Synchronous client. Thread-safe (httpx.Client is); use as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8090",
        *,
        token: str | None = None,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``timeout`` is each call's deadline in seconds, retries included."""
        self._caller = Caller(timeout, retry or RetryPolicy(), retryable, on_retry)
        self._http = httpx.Client(
            base_url=base_url,
            headers=bearer(token),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            r = self._caller.send(self._http, _prepared(method, url, **kw))
        except (httpx.HTTPError, DeadlinePassed) as exc:
            raise _unavailable(exc) from exc
        if r.status_code >= 400:
            raise _error(r)
        return r

    def get(self, key: str) -> CacheEntry | None:
        """The entry, or ``None`` on a miss (read-through happens server-side)."""
        try:
            return _entry(key, self._request("GET", _key_path(key)))
        except NotFound as exc:
            if exc.code == "key_not_found":
                return None
            raise

    def set(
        self,
        key: str,
        value: bytes | str,
        *,
        version: int | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        content_type: str | None = None,
    ) -> WriteResult:
        """Store ``value``. With ``version``, only if newer: a replay of the stored
        version returns ``stored=False``; an older one raises :class:`VersionConflict`."""
        params, body, headers = _set_request(value, version, ttl, tags, content_type)
        r = self._request("PUT", _key_path(key), params=params, content=body, headers=headers)
        return _write_result(r)

    def delete(self, key: str, *, version: int | None = None) -> DeleteResult:
        """Delete ``key``; with ``version``, drop versions below it and leave a tombstone."""
        params = {"version": str(int(version))} if version is not None else {}
        doc = self._request("DELETE", _key_path(key), params=params).json()
        return DeleteResult(doc["key"], bool(doc["deleted"]), doc.get("tombstone"))

    def invalidate(
        self, *, tags: Iterable[str] | None = None, prefix: str | None = None
    ) -> InvalidateResult:
        r = self._request("POST", "/v1/invalidate", json_body=_invalidate_body(tags, prefix))
        return InvalidateResult(int(r.json()["invalidated"]))

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], Loaded | tuple[Loaded, int]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        content_type: str | None = None,
    ) -> CacheEntry:
        """Read-through on the client side: get; on a miss call ``loader`` (which may
        return ``(value, version)``), store it, and return what the cache now holds."""
        e = self.get(key)
        if e is not None:
            return e
        loaded = loader()
        value, version = loaded if isinstance(loaded, tuple) else (loaded, None)
        try:
            w = self.set(key, value, version=version, ttl=ttl, tags=tags, content_type=content_type)
        except (VersionConflict, Tombstoned):
            newer = self.get(key)
            if newer is not None:
                return newer
            raise
        body = value.encode() if isinstance(value, str) else bytes(value)
        ct = content_type or ("text/plain; charset=utf-8" if isinstance(value, str) else "")
        return CacheEntry(key, body, w.version, ct or "application/octet-stream", 0, None, "")

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text


# -- async ------------------------------------------------------------------


class AsyncCacheClient:
    """Asynchronous client (httpx.AsyncClient); use as an async context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8090",
        *,
        token: str | None = None,
        timeout: float = 5.0,
        retry: RetryPolicy | None = None,
        on_retry: OnRetry | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """``timeout`` is each call's deadline in seconds, retries included."""
        self._caller = Caller(timeout, retry or RetryPolicy(), retryable, on_retry)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=bearer(token),
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncCacheClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            r = await self._caller.asend(self._http, _prepared(method, url, **kw))
        except (httpx.HTTPError, DeadlinePassed) as exc:
            raise _unavailable(exc) from exc
        if r.status_code >= 400:
            raise _error(r)
        return r

    async def get(self, key: str) -> CacheEntry | None:
        try:
            return _entry(key, await self._request("GET", _key_path(key)))
        except NotFound as exc:
            if exc.code == "key_not_found":
                return None
            raise

    async def set(
        self,
        key: str,
        value: bytes | str,
        *,
        version: int | None = None,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        content_type: str | None = None,
    ) -> WriteResult:
        params, body, headers = _set_request(value, version, ttl, tags, content_type)
        r = await self._request("PUT", _key_path(key), params=params, content=body, headers=headers)
        return _write_result(r)

    async def delete(self, key: str, *, version: int | None = None) -> DeleteResult:
        params = {"version": str(int(version))} if version is not None else {}
        doc = (await self._request("DELETE", _key_path(key), params=params)).json()
        return DeleteResult(doc["key"], bool(doc["deleted"]), doc.get("tombstone"))

    async def invalidate(
        self, *, tags: Iterable[str] | None = None, prefix: str | None = None
    ) -> InvalidateResult:
        r = await self._request("POST", "/v1/invalidate", json_body=_invalidate_body(tags, prefix))
        return InvalidateResult(int(r.json()["invalidated"]))

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Loaded | tuple[Loaded, int]]],
        *,
        ttl: float | None = None,
        tags: Iterable[str] = (),
        content_type: str | None = None,
    ) -> CacheEntry:
        e = await self.get(key)
        if e is not None:
            return e
        loaded = await loader()
        value, version = loaded if isinstance(loaded, tuple) else (loaded, None)
        try:
            w = await self.set(
                key, value, version=version, ttl=ttl, tags=tags, content_type=content_type
            )
        except (VersionConflict, Tombstoned):
            newer = await self.get(key)
            if newer is not None:
                return newer
            raise
        body = value.encode() if isinstance(value, str) else bytes(value)
        ct = content_type or ("text/plain; charset=utf-8" if isinstance(value, str) else "")
        return CacheEntry(key, body, w.version, ct or "application/octet-stream", 0, None, "")

    async def metrics(self) -> str:
        return (await self._request("GET", "/metrics")).text
