"""maxage.charts: every chart is well-formed SVG with its title, axis labels, legend and
drawn series; hostile text is escaped; no data draws a note, never an empty frame."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from maxage import charts
from maxage.charts import Band, Line, Series

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # raises on anything that is not well-formed


def drawn(root: ET.Element) -> dict[str, int]:
    return {
        e.get("data-series", ""): int(e.get("data-points", "0"))
        for e in root.iter()
        if e.get("class") == "series"
    }


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(f"{NS}text")]


def test_line_chart_draws_each_series_with_labels_bands_and_marks() -> None:
    svg = charts.line_chart(
        [Series("reads/s", [(0, 1), (1, 3), (2, 2)]), Series("writes/s", [(0, 0), (2, 1)])],
        title="Operations <over> time",
        x_label="time (s)",
        y_label="operations per second",
        bands=[Band(0.5, 1.5, "drop")],
        lines=[Line(1.0, "S = 1s")],
    )
    root = parse(svg)
    assert drawn(root) == {"reads/s": 3, "writes/s": 2}
    words = texts(root)
    for label in ("Operations <over> time", "time (s)", "operations per second", "S = 1s",
                  "reads/s", "writes/s", "fault phase"):  # fmt: skip
        assert label in words, label
    assert "&lt;over&gt;" in svg  # escaped in the source, intact when parsed
    assert len([e for e in root.iter(f"{NS}rect") if e.get("class") == "band"]) == 1


def test_step_series_and_log_scale() -> None:
    root = parse(
        charts.line_chart(
            [Series("bounded", [(0, 900), (0.1, 5), (0.2, 0)], step=True)],
            title="t",
            x_label="x",
            y_label="y",
            log_y=True,
        )
    )
    assert drawn(root) == {"bounded": 2}  # the zero is not drawn on a log scale
    assert "1000" in texts(root) or "1k" in texts(root)


def test_no_data_says_so() -> None:
    for svg in (
        charts.line_chart([Series("a", [])], title="t", x_label="x", y_label="y"),
        charts.line_chart([Series("a", [(0, float("nan"))])], title="t", x_label="x", y_label="y"),
        charts.bar_chart(["a", "b"], [("n", [0, 0])], title="t", x_label="x", y_label="y"),
    ):
        root = parse(svg)
        assert drawn(root) == {}
        assert "no data yet" in texts(root)


def test_bar_chart_marks_the_threshold() -> None:
    root = parse(
        charts.bar_chart(
            ["latest", "≤ 1s", "≤ 5s", "> 5s"],
            [("checked", [10, 3, 0, 1])],
            title="staleness",
            x_label="staleness",
            y_label="reads",
            mark_after=1,
            mark_label="S = 1s",
        )
    )
    assert drawn(root) == {"checked": 3}
    assert "S = 1s" in texts(root) and "latest" in texts(root)


def test_ticks_are_round_and_cover_the_range() -> None:
    assert charts.nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    ticks = charts.nice_ticks(0, 1234)
    assert ticks[0] == 0 and ticks[-1] >= 1234 and len(ticks) <= 7
    assert charts.format_seconds(0.25) == "250ms" and charts.format_seconds(90) == "90s"
    assert charts.format_number(15000) == "15k"
