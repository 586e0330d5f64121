"""Listing: pages of a collection in id order, with tamper-evident page tokens.

Invariants: a list is read from the primary (``consistency`` is ``strong``);
a page token is ``base64url(mac16 || [1, collection, after_id])`` with an
HMAC-SHA256 under a secret every process of the deployment shares (created once
in the primary), so a token cannot be forged, altered or used on another
collection; paging is stable under concurrent inserts (keyset on ``id``, not an
offset).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec

from maxage.contracts import CollectionSpec
from maxage.core.types import Clock
from maxage.service import representation
from maxage.service.errors import InvalidPageToken, InvalidParameter
from maxage.store.base import Store

_encode = msgspec.json.Encoder().encode
_MAC_BYTES = 16
# A page stops before its documents' data passes this many bytes (at least one document
# per page): a page of 100 one-megabyte documents would be built in memory otherwise.
PAGE_BYTES = 4 * 1024 * 1024
_TOKEN_VERSION = 1


class Listing:
    def __init__(self, store: Store, clock: Clock, default_size: int, max_size: int) -> None:
        self.store = store
        self.clock = clock
        self.default_size = default_size
        self.max_size = max_size
        self._secret = b""

    async def start(self) -> None:
        self._secret = await self.store.secret("page_token")

    async def page(self, spec: CollectionSpec, size: int | None, token: str) -> bytes:
        """The page after ``token`` ("" = the first) as a response body."""
        if size is None:
            size = self.default_size
        if size < 1:
            raise InvalidParameter("page_size must be >= 1", parameter="page_size")
        size = min(size, self.max_size)
        after = self._open(spec.name, token) if token else None
        started = self.clock.now()
        docs = await self.store.list_page(spec.name, after, size + 1)
        more = len(docs) > size
        docs = docs[:size]
        total = 0
        for i, d in enumerate(docs):
            total += len(d.data)
            if total > PAGE_BYTES and i > 0:
                docs, more, shortened = docs[:i], True, True
                break
        else:
            shortened = False
        next_token = self._seal(spec.name, docs[-1].id) if more and docs else ""
        return representation.list_page(docs, next_token, started, shortened)

    def _seal(self, collection: str, after_id: str) -> str:
        payload = _encode([_TOKEN_VERSION, collection, after_id])
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")

    def _open(self, collection: str, token: str) -> str:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            mac, payload = raw[:_MAC_BYTES], raw[_MAC_BYTES:]
            good = hmac.new(self._secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]
            if len(mac) != _MAC_BYTES or not hmac.compare_digest(mac, good):
                raise ValueError("bad mac")
            version, col, after = msgspec.json.decode(payload)
            if version != _TOKEN_VERSION or col != collection or not isinstance(after, str):
                raise ValueError("wrong token")
        except (ValueError, TypeError, msgspec.DecodeError):
            raise InvalidPageToken(
                "page_token is not a token this server issued for this collection",
                parameter="page_token",
            ) from None
        return after
