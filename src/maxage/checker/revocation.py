"""P8, revocation: black box. While the workload runs, the probe creates an API key,
has readers use it continuously, revokes it, and records every request made with it.
A request that *started* after the revoke's acknowledgement and was accepted (2xx) is
a violation: by then no process of the deployment may accept the key.

Ops: ``revoke`` (``key`` = the API key's id; ``ret`` = when the acknowledgement arrived),
``rescope`` (a scope change that took away ``read:<collection>``: ``key`` = the key's id,
``collection`` = that collection; ``maxage sim`` makes them) and ``auth-read``
(``key`` = the API key's id, ``collection`` = what it read; ``status`` = the answer).
A request accepted after a scope change that took its scope away is a violation too.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import httpx

from maxage.checker.history import FAIL, OK, Op
from maxage.checker.workload import Collection, Workload

REVOKE = "revoke"
RESCOPE = "rescope"
AUTH_READ = "auth-read"
KINDS = (REVOKE, RESCOPE, AUTH_READ)  # the ops only P8 reads
READERS = 3
AFTER_ACK = 0.3  # seconds the readers go on after the acknowledgement


async def probe(
    admin: httpx.AsyncClient, wl: Workload, col: Collection, key: str, end: float, seed: int
) -> int:
    """Revoke keys in use until ``end``; returns how many were revoked."""
    rng = random.Random(f"revoke:{seed}")
    revoked = 0
    while wl.now() < end and not wl.stop:
        made = await admin.post("/v1/_keys", json={"scopes": [f"read:{col.name}"], "name": "check"})
        if made.status_code != 201:
            op = Op(wl.new_id(), 0, REVOKE, col.name, "", invoke=wl.now(), ret=wl.now())
            op.outcome, op.status, op.detail = FAIL, made.status_code, "could not create a key"
            wl.record(op)
            return revoked
        key_id, secret = made.json()["id"], made.json()["secret"]
        stop = asyncio.Event()
        readers = [
            asyncio.create_task(_read(admin.base_url, secret, key_id, wl, col, key, stop, i))
            for i in range(READERS)
        ]
        await asyncio.sleep(rng.uniform(0.05, 0.6))
        op = Op(wl.new_id(), 0, REVOKE, col.name, key_id, invoke=wl.now())
        try:
            r = await admin.delete(f"/v1/_keys/{key_id}")
            op.status = r.status_code
            op.outcome = OK if r.status_code == 204 else FAIL
        except httpx.HTTPError as exc:
            op.outcome, op.detail = FAIL, str(exc)
        op.ret = wl.now()
        wl.record(op)
        revoked += op.outcome == OK
        await asyncio.sleep(AFTER_ACK)
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
    return revoked


async def _read(
    base: httpx.URL,
    secret: str,
    key_id: str,
    wl: Workload,
    col: Collection,
    doc: str,
    stop: asyncio.Event,
    reader: int,
) -> None:
    headers = {"authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10) as c:
        while not stop.is_set():
            op = Op(wl.new_id(), 1000 + reader, AUTH_READ, col.name, key_id, invoke=wl.now())
            try:
                op.status = (await c.get(f"/v1/{col.name}/{doc}")).status_code
                op.outcome = OK
            except httpx.HTTPError as exc:
                op.outcome, op.detail = FAIL, str(exc)
            op.ret = wl.now()
            wl.record(op)


def _cuts(ops: Sequence[Op]) -> dict[tuple[str, str | None], Op]:
    """The earliest acknowledged cut of each key: ``(key id, None)`` its revoke,
    ``(key id, collection)`` a scope change that took away ``read:<collection>``."""
    cuts: dict[tuple[str, str | None], Op] = {}
    for o in ops:
        if o.outcome != OK or o.kind not in (REVOKE, RESCOPE):
            continue
        cut = (o.key, None if o.kind == REVOKE else o.collection)
        if cut not in cuts or o.ret < cuts[cut].ret:
            cuts[cut] = o
    return cuts


def _cut_of(cuts: dict[tuple[str, str | None], Op], o: Op) -> Op | None:
    """The acknowledged cut that forbids ``o`` (the earlier one if both do)."""
    revoked, rescoped = cuts.get((o.key, None)), cuts.get((o.key, o.collection))
    if revoked is None or (rescoped is not None and rescoped.ret < revoked.ret):
        return rescoped
    return revoked


def violations(ops: Sequence[Op], slack: float = 0.0) -> list[tuple[str, list[Op]]]:
    """(message, [cut, accepted request]) for each request accepted (2xx) that started
    more than ``slack`` seconds after its key's revoke, or a scope change that took away
    the scope the request needed, was acknowledged."""
    cuts = _cuts(ops)
    if not cuts:
        return []
    out = []
    for o in ops:
        if o.kind != AUTH_READ or o.status is None or not 200 <= o.status < 300:
            continue
        cut = _cut_of(cuts, o)
        if cut is None or o.invoke <= cut.ret + slack:
            continue
        late = o.invoke - cut.ret
        what = "its revoke" if cut.kind == REVOKE else f"losing read:{o.collection}"
        out.append((f"key {o.key} accepted {late:.3f}s after {what} was acknowledged", [cut, o]))
    return out


def counts(ops: Sequence[Op]) -> dict[str, int]:
    cuts = _cuts(ops)
    after = [
        o
        for o in ops
        if o.kind == AUTH_READ and (cut := _cut_of(cuts, o)) is not None and o.invoke > cut.ret
    ]
    return {
        "requests": sum(1 for o in ops if o.kind == AUTH_READ),
        "revokes": sum(1 for k, c in cuts if c is None),
        "scope_changes": sum(1 for k, c in cuts if c is not None),
        "requests_with_revoked_keys": len(after),
        "refused_401": sum(1 for o in after if o.status == 401),
        "refused_403": sum(1 for o in after if o.status == 403),
    }
