"""The Celery tasks: thin adapters around ``shared.work``, each run recorded.

The worker runs them; the API imports them to publish them (``.apply_async``),
through the Celery app its lifespan makes the default one."""

from __future__ import annotations

import logging
import random
from functools import lru_cache
from typing import Any

from celery import Task, shared_task
from celery.signals import worker_process_init, worker_process_shutdown

from celery_app.config import TASK_NAMES
from shared.heartbeat import Heartbeat
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


@worker_process_init.connect
def _start_heartbeat(**_: Any) -> None:
    """Each pool process runs tasks: its heartbeat tells the ledger it is alive."""
    global _heartbeat
    settings = get_settings()
    ledger = worker_ledger()
    if ledger.client is None:
        return
    _heartbeat = Heartbeat(
        ledger.client,
        Implementation.celery,
        "worker",
        interval=settings.runner_heartbeat_seconds,
        activity=ledger.activity,
    ).start()


@worker_process_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


def backoff(retries: int, settings: Settings) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**retries)]
    (without jitter, when RETRY_JITTER is off: exactly that ceiling)."""
    ceiling = min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2**retries)
    return random.uniform(0, ceiling) if settings.retry_jitter else ceiling


# A bound task (``bind=True``): its first argument is the task itself.
BoundTask = Task[Any, Any]


def execute(task: BoundTask, kind: TaskKind, payload: dict[str, str]) -> None:
    settings = get_settings()
    ledger = worker_ledger()
    task_id = task.request.id
    assert task_id is not None  # a task being executed has its id
    # Every run is an attempt, a redelivery after a crash included. Without a
    # ledger, Celery's own count of retries says which attempt this is.
    attempt = ledger.running(task_id, kind, unrecorded=task.request.retries + 1)
    try:
        perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
    except TransientNotificationError as exc:
        if task.request.retries < settings.notification_max_retries:
            countdown = backoff(task.request.retries, settings)
            logger.warning(
                "task %s attempt %d failed, retrying in %.2fs: %s", task_id, attempt, countdown, exc
            )
            ledger.finished(
                task_id, attempt, TaskState.retrying, error=str(exc), countdown=countdown
            )
            raise task.retry(
                exc=exc, countdown=countdown, max_retries=settings.notification_max_retries
            ) from exc
        ledger.finished(
            task_id,
            attempt,
            TaskState.failed,
            error=f"{type(exc).__name__}: {exc} (retries exhausted)",
        )
        raise
    except Exception as exc:
        ledger.finished(task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}")
        raise
    ledger.finished(task_id, attempt, TaskState.succeeded)


@shared_task(bind=True, name=TASK_NAMES[TaskKind.notification])
def send_notification(self: BoundTask, email: str) -> None:
    execute(self, TaskKind.notification, {"email": email})


@shared_task(bind=True, name=TASK_NAMES[TaskKind.log])
def write_log(self: BoundTask, message: str) -> None:
    execute(self, TaskKind.log, {"message": message})


@shared_task(bind=True, name=TASK_NAMES[TaskKind.heavy])
def compute_heavy(self: BoundTask, rounds: int) -> None:
    # CPU-bound: it runs in a pool process of its own, away from the API.
    execute(self, TaskKind.heavy, {"rounds": str(rounds)})


@shared_task(bind=True, name=TASK_NAMES[TaskKind.beat])
def heartbeat(self: BoundTask, /, **_: Any) -> None:
    # Beat's periodic task: recorded in the ledger like any other task.
    execute(self, TaskKind.beat, {"message": "beat heartbeat"})
