"""The simulator's faults: every one drawn from the run's seed, scaled by the bound.

Faults keep the change log the source of truth (as :mod:`maxage.faults` does
for a live server): a dropped, failed or delayed delivery is a *late* one, so
the real code must keep the contract under any mix of them.

========================  ==================================================================
``latency``               every primary and shared-tier call takes a random time each way
``drop``                  a direct post-commit cache update is skipped; a tailer batch is cut
                          before a change (re-read on a later poll); a notification is lost
``duplicate``             a delivery is applied again later
``delay``                 a delivery (post-commit update, or a holder's invalidation) is late
``reorder``               a tailer batch is applied in a shuffled order
``pause-fill``            a pause between a primary read and its cache fill; or a shared-tier
                          fill held until an invalidation of a newer version reached the
                          tier (the race window of the tier's fill guard)
``stall-tailer``          a node's tailer stops polling for a while (its watermark freezes)
``invalidation-error``    applying an invalidation fails transiently (the tailer retries)
``slow-commit``           a write's commit is late, so change rows commit out of seq order
``crash``                 a node crashes (its in-flight requests are lost) and restarts with
                          an empty L1
``tier-flush``            every shared-tier entry is dropped (tombstones are kept)
``tier-partition``        a node cannot reach the shared tier for a while
``skew``                  each node's clock is off by a constant within ``±skew`` (stated
                          bound: the checks allow ``S + skew``)
``disconnect``            a client gives up on a request (cancelling its handler)
``lull``                  every client pauses for one to two bounds (whatever a lost
                          invalidation left behind is then older than the bound)
========================  ==================================================================
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from maxage.faults.mutants import HolderWrapper, plant_holder
from maxage.hooks import Hooks
from maxage.invalidation.tailer import Holder
from maxage.store.base import ChangeBatch

T = TypeVar("T")

FAULTS = (
    "latency",
    "drop",
    "duplicate",
    "delay",
    "reorder",
    "pause-fill",
    "stall-tailer",
    "invalidation-error",
    "slow-commit",
    "crash",
    "tier-flush",
    "tier-partition",
    "skew",
    "disconnect",
    "lull",
)

#: per-opportunity probability of each fault (the timed ones: per nemesis turn)
PROBABILITY = {
    "drop": 0.3,
    "duplicate": 0.2,
    "delay": 0.2,
    "reorder": 0.5,
    "pause-fill": 0.2,
    "invalidation-error": 0.05,
    "slow-commit": 0.2,
    "disconnect": 0.03,
}
TIMED = ("stall-tailer", "crash", "tier-flush", "tier-partition", "lull")


class InjectedFault(ConnectionError):
    """A transient failure injected on purpose (the tailer retries it)."""


@dataclass
class FaultPlan:
    """Which faults are on, and their time scale (``bound``: the smallest positive bound)."""

    enabled: frozenset[str]
    bound: float
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULTS, 0))
    healed: bool = False

    @property
    def skew(self) -> float:
        """The stated bound on any node's clock offset from the primary's."""
        return self.bound / 50 if "skew" in self.enabled else 0.0

    # time scales, all fractions of the bound
    def latency(self, rng: random.Random) -> float:
        """One leg of a network call: none half the time, else up to ``bound / 20``.
        (``NodePrimary._wait`` and ``NodeTier._wait`` inline it: keep them alike.)"""
        r = rng.random()
        if r < 0.5:
            return 0.0
        self.counts["latency"] += 1
        return (r - 0.5) * self.bound / 10

    def long_delay(self, rng: random.Random) -> float:
        return rng.random() * 2 * self.bound

    def roll(self, name: str, rng: random.Random) -> bool:
        if self.healed or name not in self.enabled:
            return False
        if rng.random() >= PROBABILITY[name]:
            return False
        self.counts[name] += 1
        return True


class SimHooks(Hooks):
    """One node's hooks: the probabilistic faults and the mutant's seams."""

    def __init__(
        self,
        plan: FaultPlan,
        rng: random.Random,
        clock_now: Callable[[], float],
        mutant: str | None,
        tasks: set[asyncio.Future[Any]],
    ) -> None:
        self.plan = plan
        self.rng = rng
        self.clock_now = clock_now
        self.mutant = mutant
        self.tasks = tasks  # cancelled when the node crashes
        self.handles: list[asyncio.TimerHandle] = []
        self.stalled = False
        self.seq_tailer = mutant == "seq-tailer"

    def later(self, delay: float, work: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            try:
                await work()
            except Exception:  # an injected error of a duplicate: the original was applied
                return

        task = asyncio.ensure_future(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        handles = self.handles
        if len(handles) > 64:  # forget the ones that fired or were cancelled
            now = loop.time()
            handles[:] = [h for h in handles if not h.cancelled() and h.when() > now]
        handles.append(loop.call_later(delay, fn))

    # -- hooks -------------------------------------------------------------------------

    def tailer_stalled(self) -> bool:
        return self.stalled and not self.plan.healed

    def drop_failed_delivery(self) -> bool:
        return self.mutant == "error-path-drop"

    def join_any_flight(self) -> bool:
        return self.mutant == "early-flight"

    def change_batch(self, cursor: int, batch: T) -> T:
        # T is a ChangeBatch here (typing.cast's calls left out: this runs on every poll)
        return self._change_batch(cursor, batch)  # type: ignore[arg-type, return-value]

    def _change_batch(self, cursor: int, batch: ChangeBatch) -> ChangeBatch:
        changes = list(batch.changes)
        if not changes:
            return batch
        plan, rng = self.plan, self.rng
        if batch.complete and plan.roll("drop", rng):
            i = rng.randrange(len(changes))
            kept = changes[:i]
            # seq order is commit order below the frontier: everything committed before the
            # cut change's start is in ``kept`` or at or below the cursor
            snap = min(batch.snapshot_at, changes[i].committed_at)
            return ChangeBatch(kept, kept[-1].seq if kept else cursor, snap, True)
        if len(changes) > 1 and plan.roll("reorder", rng):
            rng.shuffle(changes)
            return ChangeBatch(changes, batch.cursor, batch.snapshot_at, batch.complete)
        return batch

    def holder(self, holder: T) -> T:
        return cast(
            T,
            plant_holder(
                cast(Holder, holder),
                self.mutant,
                _Clock(self.clock_now),
                lambda inner: FaultyHolder(inner, self),
            ),
        )

    def deliver_after_commit(self, key: str, deliver: Callable[[], None]) -> None:
        plan, rng = self.plan, self.rng
        if plan.roll("drop", rng):
            return
        if plan.roll("delay", rng):
            self.call_later(plan.long_delay(rng), deliver)
            return
        deliver()
        if plan.roll("duplicate", rng):
            self.call_later(plan.long_delay(rng), deliver)

    def before_fill(self, key: str, version: int) -> Awaitable[None] | None:
        if self.plan.roll("pause-fill", self.rng):
            return asyncio.sleep(self.plan.long_delay(self.rng))
        return None


class _Clock:
    __slots__ = ("now",)

    def __init__(self, now: Callable[[], float]) -> None:
        self.now = now


class FaultyHolder(HolderWrapper):
    """A tailer holder whose deliveries fail, are late, or are repeated."""

    def __init__(self, inner: Holder, hooks: SimHooks) -> None:
        super().__init__(inner)
        self.hooks = hooks

    async def apply(self, key: str, version: int) -> None:
        hooks = self.hooks
        plan, rng = hooks.plan, hooks.rng
        if plan.roll("invalidation-error", rng):
            raise InjectedFault(f"injected invalidation error for {key} v{version}")
        # a late apply holds up the whole tailer (and so every read's watermark): rarer
        if rng.random() < 0.1 and plan.roll("delay", rng):
            await asyncio.sleep(plan.long_delay(rng))
        await self.inner.apply(key, version)
        if plan.roll("duplicate", rng):
            inner = self.inner
            hooks.later(plan.long_delay(rng), lambda: inner.apply(key, version))


class StoreHooks(Hooks):
    """The shared primary's hooks: late commits, and the ``seq-tailer`` mutant."""

    def __init__(
        self,
        plan: FaultPlan,
        rng: random.Random,
        mutant: str | None,
        done: asyncio.Future[None] | None = None,
    ) -> None:
        self.plan = plan
        self.rng = rng
        self.seq_tailer = mutant == "seq-tailer"
        self.done = done

    def before_store_call(self, op: str) -> Awaitable[None]:  # type: ignore[override]
        """Nothing to wait for: a future already done (awaited on every primary call,
        cheaper than running the default's empty coroutine)."""
        if self.done is None:
            return super().before_store_call(op)
        return self.done

    def commit_delay(self) -> float:
        if self.plan.roll("slow-commit", self.rng):
            return self.rng.random() * self.plan.bound / 5
        return 0.0


def parse_faults(text: str) -> frozenset[str]:
    """``--faults``: ``all`` (default), ``none`` or a comma-separated list of :data:`FAULTS`."""
    t = text.strip().lower()
    if t in ("", "none"):
        return frozenset()
    if t == "all":
        return frozenset(FAULTS)
    names = [x.strip() for x in t.split(",") if x.strip()]
    bad = [n for n in names if n not in FAULTS]
    if bad:
        raise ValueError(f"unknown faults {bad}; known: {', '.join(FAULTS)}")
    return frozenset(names)


def cancel_all(tasks: Iterable[asyncio.Future[Any]]) -> None:
    for task in list(tasks):
        task.cancel()
