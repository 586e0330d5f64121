"""List reads: the query grammar, keyset pages with tamper-evident tokens, and cached
pages under the contract.

**Grammar** (``GET /v1/{collection}?…``; the API hands every parameter but
``consistency``/``min_version`` to :meth:`Listing.parse`): ``FIELD=[OP.]VALUE`` with
``OP`` one of ``eq`` (the default), ``ne``, ``lt``, ``lte``, ``gt``, ``gte``,
``in.(v1,v2,…)`` (items may be double-quoted to hold commas), ``prefix`` (string
indexes); ``FIELD`` a declared index (``CollectionSpec.indexes``, nested ones dotted:
``author.id``); values parsed by the index's schema type, so comparison is typed.
``sort=[-]FIELD`` (an index, or ``id``), ``fields=a,b`` (top-level data fields),
``count=exact`` (adds ``total``), ``page_size``, ``page_token``. Anything else is a
400 naming the parameter: no query is a full scan.

**Pages.** Keyset on ``(sort value, id)``: a page token is
``base64url(mac16 || [2, collection, query digest, sort value, id])`` (HMAC-SHA256
under a secret every process shares), so it cannot be forged, and it is refused with
another collection, other conditions or another sort (``fields``, ``count`` and
``page_size`` may change between pages). Concurrent inserts never shift a page.

**Cached pages** (P2, P3, P4 for lists). A page is cached in L1 only, under a key
holding the collection's *generation*: a per-process counter the L1 holder raises
whenever the tailer applies a change of the collection
(:class:`maxage.invalidation.tailer.Generations`). The generation is read before the
primary read that produces a page, and a page is looked up under the current
generation with the one bounded-read rule (:meth:`Reads.l1`: the holder within ``S``
of its watermark, the entry's collection version at least ``min_version``). Why
that keeps P2: let the read start at ``t``, with ``watermark >= t - S``. Every change
of the collection committed before ``t - S`` was applied, raising the generation,
before the watermark moved; the entry's generation is the current one, so all those
raises came before its primary read began, which therefore saw every such commit.
A miss loads through single-flight (one primary read per page at a time in a
process); a joined load that started more than ``S`` before this read, or below its
``min_version``, is not used. Strong reads always read the primary themselves. ``meta.collectionVersion`` is the highest
change-log position of the collection the page's snapshot holds; a session read
(``min_version=N``) never returns a page below ``N``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from maxage.contracts import CollectionSpec, IndexSpec, ReadMode
from maxage.core.singleflight import SingleFlight
from maxage.core.types import Clock
from maxage.invalidation.tailer import Generations
from maxage.service import representation
from maxage.service.errors import InvalidPageToken, InvalidParameter, MinVersionUnavailable
from maxage.service.reads import LAGGING, ReadResult, Reads, Source, freshness
from maxage.store.base import (
    MAX_INDEXED_CHARS,
    Condition,
    Document,
    ListQuery,
    ListResult,
    Op,
    Scalar,
    Store,
    index_value,
)

_encode = msgspec.json.Encoder().encode
_MAC_BYTES = 16
# A page stops before its documents' data passes this many bytes (at least one document
# per page): a page of 100 one-megabyte documents would be built in memory otherwise.
PAGE_BYTES = 4 * 1024 * 1024
_TOKEN_VERSION = 2
_ID_TOKEN_VERSION = 1  # tokens of id-ordered pages issued before list queries existed
MAX_IN_VALUES = 100
MAX_VALUE_CHARS = MAX_INDEXED_CHARS  # a longer string is never indexed: it matches nothing
MAX_FIELDS = 64
_OP = re.compile(r"^(eq|ne|lt|lte|gt|gte|in|prefix)\.(.*)$", re.DOTALL)
_INTEGER = re.compile(r"^-?(0|[1-9][0-9]{0,18})$")
_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
_INT64 = 2**63


@dataclass(frozen=True, slots=True)
class LoadedPage:
    prefix: bytes  # the body up to the per-request tail of meta
    version: int  # the collection version of its snapshot
    started: float  # when its primary read started


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A parsed list read: what to read (``query`` without its keyset position and
    size) and how to render it."""

    conditions: tuple[Condition, ...] = ()
    sort: IndexSpec | None = None
    descending: bool = False
    fields: tuple[str, ...] | None = None
    count: bool = False
    size: int | None = None
    token: str = ""

    @property
    def digest(self) -> str:
        """What a page token is bound to: the conditions and the order."""
        shape = [
            [[c.index.name, c.index.type, c.op.value, list(c.values)] for c in self.conditions],
            None if self.sort is None else [self.sort.name, self.sort.type],
            self.descending,
        ]
        return hashlib.sha256(_encode(shape)).hexdigest()[:24]


def _fail(parameter: str, detail: str) -> InvalidParameter:
    return InvalidParameter(detail, parameter=parameter)


def _scalar(index: IndexSpec, text: str) -> Scalar:
    """A query value as the index's type (the one typed comparison)."""
    name = index.name
    if len(text) > MAX_VALUE_CHARS:
        raise _fail(name, f"{name}: a value is at most {MAX_VALUE_CHARS} characters")
    if "\x00" in text:
        raise _fail(name, f"{name}: a value cannot contain the NUL character")
    if index.type == "string":
        return text
    if index.type == "boolean":
        if text not in ("true", "false"):
            raise _fail(name, f"{name} is a boolean: the value must be true or false")
        return text == "true"
    if index.type == "integer":
        if not _INTEGER.match(text) or not -_INT64 <= int(text) < _INT64:
            raise _fail(name, f"{name} is an integer: {text!r} is not one (64-bit range)")
        return int(text)
    if not _NUMBER.match(text):
        raise _fail(name, f"{name} is a number: {text!r} is not a JSON number")
    if _INTEGER.match(text):
        return int(text)
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _fail(name, f"{name}: {text!r} is out of range")
    return value


def _in_items(name: str, text: str) -> list[str]:
    """``(a,b,"c,d")`` -> its items; a double-quoted item may hold ``,`` ``)`` and ``\\"``."""
    if not (text.startswith("(") and text.endswith(")")):
        raise _fail(name, f'{name}: in takes a list in parentheses, e.g. in.(a,b,"c,d")')
    body, items, i = text[1:-1], [], 0
    while True:
        if body[i : i + 1] == '"':
            j, out = i + 1, []
            while j < len(body) and body[j] != '"':
                if body[j] == "\\" and j + 1 < len(body):
                    j += 1
                out.append(body[j])
                j += 1
            if j >= len(body):
                raise _fail(name, f"{name}: an unterminated quoted item in the in list")
            items.append("".join(out))
            i = j + 1
            if i < len(body) and body[i] != ",":
                raise _fail(name, f"{name}: a quoted item must be followed by ',' or ')'")
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            items.append(body[i:j])
            i = j
        if i >= len(body):
            break
        i += 1  # the comma
    if items == [""]:
        raise _fail(name, f"{name}: the in list is empty")
    if len(items) > MAX_IN_VALUES:
        raise _fail(name, f"{name}: at most {MAX_IN_VALUES} values in an in list")
    return items


def parse_condition(index: IndexSpec, value: str) -> Condition:
    m = _OP.match(value)
    op, text = (Op(m.group(1)), m.group(2)) if m else (Op.EQ, value)
    if op is Op.IN:
        return Condition(index, op, tuple(_scalar(index, x) for x in _in_items(index.name, text)))
    if op is Op.PREFIX and index.type != "string":
        raise _fail(index.name, f"{index.name}: prefix applies to string fields only")
    return Condition(index, op, (_scalar(index, text),))


def _fields(spec: CollectionSpec, value: str) -> tuple[str, ...]:
    names = tuple(value.split(","))
    if not value or "" in names:
        raise _fail("fields", "fields is a comma-separated list of top-level data fields")
    if len(names) > MAX_FIELDS:
        raise _fail("fields", f"at most {MAX_FIELDS} fields")
    props = spec.schema.get("properties", {})
    if spec.schema.get("additionalProperties") is False:
        unknown = [n for n in names if n not in props]
        if unknown:
            raise _fail("fields", f"{unknown[0]!r} is not a field of {spec.name}")
    return names


class Listing:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        reads: Reads,
        generations: Generations,
        default_size: int,
        max_size: int,
    ) -> None:
        self.store = store
        self.clock = clock
        self.reads = reads
        self.generations = generations
        self.default_size = default_size
        self.max_size = max_size
        self.flights: SingleFlight[LoadedPage] = SingleFlight()
        self._secret = b""

    async def start(self) -> None:
        self._secret = await self.store.secret("page_token")

    # -- the grammar -------------------------------------------------------------------

    def parse(self, spec: CollectionSpec, items: Sequence[tuple[str, str]]) -> ListRequest:
        """A list read's parameters (every one but the read mode's) -> a request."""
        conditions: list[Condition] = []
        sort: IndexSpec | None = None
        descending = False
        fields: tuple[str, ...] | None = None
        count = False
        size: int | None = None
        token = ""
        for key, value in items:
            if key == "page_size":
                if not (value.isascii() and value.isdigit()) or len(value) > 18:
                    raise _fail("page_size", "page_size must be an integer")
                size = int(value)
            elif key == "page_token":
                token = value
            elif key == "sort":
                descending = value.startswith("-")
                name = value[1:] if descending else value
                if name != "id":
                    sort = spec.index(name)
                    if sort is None:
                        raise _fail("sort", self._undeclared(spec, name, "sort on"))
            elif key == "fields":
                fields = _fields(spec, value)
            elif key == "count":
                if value != "exact":
                    raise _fail("count", "count takes one value: exact")
                count = True
            else:
                index = spec.index(key)
                if index is None:
                    raise _fail(key, self._undeclared(spec, key, "filter on"))
                conditions.append(parse_condition(index, value))
        return ListRequest(tuple(conditions), sort, descending, fields, count, size, token)

    @staticmethod
    def _undeclared(spec: CollectionSpec, name: str, what: str) -> str:
        declared = ", ".join(i.name for i in spec.indexes) or "none"
        return (
            f"{name!r} is not an index of {spec.name}: list reads {what} declared indexes"
            f" only (indexes = [...] in the config; declared: {declared})"
        )

    # -- reads -------------------------------------------------------------------------

    async def read(
        self, spec: CollectionSpec, req: ListRequest, mode: ReadMode, min_version: int = 0
    ) -> ReadResult:
        """A page under the collection's contract (see the module docstring)."""
        size = self.default_size if req.size is None else req.size
        if size < 1:
            raise _fail("page_size", "page_size must be >= 1")
        size = min(size, self.max_size)
        after = self._open(spec.name, req) if req.token else None
        query = ListQuery(
            spec.name, req.conditions, req.sort, req.descending, after, size + 1, req.count
        )
        if mode is ReadMode.STRONG:
            self.reads.stats.bypasses["strong"] += 1
            return self._answer(spec, mode, "strong", await self._load(spec, req, query))
        started = self.clock.now()
        key = self._key(spec, req, query)
        # The cache's versions start at 1: an entry holds collection version + 1.
        hit = self.reads.l1(key, spec.max_staleness, min_version + 1, started, sample=False)
        detail = "miss"
        if hit is LAGGING:
            self.reads.stats.bypasses["lagging"] += 1
            detail = "lagging"
        elif hit is not None:
            entry, age, budget = hit
            return ReadResult(entry.body, entry.version - 1, Source.L1, mode, "hit", age, budget)
        else:
            self.reads.stats.misses += 1
        # One primary read per page at a time in this process; a joined load is used
        # only if it started within the bound of this read (the rule for documents too).
        loaded = await self.flights.do(
            key, lambda: self._load(spec, req, query), timeout=self.reads.load_timeout
        )
        if started - loaded.started > spec.max_staleness or loaded.version < min_version:
            loaded = await self._load(spec, req, query)
        result = self._answer(spec, mode, detail, loaded)
        if result.version < min_version:
            raise MinVersionUnavailable(
                f"version {min_version} of collection {spec.name} is not available "
                f"(the primary has {result.version})",
                min_version=min_version,
                current_version=result.version,
            )
        return result

    def _key(self, spec: CollectionSpec, req: ListRequest, query: ListQuery) -> str:
        """The L1 key of a page: the collection, its current generation, the whole request."""
        generation = self.generations.of(spec.name)
        shape = _encode([req.digest, req.fields, req.count, query.after, query.limit])
        return f"{spec.name}?{generation}?{hashlib.sha256(shape).hexdigest()[:32]}"

    async def _load(self, spec: CollectionSpec, req: ListRequest, query: ListQuery) -> LoadedPage:
        """A page from the primary, filled into L1 under the generation read before it."""
        key = self._key(spec, req, query)
        started = self.clock.now()
        result = await self.store.list_query(query)
        prefix = self._render(spec, req, query, result, started)
        self.reads.fill(spec, key, result.version + 1, prefix, started, shared=False)
        return LoadedPage(prefix, result.version, started)

    def _answer(
        self, spec: CollectionSpec, mode: ReadMode, detail: str, page: LoadedPage
    ) -> ReadResult:
        bound = 0.0 if mode is ReadMode.STRONG else spec.max_staleness
        age, budget = freshness(self.clock.now(), page.started, page.started, bound)
        return ReadResult(page.prefix, page.version, Source.PRIMARY, mode, detail, age, budget)

    def _render(
        self,
        spec: CollectionSpec,
        req: ListRequest,
        query: ListQuery,
        result: ListResult,
        started: float,
    ) -> bytes:
        size = query.limit - 1
        docs: list[Document] = result.documents
        more = len(docs) > size
        docs = docs[:size]
        total_bytes = 0
        shortened = False
        for i, d in enumerate(docs):
            total_bytes += len(d.data)
            if total_bytes > PAGE_BYTES and i > 0:
                docs, more, shortened = docs[:i], True, True
                break
        token = ""
        if more and docs:
            last = docs[-1]
            value = None
            if req.sort is not None:
                value = index_value(msgspec.json.decode(last.data), req.sort)
            token = self._seal([_TOKEN_VERSION, spec.name, req.digest, value, last.id])
        return representation.list_prefix(
            docs, token, result.total, result.version, started, shortened, req.fields
        )

    # -- page tokens -------------------------------------------------------------------

    def _seal(self, payload: list[object]) -> str:
        raw = _encode(payload)
        mac = hmac.new(self._secret, raw, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(mac + raw).decode().rstrip("=")

    def _open(self, collection: str, req: ListRequest) -> tuple[Scalar | None, str]:
        token = req.token
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
            good = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
            if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, good):
                raise ValueError("bad mac")
            fields = msgspec.json.decode(payload)
        except (ValueError, TypeError, msgspec.DecodeError):
            raise InvalidPageToken(
                "page_token is not a token this server issued for this collection",
                parameter="page_token",
            ) from None
        if fields[:2] == [_ID_TOKEN_VERSION, collection] and len(fields) == 3:
            fields = [_TOKEN_VERSION, collection, ListRequest().digest, None, fields[2]]
        if len(fields) != 5 or fields[0] != _TOKEN_VERSION or fields[1] != collection:
            raise InvalidPageToken(
                "page_token is not a token this server issued for this collection",
                parameter="page_token",
            )
        if fields[2] != req.digest:
            raise InvalidPageToken(
                "page_token belongs to a list with other filters or another sort: send the"
                " same filters and sort as the page that returned it",
                parameter="page_token",
            )
        return fields[3], fields[4]
