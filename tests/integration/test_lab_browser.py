"""The lab's loss-vs-retry story end to end in a real headless Chromium (Debian's
``chromium`` + ``chromium-driver``, no download): a lab of its own, so that it runs
beside the other lab tests; its last picture is the one the docs show."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from harness.procs import wait_until
from tests.integration.test_lab import ARTIFACTS, CHROMEDRIVER, CHROMIUM, RunningLab, running_lab

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab-browser")]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    # A notification of 6 s (the other lab tests: 4): BG's are in flight that long,
    # and the page has to show them and take the kill within it, on a machine the
    # other tests keep busy. The visibility timeout stays above it.
    args = ("--notification-delay", "6", "--visibility-timeout", "8")
    with running_lab(tmp_path_factory.mktemp("lab-browser"), *args) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


@contextlib.contextmanager
def headless_chromium() -> Iterator[Any]:
    """A headless Chromium driven by Selenium, a profile of its own (skips the test
    where Debian's chromium and chromium-driver are not installed); quit at the end."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            "needs Debian's chromium and chromium-driver (/usr/bin/chromium, "
            "/usr/bin/chromedriver): apt-get install -y chromium chromium-driver"
        )
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="lab-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,900",  # a laptop screen
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_browser_kill_both_servers_bg_loses_five_celery_loses_none(
    lab: RunningLab, browser: Any
) -> None:
    try:
        _kill_both_servers_story(lab, browser)
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "lab-failed.png"))
        print(lab.report())  # shown with the failure
        raise
    # The whole page in one picture: a viewport as tall as the page.
    ARTIFACTS.mkdir(exist_ok=True)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 1440, "height": min(height, 2400), "deviceScaleFactor": 1, "mobile": False},
    )
    time.sleep(1.2)  # the timelines redraw every second, at the new size too
    browser.save_screenshot(str(ARTIFACTS / "lab-final.png"))


def _kill_both_servers_story(lab: RunningLab, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    def rows(css: str) -> int:
        # In the page's own thread: the log is re-rendered with every snapshot, so
        # elements found one call earlier may already be gone.
        found: int = browser.execute_script(
            "return document.querySelectorAll(arguments[0]).length", css
        )
        return found

    def click(impl: str, action: str, service: str | None = None) -> None:
        """Click like a person, and wait until the page's log has taken the action."""
        css = f'[data-implementation="{impl}"][data-action="{action}"]'
        if service:
            css += f'[data-service="{service}"]'
        logged = rows(f"#events tr{css}")
        browser.find_element(By.CSS_SELECTOR, f"button{css}").click()
        page_until(
            f"{action} {service or impl} in the log", 20, lambda: rows(f"#events tr{css}") > logged
        )

    def number(element_id: str) -> int:
        return int(browser.find_element(By.ID, element_id).text or 0)

    def page_until(what: str, timeout: float, predicate: Any) -> None:
        wait_until(predicate, timeout, f"the page to show {what}", interval=0.2)

    def confirmed(action: str) -> int:
        return rows(f'#events tr[data-action="{action}"][data-status="ok"]')

    browser.get(lab.url + "/")
    page_until("the live stream", 20, lambda: "live" in browser.find_element(By.ID, "conn").text)
    browser.find_element(By.ID, "reset").click()
    page_until(
        "a new round", 20, lambda: number("bg-all-submitted") == 0 == number("celery-all-submitted")
    )

    # Celery first, its worker killed as soon as the page shows both its pool processes
    # running a notification: from then on its 5 wait for redelivery or in Redis,
    # however long the page takes over the next steps. (Killed after BG's send instead,
    # the worker could finish all 5 first: a CI run's browser took 12 s from one send to
    # the next.) Not at the first one running: the worker may still be fetching the
    # second, and a message kombu has popped (BRPOP) but not yet recorded unacknowledged
    # dies with it (celery/celery#7950; a CI run lost one so). With both slots busy it
    # fetches nothing (one task reserved per process).
    click("celery", "send")
    page_until("Celery notifications running", 60, lambda: number("celery-running") >= 2)
    click("celery", "kill", "worker")
    # The BG ones all run at once, in the API process: it is killed while they do.
    click("bg", "send")
    page_until(
        "5 BG notifications in flight",
        30,
        lambda: number("bg-running") + number("bg-queued") == 5,
    )
    # Kill both servers (and the worker: Celery's loss-vs-retry is about the worker).
    click("bg", "kill", "bg-api")
    click("celery", "kill", "celery-api")
    page_until("both sends confirmed", 30, lambda: confirmed("send") == 2)
    page_until("the three kills confirmed", 30, lambda: confirmed("kill") == 3)
    page_until(
        "BG lost, Celery awaiting redelivery",
        20,
        lambda: number("bg-lost") == 5 and number("celery-redelivery") >= 1,
    )
    assert number("celery-lost") == 0

    click("bg", "restart", "bg-api")
    click("celery", "restart", "worker")
    click("celery", "restart", "celery-api")
    page_until("the three restarts confirmed", 120, lambda: confirmed("restart") == 3)
    page_until(
        "5 Celery notifications succeeded",
        90,
        lambda: number("celery-succeeded") == 5 and number("celery-redelivery") == 0,
    )
    # Every process is up again; the counters say it all.
    assert not browser.find_elements(By.CSS_SELECTOR, '.proc[data-up="false"]')
    assert number("bg-lost") == 5
    assert number("bg-succeeded") == 0
    assert number("celery-lost") == 0
    assert number("celery-failed") == 0
    assert number("celery-submitted") == number("bg-submitted") == 5
    # The redelivered tasks ran twice; the ones that waited in Redis once.
    # 5 notifications and their 5 log lines
    assert rows('#celery-tasks tr[data-state="succeeded"]') == 10
