"""Server-side fault injection and mutants (TEST ONLY: ``maxage serve --fault-injection``).

``install_faults(service, store, mutant)`` wraps the hooks of one worker's
objects and returns a :class:`FaultController`; the API routes
``/_maxage/faults`` (loopback clients only) to :meth:`FaultController.handle`:

* ``GET``    -> ``{"faults", "params", "seed", "supported", "counts", "mutant", ...}``
* ``PUT``/``POST`` ``{"faults": {"drop": 0.3, ...}, "seed": 7, "params": {...}}``
  replaces the active faults (name -> probability);
* ``DELETE`` clears every fault (heal).

Every fault keeps the change log the source of truth: a dropped or failed
delivery is a *late* one (the tailer re-reads or retries it), so the real code
must keep the contract under any mix of them, while a mutant must not.

Faults: ``drop`` (the direct post-commit cache update is skipped; a tailer batch
is cut before a change, which is re-read on a later poll), ``duplicate`` (a
delivery is applied again later), ``delay`` (deliveries are applied late),
``reorder`` (changes of a tailer batch are applied in a shuffled order),
``pause-fill`` (a pause between the primary read and the cache fill),
``stall-tailer`` (the tailer stops polling while the fault is active),
``invalidation-error`` (applying an invalidation fails transiently),
``slow-primary`` (each primary call stalls), ``slow-commit`` (PostgreSQL only: a
write transaction sleeps between inserting its change row and COMMIT, so a later
write commits first and change rows commit out of ``seq`` order).

Several workers share one state: a change is written to a small control file
(keyed by the server's parent process) that every worker re-reads at most every
50 ms; injected counts are summed over the workers' count files.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maxage.core.cache import Cache
from maxage.core.types import EvictionReason, SetOutcome
from maxage.invalidation.tailer import L1Holder
from maxage.store.base import ChangeBatch

if TYPE_CHECKING:
    from maxage.service import Service

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
)
# Faults that need a store hook; offered only when the store has it.
_STORE_HOOKS = {"slow-commit": "commit_delay"}
MUTANTS = ("no-version-guard", "no-tombstone", "no-watermark", "error-path-drop", "seq-tailer")
LOOPBACK_PREFIXES = ("127.", "::1", "::ffff:127.")
FAULTS_FILE_ENV = "MAXAGE_FAULTS_FILE"


class InjectedFault(ConnectionError):
    """A transient failure injected on purpose (the tailer retries it)."""


# -- mutants ---------------------------------------------------------------------------


class _NoVersionGuardCache(Cache):
    """Mutant: a fill is a plain overwrite; versions and tombstones are ignored."""

    __slots__ = ()

    def set_if_newer(
        self,
        key: str,
        version: int,
        body: bytes,
        *,
        started_at: float,
        ttl: float | None = None,
        meta: object = None,
        tags: Any = (),
    ) -> SetOutcome:
        with self._lock:
            old = self._data.get(key)
            if old is not None:
                self._drop(key, old, EvictionReason.INVALIDATION)
            self._tombs.pop(key, None)
        return super().set_if_newer(
            key, version, body, started_at=started_at, ttl=ttl, meta=meta, tags=tags
        )


class _NoTombstoneCache(Cache):
    """Mutant: an invalidation drops older entries but leaves no tombstone."""

    __slots__ = ()

    def invalidate(self, key: str, version: int) -> bool:
        with self._lock:
            e = self._data.get(key)
            if e is not None and e.version < version:
                self._drop(key, e, EvictionReason.INVALIDATION)
                return True
            return False


class _FreshWatermarkL1(L1Holder):
    """Mutant: the holder always claims to be caught up (reads ignore the watermark)."""

    @property
    def watermark(self) -> float:
        return time.time()

    @watermark.setter
    def watermark(self, value: float) -> None:
        self.__dict__["_real_watermark"] = value


def _fresh_watermark(holder: object) -> None:
    cls = type(holder)
    if isinstance(holder, L1Holder):
        holder.__class__ = _FreshWatermarkL1
        return

    def get(self: object) -> float:
        return time.time()

    def put(self: object, value: float) -> None:
        self.__dict__["_real_watermark"] = value

    holder.__class__ = type(
        cls.__name__ + "FreshWatermark", (cls,), {"watermark": property(get, put)}
    )


# -- delivery wrappers -----------------------------------------------------------------


class FaultyHolder:
    """Wraps a tailer holder: delay, fail or duplicate its invalidation deliveries."""

    def __init__(self, inner: Any, ctl: FaultController) -> None:
        self.inner = inner
        self.ctl = ctl
        self.name = inner.name

    @property
    def watermark(self) -> float:
        return float(self.inner.watermark)

    @watermark.setter
    def watermark(self, value: float) -> None:
        self.inner.watermark = value

    async def apply(self, key: str, version: int) -> None:
        ctl = self.ctl
        if ctl.roll("invalidation-error"):
            raise InjectedFault(f"injected invalidation error for {key} v{version}")
        if ctl.roll("delay"):
            await asyncio.sleep(ctl.rng.uniform(0.0, ctl.params["delay_max"]))
        await self.inner.apply(key, version)
        if ctl.roll("duplicate"):
            ctl.later(
                ctl.rng.uniform(0.0, ctl.params["duplicate_max"]), self.inner.apply(key, version)
            )


class FaultController:
    """The per-worker fault state and the control endpoint."""

    def __init__(self, service: Service, store: Any, mutant: str | None) -> None:
        self.service = service
        self.store = store
        self.mutant = mutant
        self.mutant_applicable = True
        self.store_kind = type(store).__name__
        self.seed = 0
        self.rng = random.Random(0)
        self.active: dict[str, float] = {}
        bounds = [c.max_staleness for c in service.collections.values() if c.max_staleness > 0]
        bound = min(bounds, default=1.0)
        self.params: dict[str, float] = {
            "delay_max": min(2.0, bound),
            "duplicate_max": min(4.0, 2 * bound),
            "pause_max": min(3.0, 2 * bound),
            "slow_max": min(1.0, bound / 2),
            "commit_min": 0.05,
            "commit_max": 0.3,
        }
        self.supported = [
            f for f in FAULTS if f not in _STORE_HOOKS or hasattr(store, _STORE_HOOKS[f])
        ]
        self.counts: dict[str, int] = dict.fromkeys(FAULTS, 0)
        self._tasks: set[asyncio.Future[Any]] = set()
        parent = os.getppid()
        self.path = Path(
            os.environ.get(FAULTS_FILE_ENV)
            or os.path.join(tempfile.gettempdir(), f"maxage-faults-{parent}.json")
        )
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

    def later(self, delay: float, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- shared state ------------------------------------------------------------------

    def sync(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self._next_sync:
            return
        self._next_sync = now + 0.05
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            mtime = 0
        if mtime != self._mtime:
            self._mtime = mtime
            state: dict[str, Any] = {}
            if mtime:
                with contextlib.suppress(OSError, ValueError):
                    state = json.loads(self.path.read_text())
            self._apply_state(state)
        if self._counts_dirty:
            self._counts_dirty = False
            with contextlib.suppress(OSError):
                tmp = self._counts_path().with_suffix(".tmp")
                tmp.write_text(json.dumps(self.counts))
                os.replace(tmp, self._counts_path())

    def _counts_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.counts.{os.getpid()}.json")

    def _apply_state(self, state: dict[str, Any]) -> None:
        faults = state.get("faults") or {}
        self.active = {
            k: float(v) for k, v in faults.items() if k in self.supported and float(v) > 0
        }
        seed = int(state.get("seed", 0))
        if seed != self.seed or state.get("reseed"):
            self.seed = seed
            self.rng = random.Random(seed)
        for k, v in (state.get("params") or {}).items():
            if k in self.params:
                self.params[k] = float(v)
        self.service.tailer.stalled = "stall-tailer" in self.active
        if self.service.tailer.stalled:
            self.counts["stall-tailer"] += 1
            self._counts_dirty = True

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.path)
        self.sync(force=True)

    def total_counts(self) -> dict[str, int]:
        total = dict.fromkeys(FAULTS, 0)
        for p in self.path.parent.glob(f"{self.path.stem}.counts.*.json"):
            with contextlib.suppress(OSError, ValueError):
                for k, v in json.loads(p.read_text()).items():
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
            "counts": self.total_counts(),
            "worker_counts": self.counts,
            "mutant": self.mutant,
            "mutant_applicable": self.mutant_applicable,
            "store": self.store_kind,
            "pid": os.getpid(),
        }

    # -- the control endpoint ----------------------------------------------------------

    async def handle(self, app: Any, req: Any, receive: Any, send: Any) -> int:
        client = getattr(req, "client", None)
        host = str(client[0]) if client else ""
        if not host.startswith(LOOPBACK_PREFIXES) and host != "localhost":
            return int(await app._problem(req, send, "fault_injection_disabled",
                                          "the fault control endpoint only answers loopback clients"))  # fmt: skip
        if req.method in ("PUT", "POST"):
            raw = await app._read_body(req, receive)
            try:
                state = json.loads(raw or b"{}")
                if not isinstance(state, dict):
                    raise ValueError("expected a JSON object")
                unknown = [k for k in state.get("faults") or {} if k not in self.supported]
                if unknown:
                    raise ValueError(
                        f"unknown or unsupported faults {unknown} for the {self.store_kind}"
                        f" store; supported: {', '.join(self.supported)}"
                    )
                for v in (state.get("faults") or {}).values():
                    if not 0 <= float(v) <= 1:
                        raise ValueError("a fault's probability must be in [0, 1]")
            except (ValueError, TypeError) as exc:
                return int(
                    await app._problem(req, send, "bad_request", f"bad fault request: {exc}")
                )
            self._write_state(state)
        elif req.method == "DELETE":
            self._write_state({"faults": {}, "seed": self.seed})
        elif req.method not in ("GET", "HEAD"):
            return int(await app._problem(req, send, "method_not_allowed",
                                          f"{req.method} is not allowed here",
                                          [(b"allow", b"GET, PUT, POST, DELETE")]))  # fmt: skip
        body = json.dumps(self.describe()).encode()
        return int(await app._plain(req, send, 200, b"application/json", body))


# -- installation ----------------------------------------------------------------------


def install_faults(service: Service, store: Any, mutant: str | None = None) -> FaultController:
    """Wrap this worker's hooks; plant ``mutant`` if given. Returns the controller."""
    ctl = FaultController(service, store, mutant)

    # tailer -> holder deliveries
    for st in service.tailer.states:
        st.holder = FaultyHolder(st.holder, ctl)

    # the change-log channel: drop (cut the batch; re-read later) and reorder
    orig_changes = store.changes_after
    cut_safe = ctl.store_kind == "SQLiteStore"  # seq order == commit order

    async def changes_after(cursor: int, limit: int) -> ChangeBatch:
        batch: ChangeBatch = await orig_changes(cursor, limit)
        changes = list(batch.changes)
        if not changes:
            return batch
        if cut_safe and batch.complete and ctl.roll("drop"):
            i = ctl.rng.randrange(len(changes))
            kept = changes[:i]
            # Everything committed before the cut change's start is in ``kept`` or below.
            snap = min(batch.snapshot_at, changes[i].committed_at)
            return ChangeBatch(kept, kept[-1].seq if kept else cursor, snap, True)
        if len(changes) > 1 and ctl.roll("reorder"):
            ctl.rng.shuffle(changes)
            return ChangeBatch(changes, batch.cursor, batch.snapshot_at, batch.complete)
        return batch

    store.changes_after = changes_after

    # the direct post-commit update (an optimisation; the tailer is the truth)
    orig_after = service.after_commit

    def after_commit(spec: Any, result: Any, started: float) -> None:
        if ctl.roll("drop"):
            service.tailer.wake()
            return
        if ctl.roll("delay"):
            loop = asyncio.get_running_loop()
            loop.call_later(
                ctl.rng.uniform(0.0, ctl.params["delay_max"]), orig_after, spec, result, started
            )
            service.tailer.wake()
            return
        orig_after(spec, result, started)
        if ctl.roll("duplicate"):
            loop = asyncio.get_running_loop()
            loop.call_later(
                ctl.rng.uniform(0.0, ctl.params["duplicate_max"]), orig_after, spec, result, started
            )

    service.after_commit = after_commit  # type: ignore[method-assign]

    def before_fill() -> object:
        if ctl.roll("pause-fill"):
            return asyncio.sleep(ctl.rng.uniform(0.0, ctl.params["pause_max"]))
        return None

    service.before_fill = before_fill

    prior_slow: Callable[[], float] | None = getattr(store, "slow_down", None)

    def slow_down() -> float:
        extra = prior_slow() if prior_slow is not None else 0.0
        if ctl.roll("slow-primary"):
            extra += ctl.rng.uniform(0.0, ctl.params["slow_max"])
        return extra

    store.slow_down = slow_down

    # PostgreSQL: a write sleeps inside its transaction, so commits leave seq order
    if hasattr(store, "commit_delay"):
        prior_commit: Callable[[], float] | None = store.commit_delay

        def commit_delay() -> float:
            extra = prior_commit() if prior_commit is not None else 0.0
            if ctl.roll("slow-commit"):
                extra += ctl.rng.uniform(ctl.params["commit_min"], ctl.params["commit_max"])
            return extra

        store.commit_delay = commit_delay

    # keep the shared state in sync even when no request arrives (stall-tailer)
    orig_start = service.start

    async def start() -> None:
        await orig_start()

        async def tick() -> None:
            while True:
                ctl.sync()
                await asyncio.sleep(0.05)

        task = asyncio.ensure_future(tick())
        ctl._tasks.add(task)

    service.start = start  # type: ignore[method-assign]

    if mutant is not None:
        _plant(mutant, service, store, ctl)
    return ctl


def _plant(mutant: str, service: Service, store: Any, ctl: FaultController) -> None:
    if mutant == "no-version-guard":
        service.cache.__class__ = _NoVersionGuardCache
    elif mutant == "no-tombstone":
        service.cache.__class__ = _NoTombstoneCache
    elif mutant == "no-watermark":
        _fresh_watermark(service.l1_holder)
        if service.l2_holder is not None:
            _fresh_watermark(service.l2_holder)
    elif mutant == "error-path-drop":
        service.tailer.drop_failed = True
    elif mutant == "seq-tailer":
        if hasattr(store, "seq_tailer"):
            store.seq_tailer = True
        else:
            ctl.mutant_applicable = False
    else:
        raise ValueError(f"unknown mutant {mutant!r}; known: {', '.join(MUTANTS)}")


__all__ = ["FAULTS", "MUTANTS", "FaultController", "InjectedFault", "install_faults"]
