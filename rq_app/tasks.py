"""The RQ jobs: thin adapters around ``shared.work``, each run recorded, and what
records the runs nothing ends (their work horse died).

Plain functions, enqueued by reference (``rq_app.tasks.send_notification``); each
runs in a work horse, a process the worker forks for it. The API imports them to
enqueue them: no side effect here.

A run's end is recorded by the run itself (``execute``), but a dead work horse
records nothing. RQ calls two hooks then, in the worker's main process, and
``record_dead_run`` answers both: the worker's ``work_horse_killed_handler`` (its
horse died under it: RQ fails the job at once) and the job's failure callback with
``AbandonedJobError`` (the whole worker died: a later worker's registry cleanup
finds the job's heartbeat expired). RQ then runs it again while its ``Retry`` has
retries left, else moves it to the FailedJobRegistry, where it waits for ``rq
requeue``: abandoned (``Ledger.record_parked``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from functools import lru_cache
from types import TracebackType
from typing import Any

from rq import Callback, get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.scheduler import RQScheduler

from rq_app.queue import failed_registry, requeue_command
from shared.ledger import Ledger, ledger_for
from shared.logs import task_context
from shared.models import Implementation, TaskKind, TaskState
from shared.settings import get_settings
from shared.work import perform

logger = logging.getLogger(__name__)

# RQ's scheduler moves a due retry to the queue at its next pass (every second).
SCHEDULER_LAG = 2.0
# The worker kills a work horse this long past its job's timeout (RQ, fixed).
HARD_MARGIN = 60


@lru_cache
def worker_ledger() -> Ledger:
    # Not best effort: a run that cannot be recorded is an error in the worker's log.
    return ledger_for(get_settings(), Implementation.rq, best_effort=False)


def retry_in(job: Job) -> float | None:
    """When RQ runs this failed job again (seconds, at the latest), None: it does not."""
    if not job.should_retry:
        return None
    return job.get_retry_interval() + SCHEDULER_LAG


def execute(kind: TaskKind, payload: dict[str, str]) -> None:
    job = get_current_job()
    assert job is not None  # a job is running: this is its work horse
    task_id = job.id
    ledger, settings = worker_ledger(), get_settings()
    with task_context(task_id):
        attempt = ledger.record_running(task_id, kind)
        try:
            perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
        except Exception as exc:
            # RQ retries whatever the job raised (a JobTimeoutException too) while its
            # Retry has retries left: the ledger says what RQ will do.
            later = retry_in(job)
            error = f"{type(exc).__name__}: {exc}"
            if later is not None:
                logger.warning(
                    "task %s attempt %d failed, retrying within %.1fs: %s",
                    task_id,
                    attempt,
                    later,
                    exc,
                )
                ledger.record_finished(
                    task_id, attempt, TaskState.retrying, error=error, countdown=later
                )
            else:
                if job.retry_intervals is not None:
                    error += " (retries exhausted)"
                ledger.record_finished(task_id, attempt, TaskState.failed, error=error)
            raise
        ledger.record_finished(task_id, attempt, TaskState.succeeded)


def send_notification(email: str) -> None:
    execute(TaskKind.notification, {"email": email})


def write_log(message: str) -> None:
    execute(TaskKind.log, {"message": message})


def compute_heavy(rounds: int) -> None:
    execute(TaskKind.heavy, {"rounds": str(rounds)})


def periodic_log() -> None:
    # The periodic task: recorded like any other, then the next one scheduled (beat).
    from rq_app import beat  # beat enqueues this function: imported when run, not before

    execute(TaskKind.beat, {"message": "periodic log line"})
    job = get_current_job()
    assert job is not None
    beat.schedule_next(job.connection, get_settings())


KINDS: dict[str, TaskKind] = {
    f"{__name__}.{f.__name__}": kind
    for f, kind in (
        (send_notification, TaskKind.notification),
        (write_log, TaskKind.log),
        (compute_heavy, TaskKind.heavy),
        (periodic_log, TaskKind.beat),
    )
}


def scheduler_lock_left(job: Job) -> float:
    """Seconds left on the lock of the scheduler that moves the job's queue's due jobs
    (a retry's delay waits in its ScheduledJobRegistry). A dead worker's scheduler
    holds it up to 61 s past its last renewal (RQ: its interval + 60): no other
    scheduler enqueues a retry until then."""
    left = job.connection.ttl(RQScheduler.get_locking_key(job.origin))
    return float(left) if isinstance(left, int) and left > 0 else 0.0


def record_dead_run(job: Job, why: str, *, worker_died: bool = False) -> None:
    """A run whose work horse died: RQ runs it again (its Retry has retries left),
    or it is abandoned in the FailedJobRegistry. Its open attempt ends here.
    ``worker_died``: its whole worker with it, and maybe the scheduler that worker ran."""
    ledger = worker_ledger()
    kind = KINDS.get(job.func_name or "", TaskKind.log)
    record = ledger.get(job.id)
    open_runs = [run.attempt for run in (record.runs if record else []) if run.ended_at is None]
    attempt = max(open_runs) if open_runs else None
    later = retry_in(job)
    if later is not None and worker_died:
        later += scheduler_lock_left(job)
    with task_context(job.id):
        if later is not None:
            logger.warning("task %s: %s; RQ runs it again within %.1fs", job.id, why, later)
            if attempt is not None:
                ledger.record_finished(
                    job.id, attempt, TaskState.retrying, error=why, countdown=later
                )
            return
        settings = get_settings()
        logger.error("task %s: %s; abandoned in %s", job.id, why, failed_registry())
        ledger.record_parked(
            job.id,
            kind,
            "abandoned",
            where=failed_registry(),
            recover=requeue_command(job.id, settings),
            attempt=attempt,
        )


def on_failure(
    job: Job,
    connection: Any,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> None:
    """Every job's failure callback. A run that raised has recorded its own end
    (``execute``); only an abandoned one (its whole worker died) is left to record."""
    if isinstance(exc, AbandonedJobError) or exc_type is AbandonedJobError:
        record_dead_run(
            job,
            "its worker died mid-run (AbandonedJobError: heartbeat expired)",
            worker_died=True,
        )


def horse_killed(job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
    """The worker's ``work_horse_killed_handler``: its work horse died under it (a
    kill, the OOM killer, a crash): RQ fails the job at once."""
    why = f"its work horse died mid-run (waitpid status {ret_val})"
    started, limit = job.started_at, job.timeout
    if started is not None and limit and limit > 0:
        ran = (datetime.now(UTC) - started).total_seconds()
        if ran > limit + HARD_MARGIN:
            # Its own time limit: the job ignored JobTimeoutException, and the worker
            # killed it 60 s later. Failed, as Celery's hard time limit is, unless
            # its Retry runs it again.
            if not job.should_retry:
                record_killed_at_limit(job, limit)
                return
            why = f"killed at job_timeout + {HARD_MARGIN} s ({limit:g} s)"
    record_dead_run(job, why)


def record_killed_at_limit(job: Job, limit: float) -> None:
    ledger = worker_ledger()
    record = ledger.get(job.id)
    open_runs = [run.attempt for run in (record.runs if record else []) if run.ended_at is None]
    if not open_runs:
        return
    error = f"JobTimeoutException ignored: killed at job_timeout + {HARD_MARGIN} s ({limit:g} s)"
    with task_context(job.id):
        logger.error("task %s: %s", job.id, error)
        ledger.record_finished(
            job.id, max(open_runs), TaskState.failed, error=error, detail={"time_limit": "hard"}
        )


# What every job is enqueued with (``on_failure=``): RQ stores the function's name.
ENDED = Callback(on_failure)
