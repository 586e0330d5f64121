"""``representation.iso`` formats as ``datetime.isoformat`` does, rounding included."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import example, given
from hypothesis import strategies as st

from maxage.service.representation import iso


@given(st.floats(min_value=0, max_value=4e9, allow_nan=False))
@example(0.9999995)  # rounds up into the next second
@example(1700000000.0005)
@example(1700000000.4999995)
def test_iso_is_datetime_isoformat_in_milliseconds(ts: float) -> None:
    expected = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    assert iso(ts) == expected.replace("+00:00", "Z")
