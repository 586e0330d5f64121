"""The fault schedule: targeted rounds that open each race window on purpose, between
random fault phases.

A random fault phase enables a seeded subset of the faults with a probability each
and lets the workload run into them. A cache bug shows only when a fault lands in
its window *and* a bounded read arrives more than the bound later, before anything
else repairs the entry, so by luck that takes long. A **targeted round** builds the
windows itself, on probe keys of its own (``chk-<run>-race-<n>``), for every
collection with a positive bound ``S`` read from ``/openapi.json``; every wait is
derived from ``S`` (a read "past the bound" starts ``S + margin(S)`` after the
acknowledgement it must see), nothing from the config or the server:

* **hold** (``pause-fill``): a strong read of a key is held by the server between its
  primary read and its fill (a targeted ``pause-fill``) until the invalidation of a
  write that the checker sends meanwhile (a delete of one key, a put of another) has
  been applied: the invalidation arrives before the fill it should have beaten. The
  fill must be refused (version guard, tombstone). With ``drop`` enabled, the hold
  keys' direct cache updates are dropped, so only the tailer's invalidation reaches
  the cache (and a bounded read misses, where a collection has no strong mode);
* **lost** (``invalidation-error`` and ``drop``): a key cached at ``v`` is written; the
  direct cache update is dropped and the first delivery of the new version fails.
  The tailer must retry it (and hold its watermark until it succeeds);
* **stall** (``stall-tailer`` and ``drop``): a key cached at ``v`` is written with the
  direct update dropped while the tailer is held just past the bound. Reads must see
  that the holder lags and go to the primary;
* **join** (``pause-fill`` and ``drop``, collections with session reads): a *bounded*
  read's load of a key (a session read's, on a collection without bounded reads) is
  held as above; the checker reads the key with
  ``min_version`` = the version its next write will make, then sends that write. The
  session read may join the held load (it started before the write), but must not use
  its older version (P4: the version, or 409 while it is not available);
* **abandon** (``pause-fill`` and ``drop``): a bounded read's load of a key is held as
  above, a second bounded read of the key joins it, and the checker then abandons the
  first (closes its connection: the server cancels that request). The load the second
  one shares must go on: it is answered once the key's write releases the hold (a 500,
  a cancellation leaking into a request nobody cancelled, is a P0 violation);
* **shared fill** (``pause-shared-fill``: a target with a shared tier; collections with
  bounded reads): a read of a key fills L1, and its fill of the shared tier is held
  until the invalidation of a write the checker sends meanwhile has reached the tier
  (the invalidation arrives before the fill it should have beaten). The tier's own
  guard must refuse it (L1's cannot: it took the fill before the write): a broken one
  leaves the old version in the tier, where a read past the bound finds it once L1
  has dropped the key;
* **age** (``pause-fill``, ``stall-tailer`` and ``drop``, collections with bounded reads
  and ``S >= AGE_MIN_BOUND``): during the stall, a read's fill of a key is held, the key
  is written (its direct update dropped, the tailer stalled: nothing refuses the fill),
  and the fill is released ``AGE_GAP`` after the write's acknowledgement. The entry then
  holds a version that was superseded before it was stored; bounded reads of it, while
  the holder is still within the bound, must claim an ``Age`` from the fill's primary read
  (or the watermark), not from the store: an age measured from the store claims the old
  version current after the write was acknowledged, which the P2 age check
  (``HTTP_AGE_SLACK``) flags. ``Age`` is whole seconds, and the understatement can never
  exceed the holder's lag (at most ``S``), so a bound below ``AGE_MIN_BOUND`` leaves no
  room for an understatement the header can show (``maxage sim`` checks it to the
  microsecond).

The round then reads every probe key past the bound: the hold, join, abandon,
shared-fill and lost keys as soon as the bound has passed, once the holder has caught up (its reads
are no longer ``lagging``); then the stalled keys, during the stall. A broken guard
serves the old version from the cache, which the P2 check flags. One round takes about ``max S + margin`` plus a few round
trips, so every guard above is tested within seconds, for any bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from maxage.checker.checks import HTTP_AGE_SLACK
from maxage.checker.history import FAULT, OK, Op
from maxage.checker.workload import Client, Collection, Workload

FAULT_PROBABILITY = {
    "drop": 0.5, "duplicate": 0.3, "delay": 0.3, "reorder": 0.5, "pause-fill": 0.3,
    "stall-tailer": 1.0, "invalidation-error": 0.5, "slow-primary": 0.2, "slow-commit": 0.5,
    "pause-shared-fill": 0.3,
}  # fmt: skip
SETTLE = 0.1  # seconds for a new fault state to reach every worker (they re-read it every 50 ms)
HELD_WAIT = 2.0  # longest wait for the server to report the probe reads held
PROBE_CLIENT = 10_000  # the client id of the targeted rounds' requests
# the age window: its held fill is released this long after the write's acknowledgement
# (an age measured from the store then misstates the answer by more than HTTP's Age can
# hide), and it runs on bounds that leave room for that gap and the window's set-up
AGE_GAP = HTTP_AGE_SLACK + 0.02
AGE_MIN_BOUND = 1.5
AGE_READS = 3  # reads of the aged key: with several workers, one reaches the filled one


async def control(
    http: httpx.AsyncClient, method: str, state: dict[str, Any] | None = None
) -> httpx.Response:
    """A call of the target's fault control (``/_maxage/faults``); a busy server's ``503``
    (load shedding) is retried for up to 5 s, since a lost call would leave a window
    unopened or a fault on. Raises httpx.HTTPError when the target cannot be reached."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        r = await http.request(method, "/_maxage/faults", json=state)
        if r.status_code != 503 or asyncio.get_running_loop().time() > deadline:
            return r
        await asyncio.sleep(0.1)


def margin(bound: float) -> float:
    """How long after ``bound`` a read "past the bound" starts (clock granularity and
    the request's own latency, which P2 does not credit)."""
    return 0.05 + 0.05 * bound


@dataclass
class Probe:
    """One collection's probe keys for targeted rounds."""

    col: Collection
    hold_delete: str
    hold_put: str
    lost: str
    stalled: str
    join: str
    abandon: str
    aged: str
    shared_fill: str

    @property
    def ids(self) -> tuple[str, ...]:
        return (
            self.hold_delete, self.hold_put, self.lost, self.stalled, self.join, self.abandon,
            self.aged, self.shared_fill,
        )  # fmt: skip

    @property
    def ageable(self) -> bool:
        """The age window applies (bounded reads, a bound with room for ``AGE_GAP``)."""
        return "bounded" in self.col.modes and self.col.max_staleness >= AGE_MIN_BOUND

    @property
    def load_mode(self) -> str:
        """The mode of a read whose load a window holds: strong where the collection has
        it (it always loads), else the shared mode."""
        return "strong" if "strong" in self.col.modes else self.col.shared_mode

    @property
    def joinable(self) -> bool:
        """A session read of this collection may join a held load (bounded, or session)."""
        return "session" in self.col.modes

    def cache_key(self, id: str) -> str:
        return f"{self.col.name}/{id}"


@dataclass
class Tally:
    """What the targeted rounds did (the report's ``targeted`` section)."""

    rounds: int = 0
    holds: int = 0  # fills held until the newer write's invalidation was applied
    joins: int = 0  # session reads sent right after a write while a load was held
    abandoned: int = 0  # held loads whose first reader went away while another waited
    aged: int = 0  # fills released after their key's write, during a stall (age window)
    shared_fills: int = 0  # shared-tier fills held until their key's write reached the tier
    hold_misses: int = 0  # the write came too late or the read was not held
    lost: int = 0  # writes whose direct update was dropped and first delivery failed
    stalls: int = 0  # writes made while the tailer was held past the bound
    reads_past_bound: int = 0  # probe reads started more than S after the write
    lagging: int = 0  # of those, answered by the primary because the holder lagged
    scenarios: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "scenarios": self.scenarios,
            "holds": self.holds,
            "hold_misses": self.hold_misses,
            "joins": self.joins,
            "abandoned": self.abandoned,
            "aged_fills": self.aged,
            "shared_fills": self.shared_fills,
            "lost_deliveries": self.lost,
            "stalled_writes": self.stalls,
            "reads_past_bound": self.reads_past_bound,
            "lagging": self.lagging,
        }


class Schedule:
    """Targeted rounds alternating with random fault phases until ``end``."""

    def __init__(
        self,
        wl: Workload,
        http: httpx.AsyncClient,
        cols: Sequence[Collection],
        faults: Sequence[str],
        seed: int,
        probability: float | None = None,
        on_round: Callable[[], None] = lambda: None,
    ) -> None:
        self.wl = wl
        self.http = http
        self.faults = list(faults)
        self.seed = seed
        self.probability = probability
        self.on_round = on_round
        self.rng = random.Random(f"faults:{seed}")
        self.client = Client(wl, PROBE_CLIENT)
        # collections with a bound and reads that share loads (bounded, or session: the
        # join window's P4 applies to a session-only collection too)
        probed = [c for c in cols if c.max_staleness > 0 and c.shared_mode != "strong"]
        tag = wl.run_tag
        self.probes = [
            Probe(c, *(f"chk-{tag}-race-{i}{j}" for j in "dplsjagf")) for i, c in enumerate(probed)
        ]
        enabled = set(faults)
        self.hold = "pause-fill" in enabled
        self.lost = {"invalidation-error", "drop"} <= enabled
        self.stall = {"stall-tailer", "drop"} <= enabled
        self.age = self.stall and self.hold and any(p.ageable for p in self.probes)
        self.shared = "pause-shared-fill" in enabled and any(
            "bounded" in p.col.modes for p in self.probes
        )
        self.tally = Tally(scenarios=[
            name for name, on in (("hold", self.hold), ("lost", self.lost), ("stall", self.stall),
                                  ("age", self.age), ("shared-fill", self.shared))
            if on
        ])  # fmt: skip
        positive = [c.max_staleness for c in cols if c.max_staleness > 0]
        self.unit = max(0.3, min(positive, default=1.0))
        self.longest = max((p.col.max_staleness for p in self.probes), default=0.0)
        self.phase = 0

    @property
    def targeted(self) -> bool:
        return bool(self.probes) and (self.hold or self.lost or self.stall or self.shared)

    def keys(self) -> dict[str, list[str]]:
        """The probe keys per collection (read again after healing, for P6)."""
        return {p.col.name: list(p.ids) for p in self.probes}

    async def run(self, end: float) -> None:
        wl = self.wl
        round_time = self.longest + margin(self.longest) + 1.0
        while not wl.stop and wl.now() < end:
            if self.targeted and end - wl.now() > round_time:
                await self.round()
                self.on_round()
            if wl.stop or wl.now() >= end:
                break
            await self.random_phase(end)

    # -- random phases ---------------------------------------------------------------

    async def random_phase(self, end: float) -> None:
        rng = self.rng
        if rng.random() < 0.2:
            chosen: dict[str, float] = {}
        else:
            chosen = {f: self._probability(f) for f in self.faults if rng.random() < 0.6}
            if not chosen:
                f = rng.choice(self.faults)
                chosen = {f: self._probability(f)}
        await self._set(chosen, {}, settle=False)
        wl = self.wl
        await asyncio.sleep(min(max(0.2, end - wl.now()), rng.uniform(0.5, 3.0) * self.unit))

    def _probability(self, fault: str) -> float:
        if self.probability is None or fault == "stall-tailer":
            return FAULT_PROBABILITY[fault]
        return max(0.0, min(1.0, self.probability))

    async def _set(
        self, faults: dict[str, float], targets: dict[str, list[str]], *, settle: bool = True
    ) -> None:
        """Replace the server's fault state (recorded as a fault event)."""
        wl = self.wl
        self.phase += 1
        shown = dict(faults)
        shown.update({f"{name}@targets": float(len(keys)) for name, keys in targets.items()})
        ev = Op(wl.new_id(), 0, FAULT, invoke=wl.now(), faults=shown)
        state = {"faults": faults, "seed": self.seed * 1000 + self.phase, "targets": targets}
        try:
            r = await control(self.http, "PUT", state)
            if r.status_code != 200:
                ev.detail = f"control answered {r.status_code}"
        except httpx.HTTPError as exc:
            ev.detail = f"control failed: {exc}"
        ev.ret = wl.now()
        wl.record(ev)
        if settle:
            await asyncio.sleep(SETTLE)

    # -- targeted rounds -------------------------------------------------------------

    async def round(self) -> None:
        """One targeted round over every probe (see the module docstring)."""
        self.tally.rounds += 1
        cl = self.client
        probes = self.probes
        # The hold keys' direct cache updates are dropped (when drop is enabled): only the
        # tailer's invalidation reaches the cache, so a held read misses even without a
        # strong mode, and the invalidation that releases its fill is the only guard.
        held = [p.cache_key(k) for p in probes for k in self._held_keys(p)]
        hold_drops = list(held) if self.hold and "drop" in self.faults else []
        # the aged and shared-fill keys are never written through: their reads must load
        if "drop" in self.faults:
            hold_drops += [p.cache_key(p.aged) for p in self._aged(probes)]
            hold_drops += [p.cache_key(p.shared_fill) for p in self._shared(probes)]
        # no random fault may close a window early
        await self._set({}, {"drop": hold_drops} if hold_drops else {})
        # A fresh version of every probe key; the lost and stalled ones cached at it.
        await _all(cl.write("put", p.col, k) for p in probes for k in p.ids)
        await _all(
            cl.read(p.col, k, p.col.shared_mode) for p in probes for k in (p.lost, p.stalled)
        )
        targets: dict[str, list[str]] = {}
        if self.hold:
            targets["pause-fill"] = held
        if self.shared:
            targets["pause-shared-fill"] = [
                p.cache_key(p.shared_fill) for p in self._shared(probes)
            ]
        if self.lost:
            targets["invalidation-error"] = [p.cache_key(p.lost) for p in probes]
        dropped = hold_drops + ([p.cache_key(p.lost) for p in probes] if self.lost else [])
        dropped += [p.cache_key(p.stalled) for p in probes] if self.stall else []
        if dropped:
            targets["drop"] = dropped
        await self._set({}, targets)
        acked = await self._hold_and_lose(probes)
        # The holds released; the drops stay for the stall window, which comes after these
        # reads so that they are made as soon as the bound has passed (a broken guard is
        # then caught about S after the round's writes, not 2S).
        drops = {k: v for k, v in targets.items() if k == "drop"}
        await self._set({}, drops)
        # Past the bound, once the holder has caught up: a refused fill or a retried
        # delivery leaves the new version; a broken guard leaves the old one in L1.
        await _all(
            self._read_past(p.col, k, at, fresh=True)
            for p in probes
            for k, at in acked.get(p.col.name, {}).items()
        )
        if self.stall:
            await self._stall(probes, drops)
        await self._set({}, {})

    def _held_keys(self, p: Probe) -> tuple[str, ...]:
        """The probe's keys whose loads a hold window holds."""
        if "drop" not in self.faults:
            return (p.hold_delete, p.hold_put)
        joins = (p.join,) if p.joinable else ()
        return (p.hold_delete, p.hold_put, *joins, p.abandon)

    async def _join(self, p: Probe) -> Op:
        """The join window's read of the version a write will make (``min_version`` = the
        key's version + 1), sent first so that it reaches the held load before the write
        releases it, then the write; returns the write.

        Sent together, the read joined the load only when it beat the tailer's release by
        chance (rarely on a loaded machine); sent first, it joins while the load is held,
        and the write waits until the server reports the join (a fixed pause lost the
        race on a loaded machine too).
        """
        cl = self.client
        want = cl.seen.get((p.col.name, p.join), 0) + 1
        key = p.cache_key(p.join)
        before = await self._parked(key)
        read = asyncio.create_task(cl.read(p.col, p.join, "session", min_version=want))
        self.tally.joins += 1
        await self._until_parked(key, before)  # the read has joined the held load
        write = await cl.write("put", p.col, p.join)
        await read
        return write

    async def _hold_and_lose(self, probes: Sequence[Probe]) -> dict[str, dict[str, float]]:
        """The hold, join and lost windows; returns per collection the acknowledgement time
        of each key's write."""
        cl = self.client
        held: list[tuple[Probe, str, asyncio.Task[Op]]] = []
        if self.hold:
            for p in probes:
                for k in self._held_keys(p):
                    # a strong read never shares its load; these windows need one shared
                    mode = p.col.shared_mode if k in (p.join, p.abandon) else p.load_mode
                    held.append((p, k, asyncio.create_task(cl.read(p.col, k, mode))))
        shared = self._shared(probes)
        # answered at once (L1 takes the fill); the shared tier's fill is held behind them
        await _all(cl.read(p.col, p.shared_fill, p.load_mode) for p in shared)
        waiting = {p.cache_key(k) for p, k, _ in held} | {
            p.cache_key(p.shared_fill) for p in shared
        }
        if waiting:
            await self._until_held(waiting)
        if self.hold:
            held = await self._abandon(held)
        writes: list[tuple[Probe, str, Awaitable[Op]]] = []
        for p in probes:
            if self.hold:
                writes.append((p, p.hold_delete, cl.write("delete", p.col, p.hold_delete)))
                writes.append((p, p.hold_put, cl.write("put", p.col, p.hold_put)))
                if p.join in self._held_keys(p):
                    writes.append((p, p.join, self._join(p)))
                if p.abandon in self._held_keys(p):
                    writes.append((p, p.abandon, cl.write("put", p.col, p.abandon)))
            if p in shared:
                writes.append((p, p.shared_fill, cl.write("put", p.col, p.shared_fill)))
            if self.lost:
                writes.append((p, p.lost, cl.write("put", p.col, p.lost)))
        done = await asyncio.gather(*(w for _, _, w in writes))
        acked: dict[str, dict[str, float]] = {}
        written: dict[tuple[str, str], int] = {}
        for (p, k, _), op in zip(writes, done, strict=True):
            if op.outcome == OK and op.version is not None:
                acked.setdefault(p.col.name, {})[k] = op.ret
                written[(p.col.name, k)] = op.version
                if k == p.lost:
                    self.tally.lost += 1
                elif k == p.shared_fill:
                    self.tally.shared_fills += 1
        for p, k, task in held:
            read = await task
            new = written.get((p.col.name, k))
            if new is not None and read.outcome == OK and (read.version or 0) < new:
                self.tally.holds += 1
            else:
                self.tally.hold_misses += 1
        return acked

    async def _abandon(
        self, held: list[tuple[Probe, str, asyncio.Task[Op]]]
    ) -> list[tuple[Probe, str, asyncio.Task[Op]]]:
        """The abandon window: a second read joins each held abandon-key load, then the
        first is abandoned; returns ``held`` with the second in place of the first."""
        out = []
        for p, k, first in held:
            if k != p.abandon:
                out.append((p, k, first))
                continue
            key = p.cache_key(k)
            before = await self._parked(key)
            second = asyncio.create_task(self.client.read(p.col, k, p.col.shared_mode))
            await self._until_parked(key, before)  # the second request joined the load
            first.cancel()  # its connection is closed: the server cancels the request
            with contextlib.suppress(asyncio.CancelledError):
                await first
            self.tally.abandoned += 1
            out.append((p, k, second))
        return out

    async def _fault_state(self) -> dict[str, Any] | None:
        """The server's fault state (None: the control endpoint failed)."""
        try:
            state = (await control(self.http, "GET")).json()
        except (httpx.HTTPError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    async def _until(self, done: Callable[[dict[str, Any]], bool]) -> None:
        """Poll the fault state until ``done`` says so, at most HELD_WAIT (a failed poll
        ends the wait: the window then runs as it can)."""
        deadline = self.wl.now() + HELD_WAIT
        while self.wl.now() < deadline:
            state = await self._fault_state()
            if state is None or done(state):
                return
            await asyncio.sleep(0.01)

    async def _parked(self, key: str) -> int | None:
        """How many reads the server has parked on held loads of ``key`` (held one or
        joined one; None: the server does not say, or the control endpoint failed)."""
        state = await self._fault_state()
        return None if state is None else _parked_of(state, key)

    async def _until_parked(self, key: str, before: int | None) -> None:
        """Wait until the server reports one more read parked on a held load of ``key``
        than ``before`` (it joined the held load; with several workers, it may have
        reached another one and had its own load held), at most HELD_WAIT; a server
        that does not report it gets SETTLE seconds instead."""
        if before is None:
            await asyncio.sleep(SETTLE)
            return

        def arrived(state: dict[str, Any]) -> bool:
            now = _parked_of(state, key)
            return now is None or now > before

        await self._until(arrived)

    async def _until_held(self, keys: set[str]) -> None:
        """Wait until the server reports a fill of every key in ``keys`` held."""
        await self._until(lambda state: keys <= set(state.get("holding", ())))

    def _shared(self, probes: Sequence[Probe]) -> list[Probe]:
        """The probes the shared-fill window runs on."""
        return [p for p in probes if "bounded" in p.col.modes] if self.shared else []

    def _aged(self, probes: Sequence[Probe]) -> list[Probe]:
        """The probes the age window runs on."""
        return [p for p in probes if p.ageable] if self.age else []

    async def _stall(self, probes: Sequence[Probe], targets: dict[str, list[str]]) -> None:
        """Hold the tailer just past the bound of each collection: write its stalled key
        (direct update dropped) and read it past the bound while the tailer is stalled;
        the age window runs beside it."""
        aged = self._aged(probes)
        held_keys = [p.cache_key(p.aged) for p in aged]
        # the aged keys' drops were set with the round's (their direct updates never land)
        stall_targets = {**targets, "pause-fill": held_keys} if aged else targets
        await self._set({"stall-tailer": 1.0}, stall_targets)
        cl = self.client
        loads = [asyncio.create_task(cl.read(p.col, p.aged, p.load_mode)) for p in aged]
        if loads:
            await self._until_held(set(held_keys))
        stalled, aged_writes = await asyncio.gather(
            _all(cl.write("put", p.col, p.stalled) for p in probes),
            _all(cl.write("put", p.col, p.aged) for p in aged),
        )
        self.tally.stalls += sum(1 for op in stalled if op.outcome == OK)
        await asyncio.gather(
            _all(
                self._read_past(p.col, p.stalled, op.ret, fresh=False)
                for p, op in zip(probes, stalled, strict=True)
                if op.outcome == OK
            ),
            self._age_reads(aged, aged_writes, loads, targets),
        )

    async def _age_reads(
        self,
        aged: Sequence[Probe],
        writes: Sequence[Op],
        loads: Sequence[asyncio.Task[Op]],
        stall_targets: dict[str, list[str]],
    ) -> None:
        """The age window's end: release the held fills ``AGE_GAP`` after the writes were
        acknowledged (the round's ``stall_targets``: the stall and the drops stay), then
        read each aged key in bounded mode while the holder is still within the bound."""
        if not aged:
            return
        acked = [op.ret for op in writes if op.outcome == OK]
        if acked:
            delay = max(acked) + AGE_GAP - self.wl.now()
            if delay > 0:
                await asyncio.sleep(delay)
        await self._set({"stall-tailer": 1.0}, stall_targets, settle=False)
        for load in loads:
            await load  # answered once its fill was offered
        self.tally.aged += sum(1 for op in writes if op.outcome == OK)
        await _all(
            self.client.read(p.col, p.aged, "bounded")
            for p, op in zip(aged, writes, strict=True)
            if op.outcome == OK
            for _ in range(AGE_READS)
        )

    async def _read_past(self, col: Collection, key: str, acked: float, *, fresh: bool) -> None:
        """A read of ``key`` in the collection's shared mode (bounded where it has it)
        starting ``S + margin`` after ``acked``; with ``fresh``, repeated while the holder
        lags (its answer proves nothing about the cache) for at most ``max(1 s, S)``."""
        wl = self.wl
        bound = col.max_staleness
        at = acked + bound + margin(bound)
        give_up = at + max(1.0, bound)
        while True:
            delay = at - wl.now()
            if delay > 0:
                await asyncio.sleep(delay)
            op = await self.client.read(col, key, col.shared_mode)
            self.tally.reads_past_bound += 1
            if op.detail != "lagging":
                return
            self.tally.lagging += 1
            if not fresh or wl.now() > give_up or wl.stop:
                return
            at = wl.now() + max(0.02, bound / 10)


def _parked_of(state: dict[str, Any], key: str) -> int | None:
    """``key``'s parked reads in a fault state (None: the server does not report them)."""
    parked = state.get("parked")
    return int(parked.get(key, 0)) if isinstance(parked, dict) else None


async def _all(aws: Any) -> list[Op]:
    return list(await asyncio.gather(*aws))


__all__ = ["FAULT_PROBABILITY", "Probe", "Schedule", "Tally", "control", "margin"]
