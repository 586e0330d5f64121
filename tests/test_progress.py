"""maxage.progress: a readable line on a terminal, nothing elsewhere."""

from __future__ import annotations

import io

from maxage.progress import Progress, duration_text


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_on_a_terminal_with_budget_and_eta() -> None:
    now = [100.0]
    out = Terminal()
    p = Progress("maxage check", budget=30.0, stream=out, clock=lambda: now[0])
    now[0] += 10.0
    p.update(1234, "faults drop")
    assert out.getvalue() == (
        "\rmaxage check: 10s elapsed, 1,234 ops (123/s), 20s left, faults drop\x1b[K"
    )
    now[0] += 0.1
    p.update(1300)  # within `every`: not redrawn
    assert out.getvalue().count("\r") == 1
    p.close(1300)
    assert out.getvalue().endswith("\n") and out.getvalue().count("\r") == 2
    counted = Progress("sim", total=1000, unit="steps", stream=Terminal(), clock=lambda: now[0])
    now[0] += 5.0
    assert counted.line(250) == "sim: 5s elapsed, 250 steps (50/s), 25 %, ETA 15s"


def test_quiet_when_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("maxage check", budget=1.0, stream=out)
    p.update(5, force=True)
    p.close(5)
    assert out.getvalue() == ""


def test_duration_text() -> None:
    assert [duration_text(s) for s in (0, 42.4, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
