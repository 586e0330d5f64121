"""Typed problems: every error answer of a maxage server (``application/problem+json``,
RFC 9457) becomes an exception carrying its stable ``code``, so callers branch on classes
or codes, never on ``title`` or ``detail``.

:class:`MaxageError` is the root of both clients' errors. The JSON API's are
:class:`APIError` and its subclasses below (one per family of codes in the server's
docs/errors.md); the cache server's are in :mod:`maxage_client.cache`. A failure to
reach the server at all is status 0 with code ``unavailable`` (:class:`ConnectionFailed`);
a deadline that passed on the client's side is status 0 with code ``deadline_exceeded``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx


@dataclass(frozen=True, slots=True)
class FieldError:
    """One entry of a problem's ``errors``: an RFC 6901 ``pointer`` and what is wrong there."""

    pointer: str
    detail: str


class MaxageError(Exception):
    """An error answer of a maxage server (or ``status == 0``: none arrived)."""

    def __init__(
        self, status: int, code: str, detail: str = "", problem: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(status, code, detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.problem: Mapping[str, Any] = problem or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.code!r}, {self.detail!r})"

    @property
    def request_id(self) -> str | None:
        """The server's ``request_id`` (quote it when reporting a problem)."""
        v = self.problem.get("request_id")
        return v if isinstance(v, str) else None

    @property
    def retry_after(self) -> float | None:
        v = self.problem.get("retry_after")
        return float(v) if isinstance(v, int | float) else None


def problem_of(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    """``(code, detail, problem)`` of an error response (``http_<status>`` without a body).
    The problem also gets ``retry_after`` (seconds) when the response has ``Retry-After``."""
    problem: dict[str, Any] = {}
    try:
        doc = json.loads(response.content)
        if isinstance(doc, dict):
            problem = doc
    except ValueError:
        pass
    after = response.headers.get("retry-after", "").strip()
    if after.isdigit():
        problem.setdefault("retry_after", int(after))
    code = str(problem.get("code") or f"http_{response.status_code}")
    detail = str(problem.get("detail") or response.reason_phrase)
    return code, detail, problem


# -- the JSON API's problems ------------------------------------------------------------


class APIError(MaxageError):
    """An error answer of ``maxage serve``'s JSON API."""

    @property
    def errors(self) -> list[FieldError]:
        """``errors[]``: what is wrong where (422 validation_failed, some 400s)."""
        out = []
        for e in self.problem.get("errors") or ():
            if isinstance(e, dict):
                out.append(FieldError(str(e.get("pointer", "")), str(e.get("detail", ""))))
        return out


class InvalidRequest(APIError):
    """400: malformed JSON, a bad parameter or header (``parameter`` names it), a page token
    from elsewhere, a read mode the collection does not allow. Do not retry unchanged."""

    @property
    def parameter(self) -> str | None:
        v = self.problem.get("parameter")
        return v if isinstance(v, str) else None

    @property
    def allowed_modes(self) -> list[str]:
        v = self.problem.get("allowed_modes")
        return [str(m) for m in v] if isinstance(v, list) else []


class Unauthenticated(APIError):
    """401: no API key, or an unknown or revoked one."""


class Forbidden(APIError):
    """403: the API key lacks the scope the route needs (``scope``)."""

    @property
    def scope(self) -> str | None:
        v = self.problem.get("scope")
        return v if isinstance(v, str) else None


class NotFound(APIError):
    """404: no such document, collection, key or route."""


class MethodNotAllowed(APIError):
    """405."""


class NotAcceptable(APIError):
    """406."""


class Conflict(APIError):
    """409: ``min_version_unavailable`` or ``idempotency_key_in_use`` (both retried by
    default, after ``Retry-After``, while the deadline allows)."""

    @property
    def current_version(self) -> int | None:
        v = self.problem.get("current_version")
        return v if isinstance(v, int) else None


class PreconditionFailed(APIError):
    """412: the document is no longer at the expected version; nothing was changed.
    ``current_version`` is the version it is at (``None`` when it does not exist)."""

    @property
    def current_version(self) -> int | None:
        v = self.problem.get("current_version")
        return v if isinstance(v, int) else None


class PayloadTooLarge(APIError):
    """413: the body is over the server's limit (``limit``)."""


class UnsupportedMediaType(APIError):
    """415."""


class ValidationFailed(APIError):
    """422 ``validation_failed``: the document does not match the schema; see ``errors``."""


class IdempotencyKeyReused(APIError):
    """422 ``idempotency_key_reused``: the key was used for a different request."""


class PreconditionRequired(APIError):
    """428: the collection requires ``If-Match`` on PATCH and DELETE (pass ``expected_version``)."""


class RateLimited(APIError):
    """429: over the rate limit; ``retry_after`` says when the next request may pass."""


class ServerError(APIError):
    """5xx: the server failed (500) or is unavailable (503: store_unavailable, draining,
    overloaded). Writes are safe to retry with the same ``Idempotency-Key``."""


class DeadlineExceeded(APIError):
    """504 from the server, or status 0 when the deadline passed on the client's side.
    A write may or may not have committed: retry it with the same idempotency key."""


class ConnectionFailed(APIError):
    """Status 0, code ``unavailable``: the server could not be reached or did not answer."""


_API_BY_CODE: Final[dict[str, type[APIError]]] = {
    "validation_failed": ValidationFailed,
    "idempotency_key_reused": IdempotencyKeyReused,
    "deadline_exceeded": DeadlineExceeded,
}
_API_BY_STATUS: Final[dict[int, type[APIError]]] = {
    400: InvalidRequest,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    406: NotAcceptable,
    408: InvalidRequest,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationFailed,
    428: PreconditionRequired,
    429: RateLimited,
    504: DeadlineExceeded,
}


def api_error(response: httpx.Response) -> APIError:
    """The typed exception for an error response of the JSON API."""
    code, detail, problem = problem_of(response)
    cls = _API_BY_CODE.get(code) or _API_BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else APIError
    return cls(response.status_code, code, detail, problem)
