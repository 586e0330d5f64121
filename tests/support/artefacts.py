"""Where tests keep what a person should look at after a run (screenshots, reports):
``$MAXAGE_ARTEFACTS``, default ``tmp/artefacts`` in the checkout (ignored by git)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def artefacts() -> Path:
    path = Path(os.environ.get("MAXAGE_ARTEFACTS", ROOT / "tmp" / "artefacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path
