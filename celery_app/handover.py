"""How the Celery API hands a request's tasks over, and what a failed publish leaves queued.

A route records its tasks in the ledger as queued (one round trip), then
publishes each one with Celery's own API (``.apply_async``), inside
``Handover.queued``. Should a publish fail, the request gets a 503 that names,
of its tasks, those that were queued (they will run), the one the broker may
have (it did not answer in time) and those that were not (the ledger forgets
them): a client must know what will still run.

The API's Celery app (``HandoverCelery``) lets that block see its publishes:
every one of them goes through one producer, checked out of the pool (and
connected) before the first message, so a broker that cannot be reached is
"nothing was queued"; and each message the broker took is noted
(``after_task_publish``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated, Any

from celery import Celery
from celery.signals import after_task_publish, before_task_publish
from fastapi import Depends, Request
from kombu import Producer
from kombu.exceptions import OperationalError
from kombu.transport.redis import Channel as RedisChannel
from kombu.transport.redis import Transport as RedisTransport
from redis.exceptions import RedisError

from shared.errors import SchedulerUnavailable, what_was_queued
from shared.ledger import Ledger
from shared.models import TaskKind

logger = logging.getLogger(__name__)

# What a failed publish raises: kombu's connection errors (RabbitMQ refusing a
# message, a nack under publisher confirms, is one of them), redis-py's, and a
# socket's (a timeout included).
PUBLISH_ERRORS = (OperationalError, RedisError, OSError)


@dataclass
class _Progress:
    """How far one request's publish got."""

    producer: Producer | None = None
    # The broker was reached (the producer's channel open) before the first message.
    reached: bool = False
    # The message being published, and the ones the broker took, in order.
    current: str | None = None
    sent: list[str] = field(default_factory=list)


_progress: ContextVar[_Progress | None] = ContextVar("handover_progress", default=None)


@before_task_publish.connect(dispatch_uid="handover-before")
def _publishing(headers: dict[str, Any] | None = None, **_: Any) -> None:
    progress = _progress.get()
    if progress is not None and headers:
        progress.current = headers.get("id")


@after_task_publish.connect(dispatch_uid="handover-after")
def _published(headers: dict[str, Any] | None = None, **_: Any) -> None:
    progress = _progress.get()
    if progress is not None and headers and headers.get("id"):
        progress.sent.append(str(headers["id"]))


class HandoverCelery(Celery):
    """The API's Celery app. Inside ``Handover.queued``, a request's publishes share
    one producer, connected before the first; every publish waits at most
    ``confirm_timeout`` for RabbitMQ's confirm (a broker that blocks publishers
    must not hang the request; Redis: unused)."""

    confirm_timeout: float | None = None

    def producer_or_acquire(self, producer: Producer | None = None) -> Any:
        progress = _progress.get()
        if producer is None and progress is not None:
            if progress.producer is None:
                acquired = self.producer_pool.acquire(block=True)
                try:
                    # Reach the broker first, as the publish would (the same connect
                    # timeout): a timeout here is a broker that got no message.
                    _ = acquired.channel
                except BaseException:
                    acquired.release()
                    raise
                progress.producer, progress.reached = acquired, True
            producer = progress.producer
        return super().producer_or_acquire(producer)

    def send_task(self, name: str, *args: Any, **options: Any) -> Any:
        options.setdefault("confirm_timeout", self.confirm_timeout)
        return super().send_task(name, *args, **options)


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


class Handover:
    """A request's tasks: queued in the ledger, then published by the route."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    @contextmanager
    def record(self, *kinds: TaskKind) -> Iterator[list[str]]:
        """Record tasks of these kinds as queued (before the publish, so a fast
        worker's "running" cannot be overwritten) and yield their ids, in order, for
        the block to publish them; a failed publish is a 503 that says what was queued."""
        ids = self.ledger.record_new(*kinds)
        progress = _Progress()
        token = _progress.set(progress)
        try:
            yield ids
        except PUBLISH_ERRORS as exc:
            raise self._unavailable(ids, progress, exc) from exc
        finally:
            _progress.reset(token)
            if progress.producer is not None:
                progress.producer.release()

    def _unavailable(
        self, ids: Sequence[str], progress: _Progress, exc: BaseException
    ) -> SchedulerUnavailable:
        # The messages that did go out will run, and so may the one the broker did
        # not answer for: only the others are forgotten.
        sent = [i for i in ids if i in progress.sent]
        failed = progress.current if progress.current not in progress.sent else None
        maybe = [failed] if failed and progress.reached and _maybe_sent(exc) else []
        unsent = [i for i in ids if i not in sent and i not in maybe]
        reason = " from ".join(repr(e) for e in _chain(exc))
        logger.error("publishing %s failed (%d sent before): %s", failed, len(sent), reason)
        try:
            self.ledger.forget(unsent)
        except Exception:  # the ledger may live on the same dead Redis: best effort
            logger.debug("could not forget %s", unsent, exc_info=True)
        what = f"broker unavailable, {what_was_queued(sent, maybe, unsent)}"
        return SchedulerUnavailable(what, f"{what}: {reason}")


def broker_check(celery: Celery, timeout: float) -> Callable[[], None]:
    """GET /ready's question to the broker: a fresh connection, one retry, within
    ``timeout`` (a pooled one may look alive after the broker went away)."""

    def check() -> None:
        try:
            with celery.connection_for_write() as connection:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0, timeout=math.ceil(timeout)
                )
        except PUBLISH_ERRORS as exc:
            raise SchedulerUnavailable("the broker cannot be reached", f"broker: {exc!r}") from exc

    return check


async def get_handover(request: Request) -> Handover:
    handover: Handover = request.app.state.handover
    return handover


HandoverDep = Annotated[Handover, Depends(get_handover)]


class PublishingChannel(RedisChannel):
    """kombu's Redis channel in a process that only publishes: one redis-py client for
    its connection pool, where kombu builds a new one for every command (redis-py's
    client is thread-safe; building one, with its table of response callbacks, costs
    more than the round trip it sends: about 180 µs here, twice per message with
    sent events). The commands, and so every guarantee, are the same."""

    _shared: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        create = super()._create_client  # type: ignore[misc]  # kombu's, untyped
        if asynchronous:
            return create(asynchronous=True)
        if self._shared is None:
            self._shared = create()
        return self._shared


class PublishingTransport(RedisTransport):
    Channel = PublishingChannel
