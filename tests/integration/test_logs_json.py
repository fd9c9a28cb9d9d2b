"""``LOG_FORMAT=json`` in real processes: bg-api's uvicorn and the Celery worker write
one JSON object per line, and the lines logged while a task runs carry its id."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from harness.procs import wait_until
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.slow


def json_lines(output: str) -> list[dict[str, Any]]:
    """Every line that is a JSON object; each must parse (a record is one line)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def not_json(output: str) -> list[str]:
    """The other lines, but the harness's own ("--- start <service>: <argv>")."""
    return [
        line
        for line in output.splitlines()
        if line.strip() and not line.startswith(("{", "--- start "))
    ]


def about(lines: list[dict[str, Any]], task_id: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("task_id") == task_id]


def test_json_lines_carry_the_task_id_on_both_sides(make_stack: StackFactory) -> None:
    # DEBUG: a BackgroundTasks task that succeeds says so at DEBUG only.
    stack = make_stack(log_format="json", log_level="DEBUG")
    stack.start_all(("redis", "bg-api", "celery-api", "worker"))

    bg = httpx.post(f"{stack.url('bg')}/items/", json={"name": "pen", "price": 1.5}, timeout=10)
    assert bg.status_code == 202, bg.text
    [bg_id] = bg.json()["task_ids"]
    celery = httpx.post(
        f"{stack.url('celery')}/items/", json={"name": "ink", "price": 2}, timeout=10
    )
    assert celery.status_code == 202, celery.text
    [celery_id] = celery.json()["task_ids"]

    # BackgroundTasks: the task's own line, logged in the API's thread pool.
    [done] = wait_until(
        lambda: about(json_lines(stack.output("bg-api")), bg_id), 30, "bg-api's line of the task"
    )
    assert done["logger"] == "fastapi_bg.tasks" and "succeeded" in done["message"], done
    assert done["time"].endswith("Z") and done["level"] == "DEBUG"
    api = json_lines(stack.output("bg-api"))
    starting = [line for line in api if line["message"].startswith("bg API starting")]
    assert starting and "task_id" not in starting[0]  # outside a task: no id
    # What is not JSON is what uvicorn prints before the app configures logging.
    others = not_json(stack.output("bg-api"))
    assert all(line.startswith("INFO:     ") for line in others), others

    # Celery: the worker's own lines about the task, from its main process
    # ("received") and from the pool process that ran it ("succeeded").
    def celery_lines() -> list[dict[str, Any]] | None:
        lines = about(json_lines(stack.output("worker")), celery_id)
        return lines if any("succeeded" in line["message"] for line in lines) else None

    lines = wait_until(celery_lines, 60, "the worker's line of the task's success")
    messages = [line["message"] for line in lines]
    assert any(m.endswith(f"[{celery_id}] received") for m in messages), messages
    assert all(line["logger"].startswith("celery") for line in lines), lines
    # The worker's own start-up warning (the stack's visibility timeout is below the
    # time limit) comes after logging is set up: a JSON line too.
    limits = [
        line for line in json_lines(stack.output("worker")) if "TASK_TIME_LIMIT" in line["message"]
    ]
    assert limits and limits[0]["logger"] == "celery_app.worker", not_json(stack.output("worker"))
