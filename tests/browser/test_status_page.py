"""The status page in a real browser, against a real ``maxage serve`` under traffic:
charts drawn with data, live updates through /status.json, no console error, readable
at phone width; screenshots kept as artefacts. The cache server's page likewise."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import MaxageServer
from tests.browser.conftest import PHONE, artefacts, console_errors, requested_urls
from tests.cacheserver.conftest import CacheServer


class Traffic:
    """Reads and writes from a thread until stopped (what a person watches the page for)."""

    def __init__(self, url: str, work: object) -> None:
        self.stop = threading.Event()
        self.count = 0
        self.thread = threading.Thread(target=self._run, args=(url, work), daemon=True)
        self.thread.start()

    def _run(self, url: str, work: object) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=10) as c:
            while not self.stop.is_set():
                work(c)  # type: ignore[operator]
                self.count += 1

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@pytest.fixture()
def api(tmp_path: Path) -> Iterator[MaxageServer]:
    s = MaxageServer(tmp_path, "--monitor-sample", "1")
    try:
        yield s
    finally:
        s.kill()


def wait(driver: object, script: str, timeout: float = 30.0) -> object:
    """Poll a JavaScript expression until truthy (a condition wait, not a sleep)."""
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script("return " + script)  # type: ignore[attr-defined]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {script}")
        time.sleep(0.1)


def recorded(url: str, points: int = 3) -> None:
    """Wait until the server has recorded enough points for lines (one every 2 s)."""
    deadline = time.monotonic() + 30
    while len(httpx.get(url + "/status.json", trust_env=False).json()["series"]["t"]) < points:
        assert time.monotonic() < deadline, "status points not recorded"
        time.sleep(0.2)


def series_points(driver: object, title: str) -> dict[str, int]:
    """data-points of each drawn series of the chart titled ``title``."""
    found: dict[str, int] = driver.execute_script(  # type: ignore[attr-defined]
        """
        const out = {};
        for (const svg of document.querySelectorAll('svg.chart')) {
          if (svg.querySelector('title').textContent !== arguments[0]) continue;
          for (const s of svg.querySelectorAll('.series'))
            out[s.dataset.series] = Number(s.dataset.points);
        }
        return out;
        """,
        title,
    )
    return found


def wait_points(driver: object, title: str, series: str, n: int, timeout: float = 30.0) -> None:
    """Wait until the chart ``title`` draws at least ``n`` points of ``series``: the page
    redraws every 2 s, and on a loaded machine the first samples can come late."""
    deadline = time.monotonic() + timeout
    while (got := series_points(driver, title).get(series, 0)) < n:
        assert time.monotonic() < deadline, f"{title}: {series} has {got} points, wanted {n}"
        time.sleep(0.2)


def fits_width(driver: object) -> bool:
    return bool(
        driver.execute_script(  # type: ignore[attr-defined]
            "return document.documentElement.scrollWidth <= window.innerWidth + 1"
        )
    )


def test_api_status_page_live_under_traffic(browser: object, api: MaxageServer) -> None:
    with httpx.Client(base_url=api.url, trust_env=False, timeout=10) as c:
        ids = [
            c.post("/v1/products", json={"name": f"p{i}", "price": i}).json()["id"]
            for i in range(10)
        ]

    def work(c: httpx.Client) -> None:
        doc = random.choice(ids)
        if random.random() < 0.1:
            c.patch(f"/v1/products/{doc}", json={"price": random.randint(1, 9)})
        else:
            c.get(f"/v1/products/{doc}")

    traffic = Traffic(api.url, work)
    try:
        recorded(api.url)
        browser.get(api.url + "/status")  # type: ignore[attr-defined]
        assert "maxage serve status" in browser.title  # type: ignore[attr-defined]
        # Live: the inline script replaced the server-rendered main at least twice.
        wait(browser, "Number(document.body.dataset.updates || 0) >= 2")
        wait_points(browser, "Request rate", "requests/s", 3)
        wait_points(browser, "Latency (p50, p99)", "p50", 2)
        wait_points(browser, "Latency (p50, p99)", "p99", 2)
        wait_points(browser, "Hit ratio", "l1", 2)
        wait_points(browser, "Tailer lag against the bound", "tailer lag", 3)
        wait_points(browser, "products: staleness of checked reads", "checked reads", 1)
        text = browser.find_element("tag name", "main").text  # type: ignore[attr-defined]
        assert "write-through" in text and "nines within S" in text
        shots = artefacts()
        browser.save_screenshot(str(shots / "status-serve-desktop.png"))  # type: ignore[attr-defined]
        browser.set_window_size(*PHONE)  # type: ignore[attr-defined]
        wait(browser, "window.innerWidth <= 420")
        assert fits_width(browser), "the page scrolls sideways at phone width"
        browser.save_screenshot(str(shots / "status-serve-phone.png"))  # type: ignore[attr-defined]
        print(f"screenshots: {shots}/status-serve-desktop.png, {shots}/status-serve-phone.png")
        assert console_errors(browser) == []
        urls = requested_urls(browser)  # offline: the page and its polls, nothing else
        assert any(u.endswith("/status.json") for u in urls), urls
        assert all(u.startswith((api.url, "data:")) for u in urls), urls
    finally:
        traffic.close()
    assert traffic.count > 0


def test_cache_server_status_page(browser: object) -> None:
    s = CacheServer("--max-bytes", "4MiB")

    def work(c: httpx.Client) -> None:
        k = random.randint(0, 200)
        if random.random() < 0.3:
            c.put(f"/v1/keys/k{k}?tags=team:{k % 5}", content=b"v" * random.randint(10, 5000))
        else:
            c.get(f"/v1/keys/k{k}")

    traffic = Traffic(s.url, work)
    try:
        recorded(s.url)
        browser.set_window_size(*PHONE)  # type: ignore[attr-defined]
        browser.get(s.url + "/status")  # type: ignore[attr-defined]
        wait(browser, "Number(document.body.dataset.updates || 0) >= 1")
        wait_points(browser, "Memory used against the bound", "bytes used", 3)
        wait_points(browser, "Request rate", "requests/s", 2)
        # The top tags are refreshed at most every 10 s: wait for the traffic's tags.
        wait(browser, "document.querySelector('main').innerText.includes('team:')")
        text = browser.find_element("tag name", "main").text  # type: ignore[attr-defined]
        assert "Evictions by reason" in text
        assert fits_width(browser)
        path = artefacts() / "status-cache-server-phone.png"
        browser.save_screenshot(str(path))  # type: ignore[attr-defined]
        print(f"screenshot: {path}")
        assert console_errors(browser) == []
    finally:
        traffic.close()
        s.kill()


def test_status_page_asks_for_the_admin_key(browser: object, tmp_path: Path) -> None:
    """With --auth keys: the page without a key asks for one, then shows the status."""
    from tests.api.test_access import new_key

    db = tmp_path / "db.sqlite"
    s = MaxageServer(tmp_path, "--auth", "keys", db=db)
    try:
        _, admin = new_key(db, "admin")
        browser.get(s.url + "/status")  # type: ignore[attr-defined]
        assert "products" not in browser.find_element("tag name", "main").text  # type: ignore[attr-defined]
        browser.find_element("id", "key").send_keys(admin)  # type: ignore[attr-defined]
        browser.find_element("css selector", "#keyform button").click()  # type: ignore[attr-defined]
        wait(browser, "Number(document.body.dataset.updates || 0) >= 1")
        text = browser.find_element("tag name", "main").text  # type: ignore[attr-defined]
        assert "products" in text and "write-through" in text
        # Only the page itself was refused (it asked for the key); nothing else failed.
        errors = [e for e in console_errors(browser) if "status of 401" not in str(e["message"])]
        assert errors == []
    finally:
        s.kill()
