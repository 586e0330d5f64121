"""Fault injection (TEST ONLY: ``maxage serve --fault-injection``), through the
typed seam of :class:`maxage.hooks.Hooks`.

Every fault keeps the change log the source of truth: a dropped or failed
delivery is a *late* one (the tailer re-reads or retries it), so the real code
must keep the contract under any mix of them, while a mutant must not.

Faults: ``drop`` (the direct post-commit cache update is skipped; on SQLite a
tailer batch is also cut before a change, which is re-read on a later poll),
``duplicate`` (a delivery is applied again later), ``delay`` (deliveries are
applied late), ``reorder`` (changes of a tailer batch are applied in a shuffled
order), ``pause-fill`` (a pause between the primary read and the cache fill),
``stall-tailer`` (the tailer stops polling while the fault is active),
``invalidation-error`` (applying an invalidation fails transiently),
``slow-primary`` (each primary call stalls), ``slow-commit`` (PostgreSQL only: a
write transaction sleeps between inserting its change row and COMMIT, so change
rows commit out of ``seq`` order), ``pause-shared-fill`` (with a shared tier only: a
pause before a fill reaches the shared tier, after the process's own L1 took it).

Targets aim a fault at named cache keys (``"targets": {fault: ["collection/id", ...]}``),
so a checker can open a race window on purpose instead of waiting for one:

* ``pause-fill`` on a key *holds* a fill of that key until an invalidation of the
  key at a newer version has been applied to one of this worker's holders (the
  invalidation that the fill should have been beaten by arrives first), at most
  ``hold_max`` seconds; ``GET /_maxage/faults`` lists the keys being held;
* ``pause-shared-fill`` on a key holds its fills of the shared tier (L1 has taken
  them) until this worker has applied an invalidation of a newer version to the
  tier, at most ``hold_max`` seconds (listed as held too): only the tier's own fill
  guard stands between the old version and the tier;
* ``drop`` on a key skips the direct post-commit cache update of its writes (the
  tailer still applies them);
* ``invalidation-error`` on a key fails the first delivery of each of its
  versions to each holder once (the tailer retries it).

State. Several workers share one state: :meth:`FaultController.replace` writes
it to a file in a private directory (mode 0700, created by the server's parent
process, never through a symlink) that every worker re-reads at most every
50 ms; injected counts are summed over the workers' count files. A request is
validated completely before anything is written, so a bad one changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from maxage.core.types import SetOutcome
from maxage.faults.mutants import FEED_SHIFT, HolderWrapper, plant_holder
from maxage.hooks import Hooks
from maxage.invalidation.tailer import Holder
from maxage.store.base import ChangeBatch
from maxage.tiers.redis import RedisTier

T = TypeVar("T")

FAULTS = (
    "drop",
    "duplicate",
    "delay",
    "reorder",
    "pause-fill",
    "stall-tailer",
    "invalidation-error",
    "slow-primary",
    "slow-commit",
    "pause-shared-fill",
)
POSTGRES_ONLY = frozenset({"slow-commit"})
SHARED_TIER_ONLY = frozenset({"pause-shared-fill"})
SYNC_EVERY = 0.05  # seconds between re-reads of the shared state file
STATE_KEYS = frozenset({"faults", "seed", "params", "reseed", "targets"})
TARGETABLE = ("pause-fill", "drop", "invalidation-error", "pause-shared-fill")
MAX_TARGET_KEYS = 1000


class InjectedFault(ConnectionError):
    """A transient failure injected on purpose (the tailer retries it)."""


def _read_nofollow(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a new file beside ``path`` (never through a link), then rename it over."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class FaultController:
    """The per-worker fault state; the API's ``/_maxage/faults`` reaches it as a
    :class:`maxage.api.types.FaultControl`."""

    def __init__(
        self,
        state_file: Path,
        *,
        postgres: bool,
        bound: float,
        mutant: str | None,
        shared_tier: bool = False,
    ) -> None:
        self.path = state_file
        self.postgres = postgres
        self.mutant = mutant
        # what the mutant needs that this server lacks (it would plant nothing here)
        self.mutant_needs = (
            "a PostgreSQL primary" if mutant == "seq-tailer" and not postgres
            else "a shared tier (serve --cache redis://…)"
            if mutant == "unguarded-l2-fill" and not shared_tier
            else None
        )  # fmt: skip
        self.mutant_applicable = self.mutant_needs is None
        self.seed = 0
        self.rng = random.Random(0)
        self.active: dict[str, float] = {}
        self.params: dict[str, float] = {
            "delay_max": min(2.0, bound),
            "duplicate_max": min(4.0, 2 * bound),
            "pause_max": min(3.0, 2 * bound),
            "slow_max": min(1.0, bound / 2),
            "commit_min": 0.05,
            "commit_max": 0.3,
            "hold_max": 5.0,
        }
        self.supported = [
            f for f in FAULTS
            if (postgres or f not in POSTGRES_ONLY) and (shared_tier or f not in SHARED_TIER_ONLY)
        ]  # fmt: skip
        self.counts: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self.tasks: set[asyncio.Future[Any]] = set()
        self.targets: dict[str, frozenset[str]] = {}
        self._failed_once: set[tuple[str, str, int]] = set()  # (holder, key, version)
        self._held: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self._held_shared: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        # per key: the reads parked on a held load of it here (the loads held, and the
        # reads that joined one), published so a checker waits for its read to arrive
        self._parked: dict[str, int] = {}
        self._mtime = -1
        self._next_sync = 0.0
        self._counts_dirty = False

    # -- decisions ---------------------------------------------------------------------

    def roll(self, name: str) -> bool:
        self.sync()
        p = self.active.get(name)
        if not p or self.rng.random() >= p:
            return False
        self.counts[name] += 1
        self._counts_dirty = True
        return True

    def targeted(self, name: str, key: str) -> bool:
        """Is ``key`` a target of fault ``name``? (Counted as an injection when it is.)"""
        self.sync()
        keys = self.targets.get(name)
        if not keys or key not in keys:
            return False
        self.counts[name] += 1
        self._counts_dirty = True
        return True

    def fail_once(self, holder: str, key: str, version: int) -> bool:
        """A targeted ``invalidation-error``: True the first time ``(holder, key, version)``
        is delivered, so the delivery fails once and its retry succeeds."""
        if (holder, key, version) in self._failed_once or not self.targeted(
            "invalidation-error", key
        ):
            return False
        self._failed_once.add((holder, key, version))
        return True

    async def hold(self, key: str, version: int) -> None:
        """A targeted ``pause-fill``: wait until an invalidation of ``key`` above
        ``version`` has been applied here (see :meth:`applied`), or ``hold_max``."""
        self._parked[key] = self._parked.get(key, 0) + 1
        await self._hold(self._held, key, version)

    async def hold_shared(self, key: str, version: int) -> None:
        """A targeted ``pause-shared-fill``: wait until this worker has applied an
        invalidation of ``key`` above ``version`` to the shared tier (see
        :meth:`shared_applied`), or ``hold_max``."""
        await self._hold(self._held_shared, key, version)

    async def _hold(
        self, held: dict[str, list[tuple[int, asyncio.Future[None]]]], key: str, version: int
    ) -> None:
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiting = held.setdefault(key, [])
        waiting.append((version, released))
        self._write_holding()
        try:
            async with asyncio.timeout(self.params["hold_max"]):
                await released
        except TimeoutError:
            pass
        finally:
            waiting.remove((version, released))
            if not waiting:
                del held[key]
            self._write_holding()

    def before_shared_fill(self, key: str, version: int) -> Awaitable[None] | None:
        """What a fill of the shared tier waits for first (None: nothing)."""
        if self.targeted("pause-shared-fill", key):
            return self.hold_shared(key, version)
        if self.roll("pause-shared-fill"):
            return asyncio.sleep(self.uniform(0.0, "pause_max"))
        return None

    def joined(self, key: str) -> None:
        """A read joined the load of ``key``: parked, if that load is held."""
        if key in self._held:
            self._parked[key] = self._parked.get(key, 0) + 1
            self._write_holding()

    def applied(self, key: str, version: int) -> None:
        """An invalidation of ``key`` at ``version`` was applied: release the fills of
        ``key`` held below it."""
        _release_below(self._held, key, version)

    def shared_applied(self, key: str, version: int) -> None:
        """This worker applied an invalidation of ``key`` at ``version`` to the shared
        tier: release its shared-tier fills of ``key`` held below it."""
        _release_below(self._held_shared, key, version)

    def _release_untargeted(self) -> None:
        for name, held in (("pause-fill", self._held), ("pause-shared-fill", self._held_shared)):
            keys = self.targets.get(name, frozenset())
            for key, waiting in held.items():
                if key not in keys:
                    for _, released in waiting:
                        if not released.done():
                            released.set_result(None)

    def uniform(self, low: float, param: str) -> float:
        return self.rng.uniform(low, self.params[param])

    def later(self, delay: float, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await work

        task = asyncio.ensure_future(run())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- shared state ------------------------------------------------------------------

    def sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + SYNC_EVERY
        try:
            mtime = self.path.lstat().st_mtime_ns
        except OSError:
            mtime = 0
        if mtime != self._mtime:
            self._mtime = mtime
            state: dict[str, Any] = {}
            if mtime:
                with contextlib.suppress(OSError, ValueError):
                    state = self.validate(json.loads(_read_nofollow(self.path)))
            self._apply(state)
        if self._counts_dirty:
            self._counts_dirty = False
            with contextlib.suppress(OSError):
                _write_atomic(self._counts_path(), json.dumps(self.counts).encode())

    def _counts_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.counts.{os.getpid()}.json")

    def _holding_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.holding.{os.getpid()}.json")

    def _write_holding(self) -> None:
        state = {"held": sorted({*self._held, *self._held_shared}), "parked": self._parked}
        with contextlib.suppress(OSError):
            _write_atomic(self._holding_path(), json.dumps(state).encode())

    def _holding_states(self) -> list[dict[str, Any]]:
        states = []
        for p in self.path.parent.glob(f"{self.path.stem}.holding.*.json"):
            with contextlib.suppress(OSError, ValueError):
                state = json.loads(_read_nofollow(p))
                if isinstance(state, dict):
                    states.append(state)
        return states

    def total_holding(self) -> list[str]:
        """The keys whose fills some worker is holding now (targeted ``pause-fill`` and
        ``pause-shared-fill``)."""
        keys: set[str] = set()
        for state in self._holding_states():
            keys.update(str(k) for k in state.get("held", ()))
        return sorted(keys)

    def total_parked(self) -> dict[str, int]:
        """Per key, the reads that have been parked on a held load of it (held it, or
        joined it), in every worker."""
        parked: dict[str, int] = {}
        for state in self._holding_states():
            for key, n in dict(state.get("parked", {})).items():
                parked[str(key)] = parked.get(str(key), 0) + int(n)
        return parked

    def validate(self, state: object) -> dict[str, Any]:
        """The state as it will be applied; ValueError naming the first problem."""
        if not isinstance(state, dict):
            raise ValueError("expected a JSON object")
        unknown_keys = sorted(set(state) - STATE_KEYS)
        if unknown_keys:
            raise ValueError(f"unknown fields {unknown_keys}; known: {sorted(STATE_KEYS)}")
        faults = state.get("faults") or {}
        if not isinstance(faults, dict):
            raise ValueError("faults must be an object of name -> probability")
        unknown = [k for k in faults if k not in self.supported]
        if unknown:
            store = "postgres" if self.postgres else "sqlite"
            raise ValueError(
                f"unknown or unsupported faults {unknown} for the {store} store;"
                f" supported: {', '.join(self.supported)}"
            )
        active = {k: _number(v, f"faults.{k}") for k, v in faults.items()}
        if any(not 0 <= p <= 1 for p in active.values()):
            raise ValueError("a fault's probability must be in [0, 1]")
        seed = state.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or abs(seed) >= 2**63:
            raise ValueError("seed must be an integer")
        params = state.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError("params must be an object")
        bad = [k for k in params if k not in self.params]
        if bad:
            raise ValueError(f"unknown params {bad}; known: {sorted(self.params)}")
        values = {k: _number(v, f"params.{k}") for k, v in params.items()}
        if any(v < 0 for v in values.values()):
            raise ValueError("params must be >= 0")
        return {
            "faults": active,
            "seed": seed,
            "params": values,
            "reseed": bool(state.get("reseed")),
            "targets": self._validate_targets(state.get("targets") or {}),
        }

    def _validate_targets(self, targets: object) -> dict[str, list[str]]:
        if not isinstance(targets, dict):
            raise ValueError("targets must be an object of fault -> list of keys")
        bad = [k for k in targets if k not in TARGETABLE or k not in self.supported]
        if bad:
            raise ValueError(
                f"faults {bad} cannot be targeted; targetable: {', '.join(TARGETABLE)}"
            )
        out: dict[str, list[str]] = {}
        total = 0
        for name, keys in targets.items():
            if not isinstance(keys, list) or not all(
                isinstance(k, str) and 0 < len(k) <= 1024 for k in keys
            ):
                raise ValueError(f"targets.{name} must be a list of keys (collection/id)")
            total += len(keys)
            out[name] = keys
        if total > MAX_TARGET_KEYS:
            raise ValueError(f"at most {MAX_TARGET_KEYS} target keys")
        return out

    def _apply(self, state: Mapping[str, Any]) -> None:
        was_stalled = "stall-tailer" in self.active
        self.active = {k: v for k, v in (state.get("faults") or {}).items() if v > 0}
        seed = int(state.get("seed", 0))
        if seed != self.seed or state.get("reseed"):
            self.seed = seed
            self.rng = random.Random(seed)
        self.params.update(state.get("params") or {})
        targets = {k: frozenset(v) for k, v in (state.get("targets") or {}).items() if v}
        if targets != self.targets:
            self.targets = targets
            self._failed_once.clear()
            self._release_untargeted()
        if "stall-tailer" in self.active and not was_stalled:
            self.counts["stall-tailer"] += 1
            self._counts_dirty = True

    def replace(self, state: object) -> None:
        valid = self.validate(state)  # raises before anything is written
        _write_atomic(self.path, json.dumps(valid).encode())
        self.sync(force=True)

    def heal(self) -> None:
        self.replace({"faults": {}, "seed": self.seed})

    def total_counts(self) -> dict[str, int]:
        total = dict.fromkeys(FAULTS, 0)
        for p in self.path.parent.glob(f"{self.path.stem}.counts.*.json"):
            with contextlib.suppress(OSError, ValueError):
                for k, v in json.loads(_read_nofollow(p)).items():
                    if k in total:
                        total[k] += int(v)
        return total

    def describe(self) -> dict[str, Any]:
        self.sync(force=True)
        return {
            "faults": self.active,
            "params": self.params,
            "seed": self.seed,
            "supported": list(self.supported),
            "targets": {k: sorted(v) for k, v in self.targets.items()},
            "holding": self.total_holding(),
            "parked": self.total_parked(),
            "counts": self.total_counts(),
            "worker_counts": self.counts,
            "mutant": self.mutant,
            "mutant_applicable": self.mutant_applicable,
            "mutant_needs": self.mutant_needs,
            "store": "PostgresStore" if self.postgres else "SQLiteStore",
            "pid": os.getpid(),
        }


def _release_below(
    held: dict[str, list[tuple[int, asyncio.Future[None]]]], key: str, version: int
) -> None:
    for below, released in held.get(key, ()):
        if below < version and not released.done():
            released.set_result(None)


def shared_tier_class(base: type[RedisTier], ctl: FaultController) -> type[RedisTier]:
    """``base`` (the Redis tier, or a mutant of it) with ``pause-shared-fill``: a fill
    waits for :meth:`FaultController.before_shared_fill`; an invalidation the tier took
    releases the fills it should beat."""

    class FaultyRedisTier(base):  # type: ignore[valid-type,misc]
        async def set_if_newer(
            self,
            key: str,
            version: int,
            body: bytes,
            meta: bytes,
            *,
            started_at: float,
            ttl: float | None,
        ) -> SetOutcome:
            pause = ctl.before_shared_fill(key, version)
            if pause is not None:
                await pause
            outcome: SetOutcome = await super().set_if_newer(
                key, version, body, meta, started_at=started_at, ttl=ttl
            )
            return outcome

        async def invalidate(self, key: str, version: int) -> bool:
            done: bool = await super().invalidate(key, version)
            if done:
                ctl.shared_applied(key, version)
            return done

    FaultyRedisTier.__name__ = FaultyRedisTier.__qualname__ = f"Faulty{base.__name__}"
    return FaultyRedisTier


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number")
    return float(value)


class FaultyHolder(HolderWrapper):
    """Wraps a tailer holder: delay, fail or duplicate its invalidation deliveries."""

    def __init__(self, inner: Holder, ctl: FaultController) -> None:
        super().__init__(inner)
        self.ctl = ctl

    async def apply(self, key: str, version: int) -> None:
        ctl = self.ctl
        if ctl.fail_once(self.name, key, version) or ctl.roll("invalidation-error"):
            raise InjectedFault(f"injected invalidation error for {key} v{version}")
        if ctl.roll("delay"):
            await asyncio.sleep(ctl.uniform(0.0, "delay_max"))
        await self.inner.apply(key, version)
        ctl.applied(key, version)
        if ctl.roll("duplicate"):
            ctl.later(ctl.uniform(0.0, "duplicate_max"), self.inner.apply(key, version))


class FaultHooks(Hooks):
    """The hooks a ``--fault-injection`` worker runs with (and its mutant, if any)."""

    def __init__(self, ctl: FaultController) -> None:
        self.ctl = ctl
        mutant = ctl.mutant
        self.seq_tailer = mutant == "seq-tailer" and ctl.postgres
        self._drop_failed = mutant == "error-path-drop"
        self._join_any = mutant == "early-flight"
        self._feed_shift = FEED_SHIFT.get(mutant or "", 0)
        # Cutting a batch is safe only where seq order is commit order (SQLite).
        self._cut_safe = not ctl.postgres

    async def before_store_call(self, op: str) -> None:
        if self.ctl.roll("slow-primary"):
            await asyncio.sleep(self.ctl.uniform(0.0, "slow_max"))

    def commit_delay(self) -> float:
        if not self.ctl.roll("slow-commit"):
            return 0.0
        return self.ctl.uniform(self.ctl.params["commit_min"], "commit_max")

    def feed_resume(self, after: int) -> int:
        return max(0, after + self._feed_shift) if after else after

    def tailer_stalled(self) -> bool:
        self.ctl.sync()
        return "stall-tailer" in self.ctl.active

    def drop_failed_delivery(self) -> bool:
        return self._drop_failed

    def change_batch(self, cursor: int, batch: T) -> T:
        return cast(T, self._change_batch(cursor, cast(ChangeBatch, batch)))

    def _change_batch(self, cursor: int, batch: ChangeBatch) -> ChangeBatch:
        ctl = self.ctl
        changes = list(batch.changes)
        if not changes:
            return batch
        if self._cut_safe and batch.complete and ctl.roll("drop"):
            i = ctl.rng.randrange(len(changes))
            kept = changes[:i]
            # Everything committed before the cut change's start is in ``kept`` or below.
            snap = min(batch.snapshot_at, changes[i].committed_at)
            return ChangeBatch(kept, kept[-1].seq if kept else cursor, snap, True)
        if len(changes) > 1 and ctl.roll("reorder"):
            ctl.rng.shuffle(changes)
            return ChangeBatch(changes, batch.cursor, batch.snapshot_at, batch.complete)
        return batch

    def holder(self, holder: T) -> T:
        ctl = self.ctl
        return cast(
            T,
            plant_holder(
                cast(Holder, holder), ctl.mutant, None, lambda inner: FaultyHolder(inner, ctl)
            ),
        )

    def join_any_flight(self) -> bool:
        return self._join_any

    def joining(self, key: str) -> None:
        self.ctl.joined(key)

    def deliver_after_commit(self, key: str, deliver: Callable[[], None]) -> None:
        ctl = self.ctl
        if ctl.targeted("drop", key) or ctl.roll("drop"):
            return
        if ctl.roll("delay"):
            asyncio.get_running_loop().call_later(ctl.uniform(0.0, "delay_max"), deliver)
            return
        deliver()
        if ctl.roll("duplicate"):
            asyncio.get_running_loop().call_later(ctl.uniform(0.0, "duplicate_max"), deliver)

    def before_fill(self, key: str, version: int) -> Awaitable[None] | None:
        if version and self.ctl.targeted("pause-fill", key):
            return self.ctl.hold(key, version)
        if self.ctl.roll("pause-fill"):
            return asyncio.sleep(self.ctl.uniform(0.0, "pause_max"))
        return None
