"""Read-your-writes across requests, processes and servers: a :class:`Session` remembers
the highest version of each document it wrote or read, and the client sends it as
``min_version`` on the next read of that document (a session read, P4: never a version
below it). ``token()`` serialises the session so another process (a worker, the next
request of the same user) continues it with ``Session.from_token``."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping
from typing import Final

TOKEN_PREFIX: Final = "mxs1."


class Session:
    """Per document (``collection/id``), the highest version seen.

    Versions only rise. At most ``limit`` documents are remembered; beyond that the
    least recently recorded is forgotten (a read of it is then a plain one, still
    bounded by the collection's ``max_staleness``). Thread-safe."""

    def __init__(self, versions: Mapping[str, int] | None = None, *, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()
        for key, version in (versions or {}).items():
            collection, _, id = key.partition("/")
            self.record(collection, id, version)

    @staticmethod
    def _key(collection: str, id: str) -> str:
        if not collection or "/" in collection or not id:
            raise ValueError(f"not a document of a collection: {collection!r}/{id!r}")
        return f"{collection}/{id}"

    def record(self, collection: str, id: str, version: int) -> None:
        """Remember that ``version`` of the document was written or read."""
        key = self._key(collection, id)
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError(f"a version is a non-negative integer, not {version!r}")
        with self._lock:
            old = self._versions.pop(key, 0)
            self._versions[key] = max(old, version)
            while len(self._versions) > self.limit:
                del self._versions[next(iter(self._versions))]

    def min_version(self, collection: str, id: str) -> int:
        """The version a read of the document must not go below (0: none known)."""
        return self._versions.get(self._key(collection, id), 0)

    def versions(self) -> dict[str, int]:
        with self._lock:
            return dict(self._versions)

    def merge(self, other: Session | str) -> None:
        """Take in what ``other`` (a session or its token) has seen."""
        theirs = (Session.from_token(other) if isinstance(other, str) else other).versions()
        for key, version in theirs.items():
            collection, _, id = key.partition("/")
            self.record(collection, id, version)

    def token(self) -> str:
        """An opaque, URL-safe string that ``Session.from_token`` turns back into this session."""
        raw = json.dumps(self.versions(), separators=(",", ":")).encode()
        return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str, *, limit: int = 10_000) -> Session:
        """The session ``token`` describes; ValueError when it is not one."""
        if not token.startswith(TOKEN_PREFIX):
            raise ValueError("not a maxage session token")
        body = token[len(TOKEN_PREFIX) :]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            versions = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"not a maxage session token: {exc}") from None
        if not isinstance(versions, dict):
            raise ValueError("not a maxage session token")
        return cls(versions, limit=limit)

    def __len__(self) -> int:
        return len(self._versions)

    def __repr__(self) -> str:
        return f"Session({len(self)} documents)"
