"""P3's linearizability check decides by versions what a search would: on thousands of
random small histories (gaps, unacknowledged writes, deletes, 404s) it agrees with an
exhaustive Wing-Gong search, and a non-linearizable history is refuted."""

from __future__ import annotations

import functools
import math
import random

from maxage.checker.checks import KeyModel, build, check, linearizable
from maxage.checker.history import OK, UNKNOWN, Op


def searched(m: KeyModel) -> bool:
    """The definition, searched exhaustively: some order of the operations, each
    taking effect between its invoke and its ret, in which every acknowledged write
    and every strong read happens, a read seeing the state of the writes before it."""
    known = {v for v, vi in m.versions.items() if vi.writer is not None}
    deleted = {v for v, vi in m.versions.items() if vi.deleted}
    unknown_delete = any(w.kind == "delete" and w.outcome == UNKNOWN for w in m.writes)
    items: list[tuple[float, float, str, int]] = []
    for v in known:
        vi = m.versions[v]
        assert vi.writer is not None
        items.append((vi.writer.invoke, vi.acked_at, "w", v))
    for r in m.reads:
        if r.mode == "strong" and r.outcome == OK and r.phase == "run":
            items.append((r.invoke, r.ret, "r", -1 if r.status == 404 else (r.version or 0)))

    @functools.cache
    def search(done: frozenset[int], state: int) -> bool:
        pending = [i for i in range(len(items)) if i not in done]
        if all(items[i][1] == math.inf for i in pending):
            return True  # only writes that need not happen are left
        first_ret = min(items[i][1] for i in pending)
        for i in pending:
            invoke, _, kind, v = items[i]
            if invoke >= first_ret:
                continue  # another pending operation returned before this one began
            if kind == "w":
                ok = v > state and all(x not in known for x in range(state + 1, v))
                after = v
            else:
                ok = state == 0 or state in deleted or unknown_delete if v == -1 else v == state
                after = state
            if ok and search(done | {i}, after):
                return True
        return False

    return search(frozenset(), 0)


def random_history(rng: random.Random) -> list[Op]:
    ops: list[Op] = []
    written: list[tuple[int, str | None]] = []  # version, token (None: a delete)
    version = 0
    for i in range(rng.randint(1, 4)):
        version += rng.choice((1, 1, 1, 2))  # sometimes a gap: a write nobody recorded
        t0 = rng.randint(0, 16) / 2  # on a grid: equal times happen, as on virtual time
        t1 = t0 + rng.randint(1, 6) / 2
        delete = rng.random() < 0.25
        token = None if delete else f"w{i}"
        acked = rng.random() < 0.8
        ops.append(Op(len(ops), 1, "delete" if delete else "put", "c", "k", invoke=t0, ret=t1,
                      outcome=OK if acked else UNKNOWN, version=version if acked else None,
                      token=token, status=(204 if delete else 200) if acked else None))  # fmt: skip
        written.append((version, token))
    for _ in range(rng.randint(1, 5)):
        t0 = rng.randint(0, 20) / 2
        t1 = t0 + rng.randint(1, 4) / 2
        shown = [(v, tok) for v, tok in written if tok is not None]
        if not shown or rng.random() < 0.3:
            ops.append(Op(len(ops), 2, "read", "c", "k", mode="strong", invoke=t0, ret=t1,
                          status=404))  # fmt: skip
        else:
            v, tok = rng.choice(shown)
            ops.append(Op(len(ops), 2, "read", "c", "k", mode="strong", invoke=t0, ret=t1,
                          status=200, version=v, token=tok))  # fmt: skip
    return ops


def test_versions_decide_as_the_exhaustive_search_does() -> None:
    rng = random.Random(13)
    verdicts = {True: 0, False: 0}
    for _ in range(4000):
        ops = random_history(rng)
        models, _, _ = build(ops)
        m = models[("c", "k")]
        expected = searched(m)
        assert linearizable(m) == expected, [o.brief() for o in ops]
        verdicts[expected] += 1
    assert min(verdicts.values()) > 500  # both verdicts were exercised


def read(i: int, v: int | None, t0: float, t1: float) -> Op:
    return Op(i, 2, "read", "c", "k", mode="strong", invoke=t0, ret=t1,
              status=200 if v else 404, version=v, token=f"t{v}" if v else None)  # fmt: skip


def write(i: int, kind: str, v: int | None, t0: float, t1: float) -> Op:
    return Op(i, 1, kind, "c", "k", invoke=t0, ret=t1, outcome=OK if v else UNKNOWN, version=v,
              token=None if kind == "delete" else f"t{v or i}", status=200)  # fmt: skip


def p3(ops: list[Op]) -> bool:
    """Refuted by the linearizability check itself (check() has per-read P3 checks too)."""
    models, _, _ = build(ops)
    return not linearizable(models[("c", "k")])


def test_a_non_linearizable_history_is_refuted() -> None:
    # v2's write is in progress from 1.0 to 3.0: one read sees v2, a later one v1 again
    ops = [write(1, "put", 1, 0.0, 0.1), write(2, "put", 2, 1.0, 3.0),
           read(3, 2, 1.1, 1.2), read(4, 1, 1.3, 1.4)]  # fmt: skip
    assert p3(ops)
    found = check(ops, {"c": 0.0}).violations
    assert any(v.prop == "P3" and "not linearizable" in v.message for v in found)
    assert not p3([*ops[:2], read(3, 1, 1.1, 1.2), read(4, 2, 1.3, 1.4)])


def test_a_404_must_fit_an_absent_state() -> None:
    # created at [0, 0.1], deleted at [2, 2.1], created again at [4, 4.1]
    ops = [write(1, "put", 1, 0.0, 0.1), write(2, "delete", 2, 2.0, 2.1),
           write(3, "put", 3, 4.0, 4.1)]  # fmt: skip
    assert not p3([*ops, read(4, None, 2.5, 2.6)])  # between the delete and the re-create
    assert p3([*ops, read(4, None, 1.0, 1.1)])  # v1 was there
    assert p3([*ops, read(4, None, 1.0, 2.0)])  # it returned as the delete began
    assert p3([*ops, read(4, None, 5.0, 5.1)])  # v3 was there
    # a read of v3 before the 404 forces the 404 into no absent state
    assert p3([*ops, read(4, 3, 3.9, 4.05), read(5, None, 4.06, 4.5)])
    # an unacknowledged delete may have taken effect at any time
    assert not p3([*ops, write(5, "delete", None, 0.0, 9.0), read(6, None, 5.0, 5.1)])


def test_a_version_no_write_made_is_never_the_state() -> None:
    ops = [write(1, "put", 1, 0.0, 0.1), read(2, 1, 0.2, 0.3)]
    assert not p3(ops)
    phantom = Op(3, 2, "read", "c", "k", mode="strong", invoke=0.4, ret=0.5, status=200,
                 version=7, token="t1")  # fmt: skip
    assert p3([*ops, phantom])
