"""RQ's queue, as every process of this implementation opens it: one name, JSON jobs.

No RQ object is made at import: the API opens its queue in its lifespan, the worker
gets it from ``rq worker``'s command line (``cli_config``).
"""

from __future__ import annotations

import math
import shlex

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from shared.services import IMPLEMENTATIONS, Implementation
from shared.settings import Settings, redact

QUEUE = IMPLEMENTATIONS[Implementation.rq].queue
# JSON, never pickle: a job's arguments are data, not code (``rq worker -S json``).
SERIALIZER = JSONSerializer


def connect(settings: Settings) -> redis.Redis:
    """RQ's Redis (bytes replies: RQ decodes them itself). Short timeouts: a dead
    Redis is a quick 503 in the API, not a hang."""
    return redis.Redis.from_url(
        settings.rq_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
    )


def open_queue(connection: redis.Redis, settings: Settings, cls: type[Queue] = Queue) -> Queue:
    return cls(
        QUEUE,
        connection=connection,
        serializer=SERIALIZER,
        default_timeout=settings.rq_job_timeout_seconds,
    )


def backoff(settings: Settings) -> list[int]:
    """The retries' intervals: base * 2**retry, capped, in whole seconds (RQ's scheduler
    reads seconds), as Celery's backoff without its jitter."""
    return [
        max(
            math.ceil(
                min(settings.retry_backoff_max_seconds, settings.retry_backoff_seconds * 2**n)
            ),
            1,
        )
        for n in range(settings.notification_max_retries)
    ]


def notification_retry(settings: Settings) -> Retry | None:
    """A notification's ``Retry`` (None: RQ_RETRY off, or no retries)."""
    if not settings.rq_retry or settings.notification_max_retries < 1:
        return None
    return Retry(max=settings.notification_max_retries, interval=backoff(settings))


def requeue_command(job_id: str, settings: Settings) -> str:
    """The command that puts a failed job back in the queue (its password hidden)."""
    return shlex.join(
        ["rq", "requeue", "--url", redact(settings.rq_url), "-S", "json", "--queue", QUEUE, job_id]
    )


def failed_registry() -> str:
    return f"the FailedJobRegistry of RQ queue {QUEUE!r}"
