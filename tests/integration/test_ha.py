"""When the broker's machine is lost, against real processes: a worker cut off its
broker (a frozen proxy: its connections stay open, nothing crosses), the
Sentinel group's primary killed for good, the queue leader of a three-node
RabbitMQ cluster killed for good. Each is the crash experiment's own scenario
(``run_scenario``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.crash.outcome import Outcome
from experiments.crash.scenarios import Params
from harness.servers import RabbitServer
from harness.stacks import Where
from tests.integration.conftest import run_ok

pytestmark = pytest.mark.slow

# A two-second notification; the horizons short (Redis's visibility timeout and
# RabbitMQ's heartbeat, three seconds each), so that a long cut is nine seconds.
PARAMS = Params(
    tasks=3,
    delay=2.0,
    visibility=3.5,
    restore_interval=0.5,
    margin=2.0,
    heartbeat=3.0,
    rate=6.0,
    steady=4.0,
)


def run(key: str, broker: str, tmp_path: Path, rabbitmq: RabbitServer | None = None) -> Outcome:
    o = run_ok(key, PARAMS, Where(workdir=tmp_path, rabbitmq=rabbitmq), broker)
    assert o.duplicate_effects == 0  # whatever ran twice wrote once
    return o


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_worker_cut_off_past_the_horizon_has_its_task_redelivered_and_written_once(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("partition-long", broker, tmp_path, rabbitmq)
    assert o.running_at_kill >= 1 and o.lost == 0 and o.completed == o.submitted
    # The other worker took what the cut one held: delivered again, written once.
    redelivered = {t["task_id"] for t in o.tasks if t["executions"] > 1}
    assert redelivered >= set(o.running_ids_at_kill)
    assert o.consumed_again_after is not None  # the cut worker takes tasks again


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_cut_shorter_than_the_horizon_loses_nothing_and_the_worker_goes_on(
    broker: str, tmp_path: Path, rabbitmq: RabbitServer
) -> None:
    o = run("partition-short", broker, tmp_path, rabbitmq)
    assert o.running_at_kill >= 1 and o.lost == 0 and o.completed == o.submitted
    assert o.consumed_again_after is not None


def test_sentinel_promotes_the_replica_and_the_api_and_a_worker_recover(tmp_path: Path) -> None:
    o = run("sentinel-failover", "sentinel", tmp_path)
    assert o.killed == "broker-primary" and o.promoted_after is not None
    assert o.publishing_again_after is not None  # the API, through the new primary
    assert o.consumed_again_after is not None  # a worker, from it
    # Every task reached a final verdict (a worker that never consumed again would
    # leave some in flight): the reading says which and why.
    assert o.completed + o.lost == o.submitted and o.completed > 0, (o.settle, o.summary)


def test_the_rabbitmq_cluster_loses_nothing_when_the_queue_leader_dies(tmp_path: Path) -> None:
    o = run("cluster-leader-kill", "rabbitmq-cluster", tmp_path)
    assert o.killed is not None and o.killed.startswith("rabbitmq-")
    assert o.promoted_after is not None
    assert o.publishing_again_after is not None and o.consumed_again_after is not None
    # Confirmed publishes are on a majority: nothing the API accepted is lost.
    assert o.lost == 0 and o.completed == o.submitted, (o.settle, o.summary)
