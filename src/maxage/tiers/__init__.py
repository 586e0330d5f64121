"""Shared (L2) cache tiers behind the in-process cache: the protocol and its adapters."""

from maxage.tiers.base import SharedTier, TierEntry

__all__ = ["SharedTier", "TierEntry"]
