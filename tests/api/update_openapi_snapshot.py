"""Regenerate docs/openapi.json, the committed spec for the bundled example config.

Run ``python -m tests.api.update_openapi_snapshot`` (or the test suite with
``MAXAGE_UPDATE_OPENAPI_SNAPSHOT=1``) when a change to the spec is deliberate; review the diff:
within /v1 only additive changes are allowed (tests/api/test_openapi_snapshot.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from maxage.api.openapi import build
from maxage.api.routes import ROUTES
from maxage.api.types import Settings
from maxage.cli import BUNDLED_CONFIG
from maxage.contracts import load_config

SNAPSHOT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def live_spec() -> dict[str, Any]:
    return build(ROUTES, load_config(BUNDLED_CONFIG).collections, Settings())


def write() -> None:
    SNAPSHOT.write_text(json.dumps(live_spec(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    write()
    print(f"wrote {SNAPSHOT}")
