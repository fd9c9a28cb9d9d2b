"""The taskiq tasks: thin adapters around ``shared.work``, each run recorded.

Plain ``def`` tasks: the worker runs them in its thread pool, off its event loop
(the work sleeps and writes files). The API imports them to kick them.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from shared.heartbeat import Heartbeat, runner_id
from shared.ledger import Ledger, ledger_for
from shared.logs import configure_logging, task_context
from shared.models import Implementation, TaskKind, TaskState
from shared.settings import get_settings
from shared.work import TransientNotificationError, perform
from taskiq_app.worker import broker, retry, settings

logger = logging.getLogger(__name__)


@lru_cache
def worker_ledger() -> Ledger:
    # Not best effort: a run that cannot be recorded is an error in the worker's log.
    return ledger_for(get_settings(), Implementation.taskiq, best_effort=False)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    """Each worker process runs tasks: its logging, and a heartbeat that tells the
    ledger it is alive."""
    configure_logging(settings.log_level, settings.log_format)
    # What the harness waits for (shared.services): this process takes tasks now.
    logger.info("taskiq worker process %s ready", runner_id())
    ledger = worker_ledger()
    if ledger.client is not None:
        state.heartbeat = Heartbeat(
            ledger.client,
            Implementation.taskiq,
            "taskiq-worker",
            interval=settings.runner_heartbeat_seconds,
            activity=ledger.activity,
            flush=ledger.flush,
        ).start()


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    heartbeat = getattr(state, "heartbeat", None)
    if heartbeat is not None:
        heartbeat.stop()


def execute(context: Context, kind: TaskKind, payload: dict[str, str]) -> None:
    task_id = context.message.task_id
    ledger = worker_ledger()
    with task_context(task_id):
        attempt = ledger.record_running(task_id, kind)
        try:
            perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
        except TransientNotificationError as exc:
            # The middleware's rule (the attempts so far against its count) and its delay
            # (base * retries, capped, plus up to a second of jitter), and the scheduler's
            # one-second reads and loop: when the retry runs, at the latest.
            retried = int(context.message.labels.get("_retries", 0)) + 1
            if retried < retry.default_retry_count:
                delay = min(retry.default_delay * retried, retry.max_delay_exponent)
                latest = delay + (1.0 if retry.use_jitter else 0.0) + 2.0
                logger.warning(
                    "task %s attempt %d failed, retrying within %.1fs: %s",
                    task_id,
                    attempt,
                    latest,
                    exc,
                )
                ledger.record_finished(
                    task_id, attempt, TaskState.retrying, error=str(exc), countdown=latest
                )
            else:
                error = f"{type(exc).__name__}: {exc} (retries exhausted)"
                ledger.record_finished(task_id, attempt, TaskState.failed, error=error)
            raise
        except Exception as exc:
            ledger.record_finished(
                task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}"
            )
            raise
        ledger.record_finished(task_id, attempt, TaskState.succeeded)


@broker.task(task_name="taskiq_app.send_notification", retry_on_error=True)
def send_notification(email: str, context: Context = TaskiqDepends()) -> None:
    execute(context, TaskKind.notification, {"email": email})


@broker.task(task_name="taskiq_app.write_log")
def write_log(message: str, context: Context = TaskiqDepends()) -> None:
    execute(context, TaskKind.log, {"message": message})


@broker.task(task_name="taskiq_app.compute_heavy")
def compute_heavy(rounds: int, context: Context = TaskiqDepends()) -> None:
    execute(context, TaskKind.heavy, {"rounds": str(rounds)})


@broker.task(
    task_name="taskiq_app.periodic_log",
    schedule=[{"interval": max(round(settings.beat_interval_seconds), 1)}],
)
def periodic_log(context: Context = TaskiqDepends()) -> None:
    # The scheduler's periodic task: recorded in the ledger like any other task.
    execute(context, TaskKind.beat, {"message": "periodic log line"})
