"""FastAPI app that dispatches its work to a Celery worker through Redis.

Run: ``uvicorn celery_app.main:app --port 8002`` next to
``celery -A celery_app.worker worker`` (and ``beat``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import FastAPI, Request
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from celery_app.worker import TASK_NAMES, create_celery
from shared.api import (
    LedgerDep,
    SchedulerUnavailable,
    build_common_router,
    build_router,
    install_error_handlers,
)
from shared.ledger import Ledger, connect
from shared.models import Implementation, TaskKind
from shared.settings import get_settings

logger = logging.getLogger(__name__)

DELIVERY_NOTE = (
    "Celery: published to Redis and run by a separate worker. A notification that "
    "fails transiently is retried with backoff and jitter (bounded); a task whose "
    "worker dies mid-run is redelivered after the visibility timeout."
)


class CeleryScheduler:
    implementation = Implementation.celery

    def __init__(self, celery: Celery, ledger: Ledger) -> None:
        self.celery = celery
        self.ledger = ledger

    def schedule(self, kind: TaskKind, payload: dict[str, str]) -> str:
        task_id = str(uuid.uuid4())
        # queued before the publish, so a fast worker's "running" cannot be overwritten.
        self.ledger.queued(task_id, kind.value)
        try:
            self.celery.send_task(TASK_NAMES[kind], kwargs=payload, task_id=task_id)
        except (OperationalError, RedisError, OSError) as exc:
            logger.error("publishing %s failed: %s", task_id, exc)
            try:
                self.ledger.forget(task_id)
            except Exception:  # the ledger lives in the same Redis: best effort
                logger.debug("could not forget %s", task_id, exc_info=True)
            raise SchedulerUnavailable(f"broker unavailable, nothing was queued: {exc}") from exc
        return task_id


async def get_scheduler(request: Request, ledger: LedgerDep) -> CeleryScheduler:
    return CeleryScheduler(request.app.state.celery, ledger)


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = app.dependency_overrides.get(get_settings, get_settings)()
        client = connect(settings.redis_url, settings.redis_socket_timeout)
        app.state.ledger = Ledger(client, Implementation.celery)
        app.state.celery = create_celery(settings)
        yield
        app.state.celery.close()
        client.close()

    app = FastAPI(title="Celery implementation", description=DELIVERY_NOTE, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(build_router(get_scheduler, delivery_note=DELIVERY_NOTE))
    app.include_router(build_common_router())
    return app


app = create_app()
