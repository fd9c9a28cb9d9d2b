"""What both sides promise, against real processes: a real redis-server, real
uvicorns, a real Celery worker and beat. The same request goes to both apps."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.local import LocalStack
from harness.procs import wait_until
from tests.conftest import StackFactory, ledger_record, log_lines, wait_for_state

SIDES = ["bg", "celery"]
DELAY = 2.0  # the seed's slow notification; the response must come well before it ends


@pytest.fixture(scope="module")
def stack(make_module_stack: StackFactory) -> Iterator[LocalStack]:
    stack = make_module_stack(notification_delay_seconds=DELAY, beat_interval_seconds=1)
    stack.start_all()
    yield stack


@pytest.mark.parametrize("side", SIDES)
def test_response_arrives_before_the_slow_notification_finishes(
    stack: LocalStack, side: str
) -> None:
    started = time.monotonic()
    r = httpx.post(f"{stack.url(side)}/send-notification/user@example.com", timeout=10)
    answered = time.monotonic() - started

    assert r.status_code == 200, r.text
    notification_id, log_id = r.json()["task_ids"]
    # The answer did not wait for the 2-second notification...
    assert answered < DELAY / 2, f"{side} answered after {answered:.2f}s"
    record = ledger_record(stack, notification_id)
    assert record is not None and record.state in {"queued", "running"}
    # ...which still completes afterwards, and so does the second task.
    done = wait_for_state(stack, notification_id, {"succeeded"}, timeout=DELAY + 15)
    assert done.finished_at is not None and done.queued_at is not None
    assert done.finished_at - done.queued_at >= DELAY
    wait_for_state(stack, log_id, {"succeeded"})
    assert len(log_lines(stack, notification_id)) == 1
    assert "notification sent to user@example.com" in log_lines(stack, notification_id)[0]
    assert "notification scheduled for user@example.com" in log_lines(stack, log_id)[0]


@pytest.mark.parametrize("side", SIDES)
def test_task_ids_come_in_the_order_scheduled(stack: LocalStack, side: str) -> None:
    r = httpx.post(f"{stack.url(side)}/send-notification/order@example.com", timeout=10)
    ids = r.json()["task_ids"]
    records = [ledger_record(stack, task_id) for task_id in ids]
    assert [rec.kind for rec in records if rec] == ["notification", "log"]
    assert all(rec and rec.implementation == side for rec in records)
    for task_id in ids:
        wait_for_state(stack, task_id, {"succeeded"}, timeout=DELAY + 15)


def test_background_tasks_run_one_after_the_other(stack: LocalStack) -> None:
    """Starlette awaits a response's tasks in order: the log line waits for the notification."""
    r = httpx.post(f"{stack.bg_url}/send-notification/seq@example.com", timeout=10)
    notification_id, log_id = r.json()["task_ids"]
    log = wait_for_state(stack, log_id, {"succeeded"}, timeout=DELAY + 15)
    notification = wait_for_state(stack, notification_id, {"succeeded"})
    assert log.started_at is not None and notification.finished_at is not None
    assert log.started_at >= notification.finished_at


@pytest.mark.parametrize("side", SIDES)
def test_create_item_writes_a_log_line(stack: LocalStack, side: str) -> None:
    r = httpx.post(
        f"{stack.url(side)}/items/", json={"name": "노트북", "price": 1500000}, timeout=10
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item"] == {"name": "노트북", "price": 1500000}
    [task_id] = body["task_ids"]
    record = wait_for_state(stack, task_id, {"succeeded"})
    assert (record.implementation, record.kind, record.attempts) == (side, "log", 1)
    [line] = log_lines(stack, task_id)
    assert "item created: 노트북 (1,500,000.00)" in line


@pytest.mark.parametrize("side", SIDES)
def test_unknown_task_is_404(stack: LocalStack, side: str) -> None:
    r = httpx.get(f"{stack.url(side)}/tasks/never-seen", timeout=5)
    assert r.status_code == 404
    assert "never-seen" in r.json()["detail"]


BAD_REQUESTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "invalid email": ("POST", "/send-notification/not-an-email", {}),
    "negative price": ("POST", "/items/", {"json": {"name": "노트북", "price": -1}}),
    "missing field": ("POST", "/items/", {"json": {"name": "노트북"}}),
    "empty name": ("POST", "/items/", {"json": {"name": "", "price": 1}}),
    "non-JSON body": (
        "POST",
        "/items/",
        {"content": b"name=x&price=1", "headers": {"content-type": "application/json"}},
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
@pytest.mark.parametrize("side", SIDES)
def test_bad_input_is_422_and_schedules_nothing(stack: LocalStack, side: str, case: str) -> None:
    def scheduled() -> int:
        records = httpx.get(f"{stack.url(side)}/tasks", params={"implementation": side}).json()
        return sum(1 for rec in records if rec["kind"] in ("notification", "log"))

    before_tasks, before_lines = scheduled(), len(log_lines(stack))
    method, path, kwargs = BAD_REQUESTS[case]
    r = httpx.request(method, f"{stack.url(side)}{path}", timeout=5, **kwargs)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]  # says what is wrong
    time.sleep(0.3)  # had anything been scheduled, it would show by now
    assert scheduled() == before_tasks
    # Beat writes its own lines; none of the requests' kinds may appear.
    new = log_lines(stack)[before_lines:]
    assert not [line for line in new if "heartbeat" not in line]


def test_beat_fires_the_periodic_task_more_than_once(stack: LocalStack) -> None:
    def beats() -> list[dict[str, object]]:
        records = httpx.get(f"{stack.celery_url}/tasks", params={"implementation": "celery"})
        return [r for r in records.json() if r["kind"] == "beat" and r["state"] == "succeeded"]

    wait_until(lambda: len(beats()) >= 2, 15, "two beat runs in the ledger", 0.2)
    runs = beats()
    assert len({r["task_id"] for r in runs}) == len(runs)  # distinct runs, not one retried
    assert all(r["attempts"] == 1 for r in runs)
