"""Server-side fault injection and mutants (TEST ONLY), behind the typed seam of
:class:`maxage.hooks.Hooks`; never active without ``maxage serve --fault-injection``.

The composition root calls :func:`build` once per worker and passes the hooks to
the store and the service, the cache and Redis tier classes to its cache and
tier, the controller to the API's fault-control route, and the built service to
:func:`plant_service` (the mutants planted in the service itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maxage.core.cache import Cache
from maxage.faults.injector import (
    FAULTS,
    FaultController,
    FaultHooks,
    InjectedFault,
    shared_tier_class,
)
from maxage.faults.mutants import (
    MUTANTS,
    PlantedService,
    cache_class,
    check,
    plant_service,
    redis_tier_class,
)
from maxage.tiers.redis import RedisTier


@dataclass(frozen=True)
class Faults:
    hooks: FaultHooks
    control: FaultController
    cache_class: type[Cache]
    redis_tier_class: type[RedisTier]
    mutant: str | None

    def plant(self, service: PlantedService) -> None:
        """Plant the mutant's changes to the built service (none without a mutant)."""
        plant_service(service, self.mutant)


def build(
    state_file: Path, *, postgres: bool, bound: float, mutant: str | None, shared_tier: bool = False
) -> Faults:
    """``bound``: the smallest staleness bound of the config (scales the fault delays);
    ``shared_tier``: the server has one (``--cache redis://…``)."""
    check(mutant)
    control = FaultController(
        state_file, postgres=postgres, bound=bound, mutant=mutant, shared_tier=shared_tier
    )
    tier_class = shared_tier_class(redis_tier_class(mutant), control)
    return Faults(FaultHooks(control), control, cache_class(mutant), tier_class, mutant)


__all__ = [
    "FAULTS",
    "MUTANTS",
    "FaultController",
    "FaultHooks",
    "Faults",
    "InjectedFault",
    "build",
]
