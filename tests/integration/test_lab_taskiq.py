"""The lab of every declared implementation (``python -m lab --implementations
bg,celery,taskiq,dramatiq,rq``): a column each, built from the declaration, each driven
like the others, and the page showing the columns the user chooses (BackgroundTasks and
Celery unless told otherwise). A lab of its own, beside the other lab tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness.procs import wait_until
from shared.services import DEFAULT_IMPLEMENTATIONS, IMPLEMENTATIONS, Implementation
from tests.integration.test_lab import RunningLab, running_lab
from tests.integration.test_lab_browser import headless_chromium

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("lab-taskiq")]

PROCESS = ["kill", "stop", "restart"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    args = ("--implementations", ",".join(IMPLEMENTATIONS))
    with running_lab(tmp_path_factory.mktemp("lab-taskiq"), *args, command=("lab",)) as running:
        yield running


def test_a_killed_taskiq_worker_shows_and_its_task_comes_back(lab: RunningLab) -> None:
    state = lab.state()
    columns = state["implementations"]
    assert list(columns) == [impl.value for impl in IMPLEMENTATIONS]
    taskiq = columns["taskiq"]
    assert taskiq["title"] == "taskiq"
    # The page shows the chapter's two unless asked for more.
    assert [name for name, c in columns.items() if c["shown_by_default"]] == ["bg", "celery"]
    assert {p["service"]: p["up"] for p in taskiq["processes"]} == {
        "taskiq-api": True,
        "taskiq-worker": True,
        "taskiq-scheduler": True,
        "redis": True,
    }
    assert taskiq["controls"] == {
        "taskiq-api": PROCESS,
        "taskiq-worker": PROCESS,
        "redis": ["restart"],
    }
    # The lab's --visibility-timeout is taskiq's idle timeout too: 6 s, not 600.
    assert "6 s after it started" in taskiq["redelivery"]["when"]
    assert lab.act("celery", "kill", "taskiq-worker").status_code == 400  # not Celery's

    sent = lab.act("taskiq", "send", count=1).json()
    assert sent["status"] == "ok", sent

    def running() -> str | None:
        tasks = lab.state()["implementations"]["taskiq"]["tasks"]
        ids = [t["id"] for t in tasks if t["kind"] == "notification" and t["state"] == "running"]
        return ids[0] if ids else None

    notification = wait_until(running, 20, "the notification running", 0.2)
    kill = lab.act("taskiq", "kill", "taskiq-worker").json()
    assert kill["status"] == "ok" and kill["implementation"] == "taskiq", kill
    # The log line behind it may have run already, or still wait: the notification ran.
    assert {t["id"]: t["then"] for t in kill["in_flight"]}[notification] == "running", kill
    assert not lab.processes("taskiq")["taskiq-worker"]["up"]
    # Its worker gone, the notification waits in the stream for another one.
    waiting = "the notification awaiting redelivery"
    wait_until(lambda: lab.counters("taskiq")["redelivery"] == 1, 20, waiting)
    assert lab.act("taskiq", "restart", "taskiq-worker").json()["status"] == "ok"

    def redelivered() -> dict[str, Any] | None:
        tasks = lab.state()["implementations"]["taskiq"]["tasks"]
        done = [t for t in tasks if t["kind"] == "notification" and t["state"] == "succeeded"]
        return done[-1] if done else None

    done = wait_until(redelivered, 30, "the notification redelivered and succeeded", 0.5)
    assert isinstance(done, dict) and done["executions"] == 2, done
    assert lab.counters("taskiq")["lost"] == 0
    # The other columns saw none of it.
    assert lab.counters("bg")["submitted"] == lab.counters("celery")["submitted"] == 0


@pytest.mark.parametrize(
    "impl", [i.value for i in IMPLEMENTATIONS if i not in DEFAULT_IMPLEMENTATIONS]
)
def test_every_further_column_runs_its_tasks_and_offers_its_controls(
    lab: RunningLab, impl: str
) -> None:
    column = lab.state()["implementations"][impl]
    spec = IMPLEMENTATIONS[Implementation(impl)]
    assert column["title"] == spec.title
    assert column["controls"][spec.runs_the_work] == PROCESS
    assert all(p["up"] for p in column["processes"]), column["processes"]
    before = lab.counters(impl)["succeeded"]
    sent = lab.act(impl, "send", count=1).json()
    assert sent["status"] == "ok", sent
    # Its notification, run by its own worker.
    wait_until(lambda: lab.counters(impl)["succeeded"] == before + 1, 60, f"{impl}'s notification")
    assert lab.counters(impl)["lost"] == 0


@pytest.fixture
def browser() -> Iterator[Any]:
    with headless_chromium() as driver:
        yield driver


def test_the_page_shows_the_chosen_columns_and_remembers_them(
    lab: RunningLab, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    def shown() -> list[str]:
        found: list[str] = browser.execute_script(
            "return [...document.querySelectorAll('#columns > section')]"
            ".filter((s) => !s.hidden).map((s) => s.dataset.implementation)"
        )
        return found

    def box(impl: str) -> Any:
        return browser.find_element(By.CSS_SELECTOR, f'#choose input[data-column="{impl}"]')

    browser.get(lab.url + "/")
    wait_until(lambda: shown() == ["bg", "celery"], 20, "the default columns")
    assert not box("taskiq").is_selected()
    box("taskiq").click()
    wait_until(lambda: shown() == ["bg", "celery", "taskiq"], 10, "the taskiq column")
    # Built from the state: its processes and its own buttons.
    worker = browser.find_element(By.ID, "taskiq-proc-taskiq-worker")
    assert worker.get_attribute("data-up") in ("true", "false")
    buttons = browser.find_elements(
        By.CSS_SELECTOR, 'button[data-implementation="taskiq"][data-service="taskiq-worker"]'
    )
    assert [b.get_attribute("data-action") for b in buttons] == PROCESS
    box("bg").click()
    wait_until(lambda: shown() == ["celery", "taskiq"], 10, "BackgroundTasks hidden")
    # The choice is this browser's: a reload keeps it.
    browser.refresh()
    wait_until(lambda: shown() == ["celery", "taskiq"], 20, "the chosen columns after a reload")
    assert box("taskiq").is_selected() and not box("bg").is_selected()
