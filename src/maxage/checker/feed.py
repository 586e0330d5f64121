"""P7, change-log integrity, checked directly: the checker follows every collection's
change feed (``GET /v1/{collection}/changes``) while the workload runs, disconnects
on purpose and resumes, and checks what it received against the writes it made.

The reader. Per collection, from cursor 0, one connection after another, each of a
seeded kind: a ``follow=true`` NDJSON stream or an SSE stream (resumed with
``Last-Event-ID``) that the reader drops after a few lines or a fraction of a second,
a plain page (``limit``) that ends by itself, or (server-side disconnects) a follow
stream through :class:`maxage.checker.proxy.CuttingProxy`, which the *server's* side
cuts after a few hundred to a few thousand bytes, usually in the middle of a line.
Every connection resumes after the cursor of the last complete line received.
``disconnects`` chooses the kinds: ``client`` (the first three), ``server`` (cut
streams only) or ``both`` (the default); server-side cuts need an ``http://`` target. After the run the reader reads the feed to
its end until every acknowledged write has arrived, or for at most a patience (a
change may wait behind an older transaction that still runs, on PostgreSQL): then it
records a *drained* marker per collection.

History records (kind ``change``): one per line received (``collection``, ``key`` =
the document id, ``version``, ``cursor``, ``after`` = the cursor its connection
resumed after, ``detail`` = the op, ``client`` = the connection's number, ``invoke``
= when it arrived), and one drained marker per collection (``detail`` = ``drained``,
``invoke`` = when the final reading began, ``ret`` = when it ended).

The checks (only documents the run wrote):

* no line of a connection at or below the cursor it resumed after, and cursors rising
  within a connection (else a change was delivered twice, or out of order);
* one cursor per ``(document, version)`` (one change row per committed version);
* per document, versions 1, 2, 3, ... in cursor order (a jump is a skipped change);
* by the drained marker, every write acknowledged before the final reading began has
  arrived, with the right op (``delete`` for a delete);
* commit order: a write acknowledged before another was sent has the smaller cursor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import httpx

from maxage.checker.history import OK, Op
from maxage.checker.proxy import CuttingProxy
from maxage.checker.workload import Collection, Workload

CHANGE = "change"
DRAINED = "drained"
FIRST_CONNECTION = 20_000  # client ids of the feed's connections (apart from the workload's)
MAX_LINES = 30  # a stream is dropped after at most this many lines...
MAX_SECONDS = 1.0  # ...or this long
CUT_SECONDS = 3.0  # a stream the server's side should cut is dropped after this long
DISCONNECTS = ("both", "client", "server")


class FeedReader:
    """Follows the change feed of ``cols`` with forced disconnects (see the module doc)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        wl: Workload,
        cols: Sequence[Collection],
        seed: int,
        disconnects: str = "both",
    ) -> None:
        if disconnects not in DISCONNECTS:
            raise ValueError(f"disconnects: expected one of {', '.join(DISCONNECTS)}")
        self.http = http
        self.wl = wl
        self.cols = list(cols)
        self.rng = random.Random(f"feed:{seed}")
        self.disconnects = disconnects
        self.cursors = {c.name: 0 for c in cols}
        self.connections = 0
        self.lines = 0
        self.cut_streams = 0  # streams that ended because the server's side was cut
        self.errors: list[str] = []
        self.seen: set[tuple[str, str, int]] = set()  # (collection, id, version) received
        self.proxy: CuttingProxy | None = None
        self._cut_http: httpx.AsyncClient | None = None

    async def follow(self) -> None:
        """Read every collection's feed until the workload stops (cancel to end)."""
        url = self.http.base_url
        kinds = ["ndjson", "sse", "page"] if self.disconnects != "server" else []
        if self.disconnects != "client":
            if url.scheme == "http" and url.host:
                self.proxy = await CuttingProxy(
                    url.host, url.port or 80, random.Random(self.rng.random())
                ).start()
                self._cut_http = httpx.AsyncClient(
                    base_url=self.proxy.url, headers=self.http.headers, timeout=10
                )
                kinds.append("cut")
            else:
                self.errors.append("server-side disconnects need an http:// target")
                kinds = kinds or ["ndjson", "sse", "page"]
        try:
            await asyncio.gather(*(self._follow(c, kinds) for c in self.cols))
        finally:
            if self._cut_http is not None:
                await self._cut_http.aclose()
            if self.proxy is not None:
                await self.proxy.close()

    async def _follow(self, col: Collection, kinds: Sequence[str]) -> None:
        while not self.wl.stop:
            kind = self.rng.choice(kinds)
            try:
                if kind == "page":
                    await self.page(col, self.rng.randint(1, 50))
                    await asyncio.sleep(self.rng.uniform(0.0, 0.3))
                elif kind == "cut":
                    assert self._cut_http is not None
                    await self._stream(col, sse=self.rng.random() < 0.5, http=self._cut_http)
                else:
                    await self._stream(col, sse=kind == "sse")
            except httpx.HTTPError as exc:
                if kind == "cut":
                    self.cut_streams += 1  # what a cut looks like to the client
                    continue
                self.errors.append(f"{col.name}: {type(exc).__name__}")
                await asyncio.sleep(0.1)

    async def drain(self, expected: set[tuple[str, str, int]], patience: float) -> None:
        """After the run: read every collection's feed to its end, again until every
        change in ``expected`` (collection, id, version) has arrived or ``patience``
        seconds have passed (a change may wait behind an older transaction still
        running), then record a drained marker per collection."""
        started = self.wl.now()
        while True:
            for col in self.cols:
                for _ in range(1000):
                    try:
                        drained = await self.page(col, 1000)
                    except httpx.HTTPError:
                        drained = None
                    if drained:
                        break
                    if drained is None:  # refused or failed: the server is busy
                        await asyncio.sleep(0.1)
            if expected <= self.seen or self.wl.now() - started > patience:
                break
            await asyncio.sleep(0.2)
        for col in self.cols:
            self.wl.record(Op(self.wl.new_id(), FIRST_CONNECTION, CHANGE, col.name,
                              invoke=started, ret=self.wl.now(), detail=DRAINED))  # fmt: skip

    def _connection(self, col: Collection) -> tuple[int, int]:
        self.connections += 1
        return FIRST_CONNECTION + self.connections, self.cursors[col.name]

    async def page(self, col: Collection, limit: int) -> bool | None:
        """One plain page after the collection's cursor: True when it drained the log,
        None when the server refused it."""
        conn, after = self._connection(col)
        r = await self.http.get(
            f"/v1/{col.name}/changes", params={"after": str(after), "limit": str(limit)}
        )
        if r.status_code != 200:
            self.errors.append(f"{col.name}: changes answered {_code(r.status_code, r.content)}")
            return None
        n = sum(1 for line in r.text.splitlines() if self._line(col, conn, after, line))
        return n < limit

    async def _stream(
        self, col: Collection, *, sse: bool, http: httpx.AsyncClient | None = None
    ) -> None:
        """A follow stream, dropped after a few lines or a fraction of a second; through
        ``http`` (the cutting proxy's client), read until the server's side is cut."""
        conn, after = self._connection(col)
        cut = http is not None
        if sse:
            headers = {"accept": "text/event-stream", "last-event-id": str(after)}
            params = {}
        else:
            headers = {}
            params = {"after": str(after), "follow": "true"}
        lines_left = 1 << 30 if cut else self.rng.randint(1, MAX_LINES)
        seconds = CUT_SECONDS if cut else self.rng.uniform(0.05, MAX_SECONDS)
        with contextlib.suppress(TimeoutError):
            async with (
                asyncio.timeout(seconds),
                (http or self.http).stream(
                    "GET", f"/v1/{col.name}/changes", params=params, headers=headers
                ) as r,
            ):
                if r.status_code != 200:
                    body = await r.aread()
                    self.errors.append(f"{col.name}: changes answered {_code(r.status_code, body)}")
                    await asyncio.sleep(0.1)
                    return
                async for line in r.aiter_lines():
                    if sse:
                        if not line.startswith("data: "):
                            continue
                        line = line[len("data: ") :]
                    if self._line(col, conn, after, line):
                        lines_left -= 1
                        if lines_left <= 0 or self.wl.stop:
                            return  # leaving the block drops the connection

    def _line(self, col: Collection, conn: int, after: int, line: str) -> bool:
        if not line.strip():
            return False
        try:
            raw = json.loads(line)
            cursor = int(raw["cursor"])
            op = Op(self.wl.new_id(), conn, CHANGE, col.name, str(raw["id"]),
                    version=int(raw["version"]), cursor=cursor, after=after,
                    detail=str(raw["op"]), invoke=self.wl.now())  # fmt: skip
        except (ValueError, KeyError, TypeError) as exc:
            self.errors.append(f"{col.name}: unparseable change line ({exc})")
            return False
        op.ret = op.invoke
        self.wl.record(op)
        self.lines += 1
        self.seen.add((col.name, op.key, op.version or 0))
        self.cursors[col.name] = max(self.cursors[col.name], cursor)
        return True

    def counts(self) -> dict[str, object]:
        return {
            "connections": self.connections,
            "changes": self.lines,
            "disconnects": self.disconnects,
            "server_cuts": self.proxy.cuts if self.proxy is not None else 0,
            "cut_streams": self.cut_streams,
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
        }


def _code(status: int, body: bytes) -> str:
    try:
        return f"{status} {json.loads(body).get('code')}"
    except (ValueError, AttributeError):
        return str(status)


def violations(ops: Sequence[Op]) -> Iterator[tuple[str, list[Op]]]:
    """P7 violations in a history: ``(message, ops)`` (see the module docstring)."""
    writes = [o for o in ops if o.is_write and o.key]
    written = {(o.collection, o.key) for o in writes}
    changes = [o for o in ops if o.kind == CHANGE and o.detail != DRAINED]
    changes = [o for o in changes if (o.collection, o.key) in written and o.cursor is not None]
    if not changes:
        return
    yield from _per_connection(changes)
    first: dict[tuple[str, str, int], Op] = {}  # (collection, id, version) -> first line
    for o in changes:
        k = (o.collection, o.key, o.version or 0)
        seen = first.get(k)
        if seen is None:
            first[k] = o
        elif seen.cursor != o.cursor:
            yield (f"two change rows for {o.collection}/{o.key} version {o.version} "
                   f"(cursors {seen.cursor} and {o.cursor})", [seen, o])  # fmt: skip
    yield from _versions(first)
    acked = [o for o in writes if o.outcome == OK and o.version is not None]
    yield from _drained(ops, acked, first)
    # a replay's response is the first attempt's: its effect did not happen in its interval
    yield from _commit_order([o for o in acked if not o.replay], first)


def _per_connection(changes: Sequence[Op]) -> Iterator[tuple[str, list[Op]]]:
    last: dict[int, Op] = {}
    for o in changes:
        assert o.cursor is not None
        prev = last.get(o.client)
        if o.after is not None and o.cursor <= o.after:
            yield (f"resumed after cursor {o.after}, the feed sent cursor {o.cursor} again "
                   f"({o.collection}/{o.key} version {o.version})", [o])  # fmt: skip
        elif prev is not None and prev.cursor is not None and o.cursor <= prev.cursor:
            yield (f"cursor {o.cursor} after cursor {prev.cursor} in one stream", [prev, o])
        last[o.client] = o


def _versions(first: dict[tuple[str, str, int], Op]) -> Iterator[tuple[str, list[Op]]]:
    per_doc: dict[tuple[str, str], list[Op]] = defaultdict(list)
    for (col, key, _), o in first.items():
        per_doc[(col, key)].append(o)
    for (col, key), lines in per_doc.items():
        lines.sort(key=lambda o: o.cursor or 0)
        expected = 1
        for o in lines:
            v = o.version or 0
            if v < expected:
                yield (f"{col}/{key}: version {v} after version {expected - 1} in the feed "
                       "(not in commit order)", [o])  # fmt: skip
            elif v > expected:
                yield (f"{col}/{key}: the feed skipped version(s) {expected}..{v - 1} "
                       f"(next was version {v} at cursor {o.cursor})", [o])  # fmt: skip
            expected = max(expected, v + 1)


def _drained(
    ops: Sequence[Op], acked: Sequence[Op], first: dict[tuple[str, str, int], Op]
) -> Iterator[tuple[str, list[Op]]]:
    markers = [o for o in ops if o.kind == CHANGE and o.detail == DRAINED]
    reported: set[int] = set()
    for m in markers:
        for w in acked:
            if w.collection != m.collection or w.ret >= m.invoke or w.id in reported:
                continue
            line = first.get((w.collection, w.key, w.version or 0))
            if line is None or line.invoke > m.ret:
                reported.add(w.id)
                yield (f"{w.collection}/{w.key} version {w.version} was acknowledged, but the "
                       "feed, read to its end after the run, never delivered it", [w, m])  # fmt: skip
            elif (line.detail == "delete") != (w.kind == "delete"):
                reported.add(w.id)
                yield (f"{w.collection}/{w.key} version {w.version}: a {w.kind} appears in "
                       f"the feed as op {line.detail!r}", [w, line])  # fmt: skip


def _commit_order(
    acked: Sequence[Op], first: dict[tuple[str, str, int], Op]
) -> Iterator[tuple[str, list[Op]]]:
    """A write acknowledged before another was sent committed first: a smaller cursor."""
    placed = [
        (w, line.cursor)
        for w in acked
        if (line := first.get((w.collection, w.key, w.version or 0))) is not None
        and line.cursor is not None
    ]
    by_ret = sorted(placed, key=lambda x: x[0].ret)
    by_invoke = sorted(placed, key=lambda x: x[0].invoke)
    best: tuple[Op, int] | None = None  # the largest cursor among writes acked so far
    i = 0
    for b, cursor in by_invoke:
        while i < len(by_ret) and by_ret[i][0].ret < b.invoke:
            if best is None or by_ret[i][1] > best[1]:
                best = by_ret[i]
            i += 1
        if best is not None and best[1] > cursor:
            a = best[0]
            yield (f"{a.collection}/{a.key} v{a.version} was acknowledged before "
                   f"{b.collection}/{b.key} v{b.version} was sent, but has the larger "
                   f"cursor ({best[1]} > {cursor})", [a, b])  # fmt: skip
            return  # one is enough: the rest would repeat it


__all__ = ["CHANGE", "DRAINED", "FeedReader", "violations"]
