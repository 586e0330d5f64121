"""Named consumers of the change feed: a server-side acknowledged position per
``(collection, name)``, one reader per name at a time, and lag per consumer.

Invariants:

* **Resume where acknowledged.** A read with ``consumer=NAME`` starts after the
  consumer's acknowledged position (``POST .../changes/ack`` with a cursor it
  was sent, or ``ack=auto``: a new read first acknowledges everything the
  previous read under that name was sent). Positions only rise, and never
  beyond what was delivered, so nothing past the acknowledged cursor is
  skipped; what was sent but not acknowledged is sent again (at-least-once).
* **One reader per name.** A read holds the name's lease in the primary
  (``LEASE`` seconds, renewed while it streams); a second reader under the same
  name, on any process, is refused (409 ``consumer_busy``) until the first goes
  away or its lease lapses. Readers that want to share work use one name each
  (e.g. one per partition of their own).
* **A consumer holds nothing up.** Writers never wait for consumers, and the
  change log is not trimmed (maxage keeps it; there is no retention to block).
  A consumer more than its collection's ``consumer_lag_limit`` behind the newest
  commit is reported (``maxage_consumer_over_limit``, a warning log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from maxage.contracts import CollectionSpec
from maxage.core.types import Clock
from maxage.core.wake import wait_woken
from maxage.service.errors import DomainError, InvalidParameter, ValidationFailed
from maxage.store.base import CursorRecord, Store

log = logging.getLogger("maxage.service")

# A reader's lease on its name; renewed at least every LEASE / 3 while it streams.
LEASE = 15.0
# Lag is counted up to this many changes (a scrape must stay cheap).
LAG_CAP = 1_000_000
# How often the lag of every cursor is recomputed (metrics read the last result).
LAG_EVERY = 1.0
CONSUMER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Cursor names of webhook subscriptions (not a consumer name: those start alphanumeric).
WEBHOOK_PREFIX = "_webhook."


class ConsumerBusy(DomainError):
    code = "consumer_busy"


class ConsumerNotFound(DomainError):
    code = "consumer_not_found"


@dataclass(frozen=True, slots=True)
class Lag:
    collection: str
    name: str
    position: int
    behind: int  # changes after the acknowledged position (capped at LAG_CAP)
    seconds: float  # newest commit - first unacknowledged commit (0 when caught up)
    over_limit: bool


def check_name(name: str) -> str:
    if not CONSUMER_NAME.fullmatch(name):
        raise InvalidParameter(
            "consumer names are 1-64 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
            parameter="consumer",
        )
    return name


class Consumers:
    def __init__(
        self, store: Store, clock: Clock, collections: Mapping[str, CollectionSpec]
    ) -> None:
        self.store = store
        self.clock = clock
        self.collections = collections
        self.lags: list[Lag] = []  # the last computed lag of every cursor
        self._over: set[tuple[str, str]] = set()
        self._task: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()

    # -- readers ---------------------------------------------------------------------

    async def open(self, spec: CollectionSpec, name: str, auto_ack: bool) -> tuple[str, int]:
        """Take the name's lease: ``(owner, position to read after)``; ConsumerBusy when
        another reader holds it."""
        owner = uuid.uuid4().hex
        cur = await self.store.claim_cursor(
            spec.name, check_name(name), owner, self.clock.now(), LEASE, auto_ack
        )
        if cur.lease_owner != owner:
            raise ConsumerBusy(
                f"consumer {name!r} of {spec.name!r} is being read by another connection "
                "(one reader per name); retry after it ends or its lease lapses "
                f"(within {LEASE:g}s of its last activity)",
                consumer=name,
            )
        return owner, cur.position

    async def sent(self, spec: CollectionSpec, name: str, owner: str, cursor: int) -> bool:
        """Record that the reader was sent everything up to ``cursor`` (renews its lease);
        False when it lost the lease (it must stop)."""
        cur = await self.store.move_cursor(
            spec.name, name, self.clock.now(), delivered=cursor, owner=owner, lease=LEASE
        )
        return cur is not None

    async def close(self, spec: CollectionSpec, name: str, owner: str) -> None:
        with contextlib.suppress(Exception):  # the lease lapses anyway
            await self.store.release_cursor(spec.name, name, owner)

    async def ack(self, spec: CollectionSpec, name: str, cursor: int) -> CursorRecord:
        """Acknowledge everything up to ``cursor`` (idempotent; never moves back)."""
        check_name(name)
        now = self.clock.now()
        current = await self.store.move_cursor(spec.name, name, now)
        if current is None:
            raise ConsumerNotFound(
                f"no consumer {name!r} of {spec.name!r}: read the feed with consumer={name} first"
            )
        if cursor > current.delivered:
            raise ValidationFailed(
                "the cursor was never sent to this consumer",
                [("/cursor", f"must be at most {current.delivered}, the last cursor sent")],
            )
        moved = await self.store.move_cursor(spec.name, name, now, position=cursor)
        assert moved is not None
        return moved

    # -- lag -------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def kill(self) -> None:
        """What a crash does to it: its lag loop cancelled, not awaited (:meth:`stop` is
        the orderly way)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        if self._task is not None:
            self._stop.set()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:  # the primary is down: keep the last figures
                log.debug("consumer lag refresh failed: %s", exc)
            await wait_woken(self._stop, LAG_EVERY)

    async def refresh(self) -> list[Lag]:
        """Recompute every cursor's lag (also what a test calls to read it at once)."""
        lags = []
        for cur in await self.store.cursors():
            spec = self.collections.get(cur.collection)
            if spec is None:
                continue
            backlog = await self.store.changes_behind(cur.collection, cur.position, LAG_CAP)
            seconds = 0.0
            if backlog.behind and backlog.oldest_at is not None and backlog.newest_at is not None:
                seconds = max(0.0, backlog.newest_at - backlog.oldest_at)
            over = seconds > spec.consumer_lag_limit
            key = (cur.collection, cur.name)
            if over and key not in self._over:
                log.warning(
                    "consumer %r of %r is %.0fs (%d changes) behind, beyond its limit of %gs",
                    cur.name, cur.collection, seconds, backlog.behind, spec.consumer_lag_limit,
                )  # fmt: skip
                self._over.add(key)
            elif not over:
                self._over.discard(key)
            lags.append(Lag(cur.collection, cur.name, cur.position, backlog.behind, seconds, over))
        self.lags = lags
        return lags
