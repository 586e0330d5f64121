"""Access: API keys, scopes, and the authorization bound ``A`` (P8, revocation).

Keys are records of a reserved collection ``_keys`` in the primary (configured
collection names start with a letter, so it cannot clash): creating, revoking or
re-scoping a key is an ordinary write, with its version chain and its change row.
A secret is ``mxa_<key id>_<43 base64url chars>`` (256 random bits); only its
SHA-256 is stored (a fast hash is enough for a secret with 256 bits of entropy),
and it is compared in constant time. A key id is not a secret.

**Revocation is never stale (P8).** A process may use a key record from its
in-process cache only under the watermark rule with bound ``A``: while
``now - watermark <= A`` (every change committed before ``watermark`` has been
applied to that cache, a revoke's invalidation included); otherwise it reads
the primary. A revoke (or a scope change) is acknowledged only ``A`` after its
commit returned (commit-wait). Proof sketch: a request that starts at ``t``
after the acknowledgement, at any process ``P``, has ``t >= c + A`` where ``c`` is
the revoke's commit. ``P`` uses a cached record only if ``t - w_P <= A`` (both on
``P``'s clock, so clock skew between hosts cancels), hence ``w_P >= t - A >= c``:
the revoke's change row, committed before ``w_P``, has been applied, which drops
the cached record and leaves a tombstone that refuses any older fill in flight;
so ``P`` reads the primary and sees the revoke.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from maxage.contracts import COLLECTION_NAME, CollectionSpec
from maxage.core.cache import Cache
from maxage.core.types import MISSING, Clock
from maxage.invalidation.tailer import Holder, doc_key
from maxage.service.errors import DomainError, InvalidParameter, ValidationFailed
from maxage.service.reads import max_fill_age
from maxage.service.representation import iso
from maxage.store.base import Document, ListQuery, Store, WriteRequest

KEYS: Final = "_keys"
SECRET_PREFIX: Final = "mxa_"
ADMIN: Final = "admin"
_SECRET = re.compile(r"^mxa_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_NAME_MAX = 200
_SCOPES_MAX = 64
# A cached key record is dropped after this long even if nothing changes it.
KEY_CACHE_TTL = 300.0
_encode = msgspec.json.Encoder().encode


class Unauthenticated(DomainError):
    code = "unauthenticated"


class Forbidden(DomainError):
    code = "forbidden"


class KeyNotFound(DomainError):
    code = "key_not_found"


class _AlreadyRevoked(Exception):
    """Raised inside a revoke's transaction when the key is revoked already (no write)."""


class _Stored(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    secret_sha256: str
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What may be shown of a key (never its secret)."""

    id: str
    name: str
    scopes: tuple[str, ...]
    revoked: bool
    created_at: float
    version: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "revoked": self.revoked,
            "createdAt": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request is: a key (``key_id``), or anyone (``--auth none``: ``key_id`` None)."""

    key_id: str | None
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        kind, _, _ = scope.partition(":")
        return kind in ("read", "write") and f"{kind}:*" in self.scopes


ANYONE = Principal(None, frozenset({ADMIN, "read:*", "write:*"}))


def read_scope(collection: str) -> str:
    return f"read:{collection}"


def write_scope(collection: str) -> str:
    return f"write:{collection}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def validate_scopes(
    scopes: object, collections: Mapping[str, CollectionSpec] | None
) -> tuple[str, ...]:
    """``read:<c>``, ``write:<c>``, ``read:*``, ``write:*``, ``admin``; <c> a configured
    collection (any valid collection name when ``collections`` is None: the command line
    without a config). Raises ValidationFailed naming each bad one."""
    if not isinstance(scopes, list) or not scopes or len(scopes) > _SCOPES_MAX:
        raise ValidationFailed(
            "scopes must be a non-empty list", [("/scopes", f"1..{_SCOPES_MAX} scopes")]
        )
    errors = []
    for i, scope in enumerate(scopes):
        if not isinstance(scope, str):
            errors.append((f"/scopes/{i}", "must be a string"))
            continue
        kind, sep, target = scope.partition(":")
        known = (
            bool(COLLECTION_NAME.fullmatch(target))
            if collections is None
            else target in collections
        )
        ok = scope == ADMIN or (sep and kind in ("read", "write") and (target == "*" or known))
        if not ok:
            names = "any collection name" if collections is None else ", ".join(collections)
            errors.append(
                (f"/scopes/{i}", f"{scope!r}: expected read:<collection>, write:<collection>, "
                 f"read:*, write:* or admin (collections: {names})")
            )  # fmt: skip
    if errors:
        raise ValidationFailed("the key's scopes are not valid", errors)
    return tuple(dict.fromkeys(scopes))


class Access:
    def __init__(
        self,
        store: Store,
        cache: Cache,
        clock: Clock,
        l1_holder: Holder,
        collections: Mapping[str, CollectionSpec] | None,
        *,
        enabled: bool,
        bound: float,
    ) -> None:
        self.store = store
        self.cache = cache
        self.clock = clock
        self.l1_holder = l1_holder
        self.collections = collections
        self.enabled = enabled
        self.bound = bound  # A: how stale a cached key record may be
        self.primary_lookups = 0
        # where key ids and secrets come from (a simulation seeds it to stay reproducible)
        self.token_bytes: Callable[[int], bytes] = secrets.token_bytes
        self.refused: dict[str, int] = {"unauthenticated": 0, "forbidden": 0}

    # -- requests ----------------------------------------------------------------------

    def cached(self, secret: str, now: float) -> Principal | None:
        """The principal for ``secret`` from the in-process cache under the rule with bound
        ``A``; None when the primary must be asked (holder lagging, record not cached, or
        the secret does not verify: the slow path answers that one)."""
        if now - self.l1_holder.watermark > self.bound:
            return None
        record = self._cached_record(secret)
        return None if record is None else record.verify(secret)

    async def authenticate(self, secret: str | None) -> Principal:
        """The principal a request runs as; raises Unauthenticated."""
        if not self.enabled:
            return ANYONE
        if secret is None:
            self.refused["unauthenticated"] += 1
            raise Unauthenticated("an API key is required: Authorization: Bearer <secret>")
        principal: Principal | None = None
        record = self._cached_record(secret)
        if record is not None and (
            record.revoked or self.clock.now() - self.l1_holder.watermark <= self.bound
        ):
            # Within the bound, or revoked (a revoked key never comes back: re-scoping it
            # is refused), the cached record decides without a primary read.
            principal = record.verify(secret)
        else:
            m = _SECRET.fullmatch(secret)
            loaded = await self._load(m.group(1)) if m else None
            principal = loaded.verify(secret) if loaded is not None else None
        if principal is None:
            self.refused["unauthenticated"] += 1
            raise Unauthenticated("the API key is not valid (unknown or revoked)")
        return principal

    def _cached_record(self, secret: str) -> _CachedKey | None:
        m = _SECRET.fullmatch(secret)
        if m is None:
            return None
        entry = self.cache.get(doc_key(KEYS, m.group(1)))
        return entry.meta if entry is not MISSING and isinstance(entry.meta, _CachedKey) else None

    def authorize(self, principal: Principal, scope: str) -> None:
        if not principal.allows(scope):
            self.refused["forbidden"] += 1
            raise Forbidden(f"this API key lacks the scope {scope!r}", scope=scope)

    async def _load(self, key_id: str) -> _CachedKey | None:
        started = self.clock.now()
        self.primary_lookups += 1
        doc = await self.store.get(KEYS, key_id)
        if doc is None:
            return None
        record = _CachedKey.of(doc)
        if self.clock.now() - started > max_fill_age(self.cache):
            return record  # too slow to be judged by the tombstones: answer, do not cache
        self.cache.set_if_newer(
            doc_key(KEYS, key_id),
            doc.version,
            b"",
            started_at=started,
            ttl=KEY_CACHE_TTL,
            meta=record,
        )
        return record

    # -- management (admin) ------------------------------------------------------------

    async def create(self, scopes: object, name: object) -> tuple[KeyInfo, str]:
        """A new key; returns it and its secret (shown once, never stored)."""
        valid = validate_scopes(scopes, self.collections)
        if not isinstance(name, str) or len(name) > _NAME_MAX:
            raise ValidationFailed(
                "the key's name is not valid",
                [("/name", f"a string of at most {_NAME_MAX} characters")],
            )
        key_id = self.token_bytes(8).hex()
        secret = f"{SECRET_PREFIX}{key_id}_{base64.urlsafe_b64encode(self.token_bytes(32)).decode().rstrip('=')}"
        body = _encode(_Stored(name, list(valid), _hash(secret)))

        def create_only(current: Document | None) -> bytes | None:
            if current is not None:
                raise InvalidParameter("a key id collision occurred; retry")
            return body

        result = await self.store.write(WriteRequest(KEYS, key_id, create_only, self.clock.now()))
        return _info(result.document), secret

    async def list(self) -> Sequence[KeyInfo]:
        out: list[KeyInfo] = []
        after: str | None = None
        while True:
            page = ListQuery(KEYS, after=None if after is None else (None, after), limit=500)
            docs = (await self.store.list_query(page)).documents
            out.extend(_info(d) for d in docs)
            if len(docs) < 500:
                return out
            after = docs[-1].id

    async def revoke(self, key_id: str) -> KeyInfo:
        """Revoke; returns only when no process can still accept the key (see the module
        docstring): ``A`` after the commit."""
        return await self._change(key_id, revoke=True, scopes=None)

    async def set_scopes(self, key_id: str, scopes: object) -> KeyInfo:
        """Replace a key's scopes; like a revoke, acknowledged only ``A`` after the commit."""
        return await self._change(
            key_id, revoke=False, scopes=validate_scopes(scopes, self.collections)
        )

    async def _change(
        self, key_id: str, *, revoke: bool, scopes: tuple[str, ...] | None
    ) -> KeyInfo:
        if not _KEY_ID.fullmatch(key_id):
            raise KeyNotFound(f"no key {key_id!r}")

        def change(current: Document | None) -> bytes | None:
            if current is None:
                raise KeyNotFound(f"no key {key_id!r}")
            stored = msgspec.json.decode(current.data, type=_Stored)
            if stored.revoked:
                if revoke:
                    raise _AlreadyRevoked
                # a revoked key is gone: nothing can revive or re-scope it
                raise KeyNotFound(f"key {key_id!r} was revoked")
            if revoke:
                stored.revoked = True
            if scopes is not None:
                stored.scopes = list(scopes)
            return _encode(stored)

        try:
            result = await self.store.write(WriteRequest(KEYS, key_id, change, self.clock.now()))
        except _AlreadyRevoked:
            # A repeated revoke answers like the first: not before A has passed (it may
            # race the first one's commit-wait).
            await asyncio.sleep(self.bound)
            doc = await self.store.get(KEYS, key_id)
            if doc is None:
                raise KeyNotFound(f"no key {key_id!r}") from None
            return _info(doc)
        self.cache.invalidate(doc_key(KEYS, key_id), result.document.version)
        await asyncio.sleep(self.bound)  # commit-wait: the promise of P8
        return _info(result.document)


@dataclass(frozen=True, slots=True)
class _CachedKey:
    secret_sha256: str
    revoked: bool
    principal: Principal

    def verify(self, secret: str) -> Principal | None:
        """The principal, if ``secret`` is this key's and the key is not revoked."""
        if self.revoked or not hmac.compare_digest(self.secret_sha256, _hash(secret)):
            return None
        return self.principal

    @classmethod
    def of(cls, doc: Document) -> _CachedKey:
        stored = msgspec.json.decode(doc.data, type=_Stored)
        return cls(
            stored.secret_sha256, stored.revoked, Principal(doc.id, frozenset(stored.scopes))
        )


def _info(doc: Document) -> KeyInfo:
    stored = msgspec.json.decode(doc.data, type=_Stored)
    return KeyInfo(
        doc.id, stored.name, tuple(stored.scopes), stored.revoked, doc.created_at, doc.version
    )
