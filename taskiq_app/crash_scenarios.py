"""taskiq's rows of the crash table (``ImplementationSpec.scenarios``)."""

from __future__ import annotations

from experiments.crash.scenario import (
    NOTHING,
    Fault,
    Scenario,
    Shape,
    Watch,
    declared_horizon,
    graceful_stop_timeout,
    hang_window,
    loop_window,
)
from shared.services import Implementation

# A dead worker's message claimed once idle for the rows' horizon, by a read every
# half second.
taskiq_claims = declared_horizon(Implementation.taskiq, scan=0.5)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="taskiq-api-kill",
        column="api-kill",
        title="taskiq-api SIGKILL",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-api"),
        expected="nothing lost: the tasks were already in the stream and the worker runs them",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-worker-kill",
        column="worker-kill",
        title="taskiq-worker SIGKILL (stream broker)",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="nothing lost: the stream keeps a message pending until the task is acked; "
        "a live worker claims the dead one's once idle past TASKIQ_IDLE_TIMEOUT_SECONDS and "
        "runs it again, writing once",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-worker-kill-stock-claim",
        title="taskiq-worker SIGKILL (stream broker, taskiq-redis's own claim), work queued",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="nothing lost: taskiq-redis claims a dead worker's pending messages on a read "
        "that returns new ones; the tasks queued behind the killed ones are new to the "
        "restarted worker, so its first reads past the idle timeout claim them",
        settings=lambda p: {**taskiq_claims(p), "taskiq_claim_when_idle": False},
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="taskiq-worker-kill-stock-claim-idle",
        column="worker-kill-stock",
        title="taskiq-worker SIGKILL (stream broker, taskiq-redis's own claim), nothing queued",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="the tasks the killed worker held wait: nothing new arrives, so no read claims "
        "them; at the window's end they are still awaiting redelivery, and run only when a "
        "request comes (or, with the project's broker, at the idle timeout)",
        settings=lambda p: {**taskiq_claims(p), "taskiq_claim_when_idle": False},
        # One request: its two tasks start together, so nothing waits behind the kill.
        requests=1,
        watch=Watch(window=loop_window),
    ),
    Scenario(
        key="taskiq-worker-term",
        title="taskiq-worker SIGTERM",
        implementation=Implementation.taskiq,
        fault=Fault(
            "terminate",
            "taskiq-worker",
            stop_timeout=graceful_stop_timeout,
        ),
        expected="nothing lost: the worker waits for its running tasks (taskiq's "
        "wait_tasks_timeout: none) and exits; the queued ones wait in the stream for the restart",
        settings=taskiq_claims,
    ),
    Scenario(
        key="taskiq-redis-restart",
        title="Redis SIGKILL + restart (AOF on), under taskiq",
        implementation=Implementation.taskiq,
        fault=Fault(
            "kill",
            "redis",
            wait_for_fsync=True,
        ),
        expected="nothing lost: Redis replays the stream, its pending entries and the ledger "
        "from its append-only file; a task that ended while Redis was down could not be "
        "acknowledged, so it is claimed and runs again, writing once",
        settings=taskiq_claims,
        stack=Shape(appendonly=True),
    ),
    Scenario(
        key="taskiq-slow-task",
        column="runs-twice",
        title="no crash, task longer than taskiq's idle timeout",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="nothing lost; the stream cannot tell a slow task from a dead worker: a "
        "notification pending past the idle timeout is claimed and runs again while the first "
        "run goes on (twice, writing once)",
        settings=lambda p: {**taskiq_claims(p), "taskiq_idle_timeout_seconds": p.delay / 2},
    ),
    Scenario(
        key="taskiq-hung-task",
        title="no crash, a task that hangs, under taskiq",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="it never ends; the stream claims it again after the idle timeout, into the "
        "next free slot, until every slot of the worker hangs on it (taskiq has no hard time "
        "limit: its timeout label cancels an async task, not a thread)",
        settings=lambda p: {**taskiq_claims(p), "notification_hang_first_attempts": 99},
        requests=1,
        watch=Watch(window=hang_window),
    ),
    Scenario(
        key="taskiq-crash-loop",
        title="a task that kills its process every time, under taskiq",
        implementation=Implementation.taskiq,
        fault=NOTHING,
        expected="the stream keeps it pending and claims it again after each idle timeout: "
        "no delivery bound, for ever; the worker command exits after its third dead process "
        "(--max-fails 3) and runs again only under a restart policy (started here once)",
        settings=lambda p: {**taskiq_claims(p), "notification_crash_first_attempts": 99},
        requests=1,
        watch=Watch(window=loop_window, revive_worker=True),
    ),
    Scenario(
        key="taskiq-worker-kill-list",
        column="worker-kill-stock",
        title="taskiq-worker SIGKILL (list broker, the quick start's)",
        implementation=Implementation.taskiq,
        fault=Fault("kill", "taskiq-worker"),
        expected="the running tasks are lost: the list broker pops a message as it hands it "
        "out (BRPOP), and nothing holds it once its worker is gone",
        settings=lambda p: {"taskiq_broker": "list"},
    ),
)
