"""Domain errors: every contract decision that refuses a request raises one of these.

Invariant: each error's ``code`` is a stable problem code of the API's catalog
(``api/problems.py``), and ``extra`` holds the problem's extension members; the
API maps any :class:`DomainError` to a problem response without knowing which
rule refused it.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    code = "bad_request"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class DocumentNotFound(DomainError):
    code = "document_not_found"


class InvalidParameter(DomainError):
    code = "invalid_parameter"


class MinVersionUnavailable(DomainError):
    """A session read asked for a version the primary does not have."""

    code = "min_version_unavailable"


class PreconditionRequired(DomainError):
    code = "precondition_required"


class ReadModeNotAllowed(DomainError):
    code = "read_mode_not_allowed"


class InvalidPageToken(DomainError):
    code = "invalid_page_token"


class PreconditionFailed(DomainError):
    """``current_version`` (when the document exists) goes back as the ETag."""

    code = "precondition_failed"

    def __init__(self, detail: str, current_version: int | None) -> None:
        extra = {} if current_version is None else {"current_version": current_version}
        super().__init__(detail, **extra)
        self.current_version = current_version


class DocumentExists(DomainError):
    """A create under a client-chosen id (batch ``create`` with ``id``) found a live document."""

    code = "document_exists"


class ValidationFailed(DomainError):
    code = "validation_failed"

    def __init__(self, detail: str, errors: list[tuple[str, str]]) -> None:
        super().__init__(detail, errors=[{"pointer": p, "detail": d} for p, d in errors])
        self.errors = errors


class IdempotencyKeyInUse(DomainError):
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class OperationRefused(DomainError):
    """Operation ``index`` of a batch was refused, so nothing of the batch was written.

    Its ``code`` (and so its status) is the refusal's own; ``errors`` point into the
    operation (``/operations/<index>/<member>...``) and the refusal's other members
    (``current_version``) are kept."""

    def __init__(self, index: int, member: str, cause: DomainError) -> None:
        base = f"/operations/{index}/{member}"
        if isinstance(cause, ValidationFailed):
            errors = [{"pointer": base + p, "detail": d} for p, d in cause.errors]
        else:
            errors = [{"pointer": base, "detail": cause.detail}]
        extra = {k: v for k, v in cause.extra.items() if k != "errors"}
        super().__init__(
            f"operation {index}: {cause.detail}; nothing of the batch was written",
            errors=errors,
            operation=index,
            **extra,
        )
        self.code = cause.code
        self.cause = cause
