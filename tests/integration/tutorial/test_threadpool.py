"""The thread-pool note's program (``examples/threadpool``), under
``uvicorn main:app --reload``: where each task ran (``cat log.txt``), and what a
blocking call in an ``async def`` task does to every other request."""

from __future__ import annotations

import time

import httpx
import pytest

from harness.procs import wait_until
from tests.integration.tutorial.conftest import Example

BLOCK = 2.0


@pytest.mark.serial
def test_a_def_task_runs_in_the_thread_pool_and_a_blocking_async_one_stalls_the_server(
    run_example: Example,
) -> None:
    app = run_example("threadpool")
    url = app.uvicorn()

    def request_during(task: str) -> float:
        """Schedule the task, then time one more request while it runs."""
        r = httpx.post(f"{url}/tasks/{task}", params={"seconds": BLOCK}, timeout=30)
        assert r.status_code == 200, r.text
        started = time.monotonic()
        assert httpx.get(f"{url}/openapi.json", timeout=30).status_code == 200
        waited = time.monotonic() - started
        wait_until(lambda: f"{task} ran" in app.log_txt(), BLOCK + 10, f"{task} to finish")
        return waited

    assert request_during("sync_task") < BLOCK / 4
    blocked = request_during("async_task")
    fixed = request_during("fixed_task")
    # time.sleep in an async def task: the loop was not running, the request waited...
    assert blocked >= BLOCK / 2, f"waited only {blocked:.2f}s"
    # ...and with asyncio.to_thread it did not.
    assert fixed < blocked / 4, f"to_thread: {fixed:.2f}s vs blocking: {blocked:.2f}s"

    ran = dict(line.split(" ran in ") for line in app.log_txt().splitlines())
    assert ran["sync_task"].startswith("AnyIO worker thread")
    assert ran["async_task"] == ran["fixed_task"] == "MainThread"  # the event loop's


def test_a_task_name_it_does_not_have_is_a_422(run_example: Example) -> None:
    url = run_example("threadpool").uvicorn()
    assert httpx.post(f"{url}/tasks/rm_rf", timeout=10).status_code == 422
    assert httpx.post(f"{url}/tasks/sync_task?seconds=-1", timeout=10).status_code == 422
