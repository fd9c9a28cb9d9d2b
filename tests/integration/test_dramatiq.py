"""dramatiq's own claims, against real processes: a SIGKILLed worker's task comes back
(RabbitMQ: when its connection closes; Redis: after the heartbeat timeout, at a
maintenance pass), the retries are bounded and end in the dead-letter queue, a task
that kills its process every time is dead-lettered after the bound, and the
Procfile's lines with .env.example's values bring a killed worker's task back."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis

from dramatiq_app.broker import NAMESPACE, QUEUE
from harness.local import LocalStack
from harness.ports import free_port
from harness.procs import REPO_ROOT, wait_until
from harness.servers import RabbitServer
from shared.models import Implementation
from tests.integration.conftest import StackFactory, ledger_record, log_lines, wait_for_state
from tests.integration.procfile import every_task_completes_once_after_a_restart, procfile_stack

pytestmark = pytest.mark.slow
logger = logging.getLogger(__name__)

SERVICES = ("redis", "dramatiq-api", "dramatiq-worker")


def kill_mid_notification(stack: LocalStack) -> tuple[str, float]:
    """POST a notification, SIGKILL the worker's process group while it runs, start
    a new worker; the notification's id and when the kill happened."""
    r = httpx.post(f"{stack.url('dramatiq')}/send-notification/k@example.com", timeout=10)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_ids"][0]
    wait_for_state(stack, task_id, {"running"}, timeout=30)
    killed_at = time.time()
    stack.kill("dramatiq-worker")
    stack.start("dramatiq-worker")
    return task_id, killed_at


def second_run_after(stack: LocalStack, task_id: str, killed_at: float) -> float:
    """The run after the kill, to the end: how long after the kill it started."""
    done = wait_for_state(stack, task_id, {"succeeded"}, timeout=60)
    assert done.attempts == 2, done  # the killed run, and one
    assert len(log_lines(stack, task_id)) == 1  # written once
    started = done.runs[-1].started_at
    assert started is not None
    logger.info("the killed task ran again %.1f s after the kill", started - killed_at)
    return started - killed_at


def test_rabbitmq_requeues_a_killed_workers_task_when_its_connection_closes(
    make_stack: StackFactory, rabbitmq: RabbitServer
) -> None:
    # A heartbeat timeout far beyond the test: only RabbitMQ can bring it back.
    stack = make_stack(
        broker="rabbitmq",
        rabbitmq=rabbitmq,
        notification_delay_seconds=2,
        dramatiq_heartbeat_timeout_seconds=600,
    )
    assert stack.settings.dramatiq_broker_url.startswith("amqp://")
    stack.start_all(SERVICES)
    task_id, killed_at = kill_mid_notification(stack)
    # At the connection's close: the restarted worker's first fetch (its boot, seconds).
    # At the connection's close: the restarted worker's first fetch (its boot, seconds;
    # 14 s on a loaded 2-core machine), far from the 600 s heartbeat timeout.
    assert second_run_after(stack, task_id, killed_at) < 90


def test_redis_brings_a_killed_workers_task_back_after_the_heartbeat_timeout(
    make_stack: StackFactory,
) -> None:
    heartbeat = 4.0
    stack = make_stack(
        notification_delay_seconds=2,
        dramatiq_heartbeat_timeout_seconds=heartbeat,
        dramatiq_maintenance_chance=1_000_000,
    )
    stack.start_all(SERVICES)
    task_id, killed_at = kill_mid_notification(stack)
    # Not before the dead process's heartbeat is that old (its last command: at most a
    # second before the kill), and soon after it (a poll a second runs maintenance).
    after = second_run_after(stack, task_id, killed_at)
    assert heartbeat - 1.5 <= after <= heartbeat + 20, after


def test_a_task_longer_than_the_heartbeat_timeout_runs_once(make_stack: StackFactory) -> None:
    """A busy worker still speaks (its delay-queue consumer polls every second), so the
    heartbeat timeout is no visibility timeout: a slow task is not handed out again."""
    stack = make_stack(
        notification_delay_seconds=7,
        worker_concurrency=1,
        dramatiq_heartbeat_timeout_seconds=3,
        dramatiq_maintenance_chance=1_000_000,
    )
    stack.start_all(SERVICES)
    r = httpx.post(f"{stack.url('dramatiq')}/send-notification/slow@example.com", timeout=10)
    task_id = r.json()["task_ids"][0]
    done = wait_for_state(stack, task_id, {"succeeded"}, timeout=60)
    assert done.attempts == 1, done


def test_retries_are_bounded_and_end_in_the_dead_letter_queue(make_stack: StackFactory) -> None:
    stack = make_stack(
        notification_fail_first_attempts=99, notification_max_retries=2, retry_backoff_seconds=0.2
    )
    stack.start_all(SERVICES)
    r = httpx.post(f"{stack.url('dramatiq')}/send-notification/r@example.com", timeout=10)
    task_id = r.json()["task_ids"][0]
    done = wait_for_state(stack, task_id, {"failed"}, timeout=60)
    assert (done.attempts, done.retries) == (3, 2), done
    assert "retries exhausted" in (done.error or "")
    # dramatiq nacks a message that failed for good: its dead-letter queue holds it.
    admin = redis.Redis.from_url(stack.settings.dramatiq_url, socket_timeout=5)

    def dead_lettered() -> bool:
        return int(admin.zcard(f"{NAMESPACE}:{QUEUE}.XQ")) == 1

    wait_until(dead_lettered, 15, "the failed message in the dead-letter queue")


def test_a_transient_failure_is_retried_until_it_succeeds(make_stack: StackFactory) -> None:
    stack = make_stack(notification_fail_first_attempts=2, retry_backoff_seconds=0.2)
    stack.start_all(SERVICES)
    r = httpx.post(f"{stack.url('dramatiq')}/send-notification/s@example.com", timeout=10)
    task_id = r.json()["task_ids"][0]
    done = wait_for_state(stack, task_id, {"succeeded", "failed"}, timeout=60)
    assert (done.state, done.attempts, done.retries) == ("succeeded", 3, 2)
    assert len(log_lines(stack, task_id)) == 1


def test_a_task_that_kills_its_process_is_dead_lettered_after_the_bound(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(
        notification_crash_first_attempts=99,
        dramatiq_max_deliveries=1,
        dramatiq_heartbeat_timeout_seconds=3,
        dramatiq_maintenance_chance=1_000_000,
        # One thread: only the notification starts before its process dies. With two,
        # its log task may start beside it on a loaded machine, die with it, and be
        # dead-lettered by the same bound (one death is past a bound of one).
        worker_concurrency=1,
    )
    stack.start_all(SERVICES)
    r = httpx.post(f"{stack.url('dramatiq')}/send-notification/c@example.com", timeout=10)
    task_id, log_id = r.json()["task_ids"]
    # Its first run kills the worker's process, and with it the command.
    wait_until(lambda: not stack.is_up("dramatiq-worker"), 30, "the worker to die")
    stack.start("dramatiq-worker")
    done = wait_for_state(stack, task_id, {"failed"}, timeout=60)
    assert done.detail.get("fate") == "dead-lettered", done
    assert "dramatiq_app.dead_letters requeue" in done.detail["parked"]
    got = httpx.get(f"{stack.url('dramatiq')}/tasks/{task_id}", timeout=10).json()
    assert got["verdict"] == "dead-lettered", got
    admin = redis.Redis.from_url(stack.settings.dramatiq_url, socket_timeout=5)
    wait_until(
        lambda: admin.zcard(f"{NAMESPACE}:{QUEUE}.XQ") == 1, 60, "the dead letter in its queue"
    )
    # The log task, which its process never started, comes back and runs.
    assert wait_for_state(stack, log_id, {"succeeded"}, timeout=60).state == "succeeded"
    # The command the ledger names puts it back on its queue (the worker stopped first:
    # the task would kill it again).
    stack.terminate("dramatiq-worker")
    argv = [sys.executable, "-m", "dramatiq_app.dead_letters", "requeue", task_id]
    env = stack.process_env("dramatiq-worker")
    subprocess.run(argv, env=env, cwd=REPO_ROOT, check=True, timeout=60, capture_output=True)
    assert admin.zcard(f"{NAMESPACE}:{QUEUE}.XQ") == 0
    assert admin.llen(f"{NAMESPACE}:{QUEUE}") == 1


def test_a_dead_broker_is_a_503_that_names_it_and_queues_nothing(
    make_stack: StackFactory,
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    stack = make_stack(dramatiq_broker_url=dead)
    stack.start_all(("redis", "dramatiq-api"))  # it starts without its broker
    url = stack.url("dramatiq")
    got = httpx.get(f"{url}/ready", timeout=15)
    assert got.status_code == 503 and got.json()["dependency"] == "broker", got.text
    t0 = time.time()
    got = httpx.post(f"{url}/items/", json={"name": "x", "price": 1}, timeout=15)
    assert got.status_code == 503, got.text
    assert time.time() - t0 < 5
    assert got.json() == {
        "detail": "broker unavailable, nothing was queued",
        "dependency": "broker",
    }
    assert stack.ledger().records(since=t0) == []


def test_the_demo_settings_bring_a_killed_workers_task_back_within_a_minute(
    tmp_path: Path,
) -> None:
    with procfile_stack(Implementation.dramatiq, tmp_path) as stack:
        assert set(stack.procs) == {"dramatiq-api", "dramatiq-worker", "dramatiq-scheduler"}
        every_task_completes_once_after_a_restart(stack, Implementation.dramatiq)


def test_the_declared_purge_drops_what_waits(make_stack: StackFactory) -> None:
    stack = make_stack(notification_delay_seconds=6, worker_concurrency=1)
    stack.start_all(SERVICES)
    url = stack.url("dramatiq")
    ids = []
    for i in range(4):
        r = httpx.post(f"{url}/send-notification/p{i}@example.com", timeout=10)
        ids += r.json()["task_ids"]
    wait_for_state(stack, ids[0], {"running"}, timeout=30)
    stack.purge_queue(Implementation.dramatiq)  # as the experiments run it
    admin = redis.Redis.from_url(stack.settings.dramatiq_url, socket_timeout=5)
    assert admin.llen(f"{NAMESPACE}:{QUEUE}") == 0
    r = httpx.post(f"{url}/items/", json={"name": "after", "price": 1}, timeout=10)
    [later] = r.json()["task_ids"]
    assert wait_for_state(stack, later, {"succeeded"}, timeout=30).state == "succeeded"
    # What the worker had fetched (one thread, prefetch two) ran; what waited did not.
    never = [
        task_id
        for task_id in ids
        if (rec := ledger_record(stack, task_id)) and rec.state == "queued"
    ]
    assert never, [ledger_record(stack, t) for t in ids]
