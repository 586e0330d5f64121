"""Webhooks: every committed change of a collection POSTed to each of its subscriptions,
in commit order, signed, retried, and dead-lettered when the receiver keeps failing.

Invariants:

* **Driven from the change log.** A subscription's progress is a cursor in the
  primary (``_webhook.<name>``, the same cursors as named consumers): it moves
  past a change only once that change was delivered (a 2xx) or stored as a dead
  letter, in the same transaction as the letter. A restart, or another process
  taking over, resumes after it: nothing is lost, and a change may be delivered
  again (at-least-once; ``Webhook-Id`` is the same every time, for receivers to
  dedupe).
* **One deliverer per subscription.** The deliverer holds the cursor's lease
  (renewed before every attempt and while it waits to retry); on other processes
  the subscription's deliverer idles until the lease lapses.
* **Order.** Changes are delivered one at a time in commit order, so per
  document in version order; a change goes to the dead-letter queue only after
  ``max_attempts`` failed attempts (exponential backoff with jitter, capped),
  and the next change waits until then. A replayed dead letter arrives after
  later changes of its document: receivers order by ``version``.
* **Never in the write path.** Writers commit and return; delivery reads the log.
* **Signature** (Standard Webhooks): ``Webhook-Signature: v1,<base64 of
  HMAC-SHA256(secret, "<id>.<timestamp>.<body>")>`` with ``Webhook-Id`` and
  ``Webhook-Timestamp`` (unix seconds); receivers should refuse old timestamps.
* **Targets** are the operator's configuration only: nothing from a request or
  a document goes into the URL, and redirects are not followed (a 3xx is a
  failure), so a receiver cannot bounce deliveries elsewhere.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from maxage.contracts import CollectionSpec, WebhookSpec
from maxage.core.types import Clock
from maxage.core.wake import wait_woken
from maxage.service.consumers import WEBHOOK_PREFIX
from maxage.service.errors import DomainError
from maxage.service.representation import iso
from maxage.store.base import Change, CursorRecord, DeadLetter, Store

log = logging.getLogger("maxage.service")
_encode = msgspec.json.Encoder().encode

LEASE = 15.0  # a deliverer's hold on its subscription; renewed at least every LEASE / 3
BATCH = 200
IDLE_POLL = 0.5  # how often an idle deliverer looks for new changes (a commit wakes it)


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> int:
        """POST ``body``; the response status (redirects not followed). Raises on a
        transport failure (its message becomes the dead letter's error)."""
        ...


class DeadLetterNotFound(DomainError):
    code = "deadletter_not_found"


@dataclass(slots=True)
class WebhookStats:
    # (collection, subscription, outcome): delivered, failed (one attempt), deadlettered,
    # replayed (a dead letter delivered on request)
    outcomes: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def bump(self, spec: CollectionSpec, hook: WebhookSpec, outcome: str) -> None:
        key = (spec.name, hook.name, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1


def webhook_id(change: Change, subscription: str) -> str:
    """The idempotency id of a change's delivery to a subscription: the same on every
    attempt, restart and replay."""
    name = f"{change.collection}/{change.id}@{change.version}#{subscription}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "maxage:" + name))


def payload(change: Change, subscription: str, data: bytes | None) -> bytes:
    """The delivery body; ``data`` is the document's data at that version as the change
    row recorded it (null for a delete)."""
    return _encode(
        {
            "id": webhook_id(change, subscription),
            "collection": change.collection,
            "subscription": subscription,
            "cursor": str(change.seq),
            "documentId": change.id,
            "version": change.version,
            "op": change.op.value,
            "committedAt": iso(change.committed_at),
            "data": msgspec.Raw(data) if data is not None else None,
        }
    )


def signed_headers(secret: bytes, id_: str, timestamp: int, body: bytes) -> dict[str, str]:
    mac = hmac.new(secret, b"%s.%d.%s" % (id_.encode(), timestamp, body), hashlib.sha256)
    return {
        "content-type": "application/json",
        "webhook-id": id_,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + base64.b64encode(mac.digest()).decode(),
    }


class Webhooks:
    def __init__(
        self, store: Store, clock: Clock, collections: Mapping[str, CollectionSpec]
    ) -> None:
        self.store = store
        self.clock = clock
        self.subscriptions = [(s, h) for s in collections.values() for h in s.webhooks]
        self.collections = collections
        self.sender: Sender | None = None  # set by the composition root (HTTP lives in api/)
        self.owner = uuid.uuid4().hex
        self.stats = WebhookStats()
        self._tasks: list[asyncio.Future[None]] = []
        # (collection, subscription) -> (position, lease_until) while this process delivers
        self._held: dict[tuple[str, str], tuple[int, float]] = {}
        self._wake = asyncio.Event()
        self._random = random.Random()

    @property
    def enabled(self) -> bool:
        return bool(self.subscriptions) and self.sender is not None

    async def start(self) -> None:
        if self.enabled:
            self._tasks = [
                asyncio.ensure_future(self._run(spec, hook)) for spec, hook in self.subscriptions
            ]

    def kill(self) -> None:
        """What a crash does to it: its senders cancelled, their leases not released (they
        lapse); :meth:`stop` is the orderly way."""
        for task in self._tasks:
            task.cancel()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for spec, hook in self.subscriptions:
            with contextlib.suppress(Exception):  # the lease lapses anyway
                await self.store.release_cursor(spec.name, WEBHOOK_PREFIX + hook.name, self.owner)

    # -- the deliverer -------------------------------------------------------------------

    async def _run(self, spec: CollectionSpec, hook: WebhookSpec) -> None:
        while True:
            try:
                wait = await self._round(spec, hook)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the primary is down: try again shortly
                log.warning("webhook %s/%s: %s", spec.name, hook.name, exc)
                self._held.pop((spec.name, hook.name), None)
                wait = IDLE_POLL
            if wait > 0:
                self._wake.clear()
                await wait_woken(self._wake, wait)

    def _hold(self, spec: CollectionSpec, hook: WebhookSpec, cur: CursorRecord | None) -> bool:
        """Remember the lease and position a claim or move returned; False when lost."""
        key = (spec.name, hook.name)
        if cur is None or cur.lease_owner != self.owner:
            self._held.pop(key, None)
            return False
        self._held[key] = (cur.position, cur.lease_until)
        return True

    async def _renew(
        self, spec: CollectionSpec, hook: WebhookSpec, position: int | None = None
    ) -> bool:
        cur = await self.store.move_cursor(
            spec.name, WEBHOOK_PREFIX + hook.name, self.clock.now(), position=position,
            owner=self.owner, lease=LEASE,
        )  # fmt: skip
        return self._hold(spec, hook, cur)

    async def _round(self, spec: CollectionSpec, hook: WebhookSpec) -> float:
        """Deliver what follows the cursor; how long to wait before the next round (0:
        there may be more right away; LEASE / 3 while another process delivers)."""
        key = (spec.name, hook.name)
        held = self._held.get(key)
        if held is None or self.clock.now() > held[1] - LEASE / 2:
            # Claimed (a write) only when the lease needs it, not on every idle poll.
            cur = await self.store.claim_cursor(
                spec.name, WEBHOOK_PREFIX + hook.name, self.owner, self.clock.now(), LEASE,
                ack_delivered=False,
            )  # fmt: skip
            if not self._hold(spec, hook, cur):
                return LEASE / 3  # another process delivers this subscription
        position = self._held[key][0]
        batch = await self.store.changes_after(position, BATCH)
        for change in batch.changes:
            if change.collection != spec.name or change.op.value not in hook.operations:
                continue
            if await self._deliver(spec, hook, change) is None:
                return IDLE_POLL  # lost the lease: someone else delivers from the cursor
        if batch.changes and not await self._renew(spec, hook, batch.cursor):
            return IDLE_POLL
        return 0.0 if not batch.complete else IDLE_POLL

    async def _deliver(
        self, spec: CollectionSpec, hook: WebhookSpec, change: Change
    ) -> bool | None:
        """Attempt until delivered (True), dead-lettered (False) or the lease is lost (None)."""
        name = WEBHOOK_PREFIX + hook.name
        error = ""
        for attempt in range(1, hook.max_attempts + 1):
            if not await self._renew(spec, hook):
                return None
            error = await self.attempt(hook, change)
            if not error:
                self.stats.bump(spec, hook, "delivered")
                await self._renew(spec, hook, change.seq)
                return True
            self.stats.bump(spec, hook, "failed")
            if attempt < hook.max_attempts:
                delay = min(hook.max_backoff, hook.backoff * 2 ** (attempt - 1))
                delay = self._random.uniform(delay / 2, delay)  # jitter: retries spread out
                if not await self._sleep_holding(spec, hook, delay):
                    return None
        letter = DeadLetter(0, spec.name, hook.name, change, hook.max_attempts, error,
                            self.clock.now())  # fmt: skip
        await self.store.add_deadletter(letter, cursor=(name, change.seq))
        self._held[(spec.name, hook.name)] = (change.seq, self._held[(spec.name, hook.name)][1])
        self.stats.bump(spec, hook, "deadlettered")
        log.warning(
            "webhook %s/%s: %s/%s v%d dead-lettered after %d attempts: %s",
            spec.name, hook.name, change.collection, change.id, change.version,
            hook.max_attempts, error,
        )  # fmt: skip
        return False

    async def _sleep_holding(self, spec: CollectionSpec, hook: WebhookSpec, delay: float) -> bool:
        """Wait ``delay`` seconds, renewing the lease meanwhile; False if it was lost."""
        end = time.monotonic() + delay
        while (left := end - time.monotonic()) > 0:
            await asyncio.sleep(min(left, LEASE / 3))
            if end - time.monotonic() > 0 and not await self._renew(spec, hook):
                return False
        return True

    async def attempt(self, hook: WebhookSpec, change: Change) -> str:
        """One delivery attempt: "" when the receiver answered 2xx, else what went wrong."""
        assert self.sender is not None
        try:
            data = (await self.store.change_bodies([change.seq])).get(change.seq)
        except Exception as exc:  # the primary is down: a failed attempt like any other
            return f"reading the change: {exc}"[:500]
        body = payload(change, hook.name, data)
        headers = signed_headers(hook.secret, webhook_id(change, hook.name), int(time.time()), body)
        try:
            status = await self.sender.post(hook.url, body, headers, hook.timeout)
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
        return "" if 200 <= status < 300 else f"HTTP {status}"

    # -- the dead-letter queue -----------------------------------------------------------

    async def letters(self, collection: str | None, after: int, limit: int) -> list[DeadLetter]:
        return await self.store.deadletters(collection, after, limit)

    async def letter(self, id: int) -> DeadLetter:
        letter = await self.store.deadletter(id)
        if letter is None:
            raise DeadLetterNotFound(f"no dead letter {id}")
        return letter

    async def drop(self, id: int) -> None:
        if not await self.store.drop_deadletter(id):
            raise DeadLetterNotFound(f"no dead letter {id}")

    def hook(self, letter: DeadLetter) -> WebhookSpec | None:
        spec = self.collections.get(letter.collection)
        if spec is None:
            return None
        return next((h for h in spec.webhooks if h.name == letter.subscription), None)

    async def replay(self, id: int) -> tuple[DeadLetter, str]:
        """Deliver dead letter ``id`` once more, now: ``(letter, "")`` when delivered (the
        letter is dropped), else ``(letter, error)`` (it stays)."""
        letter = await self.letter(id)
        hook = self.hook(letter)
        if hook is None or self.sender is None:
            return letter, f"no webhook {letter.subscription!r} on {letter.collection!r} now"
        error = await self.attempt(hook, letter.change)
        if not error:
            await self.store.drop_deadletter(id)
            spec = self.collections[letter.collection]
            self.stats.bump(spec, hook, "replayed")
        return letter, error
