"""The dashboard at /ui/ in a real headless Chromium (Debian's chromium and
chromium-driver, through selenium), against a real ``tasks-core api`` and
worker: open it with a key in the address, see a Flow made for the test,
open it, and see its progress, its steps and its events."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.bench.processes import ApiServer
from tests.support.wait import wait_until

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a test dependency")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless browser: Debian's chromium and chromium-driver are not installed "
    "(.ci/run installs them)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    profile = Path(tempfile.mkdtemp(prefix="tasks-ui-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless as root on a closed network: no sandbox, no background traffic.
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1366,900",
        f"--user-data-dir={profile}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def flow(api: ApiServer, key: str, title: str) -> dict[str, Any]:
    steps = [
        {"id": "first", "kind": "CallAction", "targetId": "builtin/echo", "input": {"n": 1}},
        {"id": "second", "kind": "CallAction", "targetId": "builtin/echo", "after": ["first"]},
    ]
    body = {"kind": "Flow", "title": title, "params": {"steps": steps}}
    headers = {"Authorization": f"Bearer {key}"}
    created = httpx.post(f"{api.url}/v1/tasks", json=body, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    task: dict[str, Any] = created.json()
    return task


# Pages refresh themselves (every 2 s they are drawn anew), so the test reads
# and clicks through the page's own script, never holding an element that a
# redraw may have replaced.
def text_of(browser: Any, css: str) -> str:
    script = "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText).join(' ')"
    return str(browser.execute_script(script, css))


def count(browser: Any, css: str) -> int:
    return int(browser.execute_script("return document.querySelectorAll(arguments[0]).length", css))


def click(browser: Any, css: str) -> None:
    browser.execute_script("document.querySelector(arguments[0]).click()", css)


def test_the_dashboard_shows_a_flow_its_steps_and_its_events(
    browser: Any, api: ApiServer, key: str
) -> None:
    title = f"dashboard flow {uuid.uuid4().hex[:6]}"
    made = flow(api, key, title)
    browser.get(f"{api.url}/ui/#key={key}")

    # The key is kept for the tab and gone from the address bar.
    wait_until(lambda: "key=" not in browser.current_url, timeout=10, message="key removed")
    assert browser.execute_script("return sessionStorage.getItem('tasks-core-key')") == key
    link = f'a[data-task-id="{made["id"]}"]'
    wait_until(lambda: count(browser, link), timeout=15, message="listed")
    assert title in text_of(browser, "table")

    click(browser, link)
    assert browser.current_url.endswith(f"#/tasks/{made['id']}")  # a link of its own

    def ended() -> bool:
        return "completed" in text_of(browser, "h1") and "2 of 2 steps done" in text_of(
            browser, "#progress"
        )

    wait_until(ended, timeout=30, interval=0.2, message="the Flow shown completed")
    assert count(browser, "#children a[data-task-id]") == 2
    events = text_of(browser, "tbody tr[data-event]")
    assert "created" in events and "completed" in events

    # A step's own page, reached from the tree, links back to its Flow.
    click(browser, "#children a[data-task-id]")
    wait_until(
        lambda: count(browser, f'dd a[data-task-id="{made["id"]}"]'),
        timeout=10,
        message="the step's page links its Flow",
    )


def test_queues_and_workers_pages_show_the_running_pool(
    browser: Any, api: ApiServer, key: str
) -> None:
    browser.get(f"{api.url}/ui/#key={key}")
    wait_until(lambda: "key=" not in browser.current_url, timeout=10, message="key removed")
    browser.get(f"{api.url}/ui/#/workers")
    wait_until(lambda: "yes" in text_of(browser, "tbody"), timeout=15, message="a live worker")
    browser.get(f"{api.url}/ui/#/queues")
    wait_until(lambda: "CallAction" in text_of(browser, "tbody"), timeout=15, message="queues")
