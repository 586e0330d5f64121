"""The hit-ratio bar on ``bench/sim.py``'s workload classes, small and deterministic.

The bar (issue 2, restated by issue 17): maxage's hit ratio >= theine's - 0.01
and >= LRU's - 0.02 on every workload class. The generators are seeded and
sized by the capacity, and LRU (cachetools) and maxage's policy replay them
deterministically; theine is not seeded, so only rows far from the bar are
asserted either way. Rows within ~0.01 of theine (``scans``, ``loopzipf``) are
left to ``bench/sim.py --classes``.

Known misses (issue 17, ADR 0002 "Issue 17"): ``loophot`` at 2000 (the
shadows jump to a large window during warm-up; at 1000/5000/10000 it passes
under some hash seeds only) and ``shift`` (the climber's period equals a
popularity phase).
They are strict xfails: fixing either one turns its test red until the marker
goes.
"""

from __future__ import annotations

import pytest

from bench.sim import CLASSES, compare, meets_target

CAPACITY = 500
SEED = 1


def test_generators_are_seeded_and_sized_by_the_capacity() -> None:
    for name, gen in CLASSES.items():
        a, b = gen(CAPACITY, SEED), gen(CAPACITY, SEED)
        assert a == b, name
        assert gen(CAPACITY, SEED + 1) != a, name
        assert 20 * CAPACITY <= len(a) <= 60 * CAPACITY, (name, len(a))
        assert len(gen(2 * CAPACITY, SEED)) > 1.5 * len(a), name


@pytest.mark.parametrize(
    ("name", "capacity"),
    [
        ("hotscan", CAPACITY),
        # at 2000 the miss is ~0.09 (theine's own spread is ~0.01; at 500 it is 0.03)
        pytest.param(
            "loophot",
            2000,
            marks=pytest.mark.xfail(
                strict=True, reason="warm-up shadow jumps (ADR 0002, issue 17)"
            ),
        ),
        pytest.param(
            "shift",
            CAPACITY,
            marks=pytest.mark.xfail(strict=True, reason="climber period = phase (ADR 0002)"),
        ),
    ],
)
def test_hit_ratio_bar_on_a_workload_class(name: str, capacity: int) -> None:
    r = compare(CLASSES[name](capacity, SEED), capacity, ["adaptive"])
    assert meets_target(r), r
