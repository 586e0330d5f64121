"""Route matching and query parsing, in process: the most specific route wins, every
refusal is the right problem, and the query fast path parses exactly as ``parse_qsl``."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maxage.api.http import MAX_QUERY_FIELDS, query_items
from maxage.api.routes import match
from maxage.api.types import HTTPProblem, Request
from maxage.contracts import parse_config

COLLECTIONS = parse_config(
    {"collections": {"products": {"max_staleness": "5s", "schema": {"type": "object"}}}}, "test"
).collections


def matched(method: str, path: str) -> tuple[str, str, str | None]:
    req = Request(method, path, b"", "r", 0.0)
    m = match(path, method, COLLECTIONS, req)
    return req.route, m.id, m.spec.name if m.spec is not None else None


@pytest.mark.parametrize(
    ("method", "path", "route", "id"),
    [
        ("GET", "/v1/products/abc", "/v1/products/{id}", "abc"),
        ("HEAD", "/v1/products/abc", "/v1/products/{id}", "abc"),
        ("GET", "/v1/products/changes", "/v1/products/changes", ""),
        ("POST", "/v1/products/changes/ack", "/v1/products/changes/ack", ""),
        ("POST", "/v1/products/abc:increment", "/v1/products/{id}:increment", "abc"),
        ("PUT", "/v1/products/:increment", "/v1/products/{id}", ":increment"),
        ("POST", "/v1/products:batch", "/v1/products:batch", ""),
        ("POST", "/v1/products", "/v1/products", ""),
        ("PATCH", "/v1/_keys/k1", "/v1/_keys/{id}", "k1"),
        ("POST", "/v1/_deadletters/7:replay", "/v1/_deadletters/{id}:replay", "7"),
        ("GET", "/v1/_deadletters/7", "/v1/_deadletters/{id}", "7"),
        ("GET", "/livez", "/livez", ""),
    ],
)
def test_the_most_specific_route_matches(method: str, path: str, route: str, id: str) -> None:
    got_route, got_id, _ = matched(method, path)
    assert (got_route, got_id) == (route, id)


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "/v1/nope/abc", "collection_not_found"),
        ("GET", "/v1/nope", "collection_not_found"),
        ("GET", "/v1/products/", "not_found"),
        ("GET", "/v1/products/a/b/c", "not_found"),
        ("GET", "/", "not_found"),
        ("POST", "/livez", "method_not_allowed"),
        ("POST", "/v1/products/abc", "method_not_allowed"),
    ],
)
def test_refusals(method: str, path: str, code: str) -> None:
    with pytest.raises(HTTPProblem) as refused:
        matched(method, path)
    assert refused.value.code == code


@given(st.text(alphabet="ab=&%+;é2F ", max_size=40))
def test_query_items_parse_as_parse_qsl(text: str) -> None:
    try:
        expected: object = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_QUERY_FIELDS
        )
    except ValueError:
        expected = "too many"
    try:
        got: object = query_items(text.encode("latin-1"))
    except HTTPProblem:
        got = "too many"
    assert got == expected


@pytest.mark.parametrize("fields", [MAX_QUERY_FIELDS, MAX_QUERY_FIELDS + 1])
def test_too_many_query_fields_are_refused_on_both_paths(fields: int) -> None:
    for sep in ("a=1", "a=%31"):
        query = "&".join([sep] * fields).encode()
        if fields > MAX_QUERY_FIELDS:
            with pytest.raises(HTTPProblem):
                query_items(query)
        else:
            assert len(query_items(query)) == fields
