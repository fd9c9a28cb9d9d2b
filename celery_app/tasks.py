"""The Celery tasks: thin adapters around ``shared.work``, each run recorded.

The worker runs them; the API imports them to publish them (``.apply_async``),
through the Celery app its lifespan makes the default one."""

from __future__ import annotations

import logging
import random
import socket
from functools import lru_cache
from typing import Any

from celery import Task, shared_task
from celery.signals import (
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_ready,
)
from celery.worker.request import Request

from celery_app.config import TASK_NAMES
from shared.errors import LedgerUnavailable
from shared.heartbeat import Heartbeat, mark_consuming, process_nonce, runner_id
from shared.ledger import Ledger, ledger_for
from shared.models import Implementation, TaskKind, TaskState
from shared.settings import Settings, get_settings
from shared.work import TransientNotificationError, perform

logger = logging.getLogger(__name__)


@lru_cache
def worker_ledger() -> Ledger:
    # Not best effort (like the Celery API's): a run that cannot be recorded is an
    # error in the worker's log, not a silent gap in what the verdict reads.
    return ledger_for(get_settings(), Implementation.celery, best_effort=False)


_heartbeat: Heartbeat | None = None
# The worker's main process, whose consumer hands its pool processes their tasks.
_consumer: str | None = None


@worker_init.connect
def _name_the_consumer(**_: Any) -> None:
    # In the main process, before the pool forks: the children inherit the name.
    global _consumer
    _consumer = runner_id()


@worker_process_init.connect
def _start_heartbeat(**_: Any) -> None:
    """Each pool process runs tasks: its heartbeat tells the ledger it is alive."""
    global _heartbeat
    settings = get_settings()
    worker_ledger.cache_clear()  # its own client and counts, not the parent's
    ledger = worker_ledger()
    if ledger.client is None:
        return
    _heartbeat = Heartbeat(
        ledger.client,
        Implementation.celery,
        "worker",
        interval=settings.runner_heartbeat_seconds,
        activity=ledger.activity,
        flush=ledger.flush,
    ).start_once(consuming=_consumer or runner_id())


@worker_ready.connect
def _mark_consuming(**_: Any) -> None:
    """The main process's consumer takes tasks now: its pool processes start beating."""
    ledger = worker_ledger()
    if ledger.client is not None:
        mark_consuming(ledger.client)


@task_prerun.connect
def _beat_from_the_first_task(**_: Any) -> None:
    # Should the consuming mark never arrive (the ledger down at the worker's start),
    # a process running a task is alive all the same.
    if _heartbeat is not None:
        _heartbeat.start()


@worker_process_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def backoff(retries: int, settings: Settings) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retries)]
    (without jitter, when RETRY_JITTER is off: exactly that ceiling). On a quorum
    queue at least a second: native delayed delivery routes whole seconds, and
    refuses a countdown below one."""
    ceiling = min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2**retries)
    countdown = random.uniform(0, ceiling) if settings.retry_jitter else ceiling
    if settings.broker == "rabbitmq" and settings.celery_queue_type == "quorum":
        return max(countdown, 1.0)
    return countdown


# A bound task (``bind=True``): its first argument is the task itself.
BoundTask = Task[Any, Any]


def execute(task: BoundTask, kind: TaskKind, payload: dict[str, str]) -> None:
    settings = get_settings()
    ledger = worker_ledger()
    task_id = task.request.id
    assert task_id is not None  # a task being executed has its id
    # Every run is an attempt, a redelivery after a crash included. Without a
    # ledger, Celery's own count of retries says which attempt this is.
    try:
        start = ledger.record_start(task_id, kind, unrecorded=task.request.retries + 1)
    except LedgerUnavailable as exc:
        # A run the ledger cannot see is a run the verdict cannot count: the task
        # waits for the ledger (a new message, this one acknowledged), and is not
        # failed, which would acknowledge it for good. The wait is one of Celery's
        # retries (request.retries), so it spends one of the work's
        # NOTIFICATION_MAX_RETRIES too: a long ledger outage shortens a failing
        # notification's retries.
        logger.warning("task %s waits for the ledger: %s", task_id, exc)
        raise task.retry(exc=exc, countdown=backoff(0, settings), max_retries=None) from exc
    attempt = start.attempt
    bound = settings.celery_max_deliveries
    if bound and not settings.broker_bounds_deliveries and start.executions > bound:
        # Delivered, and its process dead, this many times already: it would most
        # likely kill this one too. Failed, acknowledged, not run again.
        reason = f"gave up after {bound} deliveries (CELERY_MAX_DELIVERIES)"
        logger.error("task %s: %s", task_id, reason)
        ledger.record_gave_up(task_id, kind, reason, attempt=attempt)
        return
    try:
        perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
    except TransientNotificationError as exc:
        if task.request.retries < settings.notification_max_retries:
            countdown = backoff(task.request.retries, settings)
            logger.warning(
                "task %s attempt %d failed, retrying in %.2fs: %s", task_id, attempt, countdown, exc
            )
            ledger.record_finished(
                task_id, attempt, TaskState.retrying, error=str(exc), countdown=countdown
            )
            raise task.retry(
                exc=exc, countdown=countdown, max_retries=settings.notification_max_retries
            ) from exc
        ledger.record_finished(
            task_id,
            attempt,
            TaskState.failed,
            error=f"{type(exc).__name__}: {exc} (retries exhausted)",
        )
        raise
    except Exception as exc:
        ledger.record_finished(
            task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}"
        )
        raise
    ledger.record_finished(task_id, attempt, TaskState.succeeded)


class TimedRequest(Request):
    """A task's request, in the worker's main process. When the hard time limit
    kills the pool process that ran it, nothing of that process records the end:
    this does, with the reason."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or self.id is None or self.worker_pid is None:
            return
        # The killed process's runner id, as it wrote it (a forked child shares its
        # parent's nonce).
        runner = f"{socket.gethostname()}:{self.worker_pid}:{process_nonce()}"
        ledger = worker_ledger()
        try:
            attempt = ledger.open_attempt(self.id, runner)
            if attempt is not None:
                error = f"TimeLimitExceeded: killed at the hard time limit ({timeout:g} s)"
                ledger.record_finished(
                    self.id, attempt, TaskState.failed, error=error, detail={"time_limit": "hard"}
                )
        except Exception:  # the ledger's error is logged; the worker goes on
            logger.exception("could not record the hard time limit of task %s", self.id)


class RecordedTask(Task[Any, Any]):
    Request = "celery_app.tasks:TimedRequest"  # Celery resolves it by name


@shared_task(bind=True, base=RecordedTask, name=TASK_NAMES[TaskKind.notification])
def send_notification(self: BoundTask, email: str) -> None:
    execute(self, TaskKind.notification, {"email": email})


@shared_task(bind=True, base=RecordedTask, name=TASK_NAMES[TaskKind.log])
def write_log(self: BoundTask, message: str) -> None:
    execute(self, TaskKind.log, {"message": message})


@shared_task(bind=True, base=RecordedTask, name=TASK_NAMES[TaskKind.heavy])
def compute_heavy(self: BoundTask, rounds: int) -> None:
    # CPU-bound: it runs in a pool process of its own, away from the API.
    execute(self, TaskKind.heavy, {"rounds": str(rounds)})


@shared_task(bind=True, base=RecordedTask, name=TASK_NAMES[TaskKind.beat])
def periodic_log(self: BoundTask, /, **_: Any) -> None:
    # Beat's periodic task: recorded in the ledger like any other task.
    execute(self, TaskKind.beat, {"message": "periodic log line"})
