"""The BackgroundTasks app: each route hands its work to ``BackgroundTasks``, which
runs it in this process after the response is sent.

Run: ``uvicorn fastapi_bg.main:app --port 8001``. No broker needed: with Redis
reachable it also records every task in the ledger; without, it serves anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import BackgroundTasks, FastAPI

from fastapi_bg import experiment_routes
from fastapi_bg.tasks import Tasks, TasksDep
from shared.app import create_api, open_ledger
from shared.http import (
    BODY_ERRORS,
    TOO_LARGE,
    AsyncLedgerDep,
    EmailPath,
    SettingsDep,
    ledger_router,
)
from shared.models import (
    HeavyAccepted,
    Implementation,
    Item,
    ItemAccepted,
    NotificationAccepted,
    TaskKind,
)
from shared.settings import Settings, get_settings, redact

logger = logging.getLogger(__name__)

DELIVERY = (
    "BackgroundTasks: runs in this process after the response is sent. No retry: a "
    "failing task is logged and recorded as failed, and the tasks scheduled after it in "
    "the same request are skipped. A task still running when the process dies is lost."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Best effort: this API serves without Redis, and only loses its ledger.
    async with open_ledger(
        app, Implementation.bg, best_effort=True, heartbeat_role="bg-api"
    ) as settings:
        if settings.threadpool_tokens is not None:
            # The limiter is per event loop: set it here, on the loop that serves.
            limiter = anyio.to_thread.current_default_thread_limiter()
            limiter.total_tokens = settings.threadpool_tokens
        # The mechanics tasks compare their thread with this one.
        app.state.loop_thread = threading.get_ident()
        app.state.tasks = Tasks(app.state.ledger, settings)
        if not app.state.ledger.ping():
            logger.warning(
                "ledger unavailable at %s: serving without it", redact(settings.redis_url)
            )
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its experiment-only routes only where ``EXPERIMENT_ROUTES`` says so
    (``settings``, else the environment's)."""
    app = create_api("BackgroundTasks implementation", DELIVERY, lifespan)

    @app.post(
        "/items/",
        status_code=202,
        tags=["items"],
        responses=BODY_ERRORS,
        description=f"Creates the item and schedules a log line. {DELIVERY}",
    )
    async def create_item(
        item: Item, background_tasks: BackgroundTasks, ledger: AsyncLedgerDep, tasks: TasksDep
    ) -> ItemAccepted:
        [log_id] = await ledger.record_new(TaskKind.log)
        message = f"item created: {item.name} ({item.price:,.2f})"
        background_tasks.add_task(tasks.write_log, message, task_id=log_id)
        return ItemAccepted(item=item, message="item created", task_ids=[log_id])

    @app.post(
        "/send-notification/{email}",
        status_code=202,
        tags=["notifications"],
        responses=TOO_LARGE,
        description=f"Schedules the slow notification, then a log line. {DELIVERY}",
    )
    async def send_notification(
        email: EmailPath, background_tasks: BackgroundTasks, ledger: AsyncLedgerDep, tasks: TasksDep
    ) -> NotificationAccepted:
        notification_id, log_id = await ledger.record_new(TaskKind.notification, TaskKind.log)
        message = f"notification scheduled for {email}"
        background_tasks.add_task(tasks.send_notification, email, task_id=notification_id)
        background_tasks.add_task(tasks.write_log, message, task_id=log_id)
        return NotificationAccepted(
            email=email,
            message="notification will be sent in the background",
            task_ids=[notification_id, log_id],
        )

    @app.post(
        "/heavy",
        status_code=202,
        tags=["heavy"],
        responses=TOO_LARGE,
        description="Schedules one CPU-bound job (HEAVY_TASK_ROUNDS of pure-Python "
        f"arithmetic, its result written to the log). {DELIVERY}",
    )
    async def schedule_heavy(
        settings: SettingsDep,
        background_tasks: BackgroundTasks,
        ledger: AsyncLedgerDep,
        tasks: TasksDep,
    ) -> HeavyAccepted:
        [heavy_id] = await ledger.record_new(TaskKind.heavy)
        rounds = settings.heavy_task_rounds
        background_tasks.add_task(tasks.compute_heavy, rounds, task_id=heavy_id)
        return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])

    app.include_router(ledger_router())
    if (settings or get_settings()).experiment_routes:
        app.include_router(experiment_routes.router)
    return app


app = create_app()
