"""The dramatiq app's API: each route enqueues its work on the broker
(``broker.enqueue(<actor>.message(...))``), for a separate dramatiq worker to run.

Run: ``uvicorn dramatiq_app.main:app --port 8004`` next to
``dramatiq dramatiq_app.tasks`` (and ``python -m dramatiq_app.scheduler``).

The message id is the ledger's task id: ``<actor>.send(...)`` would make one of its
own, so each route builds the message (``.message(...)``), gives it the id
(``.copy(message_id=...)``) and enqueues it. An enqueue blocks (redis-py, pika):
plain ``def`` routes, which FastAPI runs in its thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from dramatiq_app import experiment_routes, tasks
from dramatiq_app.handover import Handover, HandoverDep, broker_check
from dramatiq_app.worker import broker
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

logger = logging.getLogger(__name__)

DELIVERY = (
    "dramatiq: enqueued on the broker (Redis or RabbitMQ) and run by a separate worker, "
    "acknowledged after it ran. A task whose worker dies mid-run comes back: RabbitMQ "
    "when the worker's connection closes; Redis once the dead worker's heartbeat is "
    "DRAMATIQ_HEARTBEAT_TIMEOUT_SECONDS old, at a maintenance pass. A notification that "
    "fails transiently is retried (bounded); a task that fails for good is dead-lettered."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Not best effort: a task this API cannot record is a task it does not accept.
    async with open_ledger(app, Implementation.dramatiq, best_effort=False, heartbeat_role=None):
        app.state.handover = Handover(app.state.ledger)
        app.state.readiness["broker"] = broker_check(broker)
        try:
            yield
        finally:
            broker.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its experiment-only routes only where ``EXPERIMENT_ROUTES`` says so."""
    app = create_api("dramatiq implementation", DELIVERY, lifespan)

    @app.post(
        "/items/",
        status_code=202,
        tags=["items"],
        responses={**BODY_ERRORS, **UNAVAILABLE},
        description=f"Creates the item and schedules a log line. {DELIVERY}",
    )
    def create_item(item: Item, handover: HandoverDep) -> ItemAccepted:
        with handover.record(TaskKind.log) as [log_id]:
            message = f"item created: {item.name} ({item.price:,.2f})"
            broker.enqueue(tasks.write_log.message(message).copy(message_id=log_id))
        return ItemAccepted(item=item, message="item created", task_ids=[log_id])

    @app.post(
        "/send-notification/{email}",
        status_code=202,
        tags=["notifications"],
        responses={**UNAVAILABLE, **TOO_LARGE},
        description=f"Schedules the slow notification, then a log line. {DELIVERY}",
    )
    def send_notification(email: EmailPath, handover: HandoverDep) -> NotificationAccepted:
        with handover.record(TaskKind.notification, TaskKind.log) as [notification_id, log_id]:
            message = f"notification scheduled for {email}"
            broker.enqueue(tasks.send_notification.message(email).copy(message_id=notification_id))
            broker.enqueue(tasks.write_log.message(message).copy(message_id=log_id))
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
    def schedule_heavy(settings: SettingsDep, handover: HandoverDep) -> HeavyAccepted:
        with handover.record(TaskKind.heavy) as [heavy_id]:
            rounds = settings.heavy_task_rounds
            broker.enqueue(tasks.compute_heavy.message(rounds).copy(message_id=heavy_id))
        return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])

    app.include_router(ledger_router())
    if (settings or get_settings()).experiment_routes:
        app.include_router(experiment_routes.router)
    return app


app = create_app()
