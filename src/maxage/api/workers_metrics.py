"""One ``/metrics`` scrape for the whole server when ``maxage serve --workers N`` (N > 1)
runs N processes on one port (docs/adr/0006-metrics-across-workers.md).

Each worker publishes its own rendered exposition as a file in a private directory the
parent created (mode 0700): every :data:`FLUSH_EVERY` seconds from a background task,
once more when it stops, and at every scrape it answers. The answering worker renders its
own live text, publishes it, reads the other workers' latest files and merges them
(:func:`maxage.core.metrics.merge`: counters and histograms summed, gauges one series per
worker with a ``worker`` label). The request hot path does no cross-process work.

Why a scrape never sees a counter go backwards: every file only ever gets newer values
(one writer, write-to-temp then ``os.replace``), and the answering worker writes its own
file before it answers, so what one scrape showed of worker W is at most what W's file
holds for every later scrape. A worker that exits leaves its file: its counters stay in
the sums (its gauges are dropped once its pid is gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable
from pathlib import Path

from maxage.core.metrics import merge

__all__ = ["FLUSH_EVERY", "Shared", "configure", "shared_for", "start", "stop"]

FLUSH_EVERY = 0.25
_PREFIX = "worker-"
_SUFFIX = ".prom"

_directory: Path | None = None
_shared: weakref.WeakKeyDictionary[object, Shared] = weakref.WeakKeyDictionary()


def configure(directory: str | None) -> None:
    """In each worker, before the app starts: where the workers' files live (None: one
    worker, nothing is shared)."""
    global _directory
    _directory = Path(directory) if directory else None


class Shared:
    """This worker's file, the background flush, and the merge at scrape time."""

    def __init__(self, directory: Path, render: Callable[[], bytes]) -> None:
        self.directory = directory
        self.render = render
        self.worker = str(os.getpid())
        self.path = directory / f"{_PREFIX}{self.worker}{_SUFFIX}"
        self._tmp = directory / f".{self.worker}.tmp"
        self._task: asyncio.Task[None] | None = None

    def publish(self, text: bytes) -> None:
        with open(self._tmp, "wb") as f:
            f.write(text)
        os.replace(self._tmp, self.path)

    def gather(self, own: bytes) -> bytes:
        """The whole server's exposition: ``own`` (this worker's live text) first."""
        self.publish(own)
        parts = [(self.worker, own, True)]
        with os.scandir(self.directory) as entries:
            names = sorted(e.name for e in entries)
        for name in names:
            if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
                continue
            worker = name[len(_PREFIX) : -len(_SUFFIX)]
            if worker == self.worker:
                continue
            try:
                text = (self.directory / name).read_bytes()
            except FileNotFoundError:
                continue
            parts.append((worker, text, _alive(worker)))
        return merge(parts)

    def start(self) -> None:
        self.publish(self.render())
        self._task = asyncio.get_running_loop().create_task(self._flush(), name="maxage-metrics")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.publish(self.render())

    async def _flush(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            with contextlib.suppress(OSError):  # e.g. the parent exited and removed it
                self.publish(self.render())


def _alive(worker: str) -> bool:
    try:
        os.kill(int(worker), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def start(app: object, render: Callable[[], bytes]) -> None:
    """From the app's lifespan start-up: share this worker's metrics when configured."""
    if _directory is None:
        return
    shared = Shared(_directory, render)
    _shared[app] = shared
    shared.start()


async def stop(app: object) -> None:
    """From the app's lifespan shutdown: the last flush (its counters stay in the sums)."""
    shared = _shared.pop(app, None)
    if shared is not None:
        with contextlib.suppress(OSError):
            await shared.stop()


def shared_for(app: object) -> Shared | None:
    return _shared.get(app)
