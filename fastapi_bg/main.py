"""FastAPI app that runs its work with ``BackgroundTasks``.

Run: ``uvicorn fastapi_bg.main:app --port 8001``. No broker needed: with Redis
reachable it also records every task in the ledger; without, it serves anyway.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import anyio.to_thread
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request

from fastapi_bg import mechanics
from fastapi_bg.scheduler import BackgroundScheduler, run_job
from shared.api import (
    EmailPath,
    LedgerDep,
    build_common_router,
    build_router,
    install_error_handlers,
    new_tasks,
    notification_jobs,
)
from shared.ledger import AsyncLedger, Heartbeat, Ledger, connect, connect_async
from shared.models import Implementation, NotificationAccepted
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SettingsDep = Annotated[Settings, Depends(get_settings)]

DELIVERY_NOTE = (
    "BackgroundTasks: runs in this process after the response is sent. "
    "No retry: a failing task is logged and recorded as failed, and the tasks "
    "scheduled after it in the same request are skipped. A task still running "
    "when the process dies is lost."
)


async def get_scheduler(
    tasks: BackgroundTasks, ledger: LedgerDep, request: Request
) -> BackgroundScheduler:
    # The settings the lifespan resolved (overrides included), not a per-request
    # get_settings call: that would be a sync dependency, i.e. a thread-pool trip.
    return BackgroundScheduler(
        tasks, ledger, request.app.state.async_ledger, request.app.state.settings
    )


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings = app.dependency_overrides.get(get_settings, get_settings)()
        app.state.settings = settings
        client = (
            connect(settings.redis_url, settings.redis_socket_timeout)
            if settings.redis_url
            else None
        )
        async_client = (
            connect_async(settings.redis_url, settings.redis_socket_timeout)
            if settings.redis_url
            else None
        )
        app.state.ledger = Ledger(client, Implementation.bg, best_effort=True)
        app.state.async_ledger = AsyncLedger(async_client, Implementation.bg, best_effort=True)
        # This process runs the tasks: its heartbeat tells the ledger it is alive.
        heartbeat = (
            Heartbeat(
                client, Implementation.bg, "bg-api", interval=settings.runner_heartbeat_seconds
            ).start()
            if client is not None
            else None
        )
        if settings.threadpool_tokens is not None:
            # The limiter is per event loop: set it here, on the loop that serves.
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = settings.threadpool_tokens
        # The mechanics tasks compare their thread with this one.
        app.state.loop_thread = threading.get_ident()
        if not app.state.ledger.ping():
            logger.warning("ledger unavailable at %s: serving without it", settings.redis_url)
        yield
        if heartbeat is not None:
            heartbeat.stop()
        if async_client is not None:
            await async_client.aclose()
        if client is not None:
            client.close()

    app = FastAPI(
        title="BackgroundTasks implementation",
        description=DELIVERY_NOTE,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(build_router(get_scheduler, delivery_note=DELIVERY_NOTE))
    app.include_router(build_common_router())
    app.include_router(mechanics.router)

    @app.post(
        "/send-notification/{email}/inline",
        response_model=NotificationAccepted,
        description="Does both jobs before answering: the response-time comparison "
        "(seed 000, practice point 5).",
    )
    def send_notification_inline(
        email: EmailPath, ledger: LedgerDep, settings: SettingsDep
    ) -> NotificationAccepted:
        jobs = notification_jobs(email)
        task_ids = [str(uuid.uuid4()) for _ in jobs]
        ledger.queued(new_tasks(task_ids, jobs))
        for task_id, (kind, payload) in zip(task_ids, jobs, strict=True):
            try:
                run_job(ledger, settings, kind.value, payload, task_id)
            except Exception as exc:
                raise HTTPException(status_code=502, detail=f"{kind.value} failed: {exc}") from exc
        return NotificationAccepted(email=email, message="notification sent", task_ids=task_ids)

    return app


app = create_app()
