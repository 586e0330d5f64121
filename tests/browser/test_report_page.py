"""The check report in a real browser: charts drawn with data, no console error,
readable at phone width; screenshots kept as artefacts."""

from __future__ import annotations

from maxage.checker.checks import check
from maxage.checker.html_report import render_html
from maxage.checker.report import build_report
from tests.browser.conftest import PHONE, artefacts, console_errors
from tests.browser.test_status_page import fits_width, series_points
from tests.checker.test_html_report import history


def test_report_renders_in_a_browser(browser: object) -> None:
    ops = history()
    res = check(ops, {"p": 0.5})
    rep = build_report(ops, res, bounds={"p": 0.5}, seed=3, duration=10.0, faults_requested=["drop"],
                       server_faults=None, target="http://x")  # fmt: skip
    path = artefacts() / "check-report-sample.html"
    path.write_text(render_html(rep, ops, res, {"p": 0.5}), encoding="utf-8")
    browser.get(path.as_uri())  # type: ignore[attr-defined]
    timeline = series_points(
        browser, "Operations over time (fault phases shaded, violations marked)"
    )
    assert timeline["reads/s"] > 10, timeline
    assert series_points(browser, "Staleness of bounded reads")  # drawn, with data
    browser.save_screenshot(str(artefacts() / "check-report-desktop.png"))  # type: ignore[attr-defined]
    browser.set_window_size(*PHONE)  # type: ignore[attr-defined]
    assert fits_width(browser)
    browser.save_screenshot(str(artefacts() / "check-report-phone.png"))  # type: ignore[attr-defined]
    print(f"report and screenshots: {artefacts()}/check-report-*")
    assert console_errors(browser) == []
