"""The route table: one list, read by dispatch (:func:`match`) and by the OpenAPI
document (:func:`maxage.api.openapi.build`), like starlette's ``Router.routes``.

A template's segments are literals, ``{collection}`` (a configured collection),
``{collection}:<verb>`` (a collection, then a custom method), ``{id}`` (any
non-empty segment) or ``{id}:suffix`` (a non-empty id, then the literal suffix);
the suffixes are AIP-136 custom methods like ``:increment`` and ``:batch``. A path
matches the most specific route: ``/v1/products/changes`` is the change feed, not
the document ``changes``; ``/v1/products:batch`` is the batch, not a collection
named so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from maxage.api import batch, changes, collections, deadletters, documents, keys, ops
from maxage.api.types import HTTPProblem, Receive, Request, Send
from maxage.contracts import CollectionSpec

if TYPE_CHECKING:
    from maxage.api.app import App

Handler = Callable[["App", Request, "Match", Receive, Send], Awaitable[int]]

DOCUMENT_OPS = ("GET", "HEAD", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Route:
    template: str
    handlers: Mapping[str, Handler]  # method -> handler; HEAD is served wherever GET is
    operation: str = ""  # OpenAPI: the operation family (see openapi.build); "" = not listed
    # Who may call it: "data" (read:<collection> for GET/HEAD, write:<collection> otherwise),
    # "read" (read:<collection> whatever the method), "admin", or "public" (no key:
    # health, metrics, the API description).
    access: str = "public"
    # Media types it answers with (problems excepted); an Accept that admits none is 406.
    produces: tuple[bytes, ...] = (b"application/json",)
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))

    @property
    def allow(self) -> bytes:
        methods = list(self.handlers)
        if "GET" in methods and "HEAD" not in methods:
            methods.insert(methods.index("GET") + 1, "HEAD")
        return ", ".join(methods).encode()

    def label(self, spec: CollectionSpec | None) -> str:
        """The metrics label: the template with the collection's name filled in."""
        return self.template if spec is None else self.template.replace("{collection}", spec.name)


_WRITE = documents.write
ROUTES: tuple[Route, ...] = (
    Route("/v1/{collection}", {"GET": collections.list_page, "POST": _WRITE}, "collection", "data"),
    Route(
        "/v1/{collection}/{id}",
        {"GET": documents.get, "PUT": _WRITE, "PATCH": _WRITE, "DELETE": _WRITE},
        "document",
        "data",
    ),
    Route("/v1/{collection}/{id}:increment", {"POST": documents.increment}, "increment", "data"),
    Route("/v1/{collection}:batch", {"POST": batch.write}, "batch", "data"),
    Route(
        "/v1/{collection}/changes",
        {"GET": changes.stream},
        "changes",
        "data",
        (b"application/x-ndjson", b"text/event-stream"),
    ),
    Route("/v1/{collection}/changes/ack", {"POST": changes.ack}, "changes_ack", "read"),
    Route("/v1/_deadletters", {"GET": deadletters.list_letters}, "deadletters", "admin"),
    Route(
        "/v1/_deadletters/{id}",
        {"GET": deadletters.get_letter, "DELETE": deadletters.drop_letter},
        "deadletter",
        "admin",
    ),
    Route(
        "/v1/_deadletters/{id}:replay",
        {"POST": deadletters.replay_letter},
        "deadletter_replay",
        "admin",
    ),
    Route("/v1/_keys", {"GET": keys.list_keys, "POST": keys.create}, "keys", "admin"),
    Route("/v1/_keys/{id}", {"PATCH": keys.rescope, "DELETE": keys.revoke}, "key", "admin"),
    Route("/livez", {"GET": ops.livez}, "livez"),
    Route("/readyz", {"GET": ops.readyz}, "readyz"),
    Route("/metrics", {"GET": ops.metrics}, "metrics", produces=(b"text/plain",)),
    Route("/openapi.json", {"GET": ops.openapi_json}, "openapi"),
    # Admin when --auth keys (it names every collection); the page itself asks for the key.
    Route("/status", {"GET": ops.status_page}, "status", produces=(b"text/html",)),
    Route("/status.json", {"GET": ops.status_json}, "status_json", "admin"),
    Route("/docs", {"GET": ops.docs}, produces=(b"text/html",)),
    Route("/docs/swagger-ui-bundle.js", {"GET": ops.docs_asset}, produces=(b"text/javascript",)),
    Route("/docs/swagger-ui.css", {"GET": ops.docs_asset}, produces=(b"text/css",)),
    Route(
        "/_maxage/faults",
        {"GET": ops.faults, "PUT": ops.faults, "POST": ops.faults, "DELETE": ops.faults},
    ),
)


class Match(NamedTuple):  # a tuple: built on every request, cheaper than a frozen dataclass
    route: Route
    spec: CollectionSpec | None
    id: str
    handler: Handler


_COLLECTION = "{collection}"


def _specificity(route: Route) -> int:
    """Literal segments count 2, a ``{id}:suffix`` segment 1, a bare placeholder 0."""
    return sum(0 if s in ("{collection}", "{id}") else 1 if s.startswith("{") else 2
               for s in route.segments)  # fmt: skip


_BY_SPECIFICITY = sorted(ROUTES, key=_specificity, reverse=True)

# A template segment, compiled: (kind, text): a literal, a collection then a verb ("" or
# ":<verb>"), an id, or an id then a literal suffix.
_LITERAL, _COLLECTION_VERB, _ID, _ID_SUFFIX = range(4)


def _compiled(route: Route) -> tuple[tuple[int, str], ...]:
    def one(s: str) -> tuple[int, str]:
        if s.startswith(_COLLECTION):
            return _COLLECTION_VERB, s[len(_COLLECTION) :]
        if s == "{id}":
            return _ID, ""
        if s.startswith("{id}"):
            return _ID_SUFFIX, s[4:]
        return _LITERAL, s

    return tuple(one(s) for s in route.segments)


_Candidates = list[tuple[Route, tuple[tuple[int, str], ...]]]


def _index() -> dict[int, tuple[int, dict[str, _Candidates], _Candidates]]:
    """Per number of segments: the segment ``at`` that tells routes apart (the second,
    or the only one), the candidates by its text, and the candidates for any other text.
    Each list is the routes of that length, most specific first, less those whose literal
    segment ``at`` differs (they could not match): the order of precedence is kept."""
    by_length: dict[int, _Candidates] = {}
    for route in _BY_SPECIFICITY:
        by_length.setdefault(len(route.segments), []).append((route, _compiled(route)))
    index = {}
    for length, routes in by_length.items():
        at = 1 if length > 1 else 0
        # A dropped route must not get as far as looking up a collection before ``at``.
        assert all(seg[0][0] == _LITERAL for _, seg in routes if at == 1)
        literals = {seg[at][1] for _, seg in routes if seg[at][0] == _LITERAL}
        by_text = {
            text: [
                (r, seg)
                for r, seg in routes
                if seg[at] != (_LITERAL, seg[at][1]) or seg[at][1] == text
            ]
            for text in literals
        }
        others = [(r, seg) for r, seg in routes if seg[at][0] != _LITERAL]
        index[length] = (at, by_text, others)
    return index


_INDEX = _index()
# Metrics labels by (template, collection): few, built once each.
_LABELS: dict[tuple[str, str], str] = {}


def match(
    path: str, method: str, collections_: Mapping[str, CollectionSpec], req: Request
) -> Match:
    """The route for ``path`` and ``method``; sets ``req.route`` (the metrics label).

    Raises 404 ``collection_not_found`` / ``not_found`` or 405 with ``Allow``."""
    parts = path.strip("/").split("/") if path != "/" else [""]
    unknown_collection = ""
    candidates: _Candidates = []
    index = _INDEX.get(len(parts))
    if index is not None:
        at, by_text, others = index
        candidates = by_text.get(parts[at], others)
    for route, segments in candidates:
        spec: CollectionSpec | None = None
        id = ""
        for (kind, text), got in zip(segments, parts, strict=True):
            if kind == _LITERAL:
                if text != got:
                    break
            elif kind == _COLLECTION_VERB:
                if text and not got.endswith(text):
                    break
                name = got[: len(got) - len(text)]
                spec = collections_.get(name)
                if spec is None:
                    unknown_collection = unknown_collection or name
                    break
            elif kind == _ID:
                if not got:
                    break
                id = got
            else:  # "{id}:increment": an id, then a literal suffix
                if len(got) <= len(text) or not got.endswith(text):
                    break
                id = got[: -len(text)]
        else:
            if path.endswith("/") and path != "/":
                continue  # "/v1/products/" is not "/v1/products"
            label_key = (route.template, spec.name if spec is not None else "")
            label = _LABELS.get(label_key)
            if label is None:
                label = _LABELS[label_key] = route.label(spec)
            req.route = label
            handler = route.handlers.get("GET" if method == "HEAD" else method)
            if handler is None or (method == "HEAD" and "GET" not in route.handlers):
                raise HTTPProblem(
                    "method_not_allowed",
                    f"{method} is not allowed here",
                    [(b"allow", route.allow)],
                )
            return Match(route, spec, id, handler)
    if unknown_collection and path.startswith("/v1/") and len(parts) in (2, 3):
        req.route = "/v1/{collection}" if len(parts) == 2 else "/v1/{collection}/{id}"
        raise HTTPProblem("collection_not_found", f"no collection named {unknown_collection!r}")
    raise HTTPProblem("not_found", f"no route for {path}")
