"""The Celery app's API: each route publishes its work to the broker
(``.apply_async``), for a separate Celery worker to run.

Run: ``uvicorn celery_app.main:app --port 8002`` next to
``celery -A celery_app.worker worker`` (and ``beat``). The broker is Redis, or
RabbitMQ when ``CELERY_BROKER_URL`` says so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from celery_app import experiment_routes, tasks
from celery_app.config import create_celery
from celery_app.handover import Handover, HandoverCelery, HandoverDep, broker_check
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

DELIVERY = (
    "Celery: published to the broker and run by a separate worker. A notification that "
    "fails transiently is retried with backoff and jitter (bounded); a task whose worker "
    "dies mid-run is redelivered (Redis: after the visibility timeout; RabbitMQ: when "
    "the worker's connection closes)."
)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Not best effort: a task this API cannot record is a task it does not accept.
    async with open_ledger(
        app, Implementation.celery, best_effort=False, heartbeat_role=None
    ) as settings:
        celery = create_celery(settings, publisher=True, app_class=HandoverCelery)
        assert isinstance(celery, HandoverCelery)
        celery.confirm_timeout = settings.redis_socket_timeout
        # The tasks' .apply_async() publishes through this app, from any thread.
        celery.set_default()
        app.state.handover = Handover(app.state.ledger)
        app.state.readiness["broker"] = broker_check(celery, settings.redis_socket_timeout)
        yield
        celery.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its experiment-only routes only where ``EXPERIMENT_ROUTES`` says so
    (``settings``, else the environment's)."""
    app = create_api("Celery implementation", DELIVERY, lifespan)

    # Plain ``def`` routes: a publish is blocking I/O, so FastAPI runs them in
    # AnyIO's thread pool and a slow broker never stalls the event loop.

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
            tasks.write_log.apply_async((message,), task_id=log_id)
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
            tasks.send_notification.apply_async((email,), task_id=notification_id)
            tasks.write_log.apply_async((message,), task_id=log_id)
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
            tasks.compute_heavy.apply_async((rounds,), task_id=heavy_id)
        return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])

    app.include_router(ledger_router())
    if (settings or get_settings()).experiment_routes:
        app.include_router(experiment_routes.router)
    return app


app = create_app()
