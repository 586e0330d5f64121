"""One simulated deployment: K nodes of the real service sharing one primary and one shared
tier, driven by clients through the service's own read and write calls.

Every node is built as ``maxage serve`` builds a worker: the real ``core.Cache``
(L1), the real :class:`maxage.service.Service` with its reads, writes, tailer
and holders, the real fill guard; only the primary (:class:`MemoryStore`), the
shared tier (:class:`MemoryTier`) and the network between them are simulated.
Each node reaches them through :class:`NodePrimary` and :class:`NodeTier`,
which add the latency, partitions and lost notifications the seed chooses.

The workload is a list of :class:`Step` (one client operation each, with the
think time before it); running the same steps with the same seed gives the same
history, byte for byte. Every operation is recorded as the checker records it
(:class:`maxage.checker.history.Op`), with times on the one virtual clock.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import msgspec

from maxage.checker import lists
from maxage.checker.history import FAIL, OK, UNKNOWN, Op, data_hash
from maxage.checker.revocation import AUTH_READ, REVOKE
from maxage.checker.revocation import KINDS as KEY_KINDS
from maxage.contracts import CollectionSpec, ReadMode
from maxage.core.cache import Cache
from maxage.core.types import SetOutcome
from maxage.faults.mutants import UnguardedMemoryTier, cache_class, plant_service
from maxage.service import (
    DocumentNotFound,
    DomainError,
    Forbidden,
    KeyNotFound,
    MinVersionUnavailable,
    PreconditionFailed,
    Service,
    StoreError,
    Unauthenticated,
    WriteIntent,
    WriteKind,
    prepare,
    read_scope,
)
from maxage.service.access import Access
from maxage.sim.faults import TIMED, FaultPlan, SimHooks, StoreHooks, cancel_all
from maxage.sim.loop import SimHandle, SimLoop, VirtualClock
from maxage.store.base import (
    BatchResult,
    BatchWriteRequest,
    ChangeBatch,
    Document,
    ListQuery,
    ListResult,
    Store,
    StoreStats,
    WriteRequest,
    WriteResult,
)
from maxage.store.memory import MemoryStore
from maxage.tiers.base import TierEntry
from maxage.tiers.memory import MemoryTier

BASE_TIME = 1_700_000_000.0  # virtual time 0 on every clock (an epoch-like wall time)
CACHE_BYTES = 64 << 20
_MODES = {m.value: m for m in ReadMode}
WRITE_KINDS = ("put", "create", "delete")
NETWORK_EPSILON = 1e-6  # seconds: the least time a response takes to reach its client
_FIRST_PAGE = (("page_size", str(lists.PAGE_SIZE)),)  # the page maxage check reads
KEEP_SCOPE = "write:*"  # the scope no simulated scope change takes away


class _Meta(msgspec.Struct):
    version: int


class _Data(msgspec.Struct):
    tok: str | None = None


class _Body(msgspec.Struct):
    """The parts of a read's body the simulator checks (P0) and records (the token)."""

    id: str
    version: int
    data: _Data
    meta: _Meta


_decode_body = msgspec.json.Decoder(_Body).decode


class Step(NamedTuple):
    """One client operation of a workload (what a shrunk reproduction lists)."""

    client: int
    think: float  # seconds the client waits before sending it
    node: int  # the node it is sent to (the next live one if that one is down)
    kind: str  # read | list | put | create | delete | auth-read | revoke | rescope
    collection: str
    key: int  # the document (the API key, for the last three); not used by a list
    mode: str | None = None  # reads and lists: bounded | strong | session
    if_match: bool = False  # writes: send the client's last seen version as If-Match
    give_up: float | None = None  # the client disconnects after this many seconds
    chase: bool = False  # reads: aim at the key of its collection's latest write in flight


def accept_anything(spec: CollectionSpec) -> CollectionSpec:
    """The collection with a schema that accepts any document: the simulator's documents
    are ``{"tok", "n"}`` whatever the config's schema (validation is not a cache concern)."""
    return dataclasses.replace(spec, validator=lambda document: [])


class NodePrimary:
    """A node's connection to the shared primary: latency both ways on document reads,
    writes and the change log; notifications between nodes, late or lost."""

    def __init__(self, world: World, node: Node) -> None:
        self.world = world
        self.node = node
        self.store = world.store
        self.stats: StoreStats = world.store.stats

    def __getattr__(self, name: str) -> Any:
        """Every other part of the store protocol: the shared primary's, without latency
        (idempotency claims, cursors, secrets, indexes: not what the simulation varies).
        A method is kept on this object, so the next call does not come here again."""
        value = getattr(self.store, name)
        if callable(value):
            self.__dict__[name] = value
        return value

    def _wait(self) -> asyncio.Future[None]:
        """One leg of a call (awaited; a future, not a coroutine: this runs on every leg)."""
        world = self.world
        if world.latency:
            # FaultPlan.latency, inlined: the same draw and the same arithmetic
            r = world.random()
            if r >= 0.5:
                plan = world.plan
                plan.counts["latency"] += 1
                delay = (r - 0.5) * plan.bound / 10
                if delay:
                    return world.loop.sleep(delay)
        return world.no_wait

    async def get(self, collection: str, id: str) -> Document | None:
        await self._wait()
        doc = await self.store.get(collection, id)
        await self._wait()
        return doc

    async def list_query(self, query: ListQuery) -> ListResult:
        await self._wait()
        result = await self.store.list_query(query)
        await self._wait()
        return result

    async def write(self, request: WriteRequest) -> WriteResult:
        await self._wait()
        result = await self.store.write(request)
        await self._wait()
        return result

    async def write_batch(self, request: BatchWriteRequest) -> BatchResult:
        await self._wait()
        result = await self.store.write_batch(request)
        await self._wait()
        return result

    async def change_bodies(self, seqs: Sequence[int]) -> dict[int, bytes | None]:
        await self._wait()
        bodies = await self.store.change_bodies(seqs)
        await self._wait()
        return bodies

    async def changes_after(self, cursor: int, limit: int) -> ChangeBatch:
        await self._wait()
        batch = await self.store.changes_after(cursor, limit)
        await self._wait()
        return batch

    async def notify(self) -> None:
        self.world.notify(self.node)

    async def listen(self, wake: Callable[[], None]) -> None:
        self.node.wake = wake


class NodeTier:
    """A node's connection to the shared tier: latency both ways, and partitions."""

    def __init__(self, world: World, node: Node) -> None:
        self.world = world
        self.node = node
        self.tier = world.tier
        self.stats = world.tier.stats

    @property
    def available(self) -> bool:
        return not self.node.partitioned and self.tier.available

    def _wait(self) -> asyncio.Future[None]:
        world = self.world
        # a shared tier answers in well under the primary's time: a leg is late 1 in 8
        if world.latency and world.random() < 0.25:
            r = world.random()  # FaultPlan.latency, inlined
            if r >= 0.5:
                plan = world.plan
                plan.counts["latency"] += 1
                delay = (r - 0.5) * plan.bound / 10
                if delay:
                    return world.loop.sleep(delay / 4)
        return world.no_wait

    async def get(self, key: str) -> TierEntry | None:
        await self._wait()
        entry = None if self.node.partitioned else await self.tier.get(key)
        await self._wait()
        return entry

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
        await self._wait()
        world = self.world
        if world.plan.roll("pause-fill", world.rng):
            await world.fill_held(key, version)
        if self.node.partitioned:
            return SetOutcome.UNAVAILABLE
        outcome = await self.tier.set_if_newer(
            key, version, body, meta, started_at=started_at, ttl=ttl
        )
        await self._wait()
        return outcome

    async def invalidate(self, key: str, version: int) -> bool:
        await self._wait()
        if self.node.partitioned:
            return False
        done = await self.tier.invalidate(key, version)
        if done:
            self.world.tier_invalidated(key, version)
        await self._wait()
        return done

    async def rate_limit(
        self, bucket: str, interval: float, capacity: float
    ) -> tuple[bool, float, float] | None:
        return None

    async def close(self) -> None:
        return None


class Node:
    """One server process: built from the real code, crashed and restarted by the seed."""

    def __init__(self, world: World, index: int) -> None:
        self.world = world
        self.index = index
        self.up = False
        self.partitioned = False
        self.service: Service | None = None
        self.hooks: SimHooks | None = None
        self.tasks: set[asyncio.Future[Any]] = set()  # everything a crash cancels
        self.ops: dict[OpContext, None] = {}  # requests in progress
        self.wake: Callable[[], None] | None = None
        self.started: asyncio.Event = asyncio.Event()
        self.restart_timer: SimHandle | None = None
        self.restarting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        world = self.world
        plan = world.plan
        rng = world.rng
        skew = (rng.random() * 2 - 1) * plan.skew
        if skew:
            plan.counts["skew"] += 1  # a node (re)started with a clock of its own
        clock = VirtualClock(world.loop, BASE_TIME, skew)
        self.tasks = set()
        hooks = SimHooks(plan, rng, clock.now, world.mutant, self.tasks)
        cls: type[Cache] = cache_class(world.mutant)
        cache = cls(CACHE_BYTES, clock=clock, thread_safe=False, seed=rng.randrange(1 << 30))
        service = Service(
            world.specs,
            cast(Store, NodePrimary(world, self)),
            cache,
            clock,
            l2=NodeTier(world, self),
            hooks=hooks,
            auth=True,
            auth_bound=world.auth_bound,
        )
        plant_service(service, world.mutant)
        self.hooks = hooks
        self.service = service
        await service.start()
        self.up = True
        self.started.set()

    def crash(self) -> None:
        """The process dies: its requests, its tailer and its timers are gone; L1 with it."""
        self.up = False
        self.started = asyncio.Event()
        service, hooks = self.service, self.hooks
        self.service = None
        self.wake = None
        for ctx in self.ops:
            ctx.reason = "crash"  # the client hears nothing more from this process
        if service is not None:
            cancel_all(self.tasks)
            service.kill()
        if hooks is not None:
            for handle in hooks.handles:
                handle.cancel()


@dataclass(slots=True, eq=False)
class OpContext:
    op: Op
    reason: str | None = None  # why the client's request was cancelled: crash | disconnect


class ClientState:
    __slots__ = ("index", "seen", "seq")

    def __init__(self, index: int) -> None:
        self.index = index
        self.seq = 0
        self.seen: dict[tuple[str, str], int] = {}


class World:
    """The deployment of one simulation run (see the module docstring)."""

    def __init__(
        self,
        specs: Mapping[str, CollectionSpec],
        *,
        loop: SimLoop,
        nodes: int,
        plan: FaultPlan,
        mutant: str | None,
        key_prefix: str,
    ) -> None:
        self.specs = {name: accept_anything(s) for name, s in specs.items()}
        self.loop = loop
        self.rng: random.Random = loop.rng
        self.random = loop.random
        self.plan = plan
        self.mutant = mutant
        self.latency = "latency" in plan.enabled
        self.key_prefix = key_prefix
        self.no_wait: asyncio.Future[None] = loop.create_future()  # a leg with no latency
        self.no_wait.set_result(None)
        primary_clock = VirtualClock(loop, BASE_TIME)
        self.store = MemoryStore(
            clock=primary_clock, hooks=StoreHooks(plan, loop.rng, mutant, self.no_wait), seed=0
        )
        tier_class = UnguardedMemoryTier if mutant == "unguarded-l2-fill" else MemoryTier
        self.tier = tier_class(clock=primary_clock)
        self.nodes = [Node(self, i) for i in range(nodes)]
        self.ops: list[Op] = []
        self.next_id = 0
        self.done = False
        self.keys_used: dict[tuple[str, str], None] = {}
        # per collection, the keys of the writes in flight, oldest first (chasing reads)
        self.writing: dict[str, list[int]] = {}
        self.held_fills: dict[str, list[tuple[int, asyncio.Future[None]]]] = {}
        self.open = asyncio.Event()  # cleared during a lull
        self.open.set()
        self.lull = False  # not open.is_set(), read by every client step without a call
        self.auth_bound = plan.bound  # A, the nodes' authorization bound (P8)
        self.api_keys: list[tuple[str, str]] = []  # (id, secret), made before the clients
        self.taken: dict[str, set[str]] = {}  # key id -> collections whose read was taken
        self.rescoping: dict[str, asyncio.Lock] = {}

    # -- the network -------------------------------------------------------------------

    def notify(self, sender: Node) -> None:
        """A commit's notification reaches the other nodes' tailers, late or not at all."""
        plan, rng = self.plan, self.rng
        for node in self.nodes:
            if node is sender or not node.up or node.wake is None:
                continue
            if plan.roll("drop", rng):
                continue
            delay = plan.latency(rng) if self.latency else 0.0
            self.loop.call_later(delay, node.wake)

    async def fill_held(self, key: str, version: int) -> None:
        """A shared-tier fill of ``version`` held until an invalidation of a newer version
        of ``key`` has reached the tier (at most ``2S``): the invalidation arrives before
        the fill it should have beaten, which only the tier's fill guard refuses."""
        held: asyncio.Future[None] = self.loop.create_future()
        waiting = self.held_fills.setdefault(key, [])
        entry = (version, held)
        waiting.append(entry)
        timer = self.loop.call_later(self.plan.long_delay(self.rng), _release, held)
        try:
            await held
        finally:
            timer.cancel()
            waiting.remove(entry)

    def tier_invalidated(self, key: str, version: int) -> None:
        for below, held in self.held_fills.get(key, ()):
            if below < version:
                _release(held)

    # -- operations --------------------------------------------------------------------

    def new_op(self, client: ClientState, step: Step, kind: str) -> Op:
        key = "" if kind == lists.LIST else f"{self.key_prefix}k{step.key}"  # the document's id
        op = Op(self.next_id, client.index, kind, step.collection, key)
        self.next_id += 1
        op.invoke = self.loop.now
        self.ops.append(op)
        return op

    async def live_node(self, index: int) -> Node:
        nodes = self.nodes
        for i in range(len(nodes)):
            node = nodes[(index + i) % len(nodes)]
            if node.up:
                return node
        node = nodes[index % len(nodes)]
        await node.started.wait()
        return node

    def chase(self, step: Step) -> Step:
        """The read aimed at a race window: on the key of its collection's latest write in
        flight, if one is (deterministic: the loop's order decides which are)."""
        in_flight = self.writing.get(step.collection)
        if not in_flight or in_flight[-1] == step.key:
            return step
        # step._replace(key=...), without its generic machinery (this runs per read)
        return Step(
            step.client,
            step.think,
            step.node,
            step.kind,
            step.collection,
            in_flight[-1],
            step.mode,
            step.if_match,
            step.give_up,
            step.chase,
        )

    async def run_step(self, client: ClientState, step: Step, phase: str = "run") -> Op:
        """One client request. A crash of its node loses the response (the handler may go
        on, as a paused process would, but the client hears nothing); a client that gives
        up cancels the handler, as a disconnect does in the API."""
        if step.chase:
            step = self.chase(step)
        node = self.nodes[step.node % len(self.nodes)]
        if not node.up:
            node = await self.live_node(step.node)
        kind = step.kind
        writing = None
        if kind in WRITE_KINDS:
            writing = self.writing.setdefault(step.collection, [])
            writing.append(step.key)
        op = self.new_op(client, step, kind)
        op.phase = phase
        ctx = OpContext(op)
        if kind == "read":
            self.keys_used[(step.collection, op.key)] = None
            op.mode = step.mode
            coro = self._read(node, client, step, op)
        elif kind == lists.LIST:
            op.mode = step.mode
            coro = self._list(node, client, step, op)
        elif kind in KEY_KINDS:
            op.key = self.api_keys[step.key % len(self.api_keys)][0]
            coro = self._key_op(node, step, op)
        else:
            coro = self._write(node, client, step, op)
        node.ops[ctx] = None
        try:
            if step.give_up is None:
                await coro
            else:
                await self._abandonable(coro, step.give_up, ctx)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # nobody cancelled this request: a cancellation leaked into it
            op.ret = self.loop.now
            op.outcome, op.status = OK, 500
            op.integrity = "internal error: CancelledError (the request was not cancelled)"
        finally:
            node.ops.pop(ctx, None)
            if writing is not None:
                writing.remove(step.key)
        # Every response takes some time to arrive (and the checker's linearizability
        # search needs invoke < ret); widening an interval only makes the checks lenient.
        op.ret = (op.ret if op.ret > op.invoke else op.invoke) + NETWORK_EPSILON
        if ctx.reason is not None:
            if ctx.reason == "disconnect":
                self.plan.counts["disconnect"] += 1
            op.ret = self.loop.now + NETWORK_EPSILON
            op.outcome = FAIL if kind in ("read", lists.LIST) else UNKNOWN
            op.status = op.version = op.tier = op.age = op.integrity = None
            op.page = op.covered_to = None
            op.detail = ctx.reason
        return op

    async def _abandonable(
        self, coro: Coroutine[Any, Any, None], after: float, ctx: OpContext
    ) -> None:
        task = self.loop.create_task(coro)
        timer = self.loop.call_later(after, _give_up, task, ctx)
        try:
            await task
        except asyncio.CancelledError:
            if ctx.reason is None or not task.cancelled():
                raise
        finally:
            timer.cancel()

    def _read_failed(self, op: Op, exc: Exception) -> None:
        """A read's (or a page's) error, as the API answers it: 409 below ``min_version``,
        503 when the primary failed, else an internal error (500, a P0 violation)."""
        op.ret = self.loop.now
        if isinstance(exc, MinVersionUnavailable):
            op.status, op.outcome, op.detail = 409, FAIL, exc.detail
        elif isinstance(exc, (StoreError, TimeoutError)):
            op.status, op.outcome, op.detail = 503, FAIL, type(exc).__name__
        else:
            op.status, op.integrity = 500, f"internal error: {exc!r}"

    async def _read(self, node: Node, client: ClientState, step: Step, op: Op) -> None:
        service = node.service
        assert service is not None
        spec = self.specs[step.collection]
        mode = _MODES[str(step.mode)]
        ckey = (step.collection, op.key)
        min_version = client.seen.get(ckey, 0) if mode is ReadMode.SESSION else 0
        if min_version:
            op.min_version = min_version
        try:
            result = await service.reads.read(spec, op.key, mode, min_version)
        except DocumentNotFound:
            op.ret = self.loop.now
            op.status = 404
            return
        except Exception as exc:
            self._read_failed(op, exc)
            return
        op.ret = self.loop.now
        op.status = 200
        op.version = result.version
        op.tier = result.source._value_  # .value, without enum's descriptor frames
        op.age = result.age
        try:
            body = _decode_body(result.body)
        except msgspec.ValidationError as exc:
            op.integrity = f"the response body is not a document: {exc}"
            return
        version = result.version
        if body.version != version or body.meta.version != version or body.id != op.key:
            op.integrity = (
                f"body version {body.version}, meta.version {body.meta.version}, "
                f"id {body.id!r} for version {version} of {op.key}"
            )
        op.token = body.data.tok
        if result.version > client.seen.get(ckey, 0):
            client.seen[ckey] = result.version

    async def _list(self, node: Node, client: ClientState, step: Step, op: Op) -> None:
        """The collection's first page through the service's listing (the code the API's
        ``GET /v1/{collection}?page_size=100`` runs), recorded as ``maxage check`` records
        a page (:mod:`maxage.checker.lists`); a session page asks for the highest
        collection version this client saw."""
        service = node.service
        assert service is not None
        spec = self.specs[step.collection]
        mode = _MODES[str(step.mode)]
        collection = step.collection
        min_version = client.seen.get((collection, ""), 0) if mode is ReadMode.SESSION else 0
        if min_version:
            op.min_version = min_version
        listing = service.listing
        try:
            request = listing.parse(spec, _FIRST_PAGE)
            result = await listing.read(spec, request, mode, min_version)
        except Exception as exc:
            self._read_failed(op, exc)
            return
        op.ret = self.loop.now
        op.status = 200
        lists.parse_body(op, "tok", 200, result.body)
        seen = client.seen
        if op.version is not None and op.version > seen.get((collection, ""), 0):
            seen[(collection, "")] = op.version
        # what a page showed is seen, as by maxage check's clients (P4 counts it)
        for key, shown in (op.page or {}).items():
            if shown[0] > seen.get((collection, key), 0):
                seen[(collection, key)] = shown[0]

    async def _write(self, node: Node, client: ClientState, step: Step, op: Op) -> None:
        service = node.service
        assert service is not None
        spec = self.specs[step.collection]
        ckey = (step.collection, op.key)
        kind = step.kind
        if_match = None
        if step.if_match or (kind == "delete" and spec.require_if_match):
            if_match = client.seen.get(ckey, 0) or None
            op.if_match = if_match
        data = None
        if kind != "delete":
            client.seq += 1
            op.token = f"c{client.index}-{client.seq}"
            data = {"tok": op.token, "n": client.seq}
            op.body_hash = data_hash(data)  # what a list page showing it must hold (P0)
        intent = WriteIntent(
            WriteKind.DELETE if kind == "delete" else WriteKind.REPLACE,
            op.key,
            data,
            if_match=if_match,
            create_only=kind == "create",
        )
        try:
            prepared = prepare(spec, intent)
            result = await service.writes.commit(prepared)
        except PreconditionFailed as exc:
            op.ret = self.loop.now
            op.status, op.outcome = 412, FAIL
            op.version = exc.current_version
            return
        except DocumentNotFound:
            op.ret = self.loop.now
            op.status, op.outcome = 404, FAIL
            return
        except DomainError as exc:  # refused before anything was written (428, 422, ...)
            op.ret = self.loop.now
            op.status, op.outcome, op.detail = 400, FAIL, type(exc).__name__
            return
        except (StoreError, TimeoutError) as exc:
            op.ret = self.loop.now
            op.status, op.outcome, op.detail = 503, UNKNOWN, type(exc).__name__
            return
        except Exception as exc:
            op.ret = self.loop.now
            op.status, op.integrity = 500, f"internal error: {exc!r}"
            return
        op.ret = self.loop.now
        doc = result.document
        op.version = doc.version
        op.status = 204 if kind == "delete" else (201 if result.created else 200)
        if doc.version > client.seen.get(ckey, 0):
            client.seen[ckey] = doc.version

    async def make_keys(self, count: int) -> None:
        """``count`` API keys, made through node 0 before the clients start (ids and secrets
        drawn from the seed), each allowed to read every collection."""
        node = self.nodes[0]
        assert node.service is not None
        access = node.service.access
        access.token_bytes = self.rng.randbytes
        for _ in range(count):
            info, secret = await access.create(self._scopes(frozenset()), "sim")
            self.api_keys.append((info.id, secret))

    def _scopes(self, taken: set[str] | frozenset[str]) -> list[str]:
        # write:* is never taken away, so a key always has a scope
        return [read_scope(c) for c in sorted(self.specs) if c not in taken] + [KEEP_SCOPE]

    async def _key_op(self, node: Node, step: Step, op: Op) -> None:
        """An API key used (the API's authentication and authorization of a read of the
        collection) or changed by an admin (revoked, or its read of the collection taken
        away) through the node's real :class:`Access`; recorded as ``maxage check``'s
        revocation probe records it (status 200 = the request was accepted)."""
        service = node.service
        assert service is not None
        access = service.access
        key_id, secret = self.api_keys[step.key % len(self.api_keys)]
        kind = step.kind
        try:
            if kind == AUTH_READ:
                access.authorize(await access.authenticate(secret), read_scope(step.collection))
                op.status = 200
            elif kind == REVOKE:
                await access.revoke(key_id)
                op.status = 204
            else:
                await self._rescope(access, key_id, step.collection)
                op.status = 200
        except Unauthenticated:
            op.status = 401
        except Forbidden:
            op.status = 403
        except KeyNotFound:
            op.status, op.outcome = 404, FAIL
        except (StoreError, TimeoutError) as exc:
            op.status, op.detail = 503, type(exc).__name__
            op.outcome = FAIL if kind == AUTH_READ else UNKNOWN
        except Exception as exc:
            op.status, op.integrity = 500, f"internal error: {exc!r}"
        op.ret = self.loop.now

    async def _rescope(self, access: Access, key_id: str, collection: str) -> None:
        """Take ``read:<collection>`` away from the key. One scope change of a key at a
        time (as one admin makes them): each writes every scope taken so far, so a slower
        earlier one can never give a scope back."""
        lock = self.rescoping.setdefault(key_id, asyncio.Lock())
        async with lock:
            taken = self.taken.setdefault(key_id, set())
            taken.add(collection)
            await access.set_scopes(key_id, self._scopes(taken))

    # -- the run -----------------------------------------------------------------------

    async def client(self, state: ClientState, steps: Sequence[Step]) -> None:
        sleep = self.loop.sleep
        open_ = self.open
        for step in steps:
            # at least the time the last response took to arrive (its ret): a client's
            # next request never starts before it heard the last one (P4 orders by invoke)
            await sleep(step.think if step.think >= NETWORK_EPSILON else NETWORK_EPSILON)
            if self.lull:  # every client waits
                await open_.wait()
            await self.run_step(state, step)

    async def nemesis(self) -> None:
        """The timed faults: a stalled tailer, a crash, a flushed or partitioned tier, a lull."""
        plan, rng = self.plan, self.rng
        timed = [f for f in TIMED if f in plan.enabled]
        if not timed:
            return
        bound = plan.bound
        while not self.done:
            await asyncio.sleep(rng.expovariate(1.0) * bound)
            if self.done:
                return
            fault = rng.choice(timed)
            node = rng.choice(self.nodes)
            if fault == "stall-tailer" and node.hooks is not None and node.up:
                node.hooks.stalled = True
                hooks = node.hooks
                self.loop.call_later(plan.long_delay(rng), _unstall, hooks)
            elif fault == "crash" and node.up:
                if sum(n.up for n in self.nodes) < 2 and len(self.nodes) > 1:
                    continue
                node.crash()
                node.restart_timer = self.loop.call_later(rng.random() * bound, self._restart, node)
            elif fault == "tier-flush":
                self.tier.flush_entries()
            elif fault == "tier-partition" and not node.partitioned:
                node.partitioned = True
                self.loop.call_later(rng.random() * bound, _heal_partition, node)
            elif fault == "lull" and self.open.is_set():
                # no request for a while: whatever a lost invalidation left behind is
                # older than the bound when the clients come back
                self.open.clear()
                self.lull = True
                self.loop.call_later((1 + rng.random()) * bound, self._end_lull)
            else:
                continue
            plan.counts[fault] += 1

    def _end_lull(self) -> None:
        self.lull = False
        self.open.set()

    def _restart(self, node: Node) -> None:
        node.restart_timer = None
        if not node.up:
            node.restarting = self.loop.create_task(node.start())

    async def heal(self) -> None:
        """Faults stop; every node is up and reachable; the bound and every delay pass."""
        self.done = True
        self.plan.healed = True
        self._end_lull()
        for node in self.nodes:
            node.partitioned = False
            if node.restart_timer is not None:
                node.restart_timer.cancel()
                node.restart_timer = None
            if node.restarting is not None and not node.restarting.done():
                await node.restarting
            if not node.up:
                await node.start()
        await asyncio.sleep(5 * self.plan.bound)

    async def final_reads(self) -> None:
        """P6: after healing, a strong read of every key, then a read on every node."""
        checker = ClientState(-1)
        for collection, doc_id in list(self.keys_used):
            spec = self.specs[collection]
            key = int(doc_id[len(self.key_prefix) + 1 :])
            strong = Step(-1, 0.0, 0, "read", collection, key, ReadMode.STRONG.value)
            await self.run_step(checker, strong, "final")
            if ReadMode.BOUNDED in spec.read_modes:
                for node in self.nodes:
                    step = strong._replace(node=node.index, mode=ReadMode.BOUNDED.value)
                    await self.run_step(checker, step, "final")

    def shutdown(self) -> None:
        for node in self.nodes:
            if node.up:
                node.crash()


def _give_up(task: asyncio.Future[Any], ctx: OpContext) -> None:
    if not task.done():
        ctx.reason = "disconnect"
        task.cancel()


def _release(held: asyncio.Future[None]) -> None:
    if not held.done():
        held.set_result(None)


def _unstall(hooks: SimHooks) -> None:
    hooks.stalled = False


def _heal_partition(node: Node) -> None:
    node.partitioned = False
