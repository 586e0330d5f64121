"""Rate limits (GCRA) and what a limited response says about them.

Invariant: each (policy, partition) bucket admits at most ``burst`` requests at
once and ``rate`` per second on average (GCRA: a request is admitted when the
bucket's theoretical arrival time, advanced by one emission interval ``1/rate``,
is no more than ``burst/rate`` ahead of now). The partition is the API key (or,
with ``--auth none``, the client address), so one key cannot exhaust another's
budget. With a shared tier the bucket lives there (one atomic script, on the
tier's clock), so limits hold across processes and hosts; while the tier is
unavailable each process limits on its own (counted in ``fallbacks``), and a
limiter never fails a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from maxage.contracts import RateLimit, RateLimits
from maxage.core.types import Clock

if TYPE_CHECKING:
    from maxage.tiers.base import SharedTier

# Per-process buckets kept at most; idle (refilled) ones are dropped first.
MAX_LOCAL_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: RateLimit
    remaining: int  # requests still admissible now
    reset: float  # seconds until the whole burst is available again
    retry_after: float  # seconds until the next request may pass (0 when allowed)


def _decide(limit: RateLimit, allowed: bool, retry_after: float, ahead: float) -> RateDecision:
    interval = 1.0 / limit.rate
    capacity = limit.burst * interval
    remaining = max(0, math.floor((capacity - ahead) / interval + 1e-9)) if allowed else 0
    return RateDecision(allowed, limit, remaining, max(0.0, ahead), retry_after)


class LocalBuckets:
    """GCRA state of one process: bucket -> theoretical arrival time."""

    def __init__(self, max_buckets: int = MAX_LOCAL_BUCKETS) -> None:
        self.tat: dict[str, float] = {}
        self.max_buckets = max_buckets

    def take(self, bucket: str, limit: RateLimit, now: float) -> RateDecision:
        interval = 1.0 / limit.rate
        capacity = limit.burst * interval
        tat = self.tat.get(bucket, now)
        if tat < now:
            tat = now
        ahead = tat + interval - now
        if ahead > capacity:
            return _decide(limit, False, ahead - capacity, tat - now)
        if bucket not in self.tat and len(self.tat) >= self.max_buckets:
            self._sweep(now)
        self.tat[bucket] = tat + interval
        return _decide(limit, True, 0.0, ahead)

    def _sweep(self, now: float) -> None:
        """Drop refilled buckets (they hold nothing); if none, the oldest half."""
        idle = [b for b, t in self.tat.items() if t <= now]
        if not idle:
            idle = sorted(self.tat, key=self.tat.__getitem__)[: len(self.tat) // 2]
        for b in idle:
            del self.tat[b]


class Limits:
    def __init__(self, config: RateLimits, clock: Clock, shared: SharedTier | None) -> None:
        self.config = config
        self.clock = clock
        self.shared = shared
        self.local = LocalBuckets()
        self.enabled = config.default is not None or bool(config.overrides)
        self.limited = 0  # 429s
        self.fallbacks = 0  # shared tier unavailable: limited per process instead

    def policy(self, collection: str | None, method: str) -> RateLimit | None:
        return self.config.policy(collection, method) if self.enabled else None

    def take_local(self, limit: RateLimit, partition: str) -> RateDecision:
        decision = self.local.take(f"{limit.name}|{partition}", limit, self.clock.now())
        if not decision.allowed:
            self.limited += 1
        return decision

    async def take(self, limit: RateLimit, partition: str) -> RateDecision:
        if self.shared is None:
            return self.take_local(limit, partition)
        interval = 1.0 / limit.rate
        step = await self.shared.rate_limit(
            f"{limit.name}|{partition}", interval, limit.burst * interval
        )
        if step is None:
            self.fallbacks += 1
            return self.take_local(limit, partition)
        decision = _decide(limit, *step)
        if not decision.allowed:
            self.limited += 1
        return decision
