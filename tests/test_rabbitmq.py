"""Celery on RabbitMQ beside Celery on Redis: the same scenarios, real brokers, and
the counts that differ between them (and the one that does not: nothing is lost
with ``acks_late`` on either).

One rabbitmq-server for the module (``rabbitmq`` fixture: Debian's, free ports, a
temp dir); each stack gets a virtual host of its own on it. The scenario that
needs a broker of its own (it kills it) starts one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from experiments.crash.runner import Outcome, run_scenario
from experiments.crash.scenarios import BY_KEY, Params
from harness.procs import wait_until
from harness.servers import RabbitServer
from harness.stacks import Where
from tests.conftest import StackFactory, log_lines

pytestmark = pytest.mark.slow

logger = logging.getLogger(__name__)

VISIBILITY = 6.0
PARAMS = Params(tasks=2, delay=2.0, visibility=VISIBILITY, restore_interval=0.5, margin=2.0)


def run(key: str, broker: str, tmp_path: Path, rabbitmq: RabbitServer) -> Outcome:
    where = Where(workdir=tmp_path / broker, rabbitmq=rabbitmq)
    outcome = run_scenario(BY_KEY[key], PARAMS, where, say=logger.info, broker=broker)
    assert outcome.status == "ok", outcome.reason
    assert outcome.broker == broker
    assert outcome.lost == 0 and outcome.duplicate_effects == 0
    return outcome


def rerun_gaps(o: Outcome) -> list[float]:
    """Per redelivered task: its second run's start minus its first run's."""
    return [
        t["runs"][1]["started_at"] - t["runs"][0]["started_at"]
        for t in o.tasks
        if t["executions"] > 1
    ]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_killed_worker_loses_nothing_with_acks_late_on_either_broker(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("worker-kill", broker, tmp_path, rabbitmq)
    assert o.running_at_kill >= 1
    assert o.completed == o.submitted
    redelivered = {t["task_id"] for t in o.tasks if t["executions"] > 1}
    assert redelivered >= set(o.running_ids_at_kill)


def test_the_surviving_worker_takes_the_dead_ones_task_without_a_timeout_on_rabbitmq(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    on_redis = run("worker-kill-two-workers", "redis", tmp_path, rabbitmq)
    on_rabbitmq = run("worker-kill-two-workers", "rabbitmq", tmp_path, rabbitmq)
    for o in (on_redis, on_rabbitmq):
        # The killed worker stayed down: the other one ran the task again.
        assert o.executed_more_than_once == 1 and o.completed == o.submitted
        assert len(o.rerun_by) == 1  # one survivor ran it
    # Redis hands it back only once its delivery is older than the visibility timeout...
    assert min(rerun_gaps(on_redis)) >= VISIBILITY
    # ...RabbitMQ when the dead worker's connection closed: well before that.
    assert on_rabbitmq.redelivered_after is not None
    assert on_rabbitmq.redelivered_after[1] < VISIBILITY / 2
    assert max(rerun_gaps(on_rabbitmq)) < VISIBILITY


def test_a_task_longer_than_the_visibility_timeout_runs_twice_on_redis_once_on_rabbitmq(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    on_redis = run("slow-task", "redis", tmp_path, rabbitmq)
    on_rabbitmq = run("slow-task", "rabbitmq", tmp_path, rabbitmq)
    notifications = PARAMS.tasks
    assert on_redis.executed_more_than_once >= notifications
    assert on_redis.skipped_writes >= notifications  # ...and idempotency wrote once
    assert on_rabbitmq.executed_more_than_once == 0


def test_rabbitmq_keeps_a_durable_queue_of_persistent_messages_across_a_kill(
    make_stack: StackFactory,
) -> None:
    """How the durability is verified: the queue as RabbitMQ reports it, before and
    after a SIGKILL of the broker, and the tasks run once a worker comes."""
    stack = make_stack(broker="rabbitmq", notification_delay_seconds=0.1)
    stack.start_all(("redis", "rabbitmq", "celery-api"))  # no worker: the tasks wait
    assert stack.rabbitmq is not None
    ids = []
    for i in range(3):
        r = httpx.post(f"{stack.celery_url}/send-notification/d{i}@example.com", timeout=10)
        assert r.status_code == 202, r.text
        ids += r.json()["task_ids"]

    def queue() -> dict[str, str]:
        assert stack.rabbitmq is not None
        out = stack.rabbitmq.ctl("list_queues", "name", "durable", "messages_persistent", "-q")
        rows = [line.split("\t") for line in out.splitlines() if line.startswith("celery\t")]
        assert rows, out
        return {"durable": rows[0][1], "persistent": rows[0][2]}

    assert queue() == {"durable": "true", "persistent": str(len(ids))}
    stack.kill("rabbitmq")
    stack.start("rabbitmq")
    assert queue() == {"durable": "true", "persistent": str(len(ids))}
    stack.start("worker")

    def all_done() -> bool:
        return all(len(log_lines(stack, task_id)) == 1 for task_id in ids)

    wait_until(all_done, 60, "every task to run once the worker came")


def test_a_retry_countdown_longer_than_the_visibility_timeout_runs_twice_on_redis_only(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    on_redis = run("long-countdown", "redis", tmp_path, rabbitmq)
    on_rabbitmq = run("long-countdown", "rabbitmq", tmp_path, rabbitmq)
    for o in (on_redis, on_rabbitmq):
        assert o.retried == 1 and o.completed == o.submitted
    # The retry's message waits for its ETA unacknowledged: Redis hands it out again.
    assert on_redis.executed_more_than_once == 1 and on_redis.skipped_writes >= 1
    assert on_rabbitmq.executed_more_than_once == 0


def test_a_task_longer_than_consumer_timeout_stops_the_worker_and_runs_again(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("consumer-timeout", "rabbitmq", tmp_path, rabbitmq)
    # The worker exited on RabbitMQ's channel error and was started again...
    assert o.stopped_after is not None and o.restarted_after is not None
    # ...and the task, its ack refused, ran a second time and wrote once.
    assert o.executed_more_than_once == 1 and o.skipped_writes == 1
