"""Discovery of the target's contracts and the concurrent client workload.

Collections and contracts come from the target's ``/openapi.json``: the
``GET /v1/{name}/{id}`` operation lists the allowed read modes (the enum of
its ``consistency`` parameter) and states the bound in its summary ("max
staleness Xs"); the document schema is the ``PUT`` request body. Every write
carries a token (client and operation number) in one string field of the
document, so a read tells which write produced the data it returns.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from maxage.checker import lists
from maxage.checker.history import FAIL, OK, UNKNOWN, Op, bytes_hash, data_hash

_STALENESS = re.compile(r"max staleness ([0-9.]+)s")
_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')


# The share of reads that read a page of the collection instead of one document.
LIST_SHARE = 0.1


class DiscoveryError(Exception):
    pass


@dataclass(slots=True)
class Collection:
    name: str
    max_staleness: float
    modes: tuple[str, ...]
    token_field: str
    base: dict[str, Any]
    # write-back: a PATCH is acknowledged from a process's buffer with no version of its
    # own (nothing a history can check), so the checker writes it with PUT, POST, DELETE
    write_back: bool = False

    @property
    def default_mode(self) -> str:
        return "bounded" if "bounded" in self.modes else "strong"

    @property
    def shared_mode(self) -> str:
        """The mode of a read whose load other reads may join (a strong read never
        shares one): bounded, else session, else strong (a strong-only collection)."""
        return (
            "bounded"
            if "bounded" in self.modes
            else ("session" if "session" in self.modes else "strong")
        )


# -- discovery -------------------------------------------------------------------------

WRITE_BACK_MARK = "Write-back collection"  # how api/operations.py describes its operations


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        ref = str(node["$ref"])
        cur: Any = doc
        for part in ref.lstrip("#/").split("/"):
            cur = cur[part]
        node = cur
    return node


def _sample(schema: Any, doc: dict[str, Any]) -> Any:
    """A small value valid against ``schema`` (the subset the config supports)."""
    schema = _resolve(doc, schema)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        out: dict[str, Any] = {}
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            out[name] = _sample(props.get(name, {}), doc)
        return out
    if kind == "array":
        n = int(schema.get("minItems", 0))
        return [_sample(schema.get("items", {}), doc) for _ in range(n)]
    if kind in ("integer", "number"):
        lo = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        v = int(lo or 0) + (1 if "exclusiveMinimum" in schema else 0)
        return v if kind == "integer" else float(v)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    if kind == "string":
        pattern = schema.get("pattern")
        n = max(1, int(schema.get("minLength", 1)))
        for cand in ("x" * n, "a@b.c", "a", "0", "A"):
            if (pattern is None or re.search(pattern, cand)) and len(cand) >= n:
                return cand
        return "x" * n
    return None


def _token_field(schema: dict[str, Any]) -> str | None:
    props: dict[str, Any] = schema.get("properties", {})
    required = list(schema.get("required", []))
    ordered = required + [p for p in props if p not in required]
    for name in ordered:
        p = props.get(name, {})
        if (
            isinstance(p, dict)
            and p.get("type") == "string"
            and not {"enum", "const", "pattern", "format"} & p.keys()
            and int(p.get("maxLength", 64)) >= 32
            and int(p.get("minLength", 0)) <= 8
        ):
            return str(name)
    if schema.get("additionalProperties", True) is not False:
        return "_chk"
    return None


def discover(openapi: dict[str, Any]) -> tuple[list[Collection], list[str]]:
    """Collections the checker can drive, and notes about those it cannot."""
    out: list[Collection] = []
    notes: list[str] = []
    paths: dict[str, Any] = openapi.get("paths", {})
    for path, item in sorted(paths.items()):
        m = re.fullmatch(r"/v1/([^/{}]+)/\{id\}", path)
        if not m or "get" not in item:
            continue
        name = m.group(1)
        get = item["get"]
        sm = _STALENESS.search(get.get("summary", ""))
        modes: tuple[str, ...] = ()
        for p in get.get("parameters", []):
            p = _resolve(openapi, p)
            if p.get("name") == "consistency":
                modes = tuple(p.get("schema", {}).get("enum", []))
        if sm is None or not modes:
            notes.append(f"{name}: no contract in the OpenAPI document; skipped")
            continue
        try:
            schema = _resolve(
                openapi, item["put"]["requestBody"]["content"]["application/json"]["schema"]
            )
        except KeyError:
            notes.append(f"{name}: no PUT schema; skipped")
            continue
        token = _token_field(schema)
        if token is None:
            notes.append(f"{name}: no string field can carry the checker's token; skipped")
            continue
        base = _sample(schema, openapi)
        if not isinstance(base, dict):
            notes.append(f"{name}: the document schema is not an object; skipped")
            continue
        write_back = str(get.get("description", "")).startswith(WRITE_BACK_MARK)
        if write_back:
            notes.append(
                f"{name}: write-back: its buffered writes (PATCH, :increment) promise no "
                "version and are not checked; the checker writes it with PUT, POST and DELETE"
            )
        out.append(Collection(name, float(sm.group(1)), modes, token, base, write_back))
    return out, notes


# -- clients ---------------------------------------------------------------------------


@dataclass
class Workload:
    """Shared state of one run: the op counter, keys, and the history sink."""

    client: httpx.AsyncClient
    collections: list[Collection]
    keys: dict[str, list[str]]
    seed: int
    record: Callable[[Op], None]
    timeout: float = 5.0
    t0: float = field(default_factory=time.monotonic)
    next_id: int = 0
    run_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    stop: bool = False

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def now(self) -> float:
        return time.monotonic() - self.t0


def _etag(resp: httpx.Response) -> int | None:
    m = _ETAG.match(resp.headers.get("etag", "").strip())
    return int(m.group(1)) if m else None


class Client:
    def __init__(self, wl: Workload, cid: int) -> None:
        self.wl = wl
        self.cid = cid
        self.rng = random.Random(f"{wl.seed}:{cid}")
        self.seen: dict[tuple[str, str], int] = {}  # highest version this client saw
        self.pending_replay: Op | None = None
        self._replay_req: tuple[str, str, dict[str, str], bytes | None] | None = None

    # -- one request -------------------------------------------------------------------

    async def _send(
        self, op: Op, method: str, url: str, headers: dict[str, str], body: bytes | None
    ) -> httpx.Response | None:
        wl = self.wl
        op.invoke = wl.now()
        try:
            resp = await wl.client.request(
                method, url, headers=headers, content=body, timeout=wl.timeout
            )
        except (httpx.TimeoutException, httpx.TransportError) as exc:
            op.ret = wl.now()
            op.outcome = UNKNOWN if op.is_write else FAIL
            op.detail = type(exc).__name__
            return None
        op.ret = wl.now()
        op.status = resp.status_code
        return resp

    def _note(self, op: Op) -> None:
        if op.version is not None and op.outcome == OK and op.status != 404:
            k = (op.collection, op.key)
            if op.version > self.seen.get(k, 0):
                self.seen[k] = op.version

    async def read(
        self,
        col: Collection,
        key: str,
        mode: str,
        phase: str = "run",
        *,
        min_version: int | None = None,
    ) -> Op:
        """``min_version`` (session reads): the version asked for, instead of the highest
        this client saw."""
        op = Op(self.wl.new_id(), self.cid, "read", col.name, key, mode=mode, phase=phase)
        url = f"/v1/{col.name}/{key}"
        if mode == "strong" and col.default_mode != "strong":
            url += "?consistency=strong"
        elif mode == "session":
            op.min_version = (
                self.seen.get((col.name, key), 0) if min_version is None else min_version
            )
            url += f"?min_version={op.min_version}"
        resp = await self._send(op, "GET", url, {}, None)
        if resp is not None:
            self._parse_read(op, col, resp)
        self._note(op)
        self.wl.record(op)
        return op

    @staticmethod
    def _parse_read(op: Op, col: Collection, resp: httpx.Response) -> None:
        if resp.status_code == 404:
            op.outcome = OK
            return
        if resp.status_code == 500:
            # the server answered, with an internal error: never a promise kept (P0)
            op.integrity = f"internal error: {_code(resp)}"
            return
        if resp.status_code != 200:
            op.outcome = FAIL
            op.detail = _code(resp)
            return
        try:
            body = resp.json()
            data = body["data"]
            meta = body["meta"]
            op.version = int(body["version"])
        except (ValueError, KeyError, TypeError) as exc:
            op.outcome = OK
            op.integrity = f"unparseable body: {exc}"
            return
        op.body_hash = data_hash(data)
        op.token = data.get(col.token_field) if isinstance(data, dict) else None
        op.tier = meta.get("source")
        if op.tier == "buffer":
            # write-back's buffered writes applied to the primary's version: no committed
            # version to check it against (another client's PATCH; the checker sends none)
            op.outcome, op.detail = FAIL, "write-back buffer"
            return
        if "detail=lagging" in resp.headers.get("cache-status", ""):
            op.detail = "lagging"  # the holder was behind the bound: the primary answered
        try:
            op.age = float(resp.headers.get("age", "nan"))
        except ValueError:
            op.age = None
        problems = []
        etag = _etag(resp)
        if etag != op.version:
            problems.append(f"ETag {etag} != body version {op.version}")
        if meta.get("version") != op.version:
            problems.append(f"meta.version {meta.get('version')} != body version {op.version}")
        if body.get("id") != op.key:
            problems.append(f"id {body.get('id')!r} != requested {op.key!r}")
        if problems:
            op.integrity = "; ".join(problems)

    async def list_page(self, col: Collection, mode: str) -> Op:
        """The first page of ``col`` (checker/lists.py says how it is checked)."""
        op = Op(self.wl.new_id(), self.cid, lists.LIST, col.name, mode=mode)
        if mode == "session":
            op.min_version = self.seen.get((col.name, ""), 0)
        target = lists.url(col.name, mode, col.default_mode, op.min_version or 0)
        resp = await self._send(op, "GET", target, {}, None)
        if resp is not None:
            lists.parse(op, col.token_field, resp)
        self._note(op)  # the collection version, under the key ""
        if op.outcome == OK and op.page:
            # What a page showed is seen: the session's later reads of those documents
            # ask for at least those versions (P4 counts list observations as reads).
            for key, (version, _token, _hash) in op.page.items():
                if version > self.seen.get((col.name, key), 0):
                    self.seen[(col.name, key)] = version
        self.wl.record(op)
        return op

    async def write(
        self,
        kind: str,
        col: Collection,
        key: str,
        *,
        if_match: int | None = None,
        idem: bool = False,
    ) -> Op:
        wl = self.wl
        if kind == "patch" and col.write_back:
            kind = "put"
        op = Op(wl.new_id(), self.cid, kind, col.name, key, if_match=if_match)
        op.token = f"c{self.cid}-o{op.id}-{wl.run_tag}"
        headers: dict[str, str] = {}
        body: bytes | None = None
        if kind in ("create", "put", "post"):
            data = dict(col.base)
            data[col.token_field] = op.token
            body = json.dumps(data).encode()
            headers["content-type"] = "application/json"
        elif kind == "patch":
            body = json.dumps({col.token_field: op.token}).encode()
            headers["content-type"] = "application/merge-patch+json"
        if kind == "create":
            headers["if-none-match"] = "*"
        if if_match is not None:
            headers["if-match"] = f'"{if_match}"'
        if idem:
            op.idem_key = f"k-{wl.run_tag}-{op.id}"
            headers["idempotency-key"] = op.idem_key
        method = {
            "create": "PUT",
            "put": "PUT",
            "post": "POST",
            "patch": "PATCH",
            "delete": "DELETE",
        }[kind]
        url = f"/v1/{col.name}" if kind == "post" else f"/v1/{col.name}/{key}"
        try:
            resp = await self._send(op, method, url, headers, body)
        except asyncio.CancelledError:
            # The request may have reached the target, which may apply it: recorded as a
            # write of unknown outcome, a read of its data is not taken for invented data.
            op.ret = wl.now()
            op.outcome, op.detail = UNKNOWN, "cancelled"
            wl.record(op)
            raise
        if resp is not None:
            self._parse_write(op, resp)
        if kind == "post" and op.outcome == OK and op.key:
            wl.keys.setdefault(col.name, []).append(op.key)
        self._note(op)
        wl.record(op)
        if idem and self.rng.random() < 0.6:
            self._replay_req = (method, url, headers, body)
            self.pending_replay = op
        return op

    async def replay(self) -> Op | None:
        first, req = self.pending_replay, self._replay_req
        self.pending_replay = None
        self._replay_req = None
        if first is None or req is None:
            return None
        wl = self.wl
        op = Op(wl.new_id(), self.cid, first.kind, first.collection, first.key,
                if_match=first.if_match, idem_key=first.idem_key, token=first.token, replay=True)  # fmt: skip
        resp = await self._send(op, *req)
        if resp is not None:
            self._parse_write(op, resp)
            if first.kind == "post" and op.outcome == OK and op.key != first.key:
                op.detail = f"replay created another document {op.key}"
        self._note(op)
        wl.record(op)
        return op

    @staticmethod
    def _parse_write(op: Op, resp: httpx.Response) -> None:
        status = resp.status_code
        op.resp_hash = bytes_hash(str(status).encode() + b"\0" + resp.content)
        if status >= 500:
            op.outcome = UNKNOWN
            op.detail = _code(resp)
            return
        if status not in (200, 201, 204):
            op.outcome = FAIL
            op.detail = _code(resp)
            if status == 412:
                op.version = _etag(resp)  # the current version, for the P5 check
            return
        op.outcome = OK
        op.version = _etag(resp)
        if status == 204:
            op.detail = "deleted"
            return
        try:
            body = resp.json()
            op.body_hash = data_hash(body["data"])
            if op.kind == "post":
                op.key = str(body["id"])
        except (ValueError, KeyError, TypeError) as exc:
            op.integrity = f"unparseable write response: {exc}"

    # -- the loop ----------------------------------------------------------------------

    def _mode(self, col: Collection) -> str:
        """Bounded reads (the cache's work) half the time; session and strong share the rest."""
        r = self.rng.random()
        want = "bounded" if r < 0.5 else "session" if r < 0.75 else "strong"
        return want if want in col.modes else col.default_mode

    async def run(self, until: float) -> None:
        wl = self.wl
        rng = self.rng
        while not wl.stop and wl.now() < until:
            if self.pending_replay is not None and rng.random() < 0.7:
                await self.replay()
                continue
            col = rng.choice(wl.collections)
            keys = wl.keys[col.name]
            r = rng.random()
            if r < 0.62 or len(keys) == 1:
                key = rng.choice(keys)  # reads spread over every key
            elif rng.random() < 0.9:
                # writes go mostly to the first keys: the others are read-mostly, so a
                # stale entry there stays visible long enough to be caught
                key = keys[min(int(rng.expovariate(1.2)), len(keys) - 1)]
            else:
                key = rng.choice(keys)
            seen = self.seen.get((col.name, key))
            if r < 0.62 and rng.random() < LIST_SHARE:
                await self.list_page(col, self._mode(col))
            elif r < 0.62:
                await self.read(col, key, self._mode(col))
            elif r < 0.68:
                await self.write("create", col, key)
            elif r < 0.80:
                await self.write("patch", col, key, if_match=seen, idem=rng.random() < 0.3)
            elif r < 0.86:
                await self.write("put", col, key, if_match=seen if rng.random() < 0.7 else None)
            elif r < 0.90:
                await self.write("put", col, key, idem=True)
            elif r < 0.93:
                await self.write("delete", col, key, if_match=seen if rng.random() < 0.5 else None,
                                 idem=rng.random() < 0.4)  # fmt: skip
            elif r < 0.95:
                await self.write("post", col, "", idem=rng.random() < 0.5)
            else:
                await self.write("patch", col, key, idem=True)


def _code(resp: httpx.Response) -> str:
    try:
        return f"{resp.status_code} {resp.json().get('code')}"
    except ValueError:
        return str(resp.status_code)
