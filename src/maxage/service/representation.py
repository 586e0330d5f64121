"""Every response body of the API, ``meta`` included, is built here and nowhere else.

Invariant (P0): a read body is ``prefix + suffix`` where the prefix is the
document at exactly one version, encoded once when the document is loaded and
then stored in the caches as bytes, and the suffix is the per-request tail of
``meta`` (remaining budget, mode, source). Nothing on a cache hit encodes JSON.

Shapes::

    read     {"id","version","createdAt","updatedAt","data",
              "meta":{"version","cachedAt","maxAgeSeconds","consistency","source"}}
    write    the same, with meta.consistency "strong" and source "primary"
    list     {"data":[document...],"next_page_token",["total",]
              "meta":{"collectionVersion","cachedAt","shortened",
                      "maxAgeSeconds","consistency","source"}}
    batch    {"results":[{"op","status","id","version"[,"createdAt","updatedAt","data"]},...]}
    change   {"cursor","id","version","op","committedAt"[,"data"]}   (one NDJSON line / SSE
             event; "data" with include=doc: the body at that version, null for a delete)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from maxage.contracts import CollectionSpec
from maxage.store.base import Change, Document, StoredResponse, WriteResult

_encode = msgspec.json.Encoder().encode

# Suffixes are few (budget x mode x source); more than this means a bug, not a workload.
_SUFFIX_CACHE_LIMIT = 4096
_suffixes: dict[tuple[int, str, str], bytes] = {}


# iso(): "YYYY-MM-DDTHH:MM:SS" by whole second; a few distinct seconds are live at a time.
_ISO_SECONDS_LIMIT = 4096
_iso_seconds: dict[int, str] = {}
_last_iso: tuple[float, str] = (float("nan"), "")


def iso(ts: float) -> str:
    """``ts`` as ISO 8601 in UTC with milliseconds (``2026-01-02T03:04:05.678Z``): what
    ``datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")`` gives, with
    the same rounding to microseconds (half to even, then truncated to milliseconds),
    formatting each whole second once, and the same ``ts`` as last time not at all (a
    created document's createdAt, updatedAt and cachedAt are one time; measured in
    docs/benchmarks.md)."""
    global _last_iso
    last = _last_iso
    if last[0] == ts:
        return last[1]
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    second = int(whole)
    head = _iso_seconds.get(second)
    if head is None:
        head = datetime.fromtimestamp(second, UTC).isoformat()[:19]
        if len(_iso_seconds) >= _ISO_SECONDS_LIMIT:
            _iso_seconds.clear()
        _iso_seconds[second] = head
    text = f"{head}.{micros // 1000:03d}Z"
    _last_iso = (ts, text)  # one assignment: a reader in another thread sees a whole pair
    return text


# The last document rendered (a write renders its document twice: for the caches and
# for the response). Documents are immutable, so the same object renders the same bytes.
_last_document: tuple[Document | None, bytes] = (None, b"")


def document(doc: Document) -> bytes:
    """The document part of a response, open at the end: ``{"id",...,"data":...``."""
    global _last_document
    last = _last_document
    if last[0] is doc:
        return last[1]
    rendered = b'{"id":%s,"version":%d,"createdAt":"%s","updatedAt":"%s","data":%s' % (
        _encode(doc.id),
        doc.version,
        iso(doc.created_at).encode(),
        iso(doc.updated_at).encode(),
        doc.data,
    )
    _last_document = (doc, rendered)
    return rendered


def read_prefix(doc: Document, known_at: float) -> bytes:
    """A read body up to the per-request part of ``meta`` (what the caches hold)."""
    return document(doc) + b',"meta":{"version":%d,"cachedAt":"%s",' % (
        doc.version,
        iso(known_at).encode(),
    )


def read_suffix(budget: int, mode: str, source: str) -> bytes:
    """The per-request tail of ``meta``; memoised (few distinct values)."""
    key = (budget, mode, source)
    suffix = _suffixes.get(key)
    if suffix is None:
        suffix = b'"maxAgeSeconds":%d,"consistency":"%s","source":"%s"}}' % (
            budget,
            mode.encode(),
            source.encode(),
        )
        if len(_suffixes) < _SUFFIX_CACHE_LIMIT:
            _suffixes[key] = suffix
    return suffix


def hot_suffixes(bound: float) -> list[bytes]:
    """``read_suffix(b, "bounded", "l1")`` for every budget ``b`` in 0..bound (the hot path)."""
    return [read_suffix(b, "bounded", "l1") for b in range(int(bound) + 1)]


def write_response(spec: CollectionSpec, result: WriteResult, status: int) -> StoredResponse:
    """The response to a committed write (also what an idempotent replay returns)."""
    doc = result.document
    headers: list[tuple[str, str]] = [("etag", f'"{doc.version}"')]
    if status == 204:
        return StoredResponse(status, tuple(headers), b"")
    if status == 201:
        headers.append(("location", f"/v1/{spec.name}/{doc.id}"))
    body = document(doc) + (
        b',"meta":{"version":%d,"cachedAt":"%s","maxAgeSeconds":%d,'
        b'"consistency":"strong","source":"primary"}}'
        % (doc.version, iso(doc.updated_at).encode(), int(spec.max_staleness))
    )
    headers.append(("content-type", "application/json"))
    return StoredResponse(status, tuple(headers), body)


def batch_response(results: Sequence[tuple[str, int, WriteResult]]) -> StoredResponse:
    """The response to a committed batch: per operation ``(op, status, result)``, in order,
    the status its single write would have had and the document it left (for a delete,
    its id and the version the delete is)."""
    parts = []
    for op, status, result in results:
        doc = result.document
        head = b'{"op":"%s","status":%d,' % (op.encode(), status)
        if status == 204:
            parts.append(head + b'"id":%s,"version":%d}' % (_encode(doc.id), doc.version))
        else:
            parts.append(head + document(doc)[1:] + b"}")
    body = b'{"results":[' + b",".join(parts) + b"]}"
    return StoredResponse(200, (("content-type", "application/json"),), body)


def buffered(base: Document, data: bytes, pending: int, known_at: float, flush_by: float) -> bytes:
    """A write-back answer: ``base`` (the primary's document, current at ``known_at``) with
    this process's buffered writes applied (``data``). Its ``version`` is the base's: the
    body is no committed version, so it carries ``meta.consistency = "write-back"``, the
    number of buffered writes and when their flush starts at the latest."""
    shown = Document(base.collection, base.id, base.version, data, base.created_at, base.updated_at)
    flush = b'"%s"' % iso(flush_by).encode() if flush_by != float("inf") else b"null"
    return document(shown) + (
        b',"meta":{"version":%d,"cachedAt":"%s","maxAgeSeconds":0,"consistency":"write-back",'
        b'"source":"buffer","pendingWrites":%d,"flushBy":%s}}'
        % (base.version, iso(known_at).encode(), pending, flush)
    )


def list_prefix(
    docs: Sequence[Document],
    next_token: str,
    total: int | None,
    version: int,
    read_at: float,
    shortened: bool = False,
    fields: Sequence[str] | None = None,
) -> bytes:
    """A list body up to the per-request tail of ``meta`` (:func:`read_suffix`), as the
    in-process cache holds it. ``fields``: only those top-level data fields of each
    document. ``meta.shortened``: the page holds fewer documents than asked for because
    their size reached the page's byte budget (follow ``next_page_token`` for the rest)."""
    if fields is None:
        items = [document(d) + b"}" for d in docs]
    else:
        items = []
        for d in docs:
            data = msgspec.json.decode(d.data)
            picked = {f: data[f] for f in fields if f in data}
            items.append(document(Document(d.collection, d.id, d.version, _encode(picked),
                                           d.created_at, d.updated_at)) + b"}")  # fmt: skip
    count = b"" if total is None else b',"total":%d' % total
    return (
        b'{"data":['
        + b",".join(items)
        + b'],"next_page_token":%s%s,"meta":{"collectionVersion":%d,"cachedAt":"%s",'
        b'"shortened":%s,'
        % (
            _encode(next_token),
            count,
            version,
            iso(read_at).encode(),
            b"true" if shortened else b"false",
        )
    )


def change(c: Change) -> bytes:
    return _encode(
        {
            "cursor": str(c.seq),
            "id": c.id,
            "version": c.version,
            "op": c.op.value,
            "committedAt": iso(c.committed_at),
        }
    )


def change_with_data(c: Change, data: bytes | None) -> bytes:
    """:func:`change` with ``"data"``: the document's body at that version (null for a
    delete, or for a put recorded before change rows kept bodies whose document has
    changed since)."""
    return change(c)[:-1] + b',"data":%s}' % (data if data is not None else b"null")
