"""FastAPI app that dispatches its work to a Celery worker through the broker
(Redis, or RabbitMQ when ``CELERY_BROKER_URL`` says so).

Run: ``uvicorn celery_app.main:app --port 8002`` next to
``celery -A celery_app.worker worker`` (and ``beat``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio.to_thread
from celery import Celery
from fastapi import FastAPI, Request
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from celery_app.worker import TASK_NAMES, create_celery
from shared.api import (
    Job,
    SchedulerUnavailable,
    build_common_router,
    build_router,
    create_api,
    new_tasks,
    open_ledger,
)
from shared.ledger import AsyncLedger
from shared.models import Implementation

logger = logging.getLogger(__name__)

# What a failed publish raises: kombu's connection errors (RabbitMQ refusing a
# message, a nack under publisher confirms, is one of them), redis-py's, and a
# socket's (a timeout included).
PUBLISH_ERRORS = (OperationalError, RedisError, OSError)


def _chain(exc: BaseException) -> list[BaseException]:
    """The error and what it wraps: kombu re-raises the broker's error (an empty
    ``OperationalError('')`` for a nack) with the original as its cause."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and len(chain) < 4:
        chain.append(cause)
    return chain


def _maybe_sent(exc: BaseException) -> bool:
    """Whether the message that failed, on a broker that was reached, may be in the
    queue all the same: the broker did not answer in time (RabbitMQ: no confirm
    yet), as opposed to refusing it (a nack). kombu's publish retry may also have
    sent it twice: the same task id, whose work writes once."""
    return any(isinstance(e, TimeoutError) for e in _chain(exc))


DELIVERY_NOTE = (
    "Celery: published to the broker and run by a separate worker. A notification "
    "that fails transiently is retried with backoff and jitter (bounded); a task whose "
    "worker dies mid-run is redelivered (Redis: after the visibility timeout; "
    "RabbitMQ: when the worker's connection closes)."
)


@dataclass
class _Progress:
    """How far a request's publish got: the broker reached, the messages sent."""

    reached: bool = False
    sent: list[str] = field(default_factory=list)


class CeleryScheduler:
    implementation = Implementation.celery

    def __init__(self, celery: Celery, ledger: AsyncLedger, confirm_timeout: float) -> None:
        self.celery = celery
        self.ledger = ledger
        self.confirm_timeout = confirm_timeout

    def _publish(self, ids: Sequence[str], jobs: Sequence[Job], done: _Progress) -> None:
        with self.celery.producer_or_acquire() as producer:
            # Reach the broker first, as the publish would (the producer's channel, the
            # same connect timeout): a timeout here is a broker that got no message.
            _ = producer.channel
            done.reached = True
            for task_id, job in zip(ids, jobs, strict=True):
                self.celery.send_task(
                    TASK_NAMES[job.kind],
                    kwargs=job.payload,
                    task_id=task_id,
                    producer=producer,
                    # RabbitMQ: wait this long at most for the broker's confirm (a broker
                    # that blocks publishers must not hang the request). Redis: unused.
                    confirm_timeout=self.confirm_timeout,
                )
                done.sent.append(task_id)

    async def schedule(self, jobs: Sequence[Job]) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in jobs]
        # queued before the publish, so a fast worker's "running" cannot be overwritten.
        await self.ledger.queued(new_tasks(ids, jobs))
        done = _Progress()
        try:
            # kombu's publish is blocking I/O: one trip to a worker thread for the
            # request's messages, so a slow broker never stalls the event loop.
            await anyio.to_thread.run_sync(self._publish, ids, jobs, done)
        except PUBLISH_ERRORS as exc:
            # The messages that did go out will run, and so may the one the broker
            # did not answer for: only the others are forgotten.
            sent = done.sent
            failed = ids[len(sent)]
            maybe = [failed] if done.reached and _maybe_sent(exc) else []
            unsent = ids[len(sent) + len(maybe) :]
            reason = " from ".join(repr(e) for e in _chain(exc))
            logger.error("publishing %s failed (%d sent before): %s", failed, len(sent), reason)
            try:
                await self.ledger.forget(unsent)
            except Exception:  # the ledger may live on the same dead Redis: best effort
                logger.debug("could not forget %s", unsent, exc_info=True)
            raise SchedulerUnavailable(
                f"broker unavailable, {_what_was_queued(sent, maybe, unsent)}: {reason}"
            ) from exc
        return ids


def _what_was_queued(sent: Sequence[str], maybe: Sequence[str], unsent: Sequence[str]) -> str:
    """The 503's account of a request's tasks: a client must know what will still run."""
    if not sent and not maybe:
        return "nothing was queued"
    parts = []
    if sent:
        parts.append(f"{', '.join(sent)} queued")
    if maybe:
        parts.append(f"{maybe[0]} may have been (the broker did not confirm it in time)")
    if unsent:
        parts.append(f"{', '.join(unsent)} not")
    return "; ".join(parts)


async def get_scheduler(request: Request) -> CeleryScheduler:
    state = request.app.state
    return CeleryScheduler(state.celery, state.async_ledger, state.settings.redis_socket_timeout)


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Not best effort: a task this side cannot record is a task it does not accept.
        async with open_ledger(
            app, Implementation.celery, best_effort=False, heartbeat_role=None
        ) as settings:
            app.state.celery = create_celery(settings, publisher=True)
            yield
            app.state.celery.close()

    app = create_api("Celery implementation", DELIVERY_NOTE, lifespan)
    app.include_router(
        build_router(get_scheduler, delivery_note=DELIVERY_NOTE, can_be_unavailable=True)
    )
    app.include_router(build_common_router())
    return app


app = create_app()
