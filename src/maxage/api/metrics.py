"""Transitional: the API's metrics now live in :mod:`maxage.core.metrics` (issue 10).

This module only re-exports the names ``api/app.py`` and ``api/exposition.py`` import
today; it goes away when the API refactor lands and they import ``maxage.core.metrics``.
"""

from __future__ import annotations

from maxage.core.metrics import Exposition, Histogram, labels

__all__ = ["Exposition", "Histogram", "labels"]
