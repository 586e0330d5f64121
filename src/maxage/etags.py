"""Entity-tag comparison (RFC 9110 section 13.1.2), shared by both servers.

``If-None-Match`` uses the weak comparison: ``W/"3"`` matches ``"3"``, and ``*``
matches any current representation.
"""

from __future__ import annotations


def if_none_match(header: bytes, etag: bytes) -> bool:
    """True when ``header`` (an If-None-Match value) matches ``etag`` (``b'"3"'``)."""
    if header.strip() == b"*":
        return True
    for part in header.split(b","):
        tag = part.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag == etag:
            return True
    return False
