"""maxage-client: typed sync and async clients for maxage's JSON API (``maxage serve``)
and its cache server (``maxage cache-server``), with only httpx as a dependency.

    from maxage_client import Client

    with Client("http://127.0.0.1:8080", api_key=secret) as api:
        post = api.collection("posts").create({"title": "Hello"})

The JSON API client is in :mod:`maxage_client.api`, its typed problems in
:mod:`maxage_client.problems`, sessions in :mod:`maxage_client.session`, the cache
server's client in :mod:`maxage_client.cache`, and the retry and deadline machinery both
share in :mod:`maxage_client.transport`.
"""

from maxage_client.api import (
    AsyncClient,
    AsyncCollection,
    BatchResult,
    Change,
    Client,
    Collection,
    Document,
    Page,
)
from maxage_client.problems import (
    APIError,
    Conflict,
    ConnectionFailed,
    DeadlineExceeded,
    FieldError,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    MaxageError,
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    PreconditionRequired,
    RateLimited,
    ServerError,
    Unauthenticated,
    UnsupportedMediaType,
    ValidationFailed,
)
from maxage_client.session import Session
from maxage_client.transport import RetryPolicy, request_context

__version__ = "0.1.0"  # always maxage.__version__ (tests/test_client_packaging.py)

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncCollection",
    "BatchResult",
    "Change",
    "Client",
    "Collection",
    "Conflict",
    "ConnectionFailed",
    "DeadlineExceeded",
    "Document",
    "FieldError",
    "Forbidden",
    "IdempotencyKeyReused",
    "InvalidRequest",
    "MaxageError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "PreconditionRequired",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Session",
    "Unauthenticated",
    "UnsupportedMediaType",
    "ValidationFailed",
    "__version__",
    "request_context",
]
