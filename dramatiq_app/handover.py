"""How the dramatiq API hands a request's tasks over, and what a failed enqueue leaves.

A route records its tasks in the ledger as queued (one round trip), then enqueues
each one (``broker.enqueue``, the ledger's id as the message id) inside
``Handover.record``. Should an enqueue fail, the request gets a 503 that names, of
its tasks, those that were queued (they will run) and those that were not (the
ledger forgets them). ``HandoverMiddleware`` notes every message the broker took
(dramatiq's ``after_enqueue``), as taskiq's ``post_send`` does there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any

import pika.exceptions
import redis
from dramatiq import Broker, Message, Middleware
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.errors import BrokerConnectionError
from fastapi import Depends, Request

from shared.errors import SchedulerUnavailable, what_was_queued
from shared.ledger import Ledger
from shared.models import TaskKind

logger = logging.getLogger(__name__)

# What a failed enqueue raises: dramatiq's own (RabbitMQ's ConnectionClosed after its
# attempts), pika's, redis-py's (the Redis broker lets them through), a socket's.
ENQUEUE_ERRORS = (BrokerConnectionError, pika.exceptions.AMQPError, redis.RedisError, OSError)

# The ids the broker took for the request being handled (the route's thread).
_sent: ContextVar[list[str] | None] = ContextVar("dramatiq_sent", default=None)


class HandoverMiddleware(Middleware):
    """Notes each message the broker took, for the request that enqueued it."""

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        sent = _sent.get()
        if sent is not None:
            sent.append(message.message_id)


class Handover:
    """A request's tasks: queued in the ledger, then enqueued by the route."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @contextmanager
    def record(self, *kinds: TaskKind) -> Iterator[list[str]]:
        """Record tasks of these kinds as queued (before the enqueue, so a fast
        worker's "running" cannot be overwritten) and yield their ids, in order, for
        the block to enqueue; a failed enqueue is a 503 that says what was queued."""
        ids = self.ledger.record_new(*kinds)
        sent: list[str] = []
        token = _sent.set(sent)
        try:
            yield ids
        except ENQUEUE_ERRORS as exc:
            unsent = [i for i in ids if i not in sent]
            logger.error("enqueueing %s failed (%d sent before): %r", unsent[0], len(sent), exc)
            try:
                self.ledger.forget(unsent)
            except Exception:  # the ledger may live on the same dead Redis: best effort
                logger.debug("could not forget %s", unsent, exc_info=True)
            what = f"broker unavailable, {what_was_queued(sent, [], unsent)}"
            raise SchedulerUnavailable(what, f"{what}: {exc!r}") from exc
        finally:
            _sent.reset(token)


def broker_check(broker: Broker) -> Callable[[], None]:
    """GET /ready's question to the broker: Redis, a PING; RabbitMQ, a fresh
    connection (a pooled one may look alive after the broker went away)."""

    def check() -> None:
        try:
            if isinstance(broker, RedisBroker):
                broker.client.ping()
            elif isinstance(broker, RabbitmqBroker):
                parameters = broker.parameters
                pika.BlockingConnection(parameters).close()
        except ENQUEUE_ERRORS as exc:
            raise SchedulerUnavailable("the broker cannot be reached", f"broker: {exc!r}") from exc

    return check


async def get_handover(request: Request) -> Handover:
    handover: Handover = request.app.state.handover
    return handover


HandoverDep = Annotated[Handover, Depends(get_handover)]
