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
    TOO_LARGE,
    EmailPath,
    LedgerDep,
    build_common_router,
    build_router,
    create_api,
    heavy_jobs,
    new_tasks,
    notification_jobs,
    open_ledger,
)
from shared.ledger import Ledger
from shared.models import HeavyAccepted, Implementation, NotificationAccepted, Problem
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

SettingsDep = Annotated[Settings, Depends(get_settings)]

DELIVERY_NOTE = (
    "BackgroundTasks: runs in this process after the response is sent. "
    "No retry: a failing task is logged and recorded as failed, and the tasks "
    "scheduled after it in the same request are skipped. A task still running "
    "when the process dies is lost."
)


async def get_scheduler(tasks: BackgroundTasks, request: Request) -> BackgroundScheduler:
    # The settings the lifespan resolved (overrides included), not a per-request
    # get_settings call: that would be a sync dependency, i.e. a thread-pool trip.
    state = request.app.state
    return BackgroundScheduler(tasks, state.ledger, state.async_ledger, state.settings)


def create_app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Best effort: this side serves without Redis, and only loses its ledger.
        async with open_ledger(
            app, Implementation.bg, best_effort=True, heartbeat_role="bg-api"
        ) as settings:
            if settings.threadpool_tokens is not None:
                # The limiter is per event loop: set it here, on the loop that serves.
                limiter = anyio.to_thread.current_default_thread_limiter()
                limiter.total_tokens = settings.threadpool_tokens
            # The mechanics tasks compare their thread with this one.
            app.state.loop_thread = threading.get_ident()
            if not app.state.ledger.ping():
                logger.warning("ledger unavailable at %r: serving without it", settings.redis_url)
            yield

    app = create_api("BackgroundTasks implementation", DELIVERY_NOTE, lifespan)
    app.include_router(
        build_router(get_scheduler, delivery_note=DELIVERY_NOTE, can_be_unavailable=False)
    )
    app.include_router(build_common_router())
    app.include_router(mechanics.router)

    @app.post(
        "/send-notification/{email}/inline",
        tags=["notifications"],
        response_model=NotificationAccepted,
        responses={
            **TOO_LARGE,
            502: {"model": Problem, "description": "The work itself failed (it ran inline)."},
        },
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

    @app.post(
        "/heavy/async",
        tags=["heavy"],
        status_code=202,
        response_model=HeavyAccepted,
        responses=TOO_LARGE,
        description="The same CPU-bound job as an `async def` background task: it runs on "
        "the event loop and holds it for the whole computation (every request waits).",
    )
    async def schedule_heavy_async(
        request: Request, scheduler: Annotated[BackgroundScheduler, Depends(get_scheduler)]
    ) -> HeavyAccepted:
        settings: Settings = request.app.state.settings
        task_ids = await scheduler.schedule(heavy_jobs(settings), run=run_job_on_the_loop)
        return HeavyAccepted(
            rounds=settings.heavy_task_rounds, message="heavy job scheduled", task_ids=task_ids
        )

    return app


async def run_job_on_the_loop(
    ledger: Ledger, settings: Settings, kind: str, payload: dict[str, str], task_id: str
) -> None:
    """``run_job`` as ``async def``: Starlette runs it on the event loop, and with no
    ``await`` inside, the loop is its for the whole job (every request waits)."""
    run_job(ledger, settings, kind, payload, task_id)


app = create_app()
