"""Clients for the JSON API of ``maxage serve``: :class:`Client` (sync) and
:class:`AsyncClient`, each handing out collection handles::

    from maxage_client import Client, PreconditionFailed

    with Client("http://127.0.0.1:8080", api_key=secret) as api:
        posts = api.collection("posts")
        post = posts.create({"title": "Hello", "body": "..."})
        post = posts.update(post.id, {"title": "Hello, world"}, expected_version=post.version)
        again = posts.get(post.id)                  # a session read: never older than the update
        for p in posts.documents(page_size=50):     # every page, following next_page_token
            ...

What a client does for its caller, on every call:

* **read-your-writes**: its :class:`~maxage_client.session.Session` records the version of
  every document it writes or reads, and a read of that document sends ``min_version``
  (``Session.token()`` carries this to another process);
* **idempotent writes**: each write gets one ``Idempotency-Key`` (a new UUID unless given),
  reused on every retry of that write, so it takes effect once;
* **retries** with exponential back-off and full jitter on connection failures, 429 and 503,
  and on the two 409s the server documents as retryable (``idempotency_key_in_use``,
  ``min_version_unavailable``), never before ``Retry-After``; never on any other 4xx;
* **a deadline** per call (``timeout``; retries included), sent as ``X-Request-Timeout``;
* **typed problems**: every error answer raises an :class:`~maxage_client.problems.APIError`
  subclass carrying the problem's ``code`` (and ``errors[]``);
* **bearer keys**: ``api_key`` is sent as ``Authorization: Bearer <key>``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx

from maxage_client.problems import APIError, ConnectionFailed, DeadlineExceeded, api_error
from maxage_client.session import Session
from maxage_client.transport import (
    Caller,
    DeadlinePassed,
    OnRetry,
    Prepared,
    RetryPolicy,
    bearer,
)

ReadMode = Literal["bounded", "strong", "session"]
ExpectedVersion = int | Literal["*"]
QueryValue = str | int | float | bool | Iterable[str | int | float | bool]

JSON_TYPE: Final = "application/json"
MERGE_PATCH_TYPE: Final = "application/merge-patch+json"
NDJSON_TYPE: Final = "application/x-ndjson"

# The 409s the server documents as "retry after Retry-After" (docs/errors.md).
RETRYABLE_CODES: Final = frozenset({"idempotency_key_in_use", "min_version_unavailable"})
RETRYABLE_STATUSES: Final = frozenset({429, 503})


def retryable(response: httpx.Response) -> bool:
    """Whether the JSON API's answer is worth sending again: 429, 503 and the two
    retryable 409s; never another 4xx (the same request would fail the same way)."""
    if response.status_code in RETRYABLE_STATUSES:
        return True
    if response.status_code != 409:
        return False
    try:
        code = json.loads(response.content).get("code")
    except (ValueError, AttributeError):
        return False
    return code in RETRYABLE_CODES


# -- results ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Document:
    """A document as the server returned it, with what the read promised."""

    collection: str
    id: str
    version: int
    data: dict[str, Any]
    created_at: str
    updated_at: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    """``{version, cachedAt, maxAgeSeconds, consistency, source}`` (a listed document: none)."""
    cache_status: str = ""
    """The ``Cache-Status`` header (RFC 9211), e.g. ``maxage; hit; detail=l1``."""
    age: int = 0
    """The ``Age`` header: seconds since the answer was known current."""
    replayed: bool = False
    """A write answered from its stored first outcome (``Idempotent-Replayed: true``)."""

    @property
    def etag(self) -> str:
        return f'"{self.version}"'

    @property
    def consistency(self) -> str:
        return str(self.meta.get("consistency", ""))

    @property
    def source(self) -> str:
        return str(self.meta.get("source", ""))


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: ``items``, the token of the next page (``""``: the last) and the
    whole response body (``body``: ``meta`` and any member a list query adds)."""

    items: list[Document]
    next_page_token: str
    body: Mapping[str, Any]

    @property
    def meta(self) -> Mapping[str, Any]:
        """``{collectionVersion, cachedAt, consistency, source, ...}``."""
        m = self.body.get("meta")
        return m if isinstance(m, dict) else {}

    @property
    def total(self) -> int | None:
        """How many documents match the whole query (asked for with ``count="exact"``)."""
        t = self.body.get("total")
        return t if isinstance(t, int) else None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One operation's outcome in a batch: what its single write would have answered."""

    op: str
    status: int
    id: str
    version: int
    document: Document | None
    """The document as written (``None`` for a delete)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One committed change of the change feed; resume after ``cursor``."""

    cursor: str
    id: str
    version: int
    op: str
    committed_at: str
    data: Any = None
    """The document at that version (``include="doc"``; ``None`` for a delete)."""


# -- requests and answers (shared by both clients) ---------------------------------------


def _path(collection: str, id: str | None = None) -> str:
    if not collection or "/" in collection:
        raise ValueError(f"not a collection name: {collection!r}")
    base = "/v1/" + quote(collection, safe="")
    if id is None:
        return base
    if not id:
        raise ValueError("a document id must not be empty")
    return base + "/" + quote(id, safe="")


def _encode(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _query(
    params: Mapping[str, QueryValue] | None, extra: Mapping[str, QueryValue | None]
) -> httpx.QueryParams:
    """Query parameters as given (repeated for a list); ``True``/``False`` as ``true``/``false``;
    ``None`` values left out."""
    items: list[tuple[str, str | int | float | bool | None]] = []

    def one(v: str | int | float | bool) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    for source in (params or {}, extra):
        for key, value in source.items():
            if value is None:
                continue
            if isinstance(value, str | int | float | bool):
                items.append((key, one(value)))
            else:
                items.extend((key, one(v)) for v in value)
    return httpx.QueryParams(items)


def _if_match(expected_version: ExpectedVersion | None) -> dict[str, str]:
    if expected_version is None:
        return {}
    if expected_version == "*":
        return {"if-match": "*"}
    if isinstance(expected_version, bool) or not isinstance(expected_version, int):
        raise ValueError(f"expected_version is a version number or '*', not {expected_version!r}")
    return {"if-match": f'"{expected_version}"'}


def _write(
    method: str,
    path: str,
    body: object,
    content_type: str,
    headers: Mapping[str, str],
    idempotency_key: str | None,
) -> Prepared:
    """A write; with an ``Idempotency-Key`` (``""``: none) every attempt of it carries."""
    h = dict(headers)
    if idempotency_key:
        h["idempotency-key"] = idempotency_key
    content = None
    if body is not None:
        content = _encode(body)
        h["content-type"] = content_type
    return Prepared(method, path, headers=h, content=content, replayable=bool(idempotency_key))


def _pointer(field: str) -> str:
    """``field`` as a JSON pointer: as it is when it is one, else the top-level field."""
    if field.startswith("/"):
        return field
    return "/" + field.replace("~", "~0").replace("/", "~1")


def _document(collection: str, response: httpx.Response) -> Document:
    doc = json.loads(response.content)
    age = response.headers.get("age", "0")
    return Document(
        collection=collection,
        id=doc["id"],
        version=int(doc["version"]),
        data=doc["data"],
        created_at=doc.get("createdAt", ""),
        updated_at=doc.get("updatedAt", ""),
        meta=doc.get("meta") or {},
        cache_status=response.headers.get("cache-status", ""),
        age=int(age) if age.isdigit() else 0,
        replayed=response.headers.get("idempotent-replayed") == "true",
    )


def _listed(collection: str, doc: Mapping[str, Any]) -> Document:
    return Document(
        collection=collection,
        id=doc["id"],
        version=int(doc["version"]),
        data=doc.get("data") or {},
        created_at=doc.get("createdAt", ""),
        updated_at=doc.get("updatedAt", ""),
    )


def _page(collection: str, response: httpx.Response) -> Page:
    body = json.loads(response.content)
    items = [_listed(collection, d) for d in body.get("data") or ()]
    return Page(items, str(body.get("next_page_token") or ""), body)


def _etag_version(response: httpx.Response) -> int:
    etag = response.headers.get("etag", "").removeprefix("W/").strip('"')
    return int(etag) if etag.isdigit() else 0


def _change(line: bytes) -> Change:
    c = json.loads(line)
    return Change(
        str(c["cursor"]),
        c["id"],
        int(c["version"]),
        c["op"],
        c.get("committedAt", ""),
        c.get("data"),
    )


def _changes_request(
    after: str | None,
    limit: int | None,
    follow: bool,
    consumer: str | None,
    params: Mapping[str, QueryValue] | None,
) -> httpx.QueryParams:
    extra: dict[str, QueryValue | None] = {"after": after, "limit": limit, "consumer": consumer}
    extra["follow"] = True if follow else None
    return _query(params, extra)


def _batch_results(collection: str, response: httpx.Response) -> list[BatchResult]:
    out = []
    for r in json.loads(response.content)["results"]:
        doc = None
        if "data" in r:
            doc = Document(
                collection, r["id"], int(r["version"]), r["data"],
                r.get("createdAt", ""), r.get("updatedAt", ""),
            )  # fmt: skip
        out.append(BatchResult(r["op"], int(r["status"]), r["id"], int(r["version"]), doc))
    return out


def _read_mode_fallback(exc: APIError) -> bool:
    """A session read refused because the collection allows no session reads, but does allow
    strong ones: those are at least as new (P3 implies P4), so the read is made strong."""
    allowed = exc.problem.get("allowed_modes")
    return (
        exc.code == "read_mode_not_allowed"
        and isinstance(allowed, list)
        and "session" not in allowed
        and "strong" in allowed
    )


class _Base:
    """What both clients share: configuration, the session, the read plan."""

    def __init__(
        self,
        *,
        timeout: float,
        retry: RetryPolicy | None,
        session: Session | None,
        on_retry: OnRetry | None,
    ) -> None:
        self.session = session if session is not None else Session()
        self.caller = Caller(timeout, retry or RetryPolicy(), retryable, on_retry)
        self._strong_only: set[str] = set()  # collections where session reads become strong
        self._write_back: set[str] = set()  # collections that refuse Idempotency-Key

    def _write_request(
        self,
        collection: str,
        method: str,
        path: str,
        body: object,
        content_type: str,
        headers: Mapping[str, str],
        idempotency_key: str | None,
    ) -> Prepared:
        """The write, with a new ``Idempotency-Key`` unless given, or unless the collection
        is write-back (acknowledged before it commits, it honours none)."""
        if idempotency_key is None:
            idempotency_key = "" if collection in self._write_back else uuid.uuid4().hex
        return _write(method, path, body, content_type, headers, idempotency_key)

    def _without_key(
        self, collection: str, exc: APIError, headers: Mapping[str, str], key: str | None
    ) -> bool:
        """Whether a write refused as ``write_back_unsupported`` is sent again without the
        key the client added (its caller asked for no key and no precondition: those are
        the caller's to drop). The refusal applied nothing, so resending cannot apply twice."""
        if exc.code != "write_back_unsupported" or key is not None or headers:
            return False
        self._write_back.add(collection)
        return True

    def _read(
        self, collection: str, id: str, consistency: ReadMode | None, min_version: int | None
    ) -> Prepared:
        floor = max(min_version or 0, self.session.min_version(collection, id))
        params: dict[str, str] = {}
        if consistency in ("strong", "bounded"):
            params["consistency"] = consistency
        elif floor and collection in self._strong_only:
            params["consistency"] = "strong"  # no session reads here; strong ones are as new
        elif floor:
            params["min_version"] = str(floor)
        elif consistency == "session":
            params["consistency"] = "session"
        return Prepared("GET", _path(collection, id), params=httpx.QueryParams(params))

    def _answer(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise api_error(response)
        return response

    def _remember(self, doc: Document) -> Document:
        self.session.record(doc.collection, doc.id, doc.version)
        return doc


def _transport_error(exc: httpx.HTTPError) -> APIError:
    return ConnectionFailed(0, "unavailable", f"{type(exc).__name__}: {exc}")


def _deadline_error(exc: DeadlinePassed) -> APIError:
    why = f" (last: {type(exc.cause).__name__}: {exc.cause})" if exc.cause else ""
    return DeadlineExceeded(0, "deadline_exceeded", "the call's deadline passed" + why)


# -- sync -------------------------------------------------------------------------------


class Client(_Base):
    """Synchronous client of ``maxage serve``. Thread-safe; use as a context manager.

    ``timeout`` is each call's deadline in seconds (retries included); ``retry`` says how
    often and how long to back off; ``session`` (a fresh one unless given) carries
    read-your-writes; ``on_retry(n, delay, reason)`` is told about every retry."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        session: Session | None = None,
        on_retry: OnRetry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(timeout=timeout, retry=retry, session=session, on_retry=on_retry)
        self._http = httpx.Client(
            base_url=base_url,
            headers={**(headers or {}), **bearer(api_key)},
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def collection(self, name: str) -> Collection:
        _path(name)
        return Collection(self, name)

    def send(self, prepared: Prepared, timeout: float | None = None) -> httpx.Response:
        """Send one request under the retry policy and deadline; typed problems on errors."""
        try:
            return self._answer(self.caller.send(self._http, prepared, timeout))
        except DeadlinePassed as exc:
            raise _deadline_error(exc) from exc.cause
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Collection:
    """The documents of one collection, through a :class:`Client`."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name

    def get(
        self,
        id: str,
        *,
        consistency: ReadMode | None = None,
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> Document:
        """Read a document. By default a session read when the session knows a version of
        it (``min_version``), else the collection's default mode; ``consistency`` asks for
        ``bounded``, ``strong`` or ``session`` explicitly. Raises :class:`NotFound`."""
        c = self.client
        try:
            r = c.send(c._read(self.name, id, consistency, min_version), timeout)
        except APIError as exc:
            if consistency == "strong" or not _read_mode_fallback(exc):
                raise
            c._strong_only.add(self.name)
            r = c.send(c._read(self.name, id, "strong", None), timeout)
        return c._remember(_document(self.name, r))

    def create(
        self,
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        """``POST``: a new document with an id the server chooses."""
        r = self._send_write("POST", None, data, JSON_TYPE, {}, idempotency_key, timeout)
        return self.client._remember(_document(self.name, r))

    def put(
        self,
        id: str,
        data: Mapping[str, Any],
        *,
        expected_version: ExpectedVersion | None = None,
        create_only: bool = False,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        """``PUT``: create or replace. ``expected_version`` replaces only that version
        (``If-Match``; 412 :class:`PreconditionFailed` otherwise); ``create_only`` only creates."""
        headers = _if_match(expected_version)
        if create_only:
            headers["if-none-match"] = "*"
        r = self._send_write("PUT", id, data, JSON_TYPE, headers, idempotency_key, timeout)
        return self.client._remember(_document(self.name, r))

    def update(
        self,
        id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        """``PATCH`` with a JSON merge patch (RFC 7396: ``None`` removes a field). With
        ``expected_version`` it applies only to that version (a conditional update)."""
        headers = _if_match(expected_version)
        r = self._send_write(
            "PATCH", id, patch, MERGE_PATCH_TYPE, headers, idempotency_key, timeout
        )
        return self.client._remember(_document(self.name, r))

    def delete(
        self,
        id: str,
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> int:
        """``DELETE``; returns the version the delete committed as."""
        headers = _if_match(expected_version)
        r = self._send_write("DELETE", id, None, "", headers, idempotency_key, timeout)
        version = _etag_version(r)
        self.client.session.record(self.name, id, version)
        return version

    def _send_write(
        self,
        method: str,
        id: str | None,
        body: object,
        content_type: str,
        headers: Mapping[str, str],
        idempotency_key: str | None,
        timeout: float | None,
        suffix: str = "",
    ) -> httpx.Response:
        c = self.client
        path = _path(self.name, id) + suffix
        args = (self.name, method, path, body, content_type, headers, idempotency_key)
        try:
            return c.send(c._write_request(*args), timeout)
        except APIError as exc:
            if not c._without_key(self.name, exc, headers, idempotency_key):
                raise
            return c.send(c._write_request(*args), timeout)

    def increment(
        self,
        id: str,
        field: str,
        by: int | float = 1,
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        """``POST /v1/{collection}/{id}:increment``: add ``by`` to ``field`` (a top-level
        field name or a JSON pointer) atomically; increments from any number of clients sum
        exactly. On a write-back collection the answer is acknowledged from the server's
        buffer (``consistency == "write-back"``) and sent without an idempotency key."""
        body = {"field": _pointer(field), "by": by}
        headers = _if_match(expected_version)
        r = self._send_write(
            "POST", id, body, JSON_TYPE, headers, idempotency_key, timeout, ":increment"
        )
        return self.client._remember(_document(self.name, r))

    def batch(
        self,
        operations: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> list[BatchResult]:
        """``POST /v1/{collection}:batch``: the operations (``{"op": "create" | "replace" |
        "patch" | "delete", "id", "data", "if_match"}``) commit together, in order, or none
        does (the refused operation's problem, with ``operation`` its index)."""
        body = {"operations": list(operations)}
        r = self._send_write("POST", None, body, JSON_TYPE, {}, idempotency_key, timeout, ":batch")
        results = _batch_results(self.name, r)
        for res in results:
            self.client.session.record(self.name, res.id, res.version)
        return results

    def ack(self, consumer: str, cursor: str, *, timeout: float | None = None) -> None:
        """Acknowledge that ``consumer`` processed everything up to ``cursor`` (a cursor it
        was sent); it resumes after it. Safe to retry: positions only rise."""
        body = _encode({"consumer": consumer, "cursor": cursor})
        p = Prepared(
            "POST",
            _path(self.name) + "/changes/ack",
            headers={"content-type": JSON_TYPE},
            content=body,
        )
        self.client.send(p, timeout)

    def list(
        self,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> Page:
        """One page. ``params`` and keyword arguments are sent as query parameters as they
        are (filters, sort, fields...: whatever the server's lists accept)."""
        q = _query(params, {"page_size": page_size, "page_token": page_token, **query})
        r = self.client.send(Prepared("GET", _path(self.name), params=q), timeout)
        return _page(self.name, r)

    def pages(
        self,
        *,
        page_size: int | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> Iterator[Page]:
        """Every page, following ``next_page_token`` until it is empty."""
        token: str | None = None
        while True:
            page = self.list(
                page_size=page_size, page_token=token, params=params, timeout=timeout, **query
            )
            yield page
            if not page.next_page_token:
                return
            token = page.next_page_token

    def documents(
        self,
        *,
        page_size: int | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> Iterator[Document]:
        """Every document of every page, in the list's order."""
        for page in self.pages(page_size=page_size, params=params, timeout=timeout, **query):
            yield from page.items

    def changes(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        follow: bool = False,
        consumer: str | None = None,
        params: Mapping[str, QueryValue] | None = None,
    ) -> Iterator[Change]:
        """The change feed (NDJSON) after ``after``; with ``follow`` it waits for new changes
        until the caller stops iterating. Not retried: resume after the last ``cursor``.
        ``consumer`` reads as a named consumer from the position the server keeps for it
        (acknowledge with :meth:`ack`, or ``params={"ack": "auto"}``); ``params`` adds any
        other parameter of the feed (``{"include": "doc"}``: each change with its document)."""
        c = self.client
        query = _changes_request(after, limit, follow, consumer, params)
        headers = {"accept": NDJSON_TYPE}
        timeout = None if follow else httpx.USE_CLIENT_DEFAULT
        try:
            with c._http.stream(
                "GET",
                _path(self.name) + "/changes",
                params=query,
                headers=headers,
                timeout=timeout,
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise api_error(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield _change(line.encode())
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc


# -- async ------------------------------------------------------------------------------


class AsyncClient(_Base):
    """:class:`Client` for asyncio (httpx.AsyncClient); use as an async context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        session: Session | None = None,
        on_retry: OnRetry | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(timeout=timeout, retry=retry, session=session, on_retry=on_retry)
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={**(headers or {}), **bearer(api_key)},
            timeout=timeout,
            transport=transport,
            trust_env=False,
        )

    def collection(self, name: str) -> AsyncCollection:
        _path(name)
        return AsyncCollection(self, name)

    async def send(self, prepared: Prepared, timeout: float | None = None) -> httpx.Response:
        try:
            return self._answer(await self.caller.asend(self._http, prepared, timeout))
        except DeadlinePassed as exc:
            raise _deadline_error(exc) from exc.cause
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncCollection:
    """:class:`Collection` for :class:`AsyncClient`: the same methods, awaited."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.client = client
        self.name = name

    async def get(
        self,
        id: str,
        *,
        consistency: ReadMode | None = None,
        min_version: int | None = None,
        timeout: float | None = None,
    ) -> Document:
        c = self.client
        try:
            r = await c.send(c._read(self.name, id, consistency, min_version), timeout)
        except APIError as exc:
            if consistency == "strong" or not _read_mode_fallback(exc):
                raise
            c._strong_only.add(self.name)
            r = await c.send(c._read(self.name, id, "strong", None), timeout)
        return c._remember(_document(self.name, r))

    async def create(
        self,
        data: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        r = await self._send_write("POST", None, data, JSON_TYPE, {}, idempotency_key, timeout)
        return self.client._remember(_document(self.name, r))

    async def put(
        self,
        id: str,
        data: Mapping[str, Any],
        *,
        expected_version: ExpectedVersion | None = None,
        create_only: bool = False,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        headers = _if_match(expected_version)
        if create_only:
            headers["if-none-match"] = "*"
        r = await self._send_write("PUT", id, data, JSON_TYPE, headers, idempotency_key, timeout)
        return self.client._remember(_document(self.name, r))

    async def update(
        self,
        id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        headers = _if_match(expected_version)
        r = await self._send_write(
            "PATCH", id, patch, MERGE_PATCH_TYPE, headers, idempotency_key, timeout
        )
        return self.client._remember(_document(self.name, r))

    async def delete(
        self,
        id: str,
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> int:
        headers = _if_match(expected_version)
        r = await self._send_write("DELETE", id, None, "", headers, idempotency_key, timeout)
        version = _etag_version(r)
        self.client.session.record(self.name, id, version)
        return version

    async def _send_write(
        self,
        method: str,
        id: str | None,
        body: object,
        content_type: str,
        headers: Mapping[str, str],
        idempotency_key: str | None,
        timeout: float | None,
        suffix: str = "",
    ) -> httpx.Response:
        c = self.client
        path = _path(self.name, id) + suffix
        args = (self.name, method, path, body, content_type, headers, idempotency_key)
        try:
            return await c.send(c._write_request(*args), timeout)
        except APIError as exc:
            if not c._without_key(self.name, exc, headers, idempotency_key):
                raise
            return await c.send(c._write_request(*args), timeout)

    async def increment(
        self,
        id: str,
        field: str,
        by: int | float = 1,
        *,
        expected_version: ExpectedVersion | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Document:
        """``POST /v1/{collection}/{id}:increment``: add ``by`` to ``field`` (a top-level
        field name or a JSON pointer) atomically; increments from any number of clients sum
        exactly. On a write-back collection the answer is acknowledged from the server's
        buffer (``consistency == "write-back"``) and sent without an idempotency key."""
        body = {"field": _pointer(field), "by": by}
        headers = _if_match(expected_version)
        r = await self._send_write(
            "POST", id, body, JSON_TYPE, headers, idempotency_key, timeout, ":increment"
        )
        return self.client._remember(_document(self.name, r))

    async def batch(
        self,
        operations: Sequence[Mapping[str, Any]],
        *,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> list[BatchResult]:
        """``POST /v1/{collection}:batch``: the operations (``{"op": "create" | "replace" |
        "patch" | "delete", "id", "data", "if_match"}``) commit together, in order, or none
        does (the refused operation's problem, with ``operation`` its index)."""
        body = {"operations": list(operations)}
        r = await self._send_write(
            "POST", None, body, JSON_TYPE, {}, idempotency_key, timeout, ":batch"
        )
        results = _batch_results(self.name, r)
        for res in results:
            self.client.session.record(self.name, res.id, res.version)
        return results

    async def ack(self, consumer: str, cursor: str, *, timeout: float | None = None) -> None:
        """Acknowledge that ``consumer`` processed everything up to ``cursor`` (a cursor it
        was sent); it resumes after it. Safe to retry: positions only rise."""
        body = _encode({"consumer": consumer, "cursor": cursor})
        p = Prepared(
            "POST",
            _path(self.name) + "/changes/ack",
            headers={"content-type": JSON_TYPE},
            content=body,
        )
        await self.client.send(p, timeout)

    async def list(
        self,
        *,
        page_size: int | None = None,
        page_token: str | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> Page:
        q = _query(params, {"page_size": page_size, "page_token": page_token, **query})
        r = await self.client.send(Prepared("GET", _path(self.name), params=q), timeout)
        return _page(self.name, r)

    async def pages(
        self,
        *,
        page_size: int | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> AsyncIterator[Page]:
        token: str | None = None
        while True:
            page = await self.list(
                page_size=page_size, page_token=token, params=params, timeout=timeout, **query
            )
            yield page
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def documents(
        self,
        *,
        page_size: int | None = None,
        params: Mapping[str, QueryValue] | None = None,
        timeout: float | None = None,
        **query: QueryValue,
    ) -> AsyncIterator[Document]:
        async for page in self.pages(page_size=page_size, params=params, timeout=timeout, **query):
            for doc in page.items:
                yield doc

    async def changes(
        self,
        *,
        after: str | None = None,
        limit: int | None = None,
        follow: bool = False,
        consumer: str | None = None,
        params: Mapping[str, QueryValue] | None = None,
    ) -> AsyncIterator[Change]:
        c = self.client
        query = _changes_request(after, limit, follow, consumer, params)
        headers = {"accept": NDJSON_TYPE}
        timeout = None if follow else httpx.USE_CLIENT_DEFAULT
        try:
            async with c._http.stream(
                "GET",
                _path(self.name) + "/changes",
                params=query,
                headers=headers,
                timeout=timeout,
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise api_error(r)
                async for line in r.aiter_lines():
                    if line.strip():
                        yield _change(line.encode())
        except httpx.HTTPError as exc:
            raise _transport_error(exc) from exc
