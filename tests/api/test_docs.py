"""/docs without JavaScript (the server-rendered list of every operation), its assets
served by maxage itself, and the OpenAPI examples: one per collection, generated from
the schema, accepted by the server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.api.conftest import MaxageServer

CONFIG = """
[collections.posts]
max_staleness = "1s"
[collections.posts.schema]
type = "object"
required = ["title", "at", "stars"]
[collections.posts.schema.properties]
title = { type = "string", minLength = 12, maxLength = 20 }
at = { type = "string", format = "date-time" }
stars = { type = "integer", minimum = 3, maximum = 5 }
kind = { "$ref" = "#/$defs/kind" }
code = { type = "string", pattern = "^[A-Z]{3}$" }
rating = { type = "number", exclusiveMinimum = 10, multipleOf = 0.5 }
[collections.posts.schema."$defs".kind]
enum = ["note", "essay"]

[collections.plain]
max_staleness = "0s"
read_modes = ["strong"]
[collections.plain.schema]
type = "object"
"""


def test_docs_page_lists_every_operation_without_javascript(server: MaxageServer) -> None:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as c:
        spec = c.get("/openapi.json").json()
        page = c.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        for name in ("swagger-ui-bundle.js", "swagger-ui.css"):
            asset = c.get(f"/docs/{name}")
            assert asset.status_code == 200 and len(asset.content) > 10_000, name
    html = page.text
    # Every asset the page loads is maxage's own (relative, same origin).
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert f'id="{op["operationId"]}"' in html, op["operationId"]
            assert f'<span class="m {method}">{method.upper()}</span> <code>{path}</code>' in html


def test_every_collection_has_examples_the_server_accepts(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text(CONFIG)
    s = MaxageServer(tmp_path, "--config", str(tmp_path / "c.toml"))
    try:
        with httpx.Client(base_url=s.url, trust_env=False, timeout=10) as c:
            spec = c.get("/openapi.json").json()
            for name in ("posts", "plain"):
                post = spec["paths"][f"/v1/{name}"]["post"]
                data = post["requestBody"]["content"]["application/json"]["example"]
                created = c.post(f"/v1/{name}", json=data)
                assert created.status_code == 201, created.text
                got = spec["paths"][f"/v1/{name}/{{id}}"]["get"]["responses"]["200"]
                shown = got["content"]["application/json"]["example"]
                assert shown["data"] == data and set(shown) == set(created.json())
            posts = spec["paths"]["/v1/posts"]["post"]["requestBody"]["content"]
            example = posts["application/json"]["example"]
            assert len(example["title"]) >= 12 and 3 <= example["stars"] <= 5
            assert example["kind"] == "note" and example["rating"] > 10
            assert "code" not in example  # a pattern the generator cannot satisfy: left out
            patch = spec["paths"]["/v1/posts/{id}"]["patch"]["requestBody"]["content"]
            made = c.post("/v1/posts", json=example).json()["id"]
            patched = c.patch(
                f"/v1/posts/{made}",
                content=json.dumps(patch["application/merge-patch+json"]["example"]),
                headers={"content-type": "application/merge-patch+json"},
            )
            assert patched.status_code == 200, patched.text
    finally:
        s.kill()
