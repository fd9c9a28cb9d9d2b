"""The dramatiq actors: thin adapters around ``shared.work``, each run recorded.

Plain ``def`` actors, run by the worker's threads. The API imports them to build
their messages; the message id is the ledger's task id (``CurrentMessage``).

What dramatiq does on its own, and what this module adds:

- a failed message (an exception, retries spent) is *nacked*: dramatiq moves it to
  the queue's dead-letter queue (``default.XQ``), kept 7 days;
- its ``Retries`` middleware retries every exception 20 times (15 s backoff and
  up): here only a transient notification failure is retried, NOTIFICATION_MAX_RETRIES
  times, with RETRY_BACKOFF_SECONDS doubling (dramatiq's jitter: x1 to x2);
- neither broker counts the deliveries of a message whose worker died: a task that
  kills its process comes back for ever. The ledger counts them, and past
  DRAMATIQ_MAX_DELIVERIES the worker dead-letters it instead of running it.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import CurrentMessage

from dramatiq_app.broker import QUEUE, broker_kind
from dramatiq_app.worker import settings
from shared.errors import LedgerUnavailable
from shared.ledger import Ledger, ledger_for
from shared.logs import task_context
from shared.models import Implementation, TaskKind, TaskState
from shared.settings import get_settings
from shared.work import TransientNotificationError, perform

logger = logging.getLogger(__name__)

# The message option the dead-letter requeue sets: deliveries before it, not counted again.
REQUEUED_AFTER = "requeued_after"
# dramatiq's Retries middleware reads these (milliseconds; 0 would mean its 15 s).
MIN_BACKOFF_MS = max(1, round(settings.retry_backoff_seconds * 1000))
MAX_BACKOFF_MS = max(MIN_BACKOFF_MS, round(settings.retry_backoff_max_seconds * 1000))
# TASK_TIME_LIMIT (0: none, here dramatiq's own 10 minutes). dramatiq raises
# TimeLimitExceeded inside the actor's thread: it ends Python code, not a blocking C
# call (a time.sleep ends first), and it is failed, not retried.
TIME_LIMIT_MS = round(settings.task_time_limit * 1000) or None


@lru_cache
def worker_ledger() -> Ledger:
    # Not best effort: a run that cannot be recorded is an error in the worker's log.
    return ledger_for(get_settings(), Implementation.dramatiq, best_effort=False)


def should_retry(retries: int, exc: BaseException) -> bool:
    """dramatiq's ``retry_when``: a transient failure within the bound, or a wait
    for the ledger (``dramatiq.Retry``, unbounded, as Celery's is)."""
    if isinstance(exc, dramatiq.Retry):
        return True
    transient = isinstance(exc, TransientNotificationError)
    return transient and retries < settings.notification_max_retries


def dead_letter_queue() -> str:
    """Where a nacked message is now, as an operator finds it."""
    if broker_kind(settings) == "redis":
        return f"the Redis sorted set dramatiq:{QUEUE}.XQ (dramatiq's dead letters, kept 7 days)"
    return f"the RabbitMQ queue {QUEUE}.XQ (dramatiq's dead letters, kept 7 days)"


def execute(kind: TaskKind, payload: dict[str, str]) -> None:
    # The worker's proxy of the message (typed as the message itself): it can be failed.
    message = CurrentMessage.get_current_message()
    assert isinstance(message, MessageProxy)  # an actor run by the worker has its message
    task_id = message.message_id
    retries = int(message.options.get("retries", 0))
    ledger = worker_ledger()
    with task_context(task_id):
        try:
            start = ledger.record_start(task_id, kind, unrecorded=retries + 1)
        except LedgerUnavailable as exc:
            # A run the verdict cannot count: wait for the ledger (dramatiq's delay
            # queue), do not fail, which would dead-letter it.
            logger.warning("task %s waits for the ledger: %s", task_id, exc)
            raise dramatiq.Retry(delay=MIN_BACKOFF_MS) from exc
        attempt = start.attempt
        bound = settings.dramatiq_max_deliveries
        if bound and start.executions - int(message.options.get(REQUEUED_AFTER, 0)) > bound:
            # Delivered, and its process dead, this many times already: it would most
            # likely kill this one too. Failed: the worker nacks it into the DLQ.
            logger.error("task %s: dead-lettered after %d deliveries", task_id, bound)
            ledger.record_parked(
                task_id,
                kind,
                "dead-lettered",
                where=dead_letter_queue(),
                recover=f"python -m dramatiq_app.dead_letters requeue {task_id}",
                attempt=attempt,
            )
            message.fail()
            return
        try:
            perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
        except TransientNotificationError as exc:
            if should_retry(retries, exc):
                # dramatiq's backoff: min * 2**retries, times 1 to 2 (jitter), capped;
                # then a delay-queue poll (a second at most) and a hand-over.
                latest = min(MIN_BACKOFF_MS * 2 ** (retries + 1), MAX_BACKOFF_MS) / 1000 + 2.0
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
        except BaseException as exc:  # TimeLimitExceeded is no Exception
            ledger.record_finished(
                task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}"
            )
            raise
        ledger.record_finished(task_id, attempt, TaskState.succeeded)


OPTIONS: dict[str, Any] = {
    "queue_name": QUEUE,
    "retry_when": should_retry,
    "min_backoff": MIN_BACKOFF_MS,
    "max_backoff": MAX_BACKOFF_MS,
    # None is no option at all: the middleware reads a missing one as its default.
    **({"time_limit": TIME_LIMIT_MS} if TIME_LIMIT_MS else {}),
}


@dramatiq.actor(actor_name="dramatiq_app.send_notification", **OPTIONS)
def send_notification(email: str) -> None:
    execute(TaskKind.notification, {"email": email})


@dramatiq.actor(actor_name="dramatiq_app.write_log", **OPTIONS)
def write_log(message: str) -> None:
    execute(TaskKind.log, {"message": message})


@dramatiq.actor(actor_name="dramatiq_app.compute_heavy", **OPTIONS)
def compute_heavy(rounds: int) -> None:
    execute(TaskKind.heavy, {"rounds": str(rounds)})


@dramatiq.actor(actor_name="dramatiq_app.periodic_log", **OPTIONS)
def periodic_log() -> None:
    # The scheduler's periodic task: recorded in the ledger like any other task.
    execute(TaskKind.beat, {"message": "periodic log line"})
