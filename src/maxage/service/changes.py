"""The change feed's reading side: committed changes of one collection, in commit order.

Invariant: changes come from the change log only, in the order the store
proves complete (``Store.changes_after``; on PostgreSQL only rows below the
snapshot frontier), so a later read never reveals a change before one already
returned. Delivery is at-least-once across reconnects: reading again from a
cursor replays what follows it; ``(id, version)`` makes processing idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence

from maxage.contracts import CollectionSpec
from maxage.hooks import Hooks
from maxage.service import representation
from maxage.store.base import Store

BATCH = 1000


class ChangeFeed:
    def __init__(self, store: Store, poll_interval: float, hooks: Hooks | None = None) -> None:
        self.store = store
        self.poll_interval = poll_interval  # how long a follower waits between empty reads
        self.hooks = hooks

    def resume(self, after: int) -> int:
        """The cursor a request's first read starts after: the client's ``after`` (the
        feed mutants move it, through the test hooks)."""
        return after if self.hooks is None else self.hooks.feed_resume(after)

    async def read(
        self, spec: CollectionSpec, cursor: int, limit: int, with_data: bool = False
    ) -> tuple[Sequence[tuple[int, bytes]], int, bool]:
        """Up to ``limit`` changes of ``spec`` after ``cursor``: ``([(seq, line)], next
        cursor, drained)``; ``drained`` means the log had nothing more just now.
        ``with_data``: each line carries the document's body at that version."""
        batch = await self.store.changes_after(cursor, BATCH)
        mine = [c for c in batch.changes if c.collection == spec.name][:limit]
        if with_data and mine:
            # Bodies are immutable per version: a second read cannot disagree with the first.
            bodies = await self.store.change_bodies([c.seq for c in mine])
            lines = [(c.seq, representation.change_with_data(c, bodies.get(c.seq))) for c in mine]
        else:
            lines = [(c.seq, representation.change(c)) for c in mine]
        if len(lines) == limit and lines:
            # Cut at the limit: resume after the last change returned, not after the batch.
            return lines, lines[-1][0], False
        return lines, batch.cursor, batch.complete
