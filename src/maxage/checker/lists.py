"""List reads, black box: recorded as one ``list`` op per page, checked as the
per-document reads the page implies.

A page ``GET /v1/{collection}?page_size=100`` lists documents in id order. For every
key of the run, in the id range the page covers (all ids when it is the last page,
else ids up to its last one), the page is an observation of that key at the page's
read: shown at a version (with its token and data hash), or absent (as a 404 would
be). :func:`expand` turns a ``list`` op into those reads, so P0, P1, P2 (no page omits,
or shows an older version of, a document whose write was acknowledged more than S
before the read started) and P3 are checked by the same code as document reads. A
session page read (``min_version`` = the highest ``meta.collectionVersion`` this
client saw) promises only its collection version (:func:`session_violations`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import httpx

from maxage.checker.history import FAIL, OK, READ, WRITE_KINDS, Op, data_hash

LIST = "list"
PAGE_SIZE = 100


def url(collection: str, mode: str, default_mode: str, min_version: int) -> str:
    """The request of one page read in ``mode``."""
    target = f"/v1/{collection}?page_size={PAGE_SIZE}"
    if mode == "strong" and default_mode != "strong":
        target += "&consistency=strong"
    elif mode == "session":
        target += f"&min_version={min_version}"
    return target


def parse(op: Op, token_field: str, resp: httpx.Response) -> None:
    """Fill a ``list`` op from its response: ``page`` (id -> [version, token, data
    hash]), ``covered_to`` (the last id when more pages follow), ``version``
    (meta.collectionVersion), ``tier``."""
    parse_body(op, token_field, resp.status_code, resp.content)


def parse_body(op: Op, token_field: str, status: int, content: bytes) -> None:
    """:func:`parse` given the response's status and body (``maxage sim`` records its
    pages, read through the service's listing, with this too)."""
    if status != 200:
        op.outcome = FAIL
        op.detail = str(status)
        return
    op.outcome = OK
    try:
        body = json.loads(content)
        items = body["data"]
        meta = body["meta"]
        page: dict[str, list[Any]] = {}
        for item in items:
            data = item["data"]
            token = data.get(token_field) if isinstance(data, dict) else None
            page[str(item["id"])] = [int(item["version"]), token, data_hash(data)]
        op.page = page
        op.covered_to = str(items[-1]["id"]) if body["next_page_token"] and items else None
        op.version = int(meta["collectionVersion"])
        op.tier = meta.get("source")
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        op.integrity = f"unparseable page: {exc}"


def expand(ops: Sequence[Op]) -> list[Op]:
    """The per-document reads every successful ``list`` op implies (see the module
    docstring); a session page's reads carry no mode (P0 and P1 only)."""
    keys: dict[str, set[str]] = defaultdict(set)
    for o in ops:
        if o.kind in WRITE_KINDS and o.key:  # Op.is_write, without a call per op
            keys[o.collection].add(o.key)
    out: list[Op] = []
    for o in ops:
        if o.kind != LIST or o.outcome != OK or o.page is None:
            continue
        mode = None if o.mode == "session" else o.mode
        for key in sorted(keys[o.collection]):
            if o.covered_to is not None and key > o.covered_to:
                break
            read = Op(o.id, o.client, READ, o.collection, key, mode=mode, invoke=o.invoke,
                      ret=o.ret, outcome=OK, tier=o.tier, phase=o.phase, detail="in a list page")  # fmt: skip
            shown = o.page.get(key)
            if shown is None:
                read.status = 404
            else:
                read.status = 200
                read.version, read.token, read.body_hash = shown
            out.append(read)
    return out


def session_violations(ops: Iterable[Op]) -> list[tuple[str, Op]]:
    """P4 for pages: a session page never reflects a collection version below the
    ``min_version`` it asked for."""
    return [
        (f"session page read with min_version={o.min_version} reflects version {o.version}", o)
        for o in ops
        if o.kind == LIST
        and o.mode == "session"
        and o.outcome == OK
        and o.version is not None
        and o.version < (o.min_version or 0)
    ]
