"""Parsing what clients send: headers, query strings, bodies. Every malformed input
becomes an :class:`HTTPProblem` with a stable code, never an exception that escapes."""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from maxage.api.types import ClientDisconnected, HTTPProblem, Receive, Request
from maxage.core.wake import expire_task
from maxage.service.writes import ANY_VERSION

_json_decoder = msgspec.json.Decoder()
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_IDEMPOTENCY_KEY = re.compile(r"^[!#-~]{1,255}$")
_ETAG = re.compile(r'^(?:W/)?"(\d{1,18})"$')
# The rest of an oversized body is never read: the connection cannot be reused.
CLOSE = [(b"connection", b"close")]
MAX_QUERY_FIELDS = 32
JSON = b"application/json"
MERGE_PATCH = b"application/merge-patch+json"


def parse_timeout(value: bytes) -> float:
    """``X-Request-Timeout`` seconds; anything else is ignored (0)."""
    try:
        seconds = float(value)
    except ValueError:
        return 0.0
    return seconds if 0 < seconds < 1e6 else 0.0


def query_items(query: bytes) -> list[tuple[str, str]]:
    """``parse_qsl`` of the query (blank values kept); a query with nothing to decode
    (no ``%``, no ``+``) is split directly, to the same result, at a fraction of the cost."""
    text = query.decode("latin-1")
    if "%" not in text and "+" not in text:
        if text.count("&") >= MAX_QUERY_FIELDS:
            raise HTTPProblem("invalid_parameter", "too many query parameters")
        items = []
        for part in text.split("&"):
            if part:
                name, _, value = part.partition("=")
                items.append((name, value))
        return items
    try:
        return parse_qsl(
            query.decode("latin-1"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_QUERY_FIELDS,
        )
    except ValueError:
        raise HTTPProblem("invalid_parameter", "too many query parameters") from None


def unknown_parameter(name: str) -> HTTPProblem:
    return HTTPProblem("invalid_parameter", f"unknown query parameter {name!r}", parameter=name)


def parse_cursor(value: str, name: str, what: str) -> int:
    """A non-negative integer of at most 18 ASCII digits."""
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise HTTPProblem("invalid_parameter", f"{name} must be {what}", parameter=name)
    return int(value)


def parse_limit(value: str, maximum: int) -> int:
    """A ``limit`` query parameter: an integer 1..``maximum``."""
    limit = parse_cursor(value, "limit", f"1..{maximum}")
    if not 1 <= limit <= maximum:
        raise HTTPProblem("invalid_parameter", f"limit must be 1..{maximum}", parameter="limit")
    return limit


def parse_if_match(header: bytes | None) -> int | None:
    """The version ``If-Match`` names; ``ANY_VERSION`` for ``*`` (the document must exist)."""
    if header is None:
        return None
    if header.strip() == b"*":
        return ANY_VERSION
    m = _ETAG.fullmatch(header.decode("latin-1").strip())
    if not m or header.strip().startswith(b"W/"):
        raise HTTPProblem(
            "invalid_parameter",
            'If-Match must be one strong ETag such as "3" (weak ETags never match)',
            parameter="If-Match",
        )
    return int(m.group(1))


def parse_idempotency_key(raw: str) -> str:
    key = raw.strip()
    if len(key) >= 2 and key[0] == '"' and key[-1] == '"':
        key = key[1:-1]  # structured-field string form
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise HTTPProblem(
            "invalid_parameter",
            "Idempotency-Key must be 1-255 visible ASCII characters other than '\"' "
            "(bare or quoted)",
            parameter="Idempotency-Key",
        )
    return key


def continue_trace(value: bytes) -> bytes:
    m = _TRACEPARENT.fullmatch(value.decode("latin-1").strip().lower())
    span = os.urandom(8).hex()
    if m and m.group(1) != "0" * 32 and m.group(2) != "0" * 16:
        return f"00-{m.group(1)}-{span}-{m.group(3)}".encode()
    return f"00-{os.urandom(16).hex()}-{span}-01".encode()


async def read_body(req: Request, receive: Receive, limit: int, timeout: float = 30.0) -> bytes:
    """The whole body, refused (413) as soon as it is known to exceed ``limit``; 408 when
    the client stops sending for ``timeout`` seconds; ClientDisconnected (a 499, never a
    500) when it goes away."""
    if req.content_length is not None and req.content_length > limit:
        raise HTTPProblem(
            "payload_too_large",
            f"the body is {req.content_length} bytes; the limit is {limit}",
            CLOSE,
            limit=limit,
        )
    chunks: list[bytes] = []
    size = 0
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    while True:
        # asyncio.timeout(timeout) around receive(), without its Timeout object (see
        # expire_task): the timer's cancellation alone becomes the 408.
        deadline: list[Any] = [task, task.cancelling(), False]
        timer = loop.call_at(loop.time() + timeout, expire_task, deadline)
        try:
            message = await receive()
        except BaseException as exc:
            # the timer's cancel is undone whatever came out (see expire_task)
            if (
                deadline[2]
                and task.uncancel() <= deadline[1]
                and isinstance(exc, asyncio.CancelledError)
            ):
                raise HTTPProblem(
                    "request_timeout",
                    f"no body bytes for {timeout:g} s; the request is abandoned",
                    CLOSE,
                ) from None
            raise
        finally:
            timer.cancel()
        if deadline[2]:  # expired as the message came: its cancel is not for the caller
            task.uncancel()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(
                "payload_too_large",
                f"the body exceeds the limit of {limit} bytes",
                CLOSE,
                limit=limit,
            )
        chunks.append(chunk)
        # The declared length arrived: that is the whole body (the server frames it by
        # that length), without waiting for the server's empty last message.
        if not message.get("more_body", False) or size == req.content_length:
            return b"".join(chunks)


def accepts(accept: bytes | None, produced: tuple[bytes, ...]) -> bool:
    """Whether an ``Accept`` field admits one of ``produced`` (RFC 9110 12.5.1); a range
    with ``q=0`` excludes. No field, or an empty one, admits everything."""
    if accept is None or not accept.strip():
        return True
    for part in accept.lower().split(b","):
        media, *params = (x.strip() for x in part.split(b";"))
        if any(_q_zero(p) for p in params):
            continue
        kind, _, sub = media.partition(b"/")
        for p in produced:
            pk, _, ps = p.partition(b"/")
            if media == b"*/*" or (kind == pk and sub in (b"*", ps)):
                return True
    return False


def _q_zero(param: bytes) -> bool:
    name, _, value = param.partition(b"=")
    if name.strip() != b"q":
        return False
    try:
        return float(value) == 0.0
    except ValueError:
        return False


def json_body(req: Request, body: bytes, media: tuple[bytes, ...]) -> object:
    ctype = (req.content_type or b"").split(b";")[0].strip().lower()
    if ctype not in media:
        raise HTTPProblem(
            "unsupported_media_type",
            f"Content-Type must be {' or '.join(m.decode() for m in media)}",
            accepted=[m.decode() for m in media],
        )
    try:
        return _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise HTTPProblem("malformed_json", f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise HTTPProblem("malformed_json", "the body is nested too deeply") from None


# Every request field maxage reads (``scan_headers``, and the request id and credentials
# the app reads first): maxage.api.rsgi refuses a request whose value of one is unreadable.
READ_HEADERS = frozenset(
    {
        b"x-request-id",
        b"authorization",
        b"if-none-match",
        b"cache-control",
        b"content-type",
        b"content-length",
        b"if-match",
        b"idempotency-key",
        b"accept",
        b"last-event-id",
        b"traceparent",
        b"x-request-timeout",
        b"origin",
        b"access-control-request-method",
    }
)


def scan_headers(req: Request, headers: list[tuple[bytes, bytes]]) -> None:
    """Fill ``req`` from the request headers in one scan (the hot path scanned for the
    few it needs already)."""
    for name, value in headers:
        if name == b"if-none-match":
            req.if_none_match = value
        elif name == b"cache-control":
            req.cache_control = value
        elif name == b"content-type":
            req.content_type = value
        elif name == b"content-length":
            try:
                req.content_length = int(value)
            except ValueError:
                req.content_length = -1
        elif name == b"if-match":
            req.if_match = value
        elif name == b"idempotency-key":
            req.idempotency_key = value.decode("latin-1")
        elif name == b"accept":
            req.accept = value
        elif name == b"last-event-id":
            req.last_event_id = value
        elif name == b"traceparent":
            req.traceparent = value
        elif name == b"x-request-timeout":
            req.deadline = parse_timeout(value)
        elif name == b"origin":
            req.origin = value
        elif name == b"access-control-request-method":
            req.cors_method = value
