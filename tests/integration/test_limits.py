"""What to copy into production, against real processes: a hung task ends at its
time limit, a task that kills its own process is bounded, and the soft limit
raises inside the task. Each scenario is the crash experiment's own
(``run_scenario``), on Redis and on RabbitMQ's quorum (and classic) queues."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from experiments.crash.outcome import Outcome
from experiments.crash.scenarios import Params
from harness.procs import Timeout, wait_until
from harness.servers import RabbitServer
from harness.stacks import Where
from tests.integration.conftest import StackFactory, ledger_record, run_ok, wait_for_state

pytestmark = pytest.mark.slow

# A one-second notification; a visibility timeout well above the hard limit (the
# notification's length) and the restore scan; a crash loop watched for 12 s.
PARAMS = Params(
    tasks=1, delay=1.0, visibility=4.0, restore_interval=0.5, margin=2.0, loop_window=12.0
)


def run(key: str, broker: str, tmp_path: Path, rabbitmq: RabbitServer) -> Outcome:
    outcome = run_ok(key, PARAMS, Where(workdir=tmp_path, rabbitmq=rabbitmq), broker)
    assert outcome.lost == 0 and outcome.duplicate_effects == 0
    return outcome


def notification(o: Outcome) -> dict[str, object]:
    [task] = [t for t in o.tasks if t["kind"] == "notification"]
    return task


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_hung_task_ends_at_the_hard_time_limit_and_is_not_handed_out_again(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("hung-task-limited", broker, tmp_path, rabbitmq)
    task = notification(o)
    # Killed at the hard limit, recorded by the worker with the reason...
    assert task["verdict"] == "failed" and "TimeLimitExceeded" in str(task["why"])
    # ...acknowledged: handed out once in the whole window (four visibility timeouts).
    assert o.handed_out == 1 and o.most_runs == 1
    assert o.completed == 1  # its log task ran


def test_a_hung_task_without_limits_is_handed_out_again_and_again_on_redis(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("hung-task", "redis", tmp_path, rabbitmq)
    assert notification(o)["verdict"] in ("in flight", "awaiting redelivery")  # never ends
    # Every visibility timeout Redis gives it back, to every free worker process.
    assert o.handed_out is not None and o.handed_out >= 3
    assert o.most_runs == PARAMS.concurrency  # each pool process took it, and hangs


@pytest.mark.parametrize("broker", ["redis", "rabbitmq", "rabbitmq-classic"])
def test_a_task_that_kills_its_process_is_given_up_after_three_deliveries(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("crash-loop-bounded", broker, tmp_path, rabbitmq)
    task = notification(o)
    assert task["verdict"] == "gave up" and o.gave_up == 1
    assert "gave up after 3 deliveries" in str(task["why"])
    # Three runs did the work, and each killed its process...
    outcomes = [run["outcome"] for run in task["runs"]]  # type: ignore[attr-defined]
    assert outcomes[:3] == ["abandoned"] * 3
    if broker == "rabbitmq":
        # ...then RabbitMQ's delivery limit dead-lettered it, and the worker recorded it.
        assert "dead-lettered" in str(task["why"])
        assert o.handed_out == 3 and o.most_runs == 3
    else:
        # ...then the worker's own bound ended the next delivery before the work ran,
        # and any later one (Redis may have restored a copy while the worker noticed the
        # death: its delivery was older than the visibility timeout) the same way.
        assert "CELERY_MAX_DELIVERIES" in str(task["why"])
        assert o.handed_out is not None and o.handed_out >= 4
        assert outcomes[3:] and set(outcomes[3:]) == {"failed"}


def test_without_a_bound_a_task_that_kills_its_process_comes_back_for_ever(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("crash-loop", "redis", tmp_path, rabbitmq)
    assert notification(o)["verdict"] in ("in flight", "awaiting redelivery")
    assert o.gave_up == 0 and o.handed_out is not None and o.handed_out > 4


def test_the_soft_time_limit_raises_inside_the_task_and_it_is_failed_once(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(
        notification_delay_seconds=5.0,
        task_soft_time_limit=1.0,
        task_time_limit=3.0,
        celery_visibility_timeout=4.0,
    )
    stack.start_all(("redis", "celery-api", "worker"))
    r = httpx.post(f"{stack.url('celery')}/send-notification/s@example.com", timeout=10)
    notification_id = r.json()["task_ids"][0]
    record = wait_for_state(stack, notification_id, {"failed", "succeeded"}, timeout=20)
    # Raised inside time.sleep, caught by the task's own handler: recorded as failed...
    assert record.state == "failed" and "SoftTimeLimitExceeded" in (record.error or "")
    assert record.attempts == 1 and record.runs[0].outcome == "failed"
    # ...and acknowledged: no second delivery once the visibility timeout has passed.
    # (A wait for something that must not happen, bounded by that timeout.)
    with pytest.raises(Timeout):
        wait_until(
            lambda: (found := ledger_record(stack, notification_id)) and found.attempts > 1,
            4.0 + 2 * 0.5 + 2,
            "a second delivery",
        )
