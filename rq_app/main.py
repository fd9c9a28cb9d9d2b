"""The RQ app's API: each route enqueues its work in RQ's queue (``queue.enqueue``),
for a separate ``rq worker`` to run.

Run: ``uvicorn rq_app.main:app --port 8005`` next to ``rq worker --with-scheduler ...``
(the Procfile's ``rq-worker`` line). ``enqueue`` is blocking (redis-py), so the
routes are ``def``: FastAPI runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from rq_app import experiment_routes, tasks
from rq_app.handover import Handover, HandoverDep, HandoverQueue, broker_check
from rq_app.queue import connect, notification_retry, open_queue
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
    "RQ: enqueued in Redis and run by a separate worker, one job at a time, each in a "
    "forked work horse. RQ never hands a started job out again: a job whose worker died "
    "is moved to the FailedJobRegistry (abandoned; `rq requeue` runs it again), or, "
    "while its Retry has retries left, enqueued again. A notification that fails is "
    "retried (Retry, bounded)."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Not best effort: a task this side cannot record is a task it does not accept.
    async with open_ledger(
        app, Implementation.rq, best_effort=False, heartbeat_role=None
    ) as settings:
        connection = connect(settings)
        queue = open_queue(connection, settings, HandoverQueue)
        app.state.handover = Handover(app.state.ledger, queue, notification_retry(settings))
        app.state.readiness["broker"] = broker_check(connection)
        try:
            yield
        finally:
            connection.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its experiment-only routes only where ``EXPERIMENT_ROUTES`` says so."""
    app = create_api("RQ implementation", DELIVERY, lifespan)

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
            handover.queue.enqueue(tasks.write_log, message, job_id=log_id, on_failure=tasks.ENDED)
        return ItemAccepted(item=item, message="item created", task_ids=[log_id])

    @app.post(
        "/send-notification/{email}",
        status_code=202,
        tags=["notifications"],
        responses={**UNAVAILABLE, **TOO_LARGE},
        description=f"Schedules the slow notification, then a log line. {DELIVERY}",
    )
    def send_notification(email: EmailPath, handover: HandoverDep) -> NotificationAccepted:
        with handover.record(TaskKind.notification, TaskKind.log) as ids:
            notification_id, log_id = ids
            message = f"notification scheduled for {email}"
            handover.queue.enqueue(
                tasks.send_notification,
                email,
                job_id=notification_id,
                retry=handover.retry,
                on_failure=tasks.ENDED,
            )
            handover.queue.enqueue(tasks.write_log, message, job_id=log_id, on_failure=tasks.ENDED)
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
            handover.queue.enqueue(
                tasks.compute_heavy, rounds, job_id=heavy_id, on_failure=tasks.ENDED
            )
        return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])

    app.include_router(ledger_router())
    if (settings or get_settings()).experiment_routes:
        app.include_router(experiment_routes.router)
    return app


app = create_app()
