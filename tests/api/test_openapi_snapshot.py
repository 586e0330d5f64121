"""The committed spec (docs/openapi.json) vs the live one: breaking changes fail.

Breaking (for an old client): a removed path, operation, parameter-free response status,
response property or enum value; a new required input (parameter, request body, request
property); a changed type. Additive changes pass. To accept a deliberate change, run
``python -m tests.api.update_openapi_snapshot`` (or set MAXAGE_UPDATE_OPENAPI_SNAPSHOT=1).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from tests.api import update_openapi_snapshot as snap

METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


def _resolve(spec: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _types(schema: dict[str, Any]) -> set[str]:
    t = schema.get("type")
    return {t} if isinstance(t, str) else set(t or [])


def compare_schemas(old_spec: dict[str, Any], new_spec: dict[str, Any], old: Any, new: Any,
                    where: str, response: bool, out: list[str], depth: int = 0) -> None:  # fmt: skip
    old, new = _resolve(old_spec, old), _resolve(new_spec, new)
    if depth > 12 or not isinstance(old, dict) or not isinstance(new, dict):
        return
    if _types(old) and _types(new) and not _types(old) <= _types(new) and response is False:
        out.append(f"{where}: type changed {sorted(_types(old))} -> {sorted(_types(new))}")
    if response and _types(old) and _types(new) and not _types(new) <= _types(old):
        out.append(f"{where}: type changed {sorted(_types(old))} -> {sorted(_types(new))}")
    if "enum" in old and "enum" in new:
        if response:
            added = [v for v in new["enum"] if v not in old["enum"]]
            removed = [v for v in old["enum"] if v not in new["enum"]]
            if removed:
                out.append(f"{where}: enum values removed {removed}")
            del added  # a new response enum value is tolerated (clients must ignore unknowns)
        elif [v for v in old["enum"] if v not in new["enum"]]:
            out.append(f"{where}: accepted enum values removed")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    if response:
        for name in old_props:
            if name not in new_props:
                out.append(f"{where}/{name}: response field removed")
    else:
        added_required = set(new.get("required", [])) - set(old.get("required", []))
        if added_required:
            out.append(f"{where}: new required input fields {sorted(added_required)}")
    for name in old_props.keys() & new_props.keys():
        compare_schemas(old_spec, new_spec, old_props[name], new_props[name],
                        f"{where}/{name}", response, out, depth + 1)  # fmt: skip
    if "items" in old and "items" in new:
        compare_schemas(old_spec, new_spec, old["items"], new["items"], f"{where}/items",
                        response, out, depth + 1)  # fmt: skip


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for path, old_item in old["paths"].items():
        new_item = new["paths"].get(path)
        if new_item is None:
            out.append(f"{path}: path removed")
            continue
        for method in old_item.keys() & METHODS:
            where = f"{method.upper()} {path}"
            if method not in new_item:
                out.append(f"{where}: operation removed")
                continue
            o, n = old_item[method], new_item[method]

            def params(item: dict[str, Any], op: dict[str, Any], spec: dict[str, Any]) -> dict:
                ps = [
                    _resolve(spec, p) for p in item.get("parameters", []) + op.get("parameters", [])
                ]
                return {(p["in"], p["name"].lower()): p for p in ps}

            op_, np_ = params(old_item, o, old), params(new_item, n, new)
            for key, p in np_.items():
                if p.get("required") and not (key in op_ and op_[key].get("required")):
                    out.append(f"{where}: new required parameter {key}")
            for key in op_.keys() & np_.keys():
                compare_schemas(old, new, op_[key].get("schema"), np_[key].get("schema"),
                                f"{where} param {key[1]}", False, out)  # fmt: skip
            ob, nb = o.get("requestBody"), n.get("requestBody")
            if nb and nb.get("required") and not (ob and ob.get("required")):
                out.append(f"{where}: request body became required")
            if ob and nb:
                for media, content in ob.get("content", {}).items():
                    if media not in nb.get("content", {}):
                        out.append(f"{where}: request media type {media} removed")
                        continue
                    compare_schemas(old, new, content.get("schema"),
                                    nb["content"][media].get("schema"), f"{where} body", False,
                                    out)  # fmt: skip
            for status, resp in o.get("responses", {}).items():
                nresp = n.get("responses", {}).get(status)
                if nresp is None:
                    out.append(f"{where}: response {status} removed")
                    continue
                for media, content in resp.get("content", {}).items():
                    ncontent = nresp.get("content", {}).get(media)
                    if ncontent is None:
                        out.append(f"{where} {status}: response media type {media} removed")
                        continue
                    compare_schemas(old, new, content.get("schema"), ncontent.get("schema"),
                                    f"{where} {status}", True, out)  # fmt: skip
    return out


def test_live_spec_matches_served_spec(http: httpx.Client) -> None:
    assert http.get("/openapi.json").json() == json.loads(json.dumps(snap.live_spec()))


def test_no_breaking_changes_against_snapshot() -> None:
    live = json.loads(json.dumps(snap.live_spec()))
    if os.environ.get("MAXAGE_UPDATE_OPENAPI_SNAPSHOT") == "1":
        snap.write()
    committed = json.loads(snap.SNAPSHOT.read_text())
    problems = breaking_changes(committed, live)
    assert not problems, (
        "the API spec changed in a way that breaks old clients:\n  "
        + "\n  ".join(problems)
        + "\nIf deliberate: python -m tests.api.update_openapi_snapshot"
    )


def test_the_checker_catches_breaking_changes() -> None:
    old = json.loads(snap.SNAPSHOT.read_text())
    assert breaking_changes(old, old) == []
    new = json.loads(json.dumps(old))
    del new["paths"]["/v1/products"]["post"]
    new["paths"]["/v1/products/{id}"]["get"]["parameters"].append(
        {"name": "tenant", "in": "query", "required": True, "schema": {"type": "string"}}
    )
    new["components"]["schemas"]["ReadMeta"]["properties"]["source"]["enum"].remove("l2")
    del new["components"]["schemas"]["ReadMeta"]["properties"]["cachedAt"]
    new["components"]["schemas"]["ProductsData"]["required"].append("currency")
    new["components"]["schemas"]["ProductsData"]["properties"]["price"]["type"] = "string"
    del new["paths"]["/livez"]
    found = "\n".join(breaking_changes(old, new))
    for expected in ("POST /v1/products: operation removed", "new required parameter",
                     "enum values removed", "cachedAt: response field removed",
                     "new required input fields ['currency']", "price: type changed",
                     "/livez: path removed"):  # fmt: skip
        assert expected in found, (expected, found)
    additive = json.loads(json.dumps(old))
    additive["paths"]["/v2/new"] = {"get": {"responses": {}}}
    additive["components"]["schemas"]["ReadMeta"]["properties"]["extra"] = {"type": "string"}
    assert breaking_changes(old, additive) == []
