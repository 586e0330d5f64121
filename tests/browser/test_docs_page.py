"""/docs in a real browser: Swagger UI (served by maxage, no network) renders every
operation of /openapi.json, and try-it sends the generated example to the server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.api.conftest import MaxageServer
from tests.browser.conftest import PHONE, artefacts, console_errors, requested_urls
from tests.browser.test_status_page import fits_width, wait


def operation_ids(url: str) -> set[str]:
    spec = httpx.get(url + "/openapi.json", trust_env=False).json()
    return {
        op["operationId"]
        for item in spec["paths"].values()
        for method, op in item.items()
        if method != "parameters"
    }


def test_swagger_ui_renders_every_operation_and_tries_one(browser: object, tmp_path: Path) -> None:
    s = MaxageServer(tmp_path)
    try:
        browser.get(s.url + "/docs")  # type: ignore[attr-defined]
        wait(browser, "document.body.dataset.viewer === 'ready'", timeout=90)
        # The server-rendered list gave way to the viewer.
        assert browser.execute_script("return document.getElementById('operations').hidden")  # type: ignore[attr-defined]
        shown = set(
            browser.execute_script(  # type: ignore[attr-defined]
                "return [...document.querySelectorAll('.opblock')].map(e => e.id)"
            )
        )
        wanted = {f"operations-default-{op}" for op in operation_ids(s.url)}
        assert wanted <= shown, wanted - shown
        # Try it: create a product from the example in the document.
        block = "#operations-default-create_products"
        browser.find_element("css selector", f"{block} .opblock-summary").click()  # type: ignore[attr-defined]
        wait(browser, f"document.querySelector('{block} .try-out__btn')")
        browser.find_element("css selector", f"{block} .try-out__btn").click()  # type: ignore[attr-defined]
        wait(browser, f"document.querySelector('{block} .execute')")
        browser.find_element("css selector", f"{block} .execute").click()  # type: ignore[attr-defined]
        status = wait(
            browser,
            f"(document.querySelector('{block} .live-responses-table tbody .response-col_status') || {{}}).textContent",
        )
        assert str(status).strip().startswith("201"), status
        deadline = time.monotonic() + 10
        while not (listed := httpx.get(s.url + "/v1/products", trust_env=False).json()["data"]):
            assert time.monotonic() < deadline
        assert listed[0]["data"]["name"] == "example"  # the generated example, sent by try-it
        path = artefacts() / "docs-desktop.png"
        browser.save_screenshot(str(path))  # type: ignore[attr-defined]
        browser.set_window_size(*PHONE)  # type: ignore[attr-defined]
        wait(browser, "window.innerWidth <= 420")
        assert fits_width(browser)
        browser.save_screenshot(str(artefacts() / "docs-phone.png"))  # type: ignore[attr-defined]
        print(f"screenshots: {path}, {artefacts() / 'docs-phone.png'}")
        assert console_errors(browser) == []
        # Offline: every request went to this server (or was inline data).
        urls = requested_urls(browser)
        assert any(u.endswith("/docs/swagger-ui-bundle.js") for u in urls), urls
        assert all(u.startswith((s.url, "data:")) for u in urls), urls
    finally:
        s.kill()


def test_cache_server_docs_render(browser: object) -> None:
    from tests.cacheserver.conftest import CacheServer

    s = CacheServer()
    try:
        browser.get(s.url + "/docs")  # type: ignore[attr-defined]
        wait(browser, "document.body.dataset.viewer === 'ready'", timeout=90)
        count = browser.execute_script("return document.querySelectorAll('.opblock').length")  # type: ignore[attr-defined]
        spec = httpx.get(s.url + "/openapi.json", trust_env=False).json()
        wanted = sum(1 for item in spec["paths"].values() for m in item if m != "parameters")
        assert count == wanted, (count, wanted)
        assert console_errors(browser) == []
        assert all(u.startswith((s.url, "data:")) for u in requested_urls(browser))
    finally:
        s.kill()
