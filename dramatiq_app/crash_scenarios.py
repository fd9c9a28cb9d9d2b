"""dramatiq's rows of the crash table (``ImplementationSpec.scenarios``)."""

from __future__ import annotations

from experiments.crash.scenario import (
    NOTHING,
    Fault,
    Params,
    Scenario,
    Watch,
    declared_horizon,
    graceful_stop_timeout,
    loop_window,
)
from shared.services import Implementation, stock_settings

# A dead worker's messages back once its heartbeat is the rows' horizon old, by a
# maintenance pass at every command.
dramatiq_heartbeat = declared_horizon(Implementation.dramatiq)


def stock_window(p: Params) -> float:
    """dramatiq's own heartbeat timeout (60 s) and a pass at one command in a
    thousand: a mean wait of 17 minutes, not a window anyone watches. Two minutes
    past the timeout: what a user who waits a while sees."""
    return 180.0


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="dramatiq-api-kill",
        title="dramatiq-api SIGKILL",
        implementation=Implementation.dramatiq,
        fault=Fault("kill", "dramatiq-api"),
        expected="nothing lost: the tasks were already on the broker and the worker runs them",
        settings=dramatiq_heartbeat,
        brokers=("redis",),
        column="api-kill",
    ),
    Scenario(
        key="dramatiq-worker-kill",
        title="dramatiq-worker SIGKILL (Redis, the project's heartbeat and maintenance)",
        implementation=Implementation.dramatiq,
        fault=Fault("kill", "dramatiq-worker"),
        expected="nothing lost: the dead process's fetched messages stay in its set; once "
        "its heartbeat is DRAMATIQ_HEARTBEAT_TIMEOUT_SECONDS old, the restarted worker's next "
        "poll runs maintenance and requeues them; they run again, writing once",
        settings=dramatiq_heartbeat,
        brokers=("redis",),
        column="worker-kill",
    ),
    Scenario(
        key="dramatiq-worker-kill-stock",
        title="dramatiq-worker SIGKILL (Redis, dramatiq's own 60 s and 1/1000 maintenance)",
        implementation=Implementation.dramatiq,
        fault=Fault("kill", "dramatiq-worker"),
        expected="the killed worker's tasks wait: past the 60 s heartbeat timeout a pass "
        "still needs one poll in a thousand (about 17 minutes on average); at the window's "
        "end they are most likely still awaiting redelivery",
        settings=lambda p: stock_settings(Implementation.dramatiq),
        brokers=("redis",),
        watch=Watch(window=stock_window),
        column="worker-kill-stock",
    ),
    Scenario(
        key="dramatiq-worker-kill-rabbitmq",
        title="dramatiq-worker SIGKILL (RabbitMQ)",
        implementation=Implementation.dramatiq,
        fault=Fault("kill", "dramatiq-worker"),
        expected="nothing lost: RabbitMQ requeues the dead consumer's unacknowledged "
        "messages the moment its connection closes; the restarted worker runs them again",
        settings=dramatiq_heartbeat,
        brokers=("rabbitmq-classic",),
        column="worker-kill",
    ),
    Scenario(
        key="dramatiq-worker-process-kill",
        title="one dramatiq worker process SIGKILLed (Redis), the command under a restart policy",
        implementation=Implementation.dramatiq,
        fault=Fault("kill", "dramatiq-worker", kill_its_process=True),
        expected="nothing lost: the dramatiq command exits when any of its processes dies; "
        "started again, as a restart policy would, it takes tasks again at once, and the "
        "dead process's tasks come back once its heartbeat is the horizon old",
        settings=dramatiq_heartbeat,
        brokers=("redis",),
        watch=Watch(revive_worker=True),
    ),
    Scenario(
        key="dramatiq-worker-term",
        title="dramatiq-worker SIGTERM",
        implementation=Implementation.dramatiq,
        fault=Fault("terminate", "dramatiq-worker", stop_timeout=graceful_stop_timeout),
        expected="nothing lost: the worker stops consuming, waits for its running tasks "
        "(--worker-shutdown-timeout, 10 minutes) and requeues what it had prefetched",
        settings=dramatiq_heartbeat,
        brokers=("redis",),
    ),
    Scenario(
        key="dramatiq-slow-task",
        title="no crash, task longer than dramatiq's heartbeat timeout",
        implementation=Implementation.dramatiq,
        fault=NOTHING,
        expected="nothing lost, nothing run twice: the timeout is a worker's silence, not a "
        "message's age, and a busy worker still polls (its delay queue) every second",
        # Twice as long as the timeout; the timeout above a busy worker's silence (a second).
        settings=lambda p: {
            **dramatiq_heartbeat(p),
            "dramatiq_heartbeat_timeout_seconds": 2.5,
            "notification_delay_seconds": 5.0,
        },
        brokers=("redis",),
        requests=2,
        column="runs-twice",
    ),
    Scenario(
        key="dramatiq-crash-loop",
        title="a task that kills its process every time, under dramatiq",
        implementation=Implementation.dramatiq,
        fault=NOTHING,
        expected="neither broker counts its deliveries, and dramatiq's CLI exits when its "
        "process dies (started again here once, as a restart policy would); the worker's own "
        "bound (DRAMATIQ_MAX_DELIVERIES=1 here, from the ledger's count) dead-letters the "
        "second delivery before it runs: dead-lettered, in default.XQ, requeued by hand",
        settings=lambda p: {
            **dramatiq_heartbeat(p),
            "notification_crash_first_attempts": 99,
            "dramatiq_max_deliveries": 1,
        },
        # dramatiq declares classic queues on RabbitMQ (whatever CELERY_QUEUE_TYPE says):
        # its rows run on the stack variant named for them.
        brokers=("redis", "rabbitmq-classic"),
        requests=1,
        watch=Watch(window=loop_window, ends_with="dead-lettered", revive_worker=True),
    ),
)
