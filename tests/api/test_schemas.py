"""Issue 14, black box: standard JSON Schema (Draft 2020-12) against ``maxage serve``.

A config whose schema uses ``$ref``/``$defs``, ``oneOf``, ``uniqueItems``, ``const``,
``multipleOf`` and ``format`` (email, date-time, uuid), with ``strict = true``: valid
documents are accepted; invalid ones get 422 with every error as ``{pointer, detail}``;
``/openapi.json`` publishes exactly the schema the server enforces (compared with the
config's schema, and judged by a JSON Schema validator reading the served document: its
verdict on a set of documents and merge patches is the server's); schemathesis finds
nothing on these operations. Plus: a collection without ``strict`` accepts other
properties; ``strict`` on a composed schema; a bad schema stops start-up (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema_rs
import pytest

from tests.api.conftest import MaxageServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MERGE = {"content-type": "application/merge-patch+json"}

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "customer", "lines", "payment"],
    "$defs": {
        "money": {"type": "number", "minimum": 0, "multipleOf": 0.5},
        "line": {
            "type": "object",
            "required": ["sku", "qty", "price"],
            "additionalProperties": False,
            "properties": {
                "sku": {"type": "string", "pattern": "^[A-Z0-9-]{3,12}$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 99},
                "price": {"$ref": "#/$defs/money"},
            },
        },
        "card": {
            "type": "object",
            "required": ["card"],
            "additionalProperties": False,
            "properties": {"card": {"type": "string", "pattern": "^[0-9]{4}$"}},
        },
        "iban": {
            "type": "object",
            "required": ["iban"],
            "additionalProperties": False,
            "properties": {"iban": {"type": "string", "minLength": 15, "maxLength": 34}},
        },
    },
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "customer": {"type": "string", "format": "email", "maxLength": 100},
        "placed": {"type": "string", "format": "date-time"},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}, "minItems": 1,
                  "maxItems": 3},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8},
                 "uniqueItems": True, "maxItems": 4},
        "payment": {"oneOf": [{"$ref": "#/$defs/card"}, {"$ref": "#/$defs/iban"}]},
        "kind": {"const": "order"},
        "note": {"type": "object"},
    },
}  # fmt: skip

CONFIG = """
[collections.orders]
max_staleness = "1s"
strict = true
schema_file = "orders.schema.json"

# No strict: other properties are allowed (the standard's default).
[collections.notes]
max_staleness = "1s"
[collections.notes.schema]
type = "object"
required = ["text"]
properties = { text = { type = "string" } }

# strict on a composed schema: unevaluatedProperties sees the properties allOf brings.
[collections.events]
max_staleness = "1s"
strict = true
[collections.events.schema]
type = "object"
required = ["at"]
properties = { at = { type = "string", format = "date-time" } }
allOf = [{ properties = { source = { type = "string" } } }]
"""

ORDER = {
    "id": "0190c9a8-7d3b-7c2e-9f1a-3b4c5d6e7f80",
    "customer": "ann@example.com",
    "placed": "2025-01-02T03:04:05Z",
    "lines": [{"sku": "ABC-1", "qty": 2, "price": 3.5}],
    "tags": ["gift", "rush"],
    "payment": {"card": "1234"},
    "kind": "order",
}
BAD_ORDER = {
    "id": "not-a-uuid",
    "customer": "not-an-email",
    "placed": "yesterday",
    "lines": [{"sku": "a", "qty": 0, "price": 0.3, "colour": "red"}],
    "tags": ["gift", "gift"],
    "payment": {"card": "1234", "iban": "DE89370400440532013000"},
    "kind": "cart",
    "extra": True,
}
BAD_ORDER_ERRORS = [
    ("/customer", "must be a valid email"),
    ("/extra", "is not an allowed property"),
    ("/id", "must be a valid uuid"),
    ("/kind", 'must be "order"'),
    ("/lines/0/colour", "is not an allowed property"),
    ("/lines/0/price", "must be a multiple of 0.5"),
    ("/lines/0/qty", "must be >= 1"),
    ("/lines/0/sku", "must match pattern '^[A-Z0-9-]{3,12}$'"),
    ("/payment", "must match exactly one schema in oneOf (it matches none)"),
    ("/placed", "must be a valid date-time"),
    ("/tags", "must not contain duplicate items"),
]


def write_config(workdir: Path, config: str = CONFIG) -> Path:
    (workdir / "orders.schema.json").write_text(json.dumps(ORDER_SCHEMA))
    path = workdir / "orders.toml"
    path.write_text(config)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MaxageServer]:
    workdir = tmp_path_factory.mktemp("schemas")
    s = MaxageServer(workdir, "--config", str(write_config(workdir)))
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()


@pytest.fixture()
def http(server: MaxageServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def errors_of(r: httpx.Response) -> list[tuple[str, str]]:
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "validation_failed"
    assert all(set(e) == {"pointer", "detail"} for e in body["errors"])
    return [(e["pointer"], e["detail"]) for e in body["errors"]]


def test_a_valid_document_is_accepted(http: httpx.Client) -> None:
    r = http.post("/v1/orders", json=ORDER)
    assert r.status_code == 201, r.text
    assert http.get(r.headers["location"]).json()["data"] == ORDER
    assert http.put(f"/v1/orders/o-{uuid.uuid4().hex}", json=ORDER).status_code == 201
    iban = {**ORDER, "payment": {"iban": "DE89370400440532013000"}}
    assert http.post("/v1/orders", json=iban).status_code == 201


def test_every_error_is_reported_with_its_pointer(http: httpx.Client) -> None:
    assert errors_of(http.post("/v1/orders", json=BAD_ORDER)) == BAD_ORDER_ERRORS
    url = f"/v1/orders/o-{uuid.uuid4().hex}"
    assert errors_of(http.put(url, json=BAD_ORDER)) == BAD_ORDER_ERRORS
    assert http.get(url).status_code == 404  # nothing was written
    assert errors_of(http.post("/v1/orders", json={})) == [
        ("/customer", "is required"),
        ("/id", "is required"),
        ("/lines", "is required"),
        ("/payment", "is required"),
    ]


def test_merge_patches_are_checked_then_the_result(http: httpx.Client) -> None:
    url = http.post("/v1/orders", json=ORDER).headers["location"]
    r = http.patch(url, json={"tags": None, "placed": "2025-02-03T04:05:06+01:00",
                              "unknown": None, "note": {"a": 1}}, headers=MERGE)  # fmt: skip
    assert r.status_code == 200, r.text
    assert "tags" not in r.json()["data"] and r.json()["data"]["note"] == {"a": 1}
    # Wrong whatever the document: refused before the document is read, every error.
    found = errors_of(http.patch(url, json={"customer": None, "placed": "soon", "kind": "x",
                                            "extra": 1, "tags": ["a", "a"]}, headers=MERGE))  # fmt: skip
    assert found == [
        ("/customer", "must be of type string"),
        ("/extra", "is not an allowed property (only null, to remove it)"),
        ("/kind", 'must be "order"'),
        ("/placed", "must be a valid date-time"),
        ("/tags", "must not contain duplicate items"),
    ]
    # Fine as a patch, wrong once merged: a card and an iban are not one of the two.
    both = errors_of(http.patch(url, json={"payment": {"iban": "DE89370400440532013000"}},
                                headers=MERGE))  # fmt: skip
    assert both == [("/payment", "must match exactly one schema in oneOf (it matches none)")]
    r = http.patch(url, json={"payment": {"card": None, "iban": "DE89370400440532013000"}},
                   headers=MERGE)  # fmt: skip
    assert r.status_code == 200, r.text
    assert r.json()["data"]["payment"] == {"iban": "DE89370400440532013000"}


def test_without_strict_other_properties_are_allowed(http: httpx.Client) -> None:
    r = http.post("/v1/notes", json={"text": "hi", "colour": "red", "n": {"deep": [1]}})
    assert r.status_code == 201, r.text
    assert errors_of(http.post("/v1/notes", json={"text": 1, "colour": "red"})) == [
        ("/text", "must be of type string")
    ]


def test_strict_on_a_composed_schema(http: httpx.Client) -> None:
    ok = {"at": "2025-01-02T03:04:05Z", "source": "sensor"}
    assert http.post("/v1/events", json=ok).status_code == 201
    assert errors_of(http.post("/v1/events", json={**ok, "other": 1})) == [
        ("/other", "is not an allowed property")
    ]


# -- published = enforced ------------------------------------------------------------------


def spec_of(http: httpx.Client) -> dict[str, Any]:
    r = http.get("/openapi.json")
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield v
            elif k not in ("enum", "const", "default", "examples", "example"):
                yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def unrewrite(node: Any, component: str) -> Any:
    text = json.dumps(node).replace(f'"#/components/schemas/{component}/$defs/', '"#/$defs/')
    return json.loads(text)


def test_the_published_schema_is_the_configured_one(http: httpx.Client) -> None:
    spec = spec_of(http)
    assert spec["openapi"].startswith("3.1")
    schemas = spec["components"]["schemas"]
    # Exactly the config's schema with strict's additionalProperties: false; the references
    # are rewritten to point into the component, and nothing else differs.
    assert unrewrite(schemas["OrdersData"], "OrdersData") == {**ORDER_SCHEMA,
                                                              "additionalProperties": False}  # fmt: skip
    assert schemas["OrdersData"]["properties"]["lines"]["items"] == {
        "$ref": "#/components/schemas/OrdersData/$defs/line"
    }
    assert schemas["NotesData"] == {"type": "object", "required": ["text"],
                                    "properties": {"text": {"type": "string"}}}  # fmt: skip
    assert schemas["EventsData"]["unevaluatedProperties"] is False
    assert "additionalProperties" not in schemas["EventsData"]
    # Every reference in the document resolves inside it.
    for ref in refs(spec):
        assert ref.startswith("#/"), ref
        node: Any = spec
        for token in ref[2:].split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict | bool), ref


def served_validator(spec: dict[str, Any], pointer: str) -> jsonschema_rs.Validator:
    """A validator of the schema at ``pointer`` of the served OpenAPI document, references
    resolved inside that document (as an OpenAPI 3.1 tool reads it)."""
    registry = jsonschema_rs.Registry([("urn:maxage:openapi", spec)])
    return jsonschema_rs.Draft202012Validator(
        {"$ref": "urn:maxage:openapi" + quote(pointer, safe="#/~$")},
        validate_formats=True,
        registry=registry,
    )


DOCUMENTS = [
    ORDER,
    BAD_ORDER,
    {**ORDER, "extra": 1},
    {**ORDER, "payment": {"iban": "short"}},
    {**ORDER, "payment": {"iban": "DE89370400440532013000"}},
    {**ORDER, "lines": []},
    {**ORDER, "lines": [{"sku": "ABC-1", "qty": 1, "price": 1.25}]},
    {**ORDER, "tags": ["a", "b", "a"]},
    {**ORDER, "customer": "a@b"},
    {**ORDER, "placed": "2025-01-02T03:04:05"},
    {**ORDER, "kind": "order", "note": {"anything": [1, 2]}},
    {k: v for k, v in ORDER.items() if k != "payment"},
]
PATCHES = [
    {},
    {"tags": None, "note": None, "unknown": None},
    {"customer": None},
    {"customer": "x@example.org", "placed": "2026-01-01T00:00:00Z"},
    {"placed": "bad"},
    {"payment": {"card": None, "iban": "DE89370400440532013000"}},
    {"payment": "card"},
    {"lines": [{"sku": "XY", "qty": 1, "price": 1}]},
    {"extra": 1},
    {"kind": "order"},
    {"tags": ["x", "x"]},
]


def test_what_is_published_is_what_is_enforced(http: httpx.Client) -> None:
    spec = spec_of(http)
    document = served_validator(spec, "#/components/schemas/OrdersData")
    for data in DOCUMENTS:
        r = http.post("/v1/orders", json=data)
        assert r.status_code in (201, 422), r.text
        assert (r.status_code == 201) == document.is_valid(data), (data, r.text)
    body = (
        "/paths/~1v1~1orders~1{id}/patch/requestBody/content/application~1merge-patch+json/schema"
    )
    patch = served_validator(spec, "#" + body)
    for data in PATCHES:
        url = http.post("/v1/orders", json=ORDER).headers["location"]
        r = http.patch(url, json=data, headers=MERGE)
        if patch.is_valid(data):  # accepted as a patch; the merged document decides
            merged = http.get(url, params={"consistency": "strong"}).json()["data"]
            assert r.status_code in (200, 422), r.text
            if r.status_code == 200:
                assert document.is_valid(merged)
        else:
            assert r.status_code == 422, (data, r.text)


# A merge patch valid against the patch schema can still make an invalid document (a card
# patched into an order paid by iban: oneOf matches none): 422 is the answer then, as 412 is
# for a precondition, and the fuzzer cannot know the document it patches.
PATCH_422 = """
[[operations]]
include-operation-id-regex = "^patch_"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "401", "403", "404", "409",
                                                     "412", "422", "429", "5xx"]
"""


def test_schemathesis_finds_nothing(server: MaxageServer, tmp_path: Path) -> None:
    """Schemathesis reads the body schemas (references included) and generates from them:
    what it considers valid is accepted, what it considers invalid is refused (the writes:
    the reads are the bundled example's test_schemathesis)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text((HERE / "schemathesis" / "schemathesis.toml").read_text() + PATCH_422)
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.schemathesis.hooks", "NO_COLOR": "1"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [str(st), "--config-file", str(config), "run", f"{server.url}/openapi.json",
           "--include-operation-id-regex", "^(create|put|patch)_(orders|events)$",
           "--no-color", "--seed", "1", "--workers", "1", "--max-examples", "10"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=170)
    assert r.returncode == 0, r.stdout[-8000:] + r.stderr[-2000:]


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ('{type = "object", properties = {a = {minLenght = 1}}}', "#/properties/a"),
        ('{type = "object", properties = {a = {"$ref" = "#/$defs/nope"}}}', "#/properties/a/$ref"),
        ('{type = "object", properties = {a = {type = "strin"}}}', "#/properties/a/type"),
    ],
)
def test_a_bad_schema_stops_start_up(tmp_path: Path, schema: str, where: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(f'[collections.things]\nmax_staleness = "1s"\nschema = {schema}\n')
    r = subprocess.run([sys.executable, "-m", "maxage", "serve", "--config", str(f),
                        "--port", "0", "--db", f"sqlite:///{tmp_path}/db.sqlite"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert str(f) in r.stderr and "'things'" in r.stderr and "'schema'" in r.stderr
    assert where in r.stderr and "Traceback" not in r.stderr
