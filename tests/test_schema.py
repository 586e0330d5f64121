"""maxage.schema: standard JSON Schema (Draft 2020-12) with every error as (pointer, detail),
the checks refused at start-up, strict, the OpenAPI form and the merge-patch schema
(its soundness: a patch that turns one valid document into another is never refused)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxage.schema import (
    SchemaError,
    compile_schema,
    make_strict,
    openapi_schema,
    patch_schema,
    prepare,
)
from maxage.service.writes import merge_patch


def errors(schema: dict[str, Any], value: object) -> list[tuple[str, str]]:
    return compile_schema(schema)(value)


# -- keywords ----------------------------------------------------------------------------


def test_the_old_subset_keeps_its_wording() -> None:
    s = {"type": "object", "required": ["n"], "additionalProperties": False, "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 3},
        "s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
        "e": {"enum": ["a", 1, True]},
        "a": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "o": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "x/y": {"type": "null"}}}  # fmt: skip
    assert errors(s, {"n": 2, "s": "ab", "e": 1, "a": [1.5], "o": {"k": True}, "x/y": None}) == []
    assert errors(s, {"n": 2.0}) == []  # an integer-valued number is an integer
    assert errors(s, {"n": True}) == [("/n", "must be of type integer")]
    assert errors(s, {}) == [("/n", "is required")]
    assert errors(s, {"n": 0}) == [("/n", "must be >= 1")]
    assert errors(s, {"n": 4}) == [("/n", "must be <= 3")]
    assert errors(s, {"n": 1, "s": "A"}) == [("/s", "must be at least 2 characters long"),
                                             ("/s", "must match pattern '^[a-z]+$'")]  # fmt: skip
    assert errors(s, {"n": 1, "s": "abcd"}) == [("/s", "must be at most 3 characters long")]
    assert errors(s, {"n": 1, "e": 1.5}) == [("/e", 'must be one of "a", 1, true')]
    assert errors(s, {"n": 1, "e": 1}) == [] and errors(s, {"n": 1, "e": True}) == []
    assert errors(s, {"n": 1, "a": [1, "x", 3]}) == [("/a", "must have at most 2 items"),
                                                     ("/a/1", "must be of type number")]  # fmt: skip
    assert errors(s, {"n": 1, "o": {"k": 1}}) == [("/o/k", "must be of type boolean")]
    assert errors(s, {"n": 1, "x/y": 1}) == [("/x~1y", "must be of type null")]
    assert errors(s, {"n": 1, "z": 1, "a~b": 2}) == [("/a~0b", "is not an allowed property"),
                                                     ("/z", "is not an allowed property")]  # fmt: skip
    # ECMA-262 semantics: \d is ASCII only.
    assert errors({"type": "string", "pattern": "^\\d+$"}, "١٢") != []


def test_additional_properties_default_to_true() -> None:
    s = {"type": "object", "properties": {"a": {"type": "integer"}, "o": {"type": "object"}}}
    assert errors(s, {"a": 1, "b": 2, "o": {"c": 3}}) == []


def test_ref_defs_and_composition() -> None:
    s = {
        "type": "object",
        "$defs": {
            "money": {"type": "number", "minimum": 0, "multipleOf": 0.01},
            "line": {"type": "object", "required": ["price"],
                     "properties": {"price": {"$ref": "#/$defs/money"}}},
        },
        "properties": {
            "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
            "pay": {"oneOf": [{"required": ["card"]}, {"required": ["iban"]}]},
            "any": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
            "all": {"allOf": [{"minimum": 2}, {"multipleOf": 2}]},
            "not": {"not": {"const": "x"}},
        },
    }  # fmt: skip
    good = {"lines": [{"price": 0.07}, {"price": 3}], "pay": {"card": 1}, "any": "ab",
            "all": 4, "not": "y"}  # fmt: skip
    assert errors(s, good) == []
    bad = {"lines": [{"price": 0.001}, {}], "pay": {"card": 1, "iban": 2}, "any": "abc",
           "all": 3, "not": "x"}  # fmt: skip
    assert errors(s, bad) == [
        ("/all", "must be a multiple of 2"),
        ("/any", "must match at least one schema in anyOf"),
        ("/lines/0/price", "must be a multiple of 0.01"),
        ("/lines/1/price", "is required"),
        ("/not", "must not match the schema in not"),
        ("/pay", "must match exactly one schema in oneOf (it matches more than one)"),
    ]
    assert errors(s, {"pay": {}}) == [
        ("/pay", "must match exactly one schema in oneOf (it matches none)")
    ]
    assert errors(s, {"all": 1}) == [("/all", "must be >= 2"), ("/all", "must be a multiple of 2")]


def test_const_unique_items_and_more() -> None:
    assert errors({"const": {"k": [1]}}, {"k": [1]}) == []
    assert errors({"const": "order"}, "cart") == [("", 'must be "order"')]
    assert errors({"uniqueItems": True}, [1, 2, 3]) == []
    assert errors({"uniqueItems": True}, [1, 2, 1.0]) == [("", "must not contain duplicate items")]
    assert errors({"uniqueItems": True}, [1, True]) == []  # true is not 1
    assert errors({"exclusiveMinimum": 0, "exclusiveMaximum": 1}, 1) == [("", "must be < 1")]
    assert errors({"exclusiveMinimum": 0}, 0) == [("", "must be > 0")]
    assert errors({"minItems": 2}, [1]) == [("", "must have at least 2 items")]
    assert errors({"minProperties": 1}, {}) == [("", "must have at least 1 properties")]
    assert errors({"prefixItems": [{"type": "integer"}], "items": False}, [1, 2]) == [
        ("/1", "is not allowed here")
    ]
    assert errors({"dependentRequired": {"a": ["b"]}}, {"a": 1}) == [("/b", "is required")]
    cond = {"if": {"properties": {"k": {"const": 1}}}, "then": {"required": ["x"]}}
    assert errors(cond, {"k": 1}) == [("/x", "is required")] and errors(cond, {"k": 2}) == []
    assert errors({"contains": {"type": "string"}}, [1]) == [
        ("", "must contain the required number of items matching contains")
    ]
    assert errors({"propertyNames": {"maxLength": 2}}, {"abc": 1})[0][0] == ""
    s = {"properties": {"a": {}}, "allOf": [{"properties": {"b": {}}}],
         "unevaluatedProperties": False}  # fmt: skip
    assert errors(s, {"a": 1, "b": 2}) == []
    assert errors(s, {"a": 1, "c": 2}) == [("/c", "is not an allowed property")]


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("email", "ann@example.com", "ann.example.com"),
        ("date-time", "2025-01-02T03:04:05Z", "2025-01-02 03:04"),
        ("date-time", "2025-01-02T03:04:05.5+01:00", "2025-01-02T25:00:00Z"),
        ("date", "2025-02-28", "2025-02-30"),
        ("uri", "https://example.com/a?b=1#c", "not a uri"),
        ("uri", "urn:isbn:0451450523", "/relative/path"),
        ("uuid", "0190c9a8-7d3b-7c2e-9f1a-3b4c5d6e7f80", "0190c9a8-7d3b"),
    ],
)
def test_common_formats_are_asserted(fmt: str, good: str, bad: str) -> None:
    s = {"type": "string", "format": fmt}
    assert errors(s, good) == []
    assert errors(s, bad) == [("", f"must be a valid {fmt}")]
    assert errors(s, 5) == [("", "must be of type string")]  # a format constrains strings only
    assert errors({"format": fmt}, 5) == []


def test_unknown_formats_are_annotations() -> None:
    assert errors({"type": "string", "format": "int64-as-text"}, "anything") == []


def test_all_errors_sorted_with_rfc6901_pointers() -> None:
    s = {"type": "object", "required": ["a", "b"], "additionalProperties": False,
         "properties": {"a": {"type": "string"}, "b": {"type": "integer"},
                        "c": {"type": "array", "items": {"type": "object",
                              "properties": {"d~e/f": {"type": "integer"}}}}}}  # fmt: skip
    found = errors(s, {"c": [{"d~e/f": "x"}, {"d~e/f": 1}, {"d~e/f": "y"}], "z": 1})
    assert found == [
        ("/a", "is required"),
        ("/b", "is required"),
        ("/c/0/d~0e~1f", "must be of type integer"),
        ("/c/2/d~0e~1f", "must be of type integer"),
        ("/z", "is not an allowed property"),
    ]
    assert errors(s, []) == [("", "must be of type object")]


def test_details_do_not_echo_values() -> None:
    big = "x" * 10_000
    found = errors({"type": "object", "properties": {"a": {"type": "integer"}},
                    "oneOf": [{"required": ["q"]}]}, {"a": big})  # fmt: skip
    assert all(big[:50] not in d for _, d in found)


# -- refused at start-up -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"type": "date"}, "#/type"),
        ({"minimum": "1"}, "#/minimum"),
        ({"oneOf": []}, "#/oneOf"),
        ({"minLength": -1}, "#/minLength"),
        ({"properties": {"a": {"pattern": "("}}}, "#/properties/a/pattern"),
        ([], "#"),
        ({"properties": {"a": {"minLenght": 1}}}, "#/properties/a"),
        ({"properties": {"a": {"$ref": "https://example.com/s.json"}}}, "#/properties/a/$ref"),
        ({"properties": {"a": {"$ref": "#/properties/b"}}}, "#/properties/a/$ref"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}}, "#/properties/a/$ref"),
        ({"$defs": {"a": {"$anchor": "x"}}}, "#/$defs/a"),
        ({"properties": {"a": {"$id": "https://example.com/a"}}}, "#/properties/a"),
        ({"items": [{"type": "string"}]}, "#/items"),  # the draft-07 tuple form
        ({"dependencies": {"a": ["b"]}}, "#"),  # draft-07: dependentRequired now
    ],
)
def test_invalid_schemas_are_refused_naming_the_spot(bad: object, where: str) -> None:
    with pytest.raises(SchemaError) as info:
        compile_schema(bad)
    assert str(info.value).startswith(where + ":"), str(info.value)


def test_extensions_and_top_level_dialect() -> None:
    s = {"$schema": "http://json-schema.org/draft-07/schema#", "$id": "https://example.com/x",
         "type": "object", "x-owner": "team", "properties": {"a": {"example": 1, "x-y": {}}}}  # fmt: skip
    assert "$schema" not in prepare(s) and "$id" not in prepare(s)
    assert errors(s, {"a": 1}) == []


# -- strict ------------------------------------------------------------------------------


def test_strict() -> None:
    plain = {"type": "object", "properties": {"a": {"type": "object"}}}
    strict = make_strict(plain)
    assert strict == {**plain, "additionalProperties": False}
    assert errors(strict, {"a": {"nested": "kept"}, "b": 1}) == [
        ("/b", "is not an allowed property")
    ]  # top level only: nested objects as the schema says
    composed = {"type": "object", "allOf": [{"properties": {"a": {}}}], "properties": {"b": {}}}
    strict = make_strict(composed)
    assert strict == {**composed, "unevaluatedProperties": False}
    assert errors(strict, {"a": 1, "b": 2}) == []
    assert errors(strict, {"c": 3}) == [("/c", "is not an allowed property")]
    closed = {"type": "object", "additionalProperties": False}
    assert make_strict(closed) == closed
    with pytest.raises(SchemaError, match="contradicts"):
        make_strict({"type": "object", "additionalProperties": {"type": "string"}})


# -- OpenAPI -----------------------------------------------------------------------------


def test_openapi_form_rewrites_refs_only() -> None:
    s = {"type": "object", "$defs": {"m": {"type": "number"}, "a/b": {"type": "string"}},
         "properties": {"p": {"$ref": "#/$defs/m"}, "q": {"items": {"$ref": "#/$defs/a~1b"}},
                        "r": {"const": {"$ref": "#/$defs/m"}}}}  # fmt: skip
    out = openapi_schema(s, "ThingsData")
    assert out["properties"]["p"] == {"$ref": "#/components/schemas/ThingsData/$defs/m"}
    assert out["properties"]["q"]["items"] == {"$ref": "#/components/schemas/ThingsData/$defs/a~1b"}
    assert out["properties"]["r"] == {"const": {"$ref": "#/$defs/m"}}  # data, not a reference
    assert out["$defs"] == s["$defs"]
    assert "$defs" not in openapi_schema(patch_schema(s), "ThingsData", drop_defs=True)


# -- merge patch -------------------------------------------------------------------------

PRODUCTS = {
    "type": "object",
    "required": ["name", "price"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "price": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "dims": {"type": "object", "required": ["w"], "additionalProperties": False,
                 "properties": {"w": {"type": "number"}, "h": {"type": "number"}}},
        "attributes": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}  # fmt: skip


def test_patch_schema_plain() -> None:
    p = patch_schema(PRODUCTS)
    assert p["properties"]["price"] == {"type": "number", "minimum": 0}  # required: no null
    assert p["properties"]["currency"] == {"type": ["string", "null"], "enum": ["EUR", "USD", None]}
    assert p["properties"]["tags"]["type"] == ["array", "null"]
    assert p["additionalProperties"] == {"type": "null"}
    check = compile_schema(p)
    assert check({}) == []
    assert check({"currency": None, "tags": None, "unknown": None}) == []  # removals
    assert check({"attributes": {"a": None, "b": "x"}, "dims": {"h": None}}) == []  # nested patch
    assert check({"name": None, "price": -1, "colour": "red", "dims": {"w": None, "d": 1}}) == [
        ("/colour", "is not an allowed property (only null, to remove it)"),
        ("/dims/d", "is not an allowed property (only null, to remove it)"),
        ("/dims/w", "must be of type number"),
        ("/name", "must be of type string"),
        ("/price", "must be >= 0"),
    ]


ORDERS = {
    "type": "object",
    "required": ["customer", "payment"],
    "$defs": {
        "money": {"type": "number", "minimum": 0},
        "addr": {"type": "object", "required": ["city"],
                 "properties": {"city": {"type": "string"}, "zip": {"type": "string"}}},
        "node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                   "next": {"$ref": "#/$defs/node"}}},
    },
    "properties": {
        "customer": {"type": "string", "format": "email"},
        "total": {"$ref": "#/$defs/money"},
        "ship": {"$ref": "#/$defs/addr"},
        "chain": {"$ref": "#/$defs/node"},
        "note": {"type": ["string", "object"], "properties": {"text": {"type": "string"}}},
        "payment": {"oneOf": [
            {"type": "object", "required": ["card"], "additionalProperties": False,
             "properties": {"card": {"type": "string", "pattern": "^[0-9]{4}$"}}},
            {"type": "object", "required": ["iban"], "additionalProperties": False,
             "properties": {"iban": {"type": "string", "minLength": 5}}},
        ]},
    },
    "allOf": [{"properties": {"total": {"maximum": 1000}, "extra": {"type": "boolean"}}}],
    "unevaluatedProperties": False,
}  # fmt: skip


def test_patch_schema_composite() -> None:
    p = patch_schema(ORDERS)
    check = compile_schema(p)
    assert p["additionalProperties"] == {"type": "null"}
    assert set(p["properties"]) == {"customer", "total", "ship", "chain", "note", "payment",
                                    "extra"}  # fmt: skip
    assert (
        check({"total": 5, "extra": None, "ship": {"zip": None}, "chain": {"next": {"v": 1}}}) == []
    )
    assert check({"payment": {"card": "1234"}, "note": "x", "unknown": None}) == []
    assert check({"note": {"text": None}}) == []
    found = check({"total": 2000, "customer": "nope", "ship": {"city": None},
                   "payment": None, "extra": "yes", "other": 1})  # fmt: skip
    assert [w for w, _ in found] == ["/customer", "/extra", "/other", "/payment", "/ship/city",
                                     "/total"]  # fmt: skip
    assert p["$defs"] == ORDERS["$defs"]  # unchanged subschemas still refer to them


def test_patch_schema_of_a_recursive_root_terminates() -> None:
    s = {"type": "object", "$defs": {"t": {"type": "object", "properties": {
        "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}},
        "a": {"$ref": "#/$defs/t"}, "b": {"$ref": "#/$defs/t"}}}},
        "$ref": "#/$defs/t"}  # fmt: skip
    check = compile_schema(patch_schema(s))
    assert check({"a": {"b": {"a": {"kids": [{}]}}}}) == []


# Soundness: for valid documents A and B, the merge patch that turns A into B is accepted.

_EMAIL = st.sampled_from(["a@example.com", "b.c@example.org"])
_ADDR = st.fixed_dictionaries({"city": st.text(max_size=3)}, optional={"zip": st.text(max_size=3)})
_NODE = st.recursive(
    st.fixed_dictionaries({}, optional={"v": st.integers(-3, 3)}),
    lambda kids: st.fixed_dictionaries({}, optional={"v": st.integers(-3, 3), "next": kids}),
    max_leaves=4,
)
_ORDER = st.fixed_dictionaries(
    {"customer": _EMAIL,
     "payment": st.one_of(st.fixed_dictionaries({"card": st.from_regex(r"\A[0-9]{4}\Z")}),
                          st.fixed_dictionaries({"iban": st.text(min_size=5, max_size=8)}))},
    optional={"total": st.floats(0, 1000), "ship": _ADDR, "chain": _NODE, "extra": st.booleans(),
              "note": st.one_of(st.text(max_size=3),
                                st.fixed_dictionaries({}, optional={"text": st.text(max_size=3)}))},
)  # fmt: skip


def diff(a: Any, b: Any) -> Any:
    """The RFC 7396 merge patch that turns ``a`` into ``b``."""
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return copy.deepcopy(b)
    out = {k: None for k in a if k not in b}
    for k, v in b.items():
        if k not in a or a[k] != v:
            out[k] = diff(a.get(k), v) if isinstance(a.get(k), dict) else copy.deepcopy(v)
    return out


_ORDERS_VALID = compile_schema(ORDERS)
_ORDERS_PATCH = compile_schema(patch_schema(ORDERS))
_PRODUCTS_VALID = compile_schema(PRODUCTS)
_PRODUCTS_PATCH = compile_schema(patch_schema(PRODUCTS))
_PRODUCT = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=3), "price": st.floats(0, 10)},
    optional={"currency": st.sampled_from(["EUR", "USD"]), "tags": st.lists(st.text(max_size=2)),
              "dims": st.fixed_dictionaries({"w": st.integers()}, optional={"h": st.integers()}),
              "attributes": st.dictionaries(st.text(max_size=2), st.text(max_size=2))},
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(_ORDER, _ORDER)
def test_patch_schema_never_refuses_a_patch_between_valid_orders(a: Any, b: Any) -> None:
    assert _ORDERS_VALID(a) == [] and _ORDERS_VALID(b) == []
    patch = diff(a, b)
    assert merge_patch(a, patch) == b
    assert _ORDERS_PATCH(patch) == [], patch


@settings(max_examples=300, deadline=None)
@given(_PRODUCT, _PRODUCT)
def test_patch_schema_never_refuses_a_patch_between_valid_products(a: Any, b: Any) -> None:
    assert _PRODUCTS_VALID(a) == [] and _PRODUCTS_VALID(b) == []
    patch = diff(a, b)
    assert merge_patch(a, patch) == b
    assert _PRODUCTS_PATCH(patch) == [], patch
