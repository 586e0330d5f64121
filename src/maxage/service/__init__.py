"""Every contract decision lives in this package; nothing here speaks HTTP.

* :mod:`.reads` — the one bounded-read rule (P2, P4), strong reads (P3), fills (P1)
* :mod:`.writes` — preconditions and validation in the write transaction (P5)
* :mod:`.batch` — batch writes: many operations, one transaction, all or none
* :mod:`.idempotency` — the claim decision; stores only persist it
* :mod:`.listing` — pages and tamper-evident page tokens
* :mod:`.changes` — the change feed's reading side
* :mod:`.representation` — every response body, ``meta`` included (P0)
* :mod:`.errors` — the refusals, each with its stable problem code
* :mod:`.metrics` — the service's metric families
"""

from maxage.service.access import (
    ANYONE,
    Forbidden,
    KeyInfo,
    KeyNotFound,
    Principal,
    Unauthenticated,
    read_scope,
    write_scope,
)
from maxage.service.batch import PreparedBatch, prepare_batch
from maxage.service.errors import (
    DocumentExists,
    DocumentNotFound,
    DomainError,
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    InvalidPageToken,
    InvalidParameter,
    MinVersionUnavailable,
    OperationRefused,
    PreconditionFailed,
    ReadModeNotAllowed,
    ValidationFailed,
)
from maxage.service.reads import LAGGING, ReadResult, Source, freshness, resolve_mode
from maxage.service.service import Service, TierHolder
from maxage.service.writes import PreparedWrite, WriteIntent, WriteKind, prepare

# What the API needs of the store's vocabulary, without reaching below the service.
from maxage.store.base import (
    BatchResult,
    DeadLetter,
    IdempotencyCompletion,
    StoredResponse,
    StoreError,
    WriteResult,
)

__all__ = [
    "ANYONE",
    "LAGGING",
    "BatchResult",
    "DeadLetter",
    "DocumentExists",
    "DocumentNotFound",
    "DomainError",
    "Forbidden",
    "IdempotencyCompletion",
    "IdempotencyKeyInUse",
    "IdempotencyKeyReused",
    "InvalidPageToken",
    "InvalidParameter",
    "KeyInfo",
    "KeyNotFound",
    "MinVersionUnavailable",
    "OperationRefused",
    "PreconditionFailed",
    "PreparedBatch",
    "PreparedWrite",
    "Principal",
    "ReadModeNotAllowed",
    "ReadResult",
    "Service",
    "Source",
    "StoreError",
    "StoredResponse",
    "TierHolder",
    "Unauthenticated",
    "ValidationFailed",
    "WriteIntent",
    "WriteKind",
    "WriteResult",
    "freshness",
    "prepare",
    "prepare_batch",
    "read_scope",
    "resolve_mode",
    "write_scope",
]
