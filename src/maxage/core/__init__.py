"""maxage.core: the cache engine (standard library only; imports nothing else of maxage).

Public names: :class:`Cache`, :class:`Stats`, :data:`ENTRY_OVERHEAD`,
:class:`SingleFlight`, the policies (:func:`make_policy`, :class:`LruPolicy`, ...),
and the shared vocabulary from ``types`` and ``clock``.
"""

from maxage.core.cache import ENTRY_OVERHEAD, Cache, Stats
from maxage.core.clock import ManualClock, SystemClock
from maxage.core.policy import LruPolicy, Policy, make_policy
from maxage.core.singleflight import SingleFlight
from maxage.core.types import (
    MISSING,
    Clock,
    Entry,
    EvictionReason,
    Key,
    Missing,
    SetOutcome,
    Version,
)

__all__ = [
    "ENTRY_OVERHEAD",
    "MISSING",
    "Cache",
    "Clock",
    "Entry",
    "EvictionReason",
    "Key",
    "LruPolicy",
    "ManualClock",
    "Missing",
    "Policy",
    "SetOutcome",
    "SingleFlight",
    "Stats",
    "SystemClock",
    "Version",
    "make_policy",
]
