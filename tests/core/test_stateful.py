"""Hypothesis state machine: Cache against a model of versions and tombstones."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from maxage.core import ENTRY_OVERHEAD, MISSING, Cache, ManualClock, SetOutcome

KEYS = st.sampled_from(["a/1", "a/2", "b/1", "b/2", "c"])
TAGS = st.lists(st.sampled_from(["t1", "t2"]), max_size=2, unique=True)
TOMB_TTL = 5.0


class CacheMachine(RuleBasedStateMachine):
    """Model: for each key the highest version ever *offered* that the cache must
    respect (tombstones) and the last stored version. The model does not predict
    evictions (the policy may evict anything); it checks that what is served is
    allowed and that refusals have the right reason."""

    @initialize(policy=st.sampled_from(["lru", "adaptive"]), slots=st.integers(1, 6))
    def setup(self, policy: str, slots: int) -> None:
        self.clock = ManualClock(100.0)
        self.max_bytes = slots * (ENTRY_OVERHEAD + 20)
        self.cache = Cache(self.max_bytes, clock=self.clock, policy=policy, tombstone_ttl=TOMB_TTL)
        # key -> (version, expires_at): tombstones as the model sees them
        self.tombs: dict[str, tuple[int, float]] = {}
        # key -> version of the last successful store (may since be evicted)
        self.stored: dict[str, int] = {}
        # prefix/tag -> (invalidated_at, expires_at)
        self.ptombs: dict[str, tuple[float, float]] = {}
        self.ttombs: dict[str, tuple[float, float]] = {}

    def tomb(self, key: str) -> int:
        t = self.tombs.get(key)
        return t[0] if t is not None and t[1] > self.clock.now() else 0

    def raise_tomb(self, key: str, v: int) -> None:
        self.tombs[key] = (max(v, self.tomb(key)), self.clock.now() + TOMB_TTL)

    def guarded(self, key: str, started_at: float, tags: list[str]) -> bool:
        now = self.clock.now()
        for p, (at, exp) in self.ptombs.items():
            if exp > now and key.startswith(p) and started_at <= at:
                return True
        for t in tags:
            g = self.ttombs.get(t)
            if g is not None and g[1] > now and started_at <= g[0]:
                return True
        return False

    @rule(
        key=KEYS,
        version=st.integers(1, 8),
        n=st.integers(0, 30),
        ttl=st.none() | st.floats(0, 10),
        back=st.floats(0, 3),
        tags=TAGS,
    )
    def set_if_newer(
        self, key: str, version: int, n: int, ttl: float | None, back: float, tags: list[str]
    ) -> None:
        started = self.clock.now() - back
        live = self.cache.peek(key)
        out = self.cache.set_if_newer(
            key, version, b"x" * n, started_at=started, ttl=ttl, tags=tags
        )
        if live is not MISSING:
            if version == live.version:
                assert out is SetOutcome.UNCHANGED
                return
            if version < live.version:
                assert out is SetOutcome.REFUSED_OLDER
                return
        if version < self.tomb(key) or self.guarded(key, started, tags):
            assert out is SetOutcome.REFUSED_TOMBSTONE
            return
        if n + len(key) + ENTRY_OVERHEAD > self.max_bytes:
            assert out is SetOutcome.REFUSED_TOO_LARGE
            self.raise_tomb(key, version)
            return
        assert out is SetOutcome.STORED
        self.stored[key] = version

    @rule(key=KEYS, n=st.integers(0, 30), tags=TAGS)
    def put(self, key: str, n: int, tags: list[str]) -> None:
        live = self.cache.peek(key)
        base = max(live.version if live is not MISSING else 0, self.tomb(key))
        out, v = self.cache.put(key, b"y" * n, started_at=self.clock.now(), tags=tags)
        assert v == base + 1
        if self.guarded(key, self.clock.now(), tags):
            assert out is SetOutcome.REFUSED_TOMBSTONE
        elif out is SetOutcome.STORED:
            self.stored[key] = v
        else:
            assert out is SetOutcome.REFUSED_TOO_LARGE
            self.raise_tomb(key, v)

    @rule(key=KEYS, version=st.integers(1, 8))
    def invalidate(self, key: str, version: int) -> None:
        live = self.cache.peek(key)
        dropped = self.cache.invalidate(key, version)
        assert dropped == (live is not MISSING and live.version < version)
        self.raise_tomb(key, version)

    @rule(key=KEYS)
    def delete(self, key: str) -> None:
        live = self.cache.peek(key)
        base = max(live.version if live is not MISSING else 0, self.tomb(key))
        self.cache.delete(key)
        self.raise_tomb(key, base + 1)

    @rule(prefix=st.sampled_from(["a/", "b/"]))
    def invalidate_prefix(self, prefix: str) -> None:
        self.cache.invalidate_prefix(prefix)
        now = self.clock.now()
        self.ptombs[prefix] = (now, now + TOMB_TTL)

    @rule(tag=st.sampled_from(["t1", "t2"]))
    def invalidate_tag(self, tag: str) -> None:
        self.cache.invalidate_tag(tag)
        now = self.clock.now()
        self.ttombs[tag] = (now, now + TOMB_TTL)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        e = self.cache.get(key)
        if e is not MISSING:
            assert e.expires_at > self.clock.now()
            assert e.version >= self.tomb(key)
            assert e.version == self.stored[key]

    @rule(dt=st.floats(0, 4))
    def advance(self, dt: float) -> None:
        self.clock.advance(dt)

    @precondition(lambda self: hasattr(self, "cache"))
    @invariant()
    def bounded_and_consistent(self) -> None:
        c = self.cache
        assert c.bytes_used <= c.max_bytes
        assert c.bytes_used == sum(e.size for e in c._data.values())
        assert len(c) == len(c._data)
        assert c._policy.weight == c.bytes_used  # policy and storage agree
        for key in ("a/1", "a/2", "b/1", "b/2", "c"):
            e = c.peek(key)
            if e is not MISSING:
                assert e.expires_at > self.clock.now()
                assert e.version >= self.tomb(key)
                assert e.version == self.stored[key]
            t = c.tombstone(key)
            assert (t or 0) == self.tomb(key)


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=250, stateful_step_count=40, deadline=None)
