"""Celery on RabbitMQ beside Celery on Redis: the same scenarios, real brokers, and
the counts that differ between them (and the one that does not: nothing is lost
with ``acks_late`` on either).

One rabbitmq-server for the run (``rabbitmq`` fixture: Debian's, free ports, a
temp dir); each stack gets a virtual host of its own on it. The tests that need a
broker of their own (one kills it, one raises its memory alarm) start one.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from experiments.crash.outcome import Outcome
from experiments.crash.scenarios import Params
from harness.procs import wait_until
from harness.servers import RabbitServer
from harness.stacks import Where
from shared.models import Implementation
from tests.integration.conftest import StackFactory, log_lines, run_ok

pytestmark = pytest.mark.slow

VISIBILITY = 6.0
PARAMS = Params(tasks=2, delay=2.0, visibility=VISIBILITY, restore_interval=0.5, margin=2.0)


def run(key: str, broker: str, tmp_path: Path, rabbitmq: RabbitServer) -> Outcome:
    where = Where(workdir=tmp_path / broker, rabbitmq=rabbitmq)
    outcome = run_ok(key, PARAMS, where, broker)
    assert outcome.broker == broker
    assert outcome.lost == 0 and outcome.duplicate_effects == 0
    return outcome


def on_broker(key: str, broker: str, tmp_path: Path, rabbitmq: RabbitServer) -> Outcome:
    """The scenario on one broker (each test runs on both, side by side): ``run``'s
    checks and every task completed."""
    o = run(key, broker, tmp_path, rabbitmq)
    assert o.completed == o.submitted
    return o


BROKERS = pytest.mark.parametrize("broker", ["redis", "rabbitmq"])


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


@BROKERS
def test_the_surviving_worker_takes_the_dead_ones_task_without_a_timeout_on_rabbitmq(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = on_broker("worker-kill-two-workers", broker, tmp_path, rabbitmq)
    # The killed worker stayed down: the other one ran the task again.
    assert o.executed_more_than_once == 1
    assert len(o.rerun_by) == 1  # one survivor ran it
    if broker == "redis":
        # Redis hands it back only once its delivery is older than the visibility timeout...
        assert min(rerun_gaps(o)) >= VISIBILITY
    else:
        # ...RabbitMQ when the dead worker's connection closed: well before that.
        assert o.redelivered_after is not None
        assert o.redelivered_after[1] < VISIBILITY / 2
        assert max(rerun_gaps(o)) < VISIBILITY


@BROKERS
def test_a_task_longer_than_the_visibility_timeout_runs_twice_on_redis_once_on_rabbitmq(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = on_broker("slow-task", broker, tmp_path, rabbitmq)
    notifications = PARAMS.tasks
    if broker == "redis":
        assert o.executed_more_than_once >= notifications
        assert o.skipped_writes >= notifications  # ...and idempotency wrote once
    else:
        assert o.executed_more_than_once == 0


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_rabbitmq_keeps_a_durable_queue_of_persistent_messages_across_a_kill(
    make_stack: StackFactory, queue_type: str
) -> None:
    """How the durability is verified: the queue as RabbitMQ reports it, before and
    after a SIGKILL of the broker, and the tasks run once a worker comes. A classic
    queue is durable and its messages persistent; a quorum queue keeps every message
    on disk (in its Raft log) by its nature."""
    stack = make_stack(
        broker="rabbitmq", notification_delay_seconds=0.1, celery_queue_type=queue_type
    )
    stack.start_all(("redis", "rabbitmq", "celery-api"))  # no worker: the tasks wait
    assert stack.rabbitmq is not None
    ids = []
    for i in range(3):
        r = httpx.post(f"{stack.url('celery')}/send-notification/d{i}@example.com", timeout=10)
        assert r.status_code == 202, r.text
        ids += r.json()["task_ids"]

    def queue() -> dict[str, str]:
        assert stack.rabbitmq is not None
        columns = ("name", "type", "durable", "messages", "messages_persistent")
        out = stack.rabbitmq.ctl("list_queues", *columns, "-q")
        rows = [line.split("\t") for line in out.splitlines() if line.startswith("celery\t")]
        assert rows, out
        found = dict(zip(columns, rows[0], strict=True))
        if queue_type == "quorum":
            return {"type": found["type"], "durable": found["durable"], "kept": found["messages"]}
        return {
            "type": found["type"],
            "durable": found["durable"],
            "kept": found["messages_persistent"],
        }

    kept = {"type": queue_type, "durable": "true", "kept": str(len(ids))}
    # A quorum queue's counts are refreshed on its tick, a moment behind.
    wait_until(lambda: queue() == kept, 15, f"the queue to hold {len(ids)} messages")
    stack.kill("rabbitmq")
    stack.start("rabbitmq")
    wait_until(lambda: queue() == kept, 15, f"the queue to hold {len(ids)} messages again")
    stack.start("worker")

    def all_done() -> bool:
        return all(len(log_lines(stack, task_id)) == 1 for task_id in ids)

    wait_until(all_done, 60, "every task to run once the worker came")


@BROKERS
def test_a_retry_countdown_longer_than_the_visibility_timeout_runs_twice_on_redis_only(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = on_broker("long-countdown", broker, tmp_path, rabbitmq)
    assert o.retried == 1
    if broker == "redis":
        # The retry's message waits for its ETA unacknowledged: Redis hands it out again.
        assert o.executed_more_than_once == 1 and o.skipped_writes >= 1
    else:
        assert o.executed_more_than_once == 0


def test_a_task_longer_than_consumer_timeout_stops_the_worker_and_runs_again(
    tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("consumer-timeout", "rabbitmq", tmp_path, rabbitmq)
    # The worker exited on RabbitMQ's channel error and was started again...
    assert o.stopped_after is not None and o.restarted_after is not None
    # ...and the task, its ack refused, ran a second time and wrote once.
    assert o.executed_more_than_once == 1 and o.skipped_writes == 1


def test_a_message_rabbitmq_refuses_is_a_503_that_says_what_was_queued(
    make_stack: StackFactory, rabbitmq: RabbitServer
) -> None:
    """Publisher confirms: RabbitMQ's nack reaches the request as a 503 at once (not
    a hang, not a 500); the ledger keeps the tasks that were sent, and only those."""
    # A classic queue: a quorum queue takes one message past its max-length before
    # it refuses any (RabbitMQ's documented overshoot), so it would not refuse here.
    stack = make_stack(broker="rabbitmq", rabbitmq=rabbitmq, celery_queue_type="classic")
    stack.start_all(("redis", "celery-api"))  # no worker: the queue only fills
    vhost = unquote(urlsplit(stack.settings.celery_broker_url).path[1:])
    # A queue that holds one message and refuses the next: basic.nack.
    refuse = '{"max-length": 1, "overflow": "reject-publish"}'
    rabbitmq.ctl("set_policy", "-p", vhost, "--apply-to", "queues", "refuse", "^celery$", refuse)
    url = f"{stack.url('celery')}/send-notification/n@example.com"

    def tasks_since(t: float) -> set[str]:
        records = stack.ledger().records(implementation=Implementation.celery, since=t)
        return {rec.task_id for rec in records}

    # The notification fits, its log task does not: the 503 says which is which.
    t0 = time.time()
    r = httpx.post(url, timeout=30)
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    [queued] = tasks_since(t0)  # the refused one is forgotten, the sent one kept
    said = re.fullmatch(r"broker unavailable, (\S+) queued; (\S+) not", detail)
    assert said and said[1] == queued and said[2] != queued, detail
    assert "MessageNacked" in stack.output("celery-api")  # the broker's reason: in the log
    # The queue full: nothing of the next request goes in, and nothing is kept.
    t1 = time.time()
    r = httpx.post(url, timeout=30)
    assert r.status_code == 503 and "nothing was queued" in r.json()["detail"], r.text
    assert tasks_since(t1) == set()

    # The broker takes messages again: so does the API, without a restart.
    rabbitmq.ctl("clear_policy", "-p", vhost, "refuse")
    t2 = time.time()
    r = httpx.post(url, timeout=30)
    assert r.status_code == 202, r.text
    assert tasks_since(t2) == set(r.json()["task_ids"])


def test_a_broker_that_blocks_publishers_is_a_quick_503_not_a_hang(
    make_stack: StackFactory,
) -> None:
    """RabbitMQ's memory alarm blocks every publishing connection: the publish then
    waits for a confirm that does not come. The API waits ``REDIS_SOCKET_TIMEOUT``
    for it (its ``confirm_timeout``), then answers 503. (A RabbitMQ of its own: the
    alarm blocks every virtual host of the node.)"""
    stack = make_stack(broker="rabbitmq", redis_socket_timeout=1.0)
    stack.start_all(("redis", "rabbitmq", "celery-api"))
    rabbitmq = stack.rabbitmq
    assert rabbitmq is not None
    url = f"{stack.url('celery')}/send-notification/b@example.com"
    assert httpx.post(url, timeout=30).status_code == 202  # connected, queue declared
    rabbitmq.ctl("set_vm_memory_high_watermark", "0")  # the alarm goes off at once
    try:
        started = time.monotonic()
        r = httpx.post(url, timeout=30)
        elapsed = time.monotonic() - started
        assert r.status_code == 503, r.text
        # Blocked, it may yet take what it did not confirm: the 503 says so.
        assert "did not confirm it in time" in r.json()["detail"], r.text
        assert elapsed < 10, f"503 after {elapsed:.1f}s"
    finally:
        rabbitmq.ctl("set_vm_memory_high_watermark", "0.4")  # RabbitMQ's default
    # The alarm cleared: the API publishes again, without a restart.
    wait_until(lambda: httpx.post(url, timeout=30).status_code == 202, 30, "a 202 after the alarm")


def test_a_broker_that_never_answered_the_api_queued_nothing(make_stack: StackFactory) -> None:
    """A paused broker (SIGSTOP: it accepts the TCP connection and says nothing).
    The API's first connection to it times out in the AMQP handshake, so no message
    was written: the 503 says nothing was queued and the ledger keeps nothing (a
    timeout there is not the unconfirmed publish above, which may be queued)."""
    stack = make_stack(broker="rabbitmq", redis_socket_timeout=1.0)
    stack.start_all(("redis", "rabbitmq", "celery-api"))  # the API has not connected yet
    url = f"{stack.url('celery')}/send-notification/p@example.com"
    broker = stack.procs["rabbitmq"]
    t0 = time.time()
    broker.send(signal.SIGSTOP, group=True)
    try:
        r = httpx.post(url, timeout=60)
        assert r.status_code == 503, r.text
        assert "nothing was queued" in r.json()["detail"], r.text
        records = stack.ledger().records(implementation=Implementation.celery, since=t0)
        assert records == []
    finally:
        broker.send(signal.SIGCONT, group=True)
    # Answering again: the API publishes, without a restart.
    wait_until(lambda: httpx.post(url, timeout=30).status_code == 202, 60, "a 202 after SIGCONT")
