"""Window-climber variants kept for measurement, not in ``maxage.core``.

    python bench/policy_variants.py --all --policies adaptive-jumps-only,adaptive-no-warmup
    python bench/policy_variants.py --workload loop:5000 --capacity 4000 \\
        --policies adaptive-jumps-only

Registers the variants below in ``maxage.core.policy.POLICIES`` and runs
``bench/sim.py`` (same arguments). They were experiment knobs on
``TinyLfuPolicy`` (``SHADOW_CLIMB``, ``WARMUP_CLIMB``) whose alternative branch
the core never took; each is a subclass here, with the behaviour the knob
selected (ADR 0002 has the measurements):

* ``adaptive-jumps-only`` -- no hill climbing once the shadows run; the window
  moves by shadow jumps only (was ``SHADOW_CLIMB = False``). Fifth pass and
  issue 10 (``PYTHONHASHSEED=0``): loop:5000 0.736 against adaptive's 0.729,
  but lirs-multi2@500 0.474 against 0.481 (it loses the climber's small moves).
* ``adaptive-no-warmup`` -- Caffeine's warm-up: no window moves before the
  sketch is sized (the cache half full); samples of ``MIN_SAMPLE`` requests
  until then (was ``WARMUP_CLIMB = False``). Second pass, before the shadows:
  lirs-multi2@500 0.474, lirs-sprite@1000 0.844; issue 10, with the shadows
  (``PYTHONHASHSEED=0``): within 0.003 of adaptive on every row (-0.0025 on
  lirs-multi2@2000, -0.0022 on zipf:0.8@10000, +0.001 on cache2k-web12).
"""

from __future__ import annotations

from collections.abc import Callable

import sim

from maxage.core.climber import MIN_SAMPLE, WindowClimber
from maxage.core.policy import POLICIES, Policy, TinyLfuPolicy


class JumpsOnlyClimber(WindowClimber):
    """No hill-climb step once the shadows exist (they never go away)."""

    __slots__ = ()

    def hill_climb(self, hit_ratio: float) -> int:
        return 0 if self.shadows else super().hill_climb(hit_ratio)


class JumpsOnlyPolicy(TinyLfuPolicy):
    __slots__ = ()

    def __init__(self, maximum: int, *, seed: int | None = None) -> None:
        super().__init__(maximum, adaptive=True, seed=seed)
        self._climber = JumpsOnlyClimber(maximum, seed)


class NoWarmupPolicy(TinyLfuPolicy):
    """Ends samples but moves nothing until the sketch is sized."""

    __slots__ = ()

    def __init__(self, maximum: int, *, seed: int | None = None) -> None:
        super().__init__(maximum, adaptive=True, seed=seed)

    def _climb(self) -> None:
        if self._sized:
            super()._climb()
            return
        self._hits = 0
        self._sample_period = self._left = MIN_SAMPLE


VARIANTS: dict[str, Callable[[int, int | None], Policy]] = {
    "adaptive-jumps-only": lambda maximum, seed: JumpsOnlyPolicy(maximum, seed=seed),
    "adaptive-no-warmup": lambda maximum, seed: NoWarmupPolicy(maximum, seed=seed),
}


def main(argv: list[str] | None = None) -> int:
    POLICIES.update(VARIANTS)
    return sim.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
