"""Idempotency keys: the claim decision, and running a write under a claim.

Invariant: one request's effect is applied at most once per key. A key is
claimed (a committed in-flight row) before the effect runs, so a concurrent
duplicate in any process sees ``in_flight`` (409); the effect's own
transaction completes the claim with the response, so a replay returns it byte
for byte (``Idempotent-Replayed``); a failure before the effect releases the
claim; a claim whose holder died lapses after its lease and may be taken over.
A key names one request: the same key with a different fingerprint (method,
path, preconditions, body) is refused (422).

:func:`decide` is the decision; the stores only persist what it decides,
inside the claim's transaction (``Store.claim_idempotency``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from maxage.core.types import Clock
from maxage.service.errors import IdempotencyKeyInUse, IdempotencyKeyReused
from maxage.store.base import (
    Claim,
    ClaimState,
    IdempotencyCompletion,
    IdempotencyLost,
    IdempotencyRecord,
    R,
    Store,
    StoredResponse,
    StoreError,
)

log = logging.getLogger("maxage.service")

# Extra lease beyond the request's own deadline before a claim may be taken over.
LEASE_MARGIN = 5.0


def decide(record: IdempotencyRecord | None, fingerprint: str, now: float) -> Claim:
    """Acquire unless a live record says otherwise."""
    if record is None or record.expires_at <= now:
        return Claim(ClaimState.ACQUIRED)
    if record.fingerprint != fingerprint:
        return Claim(ClaimState.MISMATCH)
    if record.done:
        return Claim(ClaimState.DONE, record.response)
    if record.lease_until > now:
        return Claim(ClaimState.IN_FLIGHT)
    return Claim(ClaimState.ACQUIRED)  # the holder's lease lapsed: take it over


def fingerprint(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    response: StoredResponse
    replayed: bool


class Idempotency:
    def __init__(self, store: Store, clock: Clock, keep: float) -> None:
        self.store = store
        self.clock = clock
        self.keep = keep

    async def run(
        self,
        scope: str,
        print_: str,
        lease: float,
        render: Callable[[R], StoredResponse],
        effect: Callable[[IdempotencyCompletion[R]], Awaitable[R]],
    ) -> Replay:
        """Run ``effect`` at most once for ``scope``; return its (possibly replayed) response.

        ``scope`` names the key (the caller includes method, path and whose key it is);
        ``lease`` is how long the caller may take before a duplicate may take over."""
        owner = uuid.uuid4().hex
        now = self.clock.now()
        claim = await self.store.claim_idempotency(
            scope,
            print_,
            owner,
            now,
            lease + LEASE_MARGIN,
            self.keep,
            lambda record: decide(record, print_, now),
        )
        if claim.state is ClaimState.DONE:
            assert claim.response is not None
            return Replay(claim.response, True)
        if claim.state is ClaimState.IN_FLIGHT:
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being processed"
            )
        if claim.state is ClaimState.MISMATCH:
            raise IdempotencyKeyReused("this Idempotency-Key was used for a different request")
        try:
            result = await effect(IdempotencyCompletion(scope, owner, render))
        except IdempotencyLost:
            # Another request took the claim over (our lease lapsed, or a release raced
            # our claim): it owns the key now; nothing of ours was written.
            raise IdempotencyKeyInUse(
                "a request with this Idempotency-Key is still being processed"
            ) from None
        except BaseException:
            release = asyncio.ensure_future(self.store.release_idempotency(scope, owner))
            with contextlib.suppress(Exception):
                await asyncio.shield(release)
            raise
        assert result.response is not None
        return Replay(result.response, False)

    async def purge_forever(self) -> None:
        """Delete records older than ``keep``, every keep/4 (at most every 5 minutes)."""
        every = min(300.0, max(0.25, self.keep / 4))
        while True:
            await asyncio.sleep(every)
            try:
                async with asyncio.timeout(30.0):
                    await self.store.purge_idempotency(self.clock.now())
            except (StoreError, TimeoutError) as exc:
                log.warning("idempotency purge failed: %s", exc)
