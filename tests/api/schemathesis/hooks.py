"""Schemathesis hooks (SCHEMATHESIS_HOOKS=tests.api.schemathesis.hooks).

A fuzzer reuses the same few Idempotency-Key values with different payloads, which the API
rightly answers with 422 ``idempotency_key_reused``. A valid key is made unique per request
so positive cases test the operation, not key reuse (tests/api/test_idempotency.py does that).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

_VALID_KEY = re.compile(r"^[!#-~]{1,255}$")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    for headers in (case.headers, kwargs.get("headers")):
        if not headers:
            continue
        for name in list(headers):
            if name.lower() == "idempotency-key" and _VALID_KEY.match(str(headers[name])):
                headers[name] = uuid.uuid4().hex
