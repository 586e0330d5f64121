"""The ids a POST gets (``service/writes.py``): UUIDv7 strings (RFC 9562), time-ordered."""

from __future__ import annotations

import time
import uuid

from maxage.service.writes import uuid7, uuid7_str


def test_uuid7_str_is_a_version_7_uuid_of_now() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7_str() for _ in range(2000)]
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    for text in ids:
        u = uuid.UUID(text)
        assert str(u) == text
        assert u.version == 7 and u.variant == uuid.RFC_4122
        assert before <= u.int >> 80 <= after
    # ids of later milliseconds sort after earlier ones (as text, as the primary sorts)
    time.sleep(0.002)
    assert uuid7_str() > max(ids)


def test_uuid7_and_uuid7_str_agree_on_the_layout() -> None:
    a, b = uuid7(), uuid.UUID(uuid7_str())
    assert a.version == b.version == 7
    assert a.variant == b.variant == uuid.RFC_4122
    assert abs((a.int >> 80) - (b.int >> 80)) < 1000
