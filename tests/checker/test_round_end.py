"""A targeted round that started before the end of ``maxage check``'s workload runs to
its end (on a loaded machine a round takes several times its nominal length; cut at
the end, its windows were lost and a probe write was left in flight), and a write the
checker abandons is recorded as of unknown outcome (the target may still apply it).

The interleavings are forced with events, not slept for."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import pytest

from maxage.checker import cli
from maxage.checker.history import UNKNOWN, Op
from maxage.checker.workload import Client, Collection, Workload


def _workload(http: httpx.AsyncClient, ops: list[Op]) -> Workload:
    col = Collection("items", 1.0, ("bounded", "strong"), "label", {})
    return Workload(http, [col], {"items": ["k"]}, 1, ops.append)


async def test_a_round_running_at_the_end_is_waited_for() -> None:
    async with httpx.AsyncClient(base_url="http://checker.invalid") as http:
        notes: list[str] = []
        wl = _workload(http, [])
        release = asyncio.Event()
        finished: list[bool] = []

        async def round_() -> None:
            await release.wait()
            finished.append(True)

        task = asyncio.create_task(round_())
        waiting = asyncio.create_task(cli._round_ends(wl, task, notes))
        await asyncio.sleep(0)
        await asyncio.sleep(0.15)  # a few of the wait's 0.1 s looks: still waiting
        assert not waiting.done()
        release.set()
        await asyncio.wait_for(waiting, 5)
        assert finished == [True] and notes == []


async def test_a_violation_ends_the_wait_and_a_hung_round_is_cut_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with httpx.AsyncClient(base_url="http://checker.invalid") as http:
        wl = _workload(http, [])
        hung = asyncio.create_task(asyncio.Event().wait())
        try:
            wl.stop = True  # stopped at a violation: no wait
            notes: list[str] = []
            await asyncio.wait_for(cli._round_ends(wl, hung, notes), 1)
            assert notes == []
            wl.stop = False
            monkeypatch.setattr(cli, "ROUND_GRACE", 0.05)
            await asyncio.wait_for(cli._round_ends(wl, hung, notes), 5)
            assert len(notes) == 1 and notes[0].startswith("a targeted round was cut"), notes
        finally:
            hung.cancel()


async def test_an_abandoned_write_is_recorded_as_unknown() -> None:
    arrived = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        arrived.set()
        await asyncio.Event().wait()  # the target never answers
        raise AssertionError

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(base_url="http://checker.invalid", transport=transport) as http:
        ops: list[Op] = []
        wl = _workload(http, ops)
        write = asyncio.create_task(Client(wl, 7).write("put", wl.collections[0], "k"))
        await asyncio.wait_for(arrived.wait(), 5)  # the request reached the target
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write
        assert [(o.kind, o.key, o.outcome, o.detail) for o in ops] == [
            ("put", "k", UNKNOWN, "cancelled")
        ]
        assert ops[0].token is not None  # its data is known: a read of it is no invention
