"""The taskiq app's API: each route kicks its work to the broker (``.kiq``), for a
separate taskiq worker to run.

Run: ``uvicorn taskiq_app.main:app --port 8003`` next to
``taskiq worker taskiq_app.worker:broker taskiq_app.tasks`` (and the scheduler).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.app import create_api, open_ledger
from shared.http import BODY_ERRORS, TOO_LARGE, UNAVAILABLE, EmailPath, SettingsDep, ledger_router
from shared.models import (
    HeavyAccepted,
    Implementation,
    Item,
    ItemAccepted,
    NotificationAccepted,
    TaskKind,
)
from shared.settings import Settings, get_settings
from taskiq_app import experiment_routes, tasks
from taskiq_app.handover import KICK_ERRORS, Handover, HandoverDep, broker_check
from taskiq_app.worker import broker

logger = logging.getLogger(__name__)

DELIVERY = (
    "taskiq: kicked to the broker (Redis) and run by a separate worker. On the stream "
    "broker a task whose worker dies mid-run is claimed by another worker once it has "
    "been pending TASKIQ_IDLE_TIMEOUT_SECONDS; on the list broker it is lost. A "
    "notification that fails transiently is retried (SmartRetryMiddleware, bounded)."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Not best effort: a task this side cannot record is a task it does not accept.
    async with open_ledger(
        app, Implementation.taskiq, best_effort=False, heartbeat_role=None
    ) as settings:
        try:
            await broker.startup()
        except KICK_ERRORS as exc:
            # Serve all the same: a kick is a 503 until the broker answers, and /ready says so.
            logger.warning("taskiq broker unavailable at start: %r", exc)
        app.state.handover = Handover(app.state.async_ledger)
        app.state.readiness["broker"] = broker_check(broker, settings.redis_socket_timeout)
        try:
            yield
        finally:
            await broker.shutdown()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its experiment-only routes only where ``EXPERIMENT_ROUTES`` says so."""
    app = create_api("taskiq implementation", DELIVERY, lifespan)

    @app.post(
        "/items/",
        status_code=202,
        tags=["items"],
        responses={**BODY_ERRORS, **UNAVAILABLE},
        description=f"Creates the item and schedules a log line. {DELIVERY}",
    )
    async def create_item(item: Item, handover: HandoverDep) -> ItemAccepted:
        async with handover.record(TaskKind.log) as [log_id]:
            message = f"item created: {item.name} ({item.price:,.2f})"
            await tasks.write_log.kicker().with_task_id(log_id).kiq(message)
        return ItemAccepted(item=item, message="item created", task_ids=[log_id])

    @app.post(
        "/send-notification/{email}",
        status_code=202,
        tags=["notifications"],
        responses={**UNAVAILABLE, **TOO_LARGE},
        description=f"Schedules the slow notification, then a log line. {DELIVERY}",
    )
    async def send_notification(email: EmailPath, handover: HandoverDep) -> NotificationAccepted:
        async with handover.record(TaskKind.notification, TaskKind.log) as ids:
            notification_id, log_id = ids
            message = f"notification scheduled for {email}"
            await tasks.send_notification.kicker().with_task_id(notification_id).kiq(email)
            await tasks.write_log.kicker().with_task_id(log_id).kiq(message)
        return NotificationAccepted(
            email=email,
            message="notification will be sent in the background",
            task_ids=[notification_id, log_id],
        )

    @app.post(
        "/heavy",
        status_code=202,
        tags=["heavy"],
        responses={**UNAVAILABLE, **TOO_LARGE},
        description="Schedules one CPU-bound job (HEAVY_TASK_ROUNDS of pure-Python "
        f"arithmetic, its result written to the log). {DELIVERY}",
    )
    async def schedule_heavy(settings: SettingsDep, handover: HandoverDep) -> HeavyAccepted:
        async with handover.record(TaskKind.heavy) as [heavy_id]:
            rounds = settings.heavy_task_rounds
            await tasks.compute_heavy.kicker().with_task_id(heavy_id).kiq(rounds)
        return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])

    app.include_router(ledger_router())
    if (settings or get_settings()).experiment_routes:
        app.include_router(experiment_routes.router)
    return app


app = create_app()
