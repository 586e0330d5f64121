"""A real browser for the pages people look at: Debian's headless ``chromium`` driven
through ``chromium-driver`` with selenium (docs/adr/0007-browser-tests.md).

Skipped when chromium or its driver is absent, except under ``CI=true`` (``.ci/run``
installs both), where a missing browser is a failure. Screenshots are artefacts: they
go to ``$MAXAGE_ARTEFACTS`` (default ``tmp/artefacts`` in the checkout) and each test
prints where.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.support.artefacts import artefacts

__all__ = ["PHONE", "artefacts", "browser", "console_errors", "requested_urls"]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
PHONE = (390, 844)  # CSS pixels of a common phone in portrait
DESKTOP = (1280, 1000)


@pytest.fixture()
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium and chromium-driver are required in CI (.ci/run installs them)")
        pytest.skip(
            "chromium / chromium-driver not installed (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: object) -> list[str]:
    """Every URL the page requested so far (from the performance log's network events)."""
    import json

    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[attr-defined]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def console_errors(driver: object) -> list[dict[str, object]]:
    """What the page wrote to the console at level SEVERE (errors, failed loads)."""
    logs: list[dict[str, object]] = driver.get_log("browser")  # type: ignore[attr-defined]
    return [e for e in logs if e.get("level") == "SEVERE"]
