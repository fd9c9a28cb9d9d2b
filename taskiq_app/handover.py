"""How the taskiq API hands a request's tasks over, and what a failed hand-over leaves.

A route records its tasks in the ledger as queued (one round trip), then kicks each
one (``.kiq``) inside ``Handover.record``. Should a kick fail, the request gets a
503 that names, of its tasks, those that were queued (they will run) and those that
were not (the ledger forgets them). ``HandoverMiddleware`` notes every message the
broker took (taskiq's ``post_send``), as Celery's ``after_task_publish`` does there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import Depends, Request
from redis.asyncio import Redis
from redis.exceptions import RedisError
from taskiq import AsyncBroker, TaskiqMessage, TaskiqMiddleware
from taskiq.exceptions import SendTaskError

from shared.errors import SchedulerUnavailable, what_was_queued
from shared.ledger import AsyncLedger
from shared.models import TaskKind

logger = logging.getLogger(__name__)

# What a failed kick raises: taskiq wraps whatever the broker raised in SendTaskError;
# redis-py's errors and a socket's (a timeout included) where nothing wraps them.
KICK_ERRORS = (SendTaskError, RedisError, OSError)

_sent: ContextVar[list[str] | None] = ContextVar("taskiq_sent", default=None)


class HandoverMiddleware(TaskiqMiddleware):
    """Notes each message the broker took, for the request that kicked it."""

    def post_send(self, message: TaskiqMessage) -> None:
        sent = _sent.get()
        if sent is not None:
            sent.append(message.task_id)


class Handover:
    """A request's tasks: queued in the ledger, then kicked by the route."""

    def __init__(self, ledger: AsyncLedger) -> None:
        self.ledger = ledger

    @asynccontextmanager
    async def record(self, *kinds: TaskKind) -> AsyncIterator[list[str]]:
        """Record tasks of these kinds as queued (before the kick, so a fast worker's
        "running" cannot be overwritten) and yield their ids, in order, for the block
        to kick them; a failed kick is a 503 that says what was queued."""
        ids = await self.ledger.record_new(*kinds)
        sent: list[str] = []
        token = _sent.set(sent)
        try:
            yield ids
        except KICK_ERRORS as exc:
            unsent = [i for i in ids if i not in sent]
            cause = exc.__cause__ or exc
            logger.error("kicking %s failed (%d sent before): %r", unsent[0], len(sent), cause)
            try:
                await self.ledger.forget(unsent)
            except Exception:  # the ledger may live on the same dead Redis: best effort
                logger.debug("could not forget %s", unsent, exc_info=True)
            what = f"broker unavailable, {what_was_queued(sent, [], unsent)}"
            raise SchedulerUnavailable(what, f"{what}: {cause!r}") from exc
        finally:
            _sent.reset(token)


def broker_check(broker: AsyncBroker, timeout: float) -> Callable[[], Coroutine[Any, Any, None]]:
    """GET /ready's question to the broker's Redis: a PING within ``timeout``."""
    pool = getattr(broker, "connection_pool", None)

    async def check() -> None:
        try:
            async with Redis(connection_pool=pool) as redis:
                await asyncio.wait_for(redis.ping(), timeout)
        except (*KICK_ERRORS, TimeoutError) as exc:
            raise SchedulerUnavailable("the broker cannot be reached", f"broker: {exc!r}") from exc

    return check


async def get_handover(request: Request) -> Handover:
    handover: Handover = request.app.state.handover
    return handover


HandoverDep = Annotated[Handover, Depends(get_handover)]
