"""Request fields RSGI cannot hand over, through ``maxage serve``, against ``--interface asgi``.

RSGI's header list leaves out a field whose value is not visible ASCII. Where the app
on ASGI ignores or replaces such a value (a request id it will not echo, a trace
context it cannot continue, a timeout or event id it cannot parse, credentials that are
no bearer token), the request is served the same on RSGI; where the value could change
the answer (preconditions, idempotency keys, media types), both refuse it with a 400.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import MaxageServer

PRODUCT = {"name": "chair", "price": 49.5}
LATIN = "r\xe9q".encode("latin-1")  # one byte outside ASCII: RSGI drops the field


@pytest.fixture(scope="module", params=["rsgi", "asgi"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MaxageServer]:
    work = tmp_path_factory.mktemp(f"headers-{request.param}")
    s = MaxageServer(work, "--interface", request.param)
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()


def _doc(http: httpx.Client) -> str:
    path = f"/v1/products/h-{uuid.uuid4().hex}"
    assert http.put(path, json=PRODUCT).status_code == 201
    return path


def test_an_unreadable_request_id_is_replaced(http: httpx.Client) -> None:
    r = http.get(_doc(http), headers={b"X-Request-Id": LATIN})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"].isascii() and r.headers["x-request-id"] != "r\xe9q"


def test_an_unreadable_traceparent_starts_a_new_trace(http: httpx.Client) -> None:
    r = http.get(_doc(http), headers={b"traceparent": LATIN})
    assert r.status_code == 200, r.text
    assert r.headers["traceparent"].startswith("00-")


def test_an_unreadable_timeout_is_ignored(http: httpx.Client) -> None:
    r = http.get(_doc(http), headers={b"X-Request-Timeout": LATIN})
    assert r.status_code == 200, r.text


def test_an_unreadable_last_event_id_reads_from_the_start(http: httpx.Client) -> None:
    _doc(http)
    r = http.get("/v1/products/changes", params={"limit": 1}, headers={b"Last-Event-ID": LATIN})
    assert r.status_code == 200, r.text
    assert r.json()["cursor"] == "1"


def test_unreadable_credentials_are_no_credentials(http: httpx.Client) -> None:
    r = http.get(_doc(http), headers={b"Authorization": b"Bearer " + LATIN})
    assert r.status_code == 200, r.text  # no auth configured: credentials are not read


@pytest.mark.parametrize("field", ["If-Match", "Idempotency-Key"])
def test_an_unreadable_precondition_or_key_is_refused(http: httpx.Client, field: str) -> None:
    path = _doc(http)
    r = http.put(path, json={**PRODUCT, "price": 1}, headers={field.encode(): LATIN})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_parameter" and r.json()["parameter"] == field
    assert http.get(path, params={"consistency": "strong"}).json()["version"] == 1
