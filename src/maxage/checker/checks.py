"""The checks of the contract (docs/architecture.md) P0-P8 over a recorded history.

Every check is *sound* with respect to the checker's clock: ``invoke`` is taken
before a request is sent and ``ret`` after its response arrived, so an
acknowledgement time is never earlier than the server's, and a read's start is
never later; the lower bounds computed from them are never above the true
ones, so a flagged read is a real violation.

A version's writer is known from the write's response (ETag) or, for writes
whose outcome is unknown (timeouts, 5xx), from the token a read finds in the
data. A version with no known writer is a gap (an unobserved, possibly
committed write); the linearizability search lets the state jump over gaps.
"""

from __future__ import annotations

import bisect
import math
import operator
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from maxage.checker import lists
from maxage.checker.feed import violations as feed_violations
from maxage.checker.history import FAIL, FAULT, OK, UNKNOWN, WRITE_KINDS, Op
from maxage.checker.revocation import KINDS as REVOCATION_KINDS
from maxage.checker.revocation import violations as revocation_violations

RACE_WINDOW = 50  # a read is race-exposed by one of the last this many writes of its key
# ``age_slack`` for answers over HTTP: ``Age`` is whole seconds, rounded down, and the server
# read its clock after the request was sent (50 ms for a coarse or busy clock)
HTTP_AGE_SLACK = 1.05
PROPERTIES = ("P0", "P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")
TITLES = {
    "P0": "integrity",
    "P1": "no reads from the future",
    "P2": "bounded staleness",
    "P3": "strong reads",
    "P4": "session",
    "P5": "write safety",
    "P6": "convergence",
    "P7": "change-log integrity",
    "P8": "revocation",
}


_invoke = operator.attrgetter("invoke")  # a sort key (C: no frame per op)


@dataclass
class Violation:
    prop: str
    message: str
    ops: list[Op]

    def to_json(self) -> dict[str, Any]:
        return {
            "property": self.prop,
            "message": self.message,
            "ops": [o.brief() for o in self.ops],
        }


@dataclass
class Result:
    violations: list[Violation] = field(default_factory=list)
    unknowns: list[str] = field(default_factory=list)
    race_exposed: int = 0
    staleness_seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    staleness_versions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    lin_keys: int = 0
    lin_ok: int = 0

    def add(self, prop: str, message: str, *ops: Op) -> None:
        self.violations.append(Violation(prop, message, list(ops)))

    def by_property(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = {p: [] for p in PROPERTIES}
        for v in self.violations:
            out[v.prop].append(v)
        return out


@dataclass
class VersionInfo:
    writer: Op | None = None
    acked_at: float = math.inf  # earliest acknowledgement seen
    body_hash: str | None = None
    deleted: bool = False
    hash_source: Op | None = None


@dataclass
class KeyModel:
    collection: str
    key: str
    versions: dict[int, VersionInfo] = field(default_factory=dict)
    writes: list[Op] = field(default_factory=list)
    reads: list[Op] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)  # sorted (ack time, version)
    ack_times: list[float] = field(default_factory=list)
    ack_prefix_max: list[int] = field(default_factory=list)
    # by version: the acknowledged versions, and the earliest ack of any version above each
    acked_versions: list[int] = field(default_factory=list)
    first_newer_ack: list[float] = field(default_factory=list)

    def info(self, v: int) -> VersionInfo:
        vi = self.versions.get(v)
        if vi is None:
            vi = self.versions[v] = VersionInfo()
        return vi

    def finish(self) -> None:
        self.acks = sorted(
            (vi.acked_at, v) for v, vi in self.versions.items() if vi.acked_at < math.inf
        )
        self.ack_times = [a for a, _ in self.acks]
        best = 0
        self.ack_prefix_max = []
        for _, v in self.acks:
            best = max(best, v)
            self.ack_prefix_max.append(best)
        by_version = sorted((v, at) for at, v in self.acks)
        self.acked_versions = [v for v, _ in by_version]
        earliest = math.inf
        self.first_newer_ack = [math.inf] * (len(by_version) + 1)
        for i in range(len(by_version) - 1, -1, -1):
            earliest = min(earliest, by_version[i][1])
            self.first_newer_ack[i] = earliest

    def max_acked_before(self, t: float) -> int:
        """The highest version acknowledged strictly before ``t`` (0 if none)."""
        i = bisect.bisect_left(self.ack_times, t)
        return self.ack_prefix_max[i - 1] if i else 0

    def superseded_at(self, v: int, t: float) -> float | None:
        """The first acknowledgement before ``t`` of a version newer than ``v``."""
        at = self.first_newer_ack[bisect.bisect_right(self.acked_versions, v)]
        return at if at < t else None

    def absent_ok(self, lower: int, before: float, unknown_deletes: Sequence[Op]) -> bool:
        """May a 404 observe a state >= ``lower``: version 0 or a delete that had started?"""
        if lower <= 0:
            return True
        for v, vi in self.versions.items():
            if v >= lower and vi.deleted and (vi.writer is None or vi.writer.invoke < before):
                return True
        return any(d.invoke < before for d in unknown_deletes)


def build(ops: Iterable[Op]) -> tuple[dict[tuple[str, str], KeyModel], Result, dict[str, Op]]:
    """Index the history per key; run P0, P1 and P5 while doing so.

    (Long: one pass that indexes the history and checks P0, P1 and P5 together, sharing
    the per-key indexes it builds; split, the passes would rebuild them.)
    """
    res = Result()
    models: dict[tuple[str, str], KeyModel] = {}
    tokens: dict[str, Op] = {}
    ops = [o for o in ops if o.kind != FAULT]

    def model(o: Op) -> KeyModel:
        k = (o.collection, o.key)
        m = models.get(k)
        if m is None:
            m = models[k] = KeyModel(o.collection, o.key)
        return m

    for o in sorted(ops, key=_invoke):
        if o.kind in WRITE_KINDS and o.token:
            # the writer of a token is its first attempt, unless that attempt failed (the
            # key was released) and a later replay ran the effect
            prior = tokens.get(o.token)
            if prior is None or (prior.outcome == FAIL and o.outcome != FAIL):
                tokens[o.token] = o
    # writes: the versions they produced
    idem_groups: dict[str, list[Op]] = defaultdict(list)
    for o in sorted((o for o in ops if o.kind in WRITE_KINDS), key=_invoke):
        if not o.key:
            continue
        m = model(o)
        m.writes.append(o)
        if o.idem_key:
            idem_groups[o.idem_key].append(o)
        if o.integrity:
            res.add("P0", f"write response: {o.integrity}", o)
        if o.outcome != OK or o.version is None:
            if o.status == 412 and o.if_match is not None and o.version == o.if_match:
                res.add("P5", f"412 although If-Match {o.if_match} is the current version", o)
            continue
        vi = m.info(o.version)
        first = tokens.get(o.token or "", o)
        if vi.writer is not None and first is not None and vi.writer is not first:
            res.add("P5", f"two writes were acknowledged with version {o.version} (a lost update)",
                    vi.writer, o)  # fmt: skip
        elif first is not None:
            vi.writer = first
        vi.acked_at = min(vi.acked_at, o.ret)
        vi.deleted = o.kind == "delete"
        if o.body_hash is not None:
            if vi.body_hash is not None and vi.body_hash != o.body_hash:
                res.add(
                    "P0", f"two different bodies for version {o.version}", vi.hash_source or o, o
                )
            vi.body_hash, vi.hash_source = o.body_hash, o
        if o.if_match is not None and not o.replay and o.version != o.if_match + 1:
            res.add("P5", f"If-Match {o.if_match} write produced version {o.version}, "
                    f"not {o.if_match + 1}: the chain is broken", o)  # fmt: skip
    # idempotency: one effect, identical replays
    for key, group in idem_groups.items():
        # A failed attempt releases the key (a retry runs again); once one attempt
        # succeeded, every later one must replay its status and body byte for byte.
        done = next((g for g in group if g.outcome == OK), None)
        if done is not None:
            for g in group:
                if (
                    g.invoke > done.ret
                    and g.status not in (None, 409)
                    and g.outcome != UNKNOWN
                    and g.resp_hash != done.resp_hash
                ):
                    res.add(
                        "P5",
                        f"Idempotency-Key {key}: a replay got a different response",
                        done,
                        g,
                    )
                    break
        versions = {g.version for g in group if g.outcome == OK and g.version is not None}
        if len(versions) > 1:
            res.add(
                "P5",
                f"Idempotency-Key {key}: more than one effect (versions {sorted(versions)})",
                *group[:4],
            )
    # reads: integrity, writer identification (P0), no future reads (P1)
    token_versions: dict[str, set[int]] = defaultdict(set)
    for o in ops:
        if (
            o.kind in WRITE_KINDS
            and o.outcome == OK
            and o.version is not None
            and o.token
            and o.kind != "delete"
        ):
            token_versions[o.token].add(o.version)
    for o in sorted((o for o in ops if o.kind == "read"), key=_invoke):
        m = model(o)
        m.reads.append(o)
        if o.outcome != OK or o.status == 404:
            continue
        if o.integrity:
            res.add("P0", o.integrity, o)
            continue
        if o.version is None:
            continue
        w = tokens.get(o.token or "")
        if w is None:
            res.add("P0", f"version {o.version} carries data no write of this run produced "
                    f"(token {o.token!r})", o)  # fmt: skip
            continue
        # a POST whose answer was lost created a document the checker learns of only here
        lost_post = w.kind == "post" and not w.key and w.outcome == UNKNOWN
        if w.collection != o.collection or (w.key != o.key and not lost_post):
            res.add(
                "P0",
                f"the data of {w.collection}/{w.key} was returned for {o.collection}/{o.key}",
                w,
                o,
            )
            continue
        if w.outcome == FAIL:
            res.add(
                "P0", f"version {o.version} has the data of a write that failed ({w.detail})", w, o
            )
            continue
        if w.outcome == OK and w.version is not None and w.version != o.version:
            res.add("P0", f"version {o.version} carries the data of the write that produced "
                    f"version {w.version}", w, o)  # fmt: skip
            continue
        if w.kind == "delete":
            res.add("P0", "a read returned the data of a delete", w, o)
            continue
        token_versions[w.token or ""].add(o.version)
        vi = m.info(o.version)
        if vi.writer is None:
            vi.writer = w  # an unknown-outcome write, resolved
        if o.body_hash is None:
            pass  # a read that recorded no body hash (maxage sim's document reads)
        elif vi.body_hash is not None and o.body_hash != vi.body_hash:
            res.add(
                "P0",
                f"the body of version {o.version} differs from the one written",
                vi.hash_source or o,
                o,
            )
        elif vi.body_hash is None:
            vi.body_hash, vi.hash_source = o.body_hash, o
        if not w.invoke < o.ret:
            res.add("P1", f"read returned version {o.version} before its write started", w, o)
    for tok, vs in token_versions.items():
        if len(vs) > 1:
            w = tokens[tok]
            res.add("P5", f"one write ({'idempotent ' if w.idem_key else ''}{w.kind}) has "
                    f"more than one effect: versions {sorted(vs)}", w)  # fmt: skip
    for m in models.values():
        m.finish()
    return models, res, tokens


def check(
    ops: Sequence[Op],
    bounds: dict[str, float],
    *,
    age_slack: float | None = None,
    revocation_slack: float = 0.0,
) -> Result:
    """Run every check; ``bounds`` maps a collection to its max staleness.

    ``revocation_slack``: P8 allows a request accepted that many seconds after the
    acknowledgement (the stated clock skew between processes of a simulation).

    ``age_slack``: also check each read's ``age`` (the server's claim that the version
    it returned was current ``age`` seconds before it answered), to within that many
    seconds; None skips it (an HTTP ``Age`` header is rounded down to whole seconds).
    """
    ops = [*ops, *lists.expand(ops)]  # a list page is checked as the reads it implies
    models, res, _ = build(o for o in ops if o.kind not in REVOCATION_KINDS)
    _check_pages(ops, res)
    for message, pair in revocation_violations(ops, revocation_slack):
        res.add("P8", message, *pair)
    for message, feed_ops in feed_violations(ops):
        res.add("P7", message, *feed_ops)
    for m in models.values():
        bound = bounds.get(m.collection, 0.0)
        unknown_deletes = [w for w in m.writes if w.kind == "delete" and w.outcome == UNKNOWN]
        writes_sorted = sorted(
            (w for w in m.writes if w.outcome != FAIL and not w.replay), key=_invoke
        )
        w_invokes = [w.invoke for w in writes_sorted]
        w_rets = [w.ret for w in writes_sorted]
        # the latest return among the RACE_WINDOW writes invoked last before each index
        latest_ret = [-math.inf] + [
            max(w_rets[max(0, i - RACE_WINDOW) : i]) for i in range(1, len(w_rets) + 1)
        ]
        for r in m.reads:
            if r.outcome != OK or r.integrity:  # an answer without a document (P0)
                continue
            # race exposure: overlaps a write, or starts within the bound after one (of
            # the RACE_WINDOW writes invoked last before the read returned)
            if latest_ret[bisect.bisect_right(w_invokes, r.ret)] >= r.invoke - bound:
                res.race_exposed += 1
            absent = r.status == 404
            v = r.version or 0
            if r.phase == "final":
                continue  # P6 below
            if age_slack is not None and r.age is not None and not absent:
                # The answer claims to be current as of (server time - age), and the
                # server's time is at or after the read's invoke: a newer version
                # acknowledged before invoke - age means the age was understated (an
                # HTTP cache downstream would keep it past the bound).
                claimed = r.invoke - r.age - age_slack
                newer = m.max_acked_before(claimed)
                if newer > v:
                    res.add("P2", f"Age {r.age:.3f}s understated: version {newer} was acknowledged "
                            f"before the returned version {v} was claimed current", r,
                            *_writer(m, newer))  # fmt: skip
            if r.mode == "bounded":
                lower = m.max_acked_before(r.invoke - bound)
                if absent:
                    if not m.absent_ok(lower, r.ret, unknown_deletes):
                        res.add("P2", f"404 although version {lower} (not a delete) was acknowledged "
                                f"more than {bound}s before the read", r, *_writer(m, lower))  # fmt: skip
                elif v < lower:
                    res.add("P2", f"returned version {v}; version {lower} was acknowledged more than "
                            f"{bound}s before the read started", r, *_writer(m, lower))  # fmt: skip
            elif r.mode == "strong":
                lower = m.max_acked_before(r.invoke)
                if (absent and not m.absent_ok(lower, r.ret, unknown_deletes)) or (
                    not absent and v < lower
                ):
                    res.add("P3", f"strong read returned {'404' if absent else v}; version {lower} "
                            "was acknowledged before it started", r, *_writer(m, lower))  # fmt: skip
            elif r.mode == "session":
                floor = r.min_version or 0
                if absent:
                    if not m.absent_ok(floor, r.ret, unknown_deletes):
                        res.add("P4", f"404 for a session read with min_version={floor}", r)
                elif v < floor:
                    res.add("P4", f"session read with min_version={floor} returned version {v}", r)
            if not absent and r.mode is not None:
                sup = m.superseded_at(v, r.invoke)
                res.staleness_seconds[r.mode].append(0.0 if sup is None else r.invoke - sup)
                res.staleness_versions[r.mode].append(max(0, m.max_acked_before(r.invoke) - v))
        _check_session_order(m, res)
        _check_convergence(m, res)
        res.lin_keys += 1
        if linearizable(m):
            res.lin_ok += 1
        else:
            res.add("P3", f"{m.collection}/{m.key}: strong reads and writes are not linearizable",
                    *[o for o in m.reads if o.mode == "strong"][:3])  # fmt: skip
    return res


def _check_pages(ops: Sequence[Op], res: Result) -> None:
    """What a list page promises beyond its documents: integrity and its session floor."""
    for o in ops:
        if o.kind == lists.LIST and o.integrity:
            res.add("P0", o.integrity, o)
    for message, o in lists.session_violations(ops):
        res.add("P4", message, o)


def _writer(m: KeyModel, v: int) -> list[Op]:
    vi = m.versions.get(v)
    return [vi.writer] if vi is not None and vi.writer is not None else []


def _check_session_order(m: KeyModel, res: Result) -> None:
    """P4 read-your-writes and monotonic reads, per client, for session reads."""
    per_client: dict[int, list[Op]] = defaultdict(list)
    for o in m.writes + m.reads:
        if o.outcome == OK and o.phase == "run":
            per_client[o.client].append(o)
    for ops in per_client.values():
        ops.sort(key=_invoke)
        high = 0
        for o in ops:
            if (
                o.kind == "read"
                and o.mode == "session"
                and o.status == 200
                and o.version is not None
            ) and o.version < high:
                res.add("P4", f"session read returned version {o.version} after the client "
                        f"had seen version {high}", o)  # fmt: skip
            if (o.version is not None and o.status != 404 and o.status != 204) or (
                o.status == 204 and o.version is not None
            ):
                high = max(high, o.version)


def _check_convergence(m: KeyModel, res: Result) -> None:
    """P6: after faults healed and the bound passed, every read returns the latest state."""
    finals = sorted((o for o in m.reads if o.phase == "final" and o.outcome == OK), key=_invoke)
    strong = [o for o in finals if o.mode == "strong"]
    if not strong:
        return
    truth = strong[0]
    for o in finals:
        if o is truth:
            continue
        same = (o.status == 404 and truth.status == 404) or (
            o.status == 200 and truth.status == 200 and o.version == truth.version
        )
        if not same:
            got = "404" if o.status == 404 else f"version {o.version}"
            want = "404" if truth.status == 404 else f"version {truth.version}"
            res.add(
                "P6", f"{o.mode} read after healing returned {got}; the latest is {want}", truth, o
            )


def linearizable(m: KeyModel) -> bool:
    """Whether the key's writes (known versions) and strong reads are linearizable.

    The state is the current version. A write of ``v`` applies when every version
    between the state and ``v`` is a gap (no known writer); a strong read of ``v`` when
    the state is ``v``; a 404 when the state is 0 or a delete (or a delete's outcome is
    unknown). Writes whose outcome is unknown need not apply; acknowledged ones and
    strong reads must.

    Versions decide the order of the writes (known versions apply in version order),
    and a read's version decides the state it saw, so no search is needed: with
    ``T_i`` the linearization point of the i-th known version, a read of it needs
    ``T_i < ret`` and ``invoke < T_(i+1)``, which makes every constraint a lower bound
    (``L_i``) or an upper bound (``U_i``) on some ``T_i`` within ``T_1 < T_2 < ...``;
    they hold iff the earliest points (``lb_i = max(lb_(i-1), L_i)``) keep
    ``lb_i < U_i``. A 404 may be in any absent state (0, or a delete): each takes the
    latest one its ``ret`` allows, which lower-bounds the least, and moves earlier
    while the bounds rise (a fixpoint: any linearization's choice is at or before
    it). Each round is O(n + r log n) for n versions and r strong reads; a round
    only moves some 404 earlier (one or two rounds in practice). It decides as the
    Wing-Gong search it replaced (``tests/checker/test_linearizable.py`` compares).
    """
    known = sorted(v for v, vi in m.versions.items() if vi.writer is not None)
    reads = [
        r
        for r in m.reads
        if r.mode == "strong" and r.outcome == OK and r.phase == "run" and not r.integrity
    ]
    if not reads:
        return True
    epoch_of = {v: i + 1 for i, v in enumerate(known)}  # epoch 0: the initial state
    needed = max((epoch_of[v] for v in known if m.versions[v].acked_at < math.inf), default=0)
    fixed: list[tuple[int, float, float]] = []  # epoch, invoke, ret
    absent: list[Op] = []
    for r in reads:
        if r.status == 404:
            absent.append(r)
            continue
        v = r.version or 0
        e = 0 if v == 0 else epoch_of.get(v)
        if e is None:
            return False  # a version no write is known to have made: never the state
        fixed.append((e, r.invoke, r.ret))
        needed = max(needed, e)
    k = needed  # versions above it are unacknowledged: linearized after everything
    inf = math.inf
    lower = [-inf] * (k + 2)  # lower[i]: T_i > lower[i]
    upper = [inf] * (k + 2)  # upper[i]: T_i < upper[i]
    for i in range(1, k + 1):
        vi = m.versions[known[i - 1]]
        assert vi.writer is not None
        lower[i] = vi.writer.invoke
        upper[i] = vi.acked_at
    for e, invoke, ret in fixed:
        upper[e] = min(upper[e], ret)
        lower[e + 1] = max(lower[e + 1], invoke)
    unknown_delete = any(w.kind == "delete" and w.outcome == UNKNOWN for w in m.writes)
    if unknown_delete:
        absent = []  # a 404 may be seen in any state
    # the epochs whose state is absent: the initial one and every known delete's
    absent_epochs = [0] + [epoch_of[v] for v in known if m.versions[v].deleted]
    absent_epochs = [e for e in absent_epochs if e <= k]
    choice = [absent_epochs[-1]] * len(absent)
    while True:
        lb = [-inf] * (k + 1)
        bounds = lower[:]
        for r, e in zip(absent, choice, strict=True):
            bounds[e + 1] = max(bounds[e + 1], r.invoke)
        for i in range(1, k + 1):
            lb[i] = max(lb[i - 1], bounds[i])
            if not lb[i] < upper[i]:
                return False
        moved = False
        for j, r in enumerate(absent):
            # the latest absent epoch at or before the current choice with lb < ret
            latest = bisect.bisect_left(lb, r.ret) - 1  # lb is non-decreasing
            e = choice[j]
            if e > latest:
                pos = bisect.bisect_right(absent_epochs, latest) - 1
                choice[j] = absent_epochs[pos]  # epoch 0 (lb -inf) always qualifies
                moved = True
        if not moved:
            return True


__all__ = ["PROPERTIES", "TITLES", "Result", "Violation", "build", "check", "linearizable"]
