"""The ``/docs`` page of both servers: Swagger UI (from the ``openapi-ui-bundles`` package, served by
maxage itself: no network access needed) rendering ``/openapi.json`` with try-it, over
a server-rendered list of every operation that is what a browser without JavaScript
shows (docs/adr/0009-api-docs-viewer.md).

The page is rendered once per server from the OpenAPI document it serves; the assets
are read from the installed package once, on first request. HTTP-free (each server
serves the bytes its own way), so ``maxage serve`` and ``maxage cache-server`` share it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

import msgspec

# Served at /docs/<name>: the viewer's script and stylesheet, with their media types.
ASSETS = {
    "swagger-ui-bundle.js": b"text/javascript; charset=utf-8",
    "swagger-ui.css": b"text/css; charset=utf-8",
}
_METHODS = ("get", "head", "post", "put", "patch", "delete", "options")

_CSS = """
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d1d1f}
#operations{max-width:72rem;margin:0 auto;padding:0 1rem 2rem}
#operations h1{font-size:1.5rem}#operations h2{font-size:1.1rem;margin:1.6rem 0 .4rem;border-bottom:1px solid #ddd}
.op{margin:.5rem 0;padding:.5rem .8rem;border:1px solid #e3e3e3;border-radius:6px;overflow-wrap:anywhere}
.m{display:inline-block;min-width:4.5rem;font-weight:700;font-family:ui-monospace,monospace}
.get{color:#0a7}.post{color:#07c}.put{color:#a60}.patch{color:#a0a}.delete{color:#c22}
code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#f6f6f6;padding:.5rem;overflow:auto}
ul{margin:.3rem 0}
"""

# Swagger UI when its script loaded; the server-rendered list stays otherwise.
_INIT = """
window.addEventListener('load', function () {
  if (!window.SwaggerUIBundle) return;
  window.ui = SwaggerUIBundle({
    url: 'openapi.json', dom_id: '#swagger-ui', deepLinking: true,
    validatorUrl: null, tryItOutEnabled: false, displayRequestDuration: true,
    onComplete: function () {
      document.getElementById('operations').hidden = true;
      document.body.dataset.viewer = 'ready';
    }
  });
});
"""


@functools.cache
def asset(name: str) -> bytes | None:
    """The bytes of a viewer asset from the installed package (None if it is absent)."""
    try:
        from openapi_ui_bundles import swagger_ui
    except ImportError:  # pragma: no cover - a required dependency
        return None
    path = Path(swagger_ui.static_path) / name
    return path.read_bytes() if name in ASSETS and path.is_file() else None


def _schema_text(content: Mapping[str, Any]) -> str:
    parts = []
    for media, body in content.items():
        ref = body.get("schema", {}).get("$ref", "")
        parts.append(
            f"<code>{escape(media)}</code>" + (f" {escape(ref.split('/')[-1])}" if ref else "")
        )
        if "example" in body:
            text = msgspec.json.format(msgspec.json.encode(body["example"]), indent=2).decode()
            parts.append(f"<pre>{escape(text)}</pre>")
    return "".join(parts)


def _param(p: Mapping[str, Any], components: Mapping[str, Any]) -> str:
    if "$ref" in p:
        p = components.get("parameters", {}).get(p["$ref"].split("/")[-1], {})
    where = p.get("in", "?")
    required = " (required)" if p.get("required") else ""
    return f"<code>{escape(str(p.get('name', '?')))}</code> in {escape(where)}{required}"


def operations_html(document: Mapping[str, Any]) -> str:
    """Every operation of ``document``: method, path, summary, parameters, request body
    (with its example), responses. What a browser without JavaScript shows."""
    components = document.get("components", {})
    out = [
        f"<h1>{escape(document['info']['title'])}</h1>",
        f"<p>{escape(document['info'].get('description', ''))}</p>",
        '<p>The machine-readable description: <a href="openapi.json">openapi.json</a>.</p>',
    ]
    for path, item in document["paths"].items():
        out.append(f"<h2><code>{escape(path)}</code></h2>")
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            params = [*item.get("parameters", []), *op.get("parameters", [])]
            listed = ", ".join(_param(p, components) for p in params) or "none"
            body = op.get("requestBody")
            body_html = f"<div>request body: {_schema_text(body['content'])}</div>" if body else ""
            responses = "".join(
                f"<li><b>{escape(status)}</b> {escape(r.get('description', ''))}</li>"
                for status, r in op.get("responses", {}).items()
            )
            out.append(
                f'<div class="op" id="{escape(op.get("operationId", ""))}">'
                f'<span class="m {method}">{method.upper()}</span> <code>{escape(path)}</code> '
                f"{escape(op.get('summary', ''))}<div>parameters: {listed}</div>{body_html}"
                f"<ul>{responses}</ul></div>"
            )
    return "".join(out)


def render(document: Mapping[str, Any]) -> bytes:
    """The whole ``/docs`` page for ``document`` (the served OpenAPI document)."""
    title = escape(document["info"]["title"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{title}</title>'
        f'<link rel="stylesheet" href="docs/swagger-ui.css"><style>{_CSS}</style></head>'
        '<body><div id="swagger-ui"></div>'
        f'<section id="operations">{operations_html(document)}</section>'
        '<script src="docs/swagger-ui-bundle.js"></script>'
        f"<script>{_INIT}</script></body></html>"
    ).encode()
