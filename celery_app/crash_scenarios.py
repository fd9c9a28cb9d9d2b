"""Celery's rows of the crash table (``ImplementationSpec.scenarios``)."""

from __future__ import annotations

from experiments.crash.scenario import (
    NOTHING,
    Fault,
    Params,
    Scenario,
    Shape,
    Watch,
    graceful_stop_timeout,
    hang_window,
    loop_window,
)
from shared.services import Implementation

# The limits and bounds a scenario sets off: the hazard as stock Celery has it.
NO_LIMITS = {"task_soft_time_limit": 0, "task_time_limit": 0}
NO_BOUND = {"celery_max_deliveries": 0, "celery_delivery_limit": 0}
# A bound of 3 deliveries: the project's own on Redis, the broker's on a quorum queue.
BOUND = {"celery_max_deliveries": 3, "celery_delivery_limit": 2}


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="celery-api-kill",
        column="api-kill",
        title="celery-api SIGKILL",
        implementation=Implementation.celery,
        fault=Fault("kill", "celery-api"),
        expected="nothing lost: the tasks were already in the broker and the worker runs them",
    ),
    Scenario(
        key="worker-kill",
        column="worker-kill",
        title="worker SIGKILL (acks_late)",
        implementation=Implementation.celery,
        fault=Fault("kill", "worker"),
        expected="nothing lost: the unacked tasks come back (Redis: after the visibility "
        "timeout; RabbitMQ: when the worker's connection closes) and run again, writing once",
    ),
    Scenario(
        key="worker-kill-two-workers",
        title="one of two workers SIGKILL (acks_late)",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "worker",
            restart=False,
            kill_its_worker=True,
        ),
        expected="nothing lost: the surviving worker takes the dead one's task (RabbitMQ: at "
        "once; Redis: once the visibility timeout has passed)",
        # One notification: one worker runs it, the other is free to take it over.
        requests=1,
        stack=Shape(workers=2),
    ),
    Scenario(
        key="worker-kill-stock-acks",
        column="worker-kill-stock",
        title="worker SIGKILL (stock acks)",
        implementation=Implementation.celery,
        fault=Fault("kill", "worker"),
        expected="the running tasks are lost: stock Celery acks a task as it starts",
        settings=lambda p: {"celery_acks_late": False},
    ),
    Scenario(
        key="worker-term",
        title="worker SIGTERM (warm shutdown)",
        implementation=Implementation.celery,
        fault=Fault(
            "terminate",
            "worker",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: running tasks finish, queued ones wait in the broker for the "
        "restart",
    ),
    Scenario(
        key="broker-restart",
        title="broker SIGKILL + restart (Redis: AOF on)",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "broker",
            wait_for_fsync=True,
        ),
        expected="nothing lost: Redis replays the queue (and the ledger) from its append-only "
        "file; RabbitMQ keeps its durable queue's persistent messages",
        stack=Shape(appendonly=True),
    ),
    Scenario(
        key="redis-restart-no-aof",
        title="redis SIGKILL + restart, no persistence",
        implementation=Implementation.celery,
        fault=Fault(
            "kill",
            "redis",
            wait_for_fsync=True,
        ),
        expected="everything not yet finished is lost, and the ledger forgets it too",
        brokers=("redis",),
        stack=Shape(appendonly=False),
    ),
    Scenario(
        key="slow-task",
        column="runs-twice",
        title="no crash, task longer than visibility timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="nothing lost; Redis hands every notification out again while it runs (it "
        "runs twice, idempotency writes it once); RabbitMQ has no such timeout: it runs once",
        settings=lambda p: {"celery_visibility_timeout": p.delay / 2},
    ),
    Scenario(
        key="long-countdown",
        title="no crash, retry countdown longer than visibility timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="nothing lost; Redis gives the retry's unacknowledged message (held until its "
        "ETA) back after the visibility timeout: it runs twice; RabbitMQ: once",
        settings=lambda p: {
            "notification_fail_first_attempts": 1,
            "retry_jitter": False,
            "retry_backoff_seconds": p.visibility * 2,
            "retry_backoff_max_seconds": p.visibility * 2,
        },
        requests=1,
    ),
    Scenario(
        key="consumer-timeout",
        title="no crash, task longer than RabbitMQ's consumer_timeout",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="RabbitMQ closes the channel of a consumer that holds a delivery past "
        "consumer_timeout and requeues it; Celery's worker stops on that error, and the task "
        "(its ack refused) runs again on the next worker: twice, writing once",
        brokers=("rabbitmq", "rabbitmq-classic"),
        requests=1,
        stack=Shape(
            # A quarter of the task: RabbitMQ checks it once a second (the harness sets
            # channel_tick_interval to 1 s; its default, 60 s, would hide it).
            consumer_timeout_ms=lambda p: int(p.delay * 1000 / 4),
        ),
        watch=Watch(revive_worker=True),
    ),
)
SCENARIOS += (
    Scenario(
        key="hung-task",
        title="no crash, a task that hangs, no time limits",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="it never ends; Redis hands it out again every visibility timeout while it "
        "hangs, to every free worker process; RabbitMQ hands it out once (until "
        "consumer_timeout)",
        settings=lambda p: {**NO_LIMITS, "notification_hang_first_attempts": 99},
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="hung-task-limited",
        title="no crash, a task that hangs, with time limits",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="the hard time limit kills its pool process; the worker records it as failed "
        "and acknowledges it: handed out once, not again",
        settings=lambda p: {
            "notification_hang_first_attempts": 99,
            "task_soft_time_limit": p.delay / 2,
            "task_time_limit": p.delay,
        },
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="crash-loop",
        title="a task that kills its process every time, no bound",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="requeued at every death (acks_late, reject_on_worker_lost) and handed out "
        "again at once, for ever: neither lost nor done",
        settings=lambda p: {**NO_BOUND, "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="crash-loop-bounded",
        title="a task that kills its process every time, bounded",
        implementation=Implementation.celery,
        fault=NOTHING,
        expected="after 3 deliveries it is not run again: Redis, the worker's own bound "
        "(CELERY_MAX_DELIVERIES) fails it; a quorum queue's delivery limit dead-letters it, "
        "and the worker records it: gave up",
        settings=lambda p: {**BOUND, "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(
            window=loop_window,
            ends_with="gave up",
        ),
    ),
)


def horizon(p: Params, broker: str) -> float:
    """How long a silent worker goes unnoticed: Redis's visibility timeout (its unacked
    task is then handed out again); RabbitMQ's heartbeat (the connection is then dead)."""
    return p.visibility if broker == "redis" else p.heartbeat


SCENARIOS += (
    Scenario(
        key="partition-short",
        title="one of two workers cut off its broker, shorter than the horizon",
        implementation=Implementation.celery,
        fault=Fault(
            "partition",
            "worker-2",
            cut=lambda p, broker: horizon(p, broker) / 2,
        ),
        expected="nothing lost; the broker hands nothing out again for a cut shorter than "
        "the visibility timeout (Redis) or the heartbeat (RabbitMQ): the cut worker's tasks "
        "wait for it (it may time out its own reads and reconnect), and it goes on after "
        "the heal",
        settings=lambda p: {"celery_broker_heartbeat": p.heartbeat},
        stack=Shape(
            workers=2,
            concurrency=1,
        ),
    ),
    Scenario(
        key="partition-long",
        title="one of two workers cut off its broker, longer than the horizon",
        implementation=Implementation.celery,
        fault=Fault(
            "partition",
            "worker-2",
            cut=lambda p, broker: 5 * horizon(p, broker),
        ),
        expected="nothing lost; past the horizon the other worker takes what the cut one "
        "held (Redis: after the visibility timeout, and the cut one may finish it too: it "
        "runs twice, written once; RabbitMQ: once the heartbeat declares the connection "
        "dead); the cut worker consumes again after the heal",
        settings=lambda p: {"celery_broker_heartbeat": p.heartbeat},
        stack=Shape(
            workers=2,
            concurrency=1,
        ),
    ),
)


FAILOVER_SETTINGS = {"notification_delay_seconds": 0.1}
FAILOVER_QUIET = 30.0  # a worker's reconnect after a failover may take that long

SCENARIOS += (
    Scenario(
        key="sentinel-failover",
        title="Redis Sentinel: the primary SIGKILLed for good, under steady traffic",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="the sentinels promote the replica; the API publishes again and the workers "
        "consume again; a write the old primary acknowledged but had not replicated is lost",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("sentinel",),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
    Scenario(
        key="sentinel-failover-min-replicas",
        title="Redis Sentinel with min-replicas-to-write 1 (two replicas)",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="the primary refuses writes while no replica has acknowledged within 3 s "
        "(min-replicas-max-lag): that narrows the window in which an acknowledged write can "
        "be lost, it does not close it (replication stays asynchronous); the promoted replica "
        "has the other replica to write to",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("sentinel",),
        stack=Shape(
            sentinel_replicas=2,
            min_replicas=1,
        ),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
    Scenario(
        key="cluster-leader-kill",
        title="RabbitMQ cluster of three: the queue's leader SIGKILLed for good",
        implementation=Implementation.celery,
        fault=Fault(
            "failover",
            "broker-primary",
            restart=False,
        ),
        expected="nothing lost: a quorum queue's confirmed publishes are on a majority; a new "
        "leader is elected, clients on the dead node reconnect to another",
        settings=lambda p: FAILOVER_SETTINGS,
        brokers=("rabbitmq-cluster",),
        watch=Watch(quiet=FAILOVER_QUIET),
    ),
)
