"""P8, revocation: black box. While the workload runs, the probe creates an API key,
has readers use it continuously, revokes it, and records every request made with it.
A request that *started* after the revoke's acknowledgement and was accepted (2xx) is
a violation: by then no process of the deployment may accept the key.

Ops: ``revoke`` (``key`` = the API key's id; ``ret`` = when the acknowledgement arrived)
and ``auth-read`` (``key`` = the API key's id; ``status`` = the answer).
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Sequence

import httpx

from maxage.checker.history import FAIL, OK, Op
from maxage.checker.workload import Collection, Workload

REVOKE = "revoke"
AUTH_READ = "auth-read"
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


def violations(ops: Sequence[Op]) -> list[tuple[str, list[Op]]]:
    """(message, [revoke, accepted request]) for each request accepted after an ack."""
    acks = {o.key: o for o in ops if o.kind == REVOKE and o.outcome == OK}
    uses: dict[str, list[Op]] = defaultdict(list)
    for o in ops:
        if o.kind == AUTH_READ and o.key in acks:
            uses[o.key].append(o)
    out = []
    for key_id, ack in acks.items():
        for o in uses[key_id]:
            if o.invoke > ack.ret and o.status is not None and 200 <= o.status < 300:
                late = o.invoke - ack.ret
                out.append(
                    (
                        f"key {key_id} accepted {late:.3f}s after its revoke was acknowledged",
                        [ack, o],
                    )
                )
    return out


def counts(ops: Sequence[Op]) -> dict[str, int]:
    acks = {o.key: o.ret for o in ops if o.kind == REVOKE and o.outcome == OK}
    after = [o for o in ops if o.kind == AUTH_READ and o.key in acks and o.invoke > acks[o.key]]
    return {
        "revokes": len(acks),
        "requests_with_revoked_keys": len(after),
        "refused_401": sum(1 for o in after if o.status == 401),
    }
