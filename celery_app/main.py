"""FastAPI app that dispatches its work to a Celery worker through Redis.

Run: ``uvicorn celery_app.main:app --port 8002`` next to
``celery -A celery_app.worker worker`` (and ``beat``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

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
from shared.settings import get_settings

logger = logging.getLogger(__name__)

DELIVERY_NOTE = (
    "Celery: published to Redis and run by a separate worker. A notification that "
    "fails transiently is retried with backoff and jitter (bounded); a task whose "
    "worker dies mid-run is redelivered after the visibility timeout."
)


class CeleryScheduler:
    implementation = Implementation.celery

    def __init__(self, celery: Celery, ledger: AsyncLedger) -> None:
        self.celery = celery
        self.ledger = ledger

    def _publish(self, ids: Sequence[str], jobs: Sequence[Job]) -> None:
        for task_id, job in zip(ids, jobs, strict=True):
            self.celery.send_task(TASK_NAMES[job.kind], kwargs=job.payload, task_id=task_id)

    async def schedule(self, jobs: Sequence[Job]) -> list[str]:
        ids = [str(uuid.uuid4()) for _ in jobs]
        # queued before the publish, so a fast worker's "running" cannot be overwritten.
        await self.ledger.queued(new_tasks(ids, jobs))
        try:
            # kombu's publish is blocking I/O: one trip to a worker thread for the
            # request's messages, so a slow broker never stalls the event loop.
            await anyio.to_thread.run_sync(self._publish, ids, jobs)
        except (OperationalError, RedisError, OSError) as exc:
            logger.error("publishing %s failed: %s", ids, exc)
            try:
                await self.ledger.forget(ids)
            except Exception:  # the ledger may live on the same dead Redis: best effort
                logger.debug("could not forget %s", ids, exc_info=True)
            raise SchedulerUnavailable(f"broker unavailable, nothing was queued: {exc}") from exc
        return ids


async def get_scheduler(request: Request) -> CeleryScheduler:
    return CeleryScheduler(request.app.state.celery, request.app.state.async_ledger)


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = app.dependency_overrides.get(get_settings, get_settings)()
        # Not best effort: a task this side cannot record is a task it does not accept.
        async with open_ledger(
            app, settings, Implementation.celery, best_effort=False, runs_tasks=False
        ):
            app.state.celery = create_celery(settings)
            yield
            app.state.celery.close()

    app = create_api("Celery implementation", DELIVERY_NOTE, lifespan)
    app.include_router(
        build_router(get_scheduler, delivery_note=DELIVERY_NOTE, can_be_unavailable=True)
    )
    app.include_router(build_common_router())
    return app


app = create_app()
