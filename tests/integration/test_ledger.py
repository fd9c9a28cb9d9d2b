"""The ledger under a real double delivery: a task longer than Redis's visibility
timeout is handed out again while its first run still goes. The first run's
success must not mark the task succeeded while the second is still running, and
every run keeps its own start."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import httpx
import pytest

from harness.ports import free_port
from harness.procs import Proc, group_members, wait_until
from harness.servers import RedisServer
from shared.models import RunnerRecord, TaskRecord
from tests.integration.conftest import StackFactory, ledger_record, log_lines

pytestmark = pytest.mark.slow


@pytest.mark.serial
def test_a_task_is_succeeded_only_when_no_run_of_it_is_still_going(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(
        notification_delay_seconds=1.5,
        celery_visibility_timeout=0.6,
        celery_restore_interval=0.2,
        runner_heartbeat_seconds=0.2,
    )
    stack.start_all(("redis", "celery-api", "worker"))
    r = httpx.post(f"{stack.url('celery')}/send-notification/twice@example.com", timeout=10)
    assert r.status_code == 202, r.text
    task_id = r.json()["task_ids"][0]

    # Watch closely: every snapshot where one run had ended and another had not.
    overlaps: list[TaskRecord] = []

    def done() -> TaskRecord | None:
        record = ledger_record(stack, task_id)
        if record is None:
            return None
        ended = [run for run in record.runs if run.ended_at is not None]
        going = [run for run in record.runs if run.ended_at is None]
        if ended and going:
            overlaps.append(record)
        return record if record.state == "succeeded" else None

    final = wait_until(done, 30, "the task to succeed", interval=0.02)
    skip = rf" INFO shared\.work: task {task_id}: (notification to \S+|log line) already"
    # A later run finds the line written, skips it and says so.
    wait_until(lambda: re.search(skip, stack.output("worker")), 10, "a later run's skip")
    final = ledger_record(stack, task_id) or final

    # It was delivered again while the first run still ran...
    assert len(final.runs) >= 2
    assert all(run.started_at is not None for run in final.runs)
    first, second = final.runs[0], final.runs[1]
    assert second.started_at is not None and first.ended_at is not None
    assert second.started_at < first.ended_at  # the second began before the first ended
    # ...and while a run was still going after another had ended, the task was not
    # called succeeded: the ledger counted the run still in flight.
    assert overlaps, "no snapshot caught the two runs overlapping"
    assert all(o.state == "running" and o.running_count >= 1 for o in overlaps)
    assert final.state == "succeeded" and final.running_count == 0
    # However often it ran, it wrote once; the worker says so, in the shared log format.
    assert len(log_lines(stack, task_id)) == 1
    assert re.search(skip, stack.output("worker"))


def test_a_celery_pool_process_is_heard_of_only_once_its_worker_consumes(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    # Its pool is forked before its consumer reaches the broker. Heard of from the
    # fork, a pool process counted as free while no task could reach it, and the
    # verdict called a task RabbitMQ had requeued lost (the compose smoke, once).
    broker = RedisServer(free_port(), tmp_path)
    stack = make_stack(celery_broker_url=broker.url, runner_heartbeat_seconds=0.2)
    stack.start("redis")
    starting = threading.Thread(target=stack.start, args=("worker", 120), daemon=True)
    starting.start()
    wait_until(lambda: "worker" in stack.procs and stack.procs["worker"].pid, 30, "the worker")
    main = stack.procs["worker"].pid
    assert main is not None
    # Its two pool processes, forked while the broker does not answer.
    wait_until(lambda: len(group_members(main)) >= 3, 60, "the worker's pool", 0.1)
    time.sleep(2)  # ten heartbeat intervals
    assert [r.runner for r in stack.ledger().runners()] == []

    server = Proc("broker", broker.argv(), {}, tmp_path / "broker.out")
    try:
        server.start()
        broker.wait_ready(server, 30)
        consuming = time.time()
        starting.join(130)
        assert not starting.is_alive()

        def both() -> list[RunnerRecord] | None:
            found = stack.ledger().runners()
            return found if len(found) == 2 else None

        found = wait_until(both, 30, "two pool processes", 0.1)
        assert all(r.started_at >= consuming - 1 for r in found), found
    finally:
        server.stop()
