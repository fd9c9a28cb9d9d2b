"""taskiq's own claims, against real processes: the demo settings bring a killed
worker's task back, the stream broker as taskiq-redis ships it does not while no
new message arrives, and the quick start's list broker loses it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import redis

from harness.local import LocalStack
from harness.ports import free_port
from harness.procs import wait_until
from shared.models import Implementation, TaskRecord
from taskiq_app.broker import QUEUE
from tests.integration.conftest import StackFactory, ledger_record, log_lines, wait_for_state
from tests.integration.procfile import every_task_completes_once_after_a_restart, procfile_stack

pytestmark = pytest.mark.slow


def test_the_demo_settings_bring_a_killed_workers_task_back_within_a_minute(
    tmp_path: Path,
) -> None:
    with procfile_stack(Implementation.taskiq, tmp_path) as stack:
        assert set(stack.procs) == {"taskiq-api", "taskiq-worker", "taskiq-scheduler"}
        every_task_completes_once_after_a_restart(stack, Implementation.taskiq)


def kill_mid_notification(stack: LocalStack) -> tuple[str, TaskRecord | None]:
    """POST a notification, SIGKILL the worker while it runs, start a new worker."""
    r = httpx.post(f"{stack.url('taskiq')}/send-notification/k@example.com", timeout=10)
    assert r.status_code == 202, r.text
    notification_id = r.json()["task_ids"][0]

    def running() -> TaskRecord | None:
        record = ledger_record(stack, notification_id)
        return record if record is not None and record.state == "running" else None

    wait_until(running, 30, "the notification to run")
    stack.kill("taskiq-worker")
    stack.start("taskiq-worker")
    return notification_id, ledger_record(stack, notification_id)


@pytest.mark.parametrize("claim_when_idle", [True, False])
def test_the_stream_broker_claims_a_dead_workers_task_only_when_told_to_while_idle(
    make_stack: StackFactory, claim_when_idle: bool
) -> None:
    stack = make_stack(
        notification_delay_seconds=2,
        taskiq_idle_timeout_seconds=3,
        taskiq_read_block_seconds=0.5,
        taskiq_claim_when_idle=claim_when_idle,
    )
    stack.start_all(("redis", "taskiq-api", "taskiq-worker"))
    task_id, _ = kill_mid_notification(stack)

    def succeeded() -> bool:
        record = ledger_record(stack, task_id)
        return record is not None and record.state == "succeeded"

    got = httpx.get(f"{stack.url('taskiq')}/tasks/{task_id}", timeout=10).json()
    assert got["verdict"] in ("awaiting redelivery", "in flight", "completed"), got
    if claim_when_idle:
        wait_until(succeeded, 30, "the claim of the dead worker's task")
        assert len(log_lines(stack, task_id)) == 1
        return
    # taskiq-redis as it ships: three idle timeouts and more, and nothing claims it...
    with pytest.raises(Exception, match="timed out"):
        wait_until(succeeded, 12, "a claim that stock taskiq-redis never makes")
    # ...until a new message arrives: the read that returns it claims the old one too.
    r = httpx.post(f"{stack.url('taskiq')}/items/", json={"name": "x", "price": 1}, timeout=10)
    assert r.status_code == 202
    wait_until(succeeded, 30, "the claim after new traffic")
    assert len(log_lines(stack, task_id)) == 1


def test_the_list_broker_loses_a_killed_workers_task(make_stack: StackFactory) -> None:
    stack = make_stack(notification_delay_seconds=2, taskiq_broker="list")
    stack.start_all(("redis", "taskiq-api", "taskiq-worker"))
    task_id, _ = kill_mid_notification(stack)
    # Popped (BRPOP) and gone: the new worker never sees it.
    r = httpx.post(f"{stack.url('taskiq')}/items/", json={"name": "x", "price": 1}, timeout=10)
    [log_id] = r.json()["task_ids"]
    wait_until(lambda: log_lines(stack, log_id), 30, "a later task to run")
    record = ledger_record(stack, task_id)
    assert record is not None and record.state == "running" and record.attempts == 1
    assert log_lines(stack, task_id) == []

    # The verdict reads the list broker's rule (taskiq_app.delivery): lost, once the
    # killed process's heartbeats have stopped long enough to call it gone.
    def verdict() -> dict[str, str] | None:
        got: dict[str, str] = httpx.get(f"{stack.url('taskiq')}/tasks/{task_id}", timeout=10).json()
        return got if got["verdict"] != "in flight" else None

    got = wait_until(verdict, 30, "the verdict on the killed run")
    assert got["verdict"] == "lost" and "popped" in got["verdict_reason"], got


def test_a_transient_failure_is_retried_through_the_scheduler(make_stack: StackFactory) -> None:
    stack = make_stack(notification_fail_first_attempts=2, retry_backoff_seconds=0.5)
    stack.start_all(("redis", "taskiq-api", "taskiq-worker", "taskiq-scheduler"))
    r = httpx.post(f"{stack.url('taskiq')}/send-notification/r@example.com", timeout=10)
    notification_id = r.json()["task_ids"][0]
    done = wait_for_state(stack, notification_id, {"succeeded", "failed"}, timeout=60)
    assert (done.state, done.attempts, done.retries) == ("succeeded", 3, 2)
    assert len(log_lines(stack, notification_id)) == 1


def test_a_dead_broker_is_a_503_that_names_it_and_queues_nothing(
    make_stack: StackFactory,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(taskiq_broker_url=dead)
    stack.start_all(("redis", "taskiq-api"))  # it starts without its broker
    url = stack.url("taskiq")
    got = httpx.get(f"{url}/ready", timeout=15)
    assert got.status_code == 503 and got.json()["dependency"] == "broker", got.text
    t0 = time.time()
    got = httpx.post(f"{url}/items/", json={"name": "x", "price": 1}, timeout=15)
    assert got.status_code == 503, got.text
    assert got.json() == {
        "detail": "broker unavailable, nothing was queued",
        "dependency": "broker",
    }
    assert "Retry-After" in got.headers
    # The ledger forgot the task it had recorded as queued: nothing will run it.
    assert stack.ledger().records(since=t0) == []


@pytest.mark.parametrize("taskiq_broker", ["stream", "list"])
def test_the_declared_purge_drops_what_waits_and_the_worker_reads_on(
    make_stack: StackFactory, taskiq_broker: str
) -> None:
    # One task at a time, each notification 20 s: while the first runs, the rest wait,
    # and the purge (a process of its own: a second or two, several seconds on a loaded
    # machine, where 6 s let the worker finish a second task first) lands within it.
    stack = make_stack(
        taskiq_broker=taskiq_broker, notification_delay_seconds=20, worker_concurrency=1
    )
    stack.start_all(("redis", "taskiq-api", "taskiq-worker"))
    url = stack.url("taskiq")
    ids = []
    for i in range(3):
        r = httpx.post(f"{url}/send-notification/p{i}@example.com", timeout=10)
        assert r.status_code == 202, r.text
        ids += r.json()["task_ids"]
    wait_for_state(stack, ids[0], {"running"}, timeout=30)
    admin = redis.Redis.from_url(stack.settings.taskiq_url, socket_timeout=5)
    length = admin.xlen if taskiq_broker == "stream" else admin.llen
    assert length(QUEUE) >= len(ids) - 2  # what the worker has not taken

    stack.purge_queue(Implementation.taskiq)  # as the experiments run it

    assert length(QUEUE) == 0
    # A later task runs: the stream's consumer group is still there to read through.
    r = httpx.post(f"{url}/items/", json={"name": "after", "price": 1}, timeout=10)
    [later] = r.json()["task_ids"]
    assert wait_for_state(stack, later, {"succeeded"}, timeout=90).state == "succeeded"
    # The worker takes messages in order, one at a time: what it had taken (the task
    # it ran, and at most the next, which it holds) ran to the end; what waited was
    # dropped, never run, its record still queued.
    ran = [task_id for task_id in ids if log_lines(stack, task_id)]
    assert ran == ids[: len(ran)] and 1 <= len(ran) <= 2, ran
    for task_id in ids[len(ran) :]:
        record = ledger_record(stack, task_id)
        assert record is not None and record.state == "queued", record
