"""How the RQ API hands a request's tasks over, and what a failed hand-over leaves.

A route records its tasks in the ledger as queued (one round trip), then enqueues
each one (``queue.enqueue``, blocking: the routes are ``def``, run in AnyIO's
thread pool) inside ``Handover.record``. Should an enqueue fail, the request gets a
503 that names, of its tasks, those that were queued (they will run), the one Redis
may have taken (it did not answer in time) and those that were not (the ledger
forgets them). ``HandoverQueue`` notes every job Redis took, for that account.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

import redis
from fastapi import Depends, Request
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.job import Job

from shared.errors import SchedulerUnavailable, what_was_queued
from shared.ledger import Ledger
from shared.models import TaskKind

logger = logging.getLogger(__name__)

# What a failed enqueue raises: redis-py's errors, and a socket's (a timeout included).
ENQUEUE_ERRORS = (RedisError, OSError)

_sent: ContextVar[list[str] | None] = ContextVar("rq_sent", default=None)


class HandoverQueue(Queue):
    """RQ's ``Queue``, noting each job Redis took (its pipeline executed) for the
    request that enqueued it."""

    def enqueue_job(self, job: Job, *args: Any, **kwargs: Any) -> Job:
        enqueued = super().enqueue_job(job, *args, **kwargs)
        sent = _sent.get()
        if sent is not None:
            sent.append(job.id)
        return enqueued


class Handover:
    """A request's tasks: queued in the ledger, then enqueued by the route."""

    def __init__(self, ledger: Ledger, queue: Queue, retry: Retry | None) -> None:
        self.ledger = ledger
        self.queue = queue
        # A notification's Retry (RQ_RETRY), None: none.
        self.retry = retry

    @contextmanager
    def record(self, *kinds: TaskKind) -> Iterator[list[str]]:
        """Record tasks of these kinds as queued (before the enqueue, so a fast
        worker's "running" cannot be overwritten) and yield their ids, in order, for
        the block to enqueue them; a failed enqueue is a 503 that says what was queued."""
        ids = self.ledger.record_new(*kinds)
        sent: list[str] = []
        token = _sent.set(sent)
        try:
            yield ids
        except ENQUEUE_ERRORS as exc:
            unsent = [i for i in ids if i not in sent]
            # A timeout after the command went out: Redis may have run it.
            maybe = unsent[:1] if isinstance(exc, TimeoutError | redis.TimeoutError) else []
            unsent = unsent[len(maybe) :]
            logger.error("enqueueing failed (%d sent before): %r", len(sent), exc)
            try:
                self.ledger.forget(unsent)
            except Exception:  # the ledger may live on the same dead Redis: best effort
                logger.debug("could not forget %s", unsent, exc_info=True)
            what = f"broker unavailable, {what_was_queued(sent, maybe, unsent)}"
            raise SchedulerUnavailable(what, f"{what}: {exc!r}") from exc
        finally:
            _sent.reset(token)


def broker_check(connection: redis.Redis) -> Any:
    """GET /ready's question to RQ's Redis: a PING (within the client's socket timeout)."""

    def check() -> None:
        try:
            connection.ping()
        except ENQUEUE_ERRORS as exc:
            raise SchedulerUnavailable("the broker cannot be reached", f"broker: {exc!r}") from exc

    return check


async def get_handover(request: Request) -> Handover:
    handover: Handover = request.app.state.handover
    return handover


HandoverDep = Annotated[Handover, Depends(get_handover)]
