"""RQ's rows of the crash table (``ImplementationSpec.scenarios``).

One worker runs one job at a time (``Shape(concurrency=1)``): the kill comes once the
first notification runs. A work horse is a process the worker forks per job, in a
process group of its own: a kill of the worker's group leaves it running, which is
a row of its own; the death of the whole machine (or container) takes it too.
"""

from __future__ import annotations

from typing import Any

from experiments.crash.scenario import (
    NOTHING,
    Fault,
    Params,
    Scenario,
    Shape,
    Watch,
    declared_horizon,
)
from shared.services import Implementation

ONE = Shape(concurrency=1)
# RQ's worker kills a job that ignored its JobTimeoutException 60 s past the timeout.
HARD_KILL_MARGIN = 60.0


# A dead worker's job found abandoned about as long after its heartbeat as the rows'
# horizon, by a maintenance pass every second.
rq_expires = declared_horizon(Implementation.rq, scan=1.0)


def no_retry(p: Params) -> dict[str, Any]:
    return {**rq_expires(p), "rq_retry": False}


def hung_window(p: Params) -> float:
    """Past the hard kill of a job that ignores its timeout (1 s + 60 s), with slack."""
    return 1 + HARD_KILL_MARGIN + 15 + p.margin


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        key="rq-api-kill",
        column="api-kill",
        title="rq-api SIGKILL",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-api"),
        expected="nothing lost: the jobs were already in Redis and the worker runs them",
        settings=rq_expires,
        stack=ONE,
    ),
    Scenario(
        key="rq-worker-kill",
        title="rq-worker SIGKILL (its process group)",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-worker"),
        expected="nothing lost: the work horse running the notification is in a process "
        "group of its own (RQ calls setpgrp), outlives the kill and finishes its job; the "
        "restarted worker runs the queued ones",
        settings=rq_expires,
        stack=ONE,
    ),
    Scenario(
        key="rq-worker-kill-all",
        column="worker-kill-stock",
        title="rq-worker and its work horse SIGKILLed (a machine's death), no Retry",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-worker", and_its_process=True),
        expected="the running notification is abandoned: once its heartbeat expires, the "
        "restarted worker's registry cleanup moves it to the FailedJobRegistry (its "
        "failure callback records it); nothing runs it again until `rq requeue`",
        settings=no_retry,
        stack=ONE,
    ),
    Scenario(
        key="rq-worker-kill-all-retry",
        column="worker-kill",
        title="rq-worker and its work horse SIGKILLed (a machine's death), with Retry",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-worker", and_its_process=True),
        expected="nothing lost, a minute late: the registry cleanup finds the job's heartbeat "
        "expired and, its Retry having retries left, schedules it again (rq #2015 reported "
        "such jobs lost in older versions); the dead worker's scheduler lock holds the retry "
        "back up to 61 s (RQ: its interval + 60); it runs twice, writing once",
        settings=rq_expires,
        stack=ONE,
    ),
    Scenario(
        key="rq-horse-kill",
        title="the work horse SIGKILLed (its worker lives), no Retry",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-worker", kill_its_process=True, restart=False),
        expected="the notification is abandoned at once: its worker sees the horse die "
        "and moves the job to the FailedJobRegistry (work_horse_killed_handler records it)",
        settings=no_retry,
        stack=ONE,
    ),
    Scenario(
        key="rq-horse-kill-retry",
        title="the work horse SIGKILLed (its worker lives), with Retry",
        implementation=Implementation.rq,
        fault=Fault("kill", "rq-worker", kill_its_process=True, restart=False),
        expected="nothing lost: its worker sees the horse die and, the Retry having "
        "retries left, schedules the job again: it runs twice, writing once",
        settings=rq_expires,
        stack=ONE,
    ),
    Scenario(
        key="rq-redis-restart",
        title="Redis SIGKILL + restart (AOF on), under RQ",
        implementation=Implementation.rq,
        fault=Fault("kill", "redis", wait_for_fsync=True),
        expected="nothing lost: Redis replays the queue, the registries and the ledger from "
        "its append-only file; the worker reconnects and runs what waits",
        settings=rq_expires,
        stack=Shape(appendonly=True, concurrency=1),
    ),
    Scenario(
        key="rq-slow-task",
        column="runs-twice",
        title="no crash, a notification longer than RQ's job_timeout",
        implementation=Implementation.rq,
        fault=NOTHING,
        expected="failed, never run twice at once: the work horse's alarm raises "
        "JobTimeoutException in the job at job_timeout; Retry runs it again, and it times "
        "out again, until its retries are spent",
        settings=lambda p: {**rq_expires(p), "rq_job_timeout_seconds": max(int(p.delay / 2), 1)},
        requests=1,
        stack=ONE,
    ),
    Scenario(
        key="rq-hung-task",
        title="no crash, a job that hangs (swallows its timeout), under RQ, no Retry",
        implementation=Implementation.rq,
        fault=NOTHING,
        expected="failed: it ignores JobTimeoutException, and its worker kills the work horse "
        "60 s past job_timeout (RQ's fixed margin); the worker runs nothing else meanwhile",
        settings=lambda p: {
            **no_retry(p),
            "notification_hang_first_attempts": 99,
            "rq_job_timeout_seconds": 1,
        },
        requests=1,
        stack=ONE,
        watch=Watch(window=hung_window),
    ),
)
