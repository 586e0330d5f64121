"""The history: one record per operation (or fault event), written as JSONL.

All times are from one monotonic clock in the checker process (``time.monotonic``):
``invoke`` is taken just before the request is sent and ``ret`` just after the
response arrived, so every interval contains the server-side execution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"

READ = "read"
WRITE_KINDS = ("create", "post", "put", "patch", "delete")
FAULT = "fault"


@dataclass(slots=True)
class Op:
    id: int
    client: int
    kind: str  # read | create | post | put | patch | delete | fault | change (a feed line)
    collection: str = ""
    key: str = ""
    mode: str | None = None  # bounded | strong | session (reads)
    invoke: float = 0.0
    ret: float = 0.0
    outcome: str = OK  # ok | fail | unknown
    status: int | None = None
    version: int | None = None  # version read, or produced by a write
    body_hash: str | None = None  # hash of the document's data at ``version``
    resp_hash: str | None = None  # hash of the whole response (idempotent replays)
    token: str | None = None  # the checker's token (sent by a write, found by a read)
    tier: str | None = None  # meta.source: l1 | l2 | primary
    age: float | None = None  # the Age header
    if_match: int | None = None
    min_version: int | None = None
    idem_key: str | None = None
    replay: bool = False  # a resend of an earlier request with the same Idempotency-Key
    phase: str = "run"  # run | final
    integrity: str | None = None  # inconsistent ETag / meta.version / body version / id
    detail: str | None = None
    faults: dict[str, float] = field(default_factory=dict)  # fault events
    # list reads (checker/lists.py): id -> [version, token, data hash], and the last id
    # of the page when more pages follow (None: the page covers every id)
    page: dict[str, list[Any]] | None = None
    covered_to: str | None = None
    cursor: int | None = None  # a change-feed line's cursor (kind ``change``)
    after: int | None = None  # the cursor its feed connection resumed after

    @property
    def is_write(self) -> bool:
        return self.kind in WRITE_KINDS

    def brief(self) -> dict[str, Any]:
        # only the empty values: 0 (client 0, cursor 0) is a value, and 0 == False
        d = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if not (v is None or v is False or v == "" or v == {})
        }
        return d


def data_hash(data: object) -> str:
    canon = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode()).hexdigest()[:20]


def bytes_hash(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:20]


_FIELDS = {f.name for f in dataclasses.fields(Op)}


class HistoryWriter:
    def __init__(self, path: str | Path | None) -> None:
        self._fh: IO[str] | None = open(path, "w", encoding="utf-8") if path else None  # noqa: SIM115

    def write(self, op: Op) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(op.brief(), separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def load(path: str | Path) -> list[Op]:
    return list(iter_ops(Path(path).read_text(encoding="utf-8").splitlines()))


def iter_ops(lines: Iterable[str]) -> Iterator[Op]:
    for line in lines:
        if line.strip():
            raw = json.loads(line)
            yield Op(**{k: v for k, v in raw.items() if k in _FIELDS})
