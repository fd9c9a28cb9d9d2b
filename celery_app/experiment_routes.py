"""The Celery app's routes for the experiments, beside its contract: the shared
baseline (``bare``), and the rungs of the hand-over's cost ladder
(``/capacity/<rung>/{email}``, ``python -m experiments capacity``). Each rung hands
the request's two messages (the notification, then its log line) over one step
closer to what ``POST /send-notification/{email}`` does:

- ``bare-def``: no task, but in a plain ``def`` route like the real one: the trip
  to AnyIO's thread pool;
- ``floor``: the two messages' bytes, raw, in one round trip to the broker;
- ``stock``, ``stock-events``: a stock Celery app's ``send_task``, twice, without and
  with the task-sent event;
- ``publish``: the project's publish (``.apply_async`` through one producer, the
  confirm bound, the account of a failure), with the ledger off;
- ``publish-ledger``: the same with the ledger, as the route does it.

No worker consumes the rungs' queues: the experiment empties them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import amqp
import redis
import redis.asyncio
from celery import Celery
from fastapi import APIRouter, Request
from kombu import Exchange, Queue

from celery_app import tasks
from celery_app.config import QUEUE, TASK_NAMES, transport_options
from celery_app.handover import Handover, HandoverDep
from shared import experiment_routes
from shared.experiment_routes import F, accepted, capacity_rung
from shared.http import EmailPath
from shared.ledger import Ledger
from shared.models import Implementation, NotificationAccepted, TaskKind
from shared.settings import Settings

router = APIRouter(tags=["experiments"])
router.include_router(experiment_routes.router)

# The rungs' own queues: no worker takes from them, and their declarations never
# meet the project's queue (RabbitMQ refuses a queue declared again otherwise).
STOCK_QUEUE = "capacity-stock"
FLOOR_QUEUE = "capacity-floor"
QUEUES = (QUEUE, STOCK_QUEUE, FLOOR_QUEUE)
# About the size of a Celery message of this task, its headers and body as JSON.
FLOOR_PAYLOAD = json.dumps({"body": "x" * 700, "headers": {"x": "x" * 500}}).encode()


def stock_app(settings: Settings, *, events: bool) -> Celery:
    """Celery as its docs set it up, publishing to a queue of its own: its defaults,
    the broker's URL, and what the broker needs for the same guarantee (RabbitMQ:
    publisher confirms; a quorum queue where the project has one)."""
    app = Celery("capacity-stock", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=STOCK_QUEUE,
        task_default_exchange=STOCK_QUEUE,
        task_default_routing_key=STOCK_QUEUE,
        task_send_sent_event=events,
        broker_transport_options=transport_options(settings, publisher=True),
    )
    if settings.broker == "rabbitmq" and settings.celery_queue_type == "quorum":
        app.conf.task_default_queue_type = "quorum"
    return app


class Rig:
    """What the rungs publish with, made on first use (experiment routes only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        off = Ledger(None, Implementation.celery, best_effort=True, off="a capacity rung")
        self.without_ledger = Handover(off)
        self.stock = {events: stock_app(settings, events=events) for events in (False, True)}
        self.redis: redis.asyncio.Redis | None = None
        if settings.broker == "redis":
            self.redis = redis.asyncio.Redis.from_url(settings.broker_url)
        self._amqp = threading.local()

    def amqp_publish(self, count: int) -> None:
        """``count`` messages of raw bytes, then one wait for the broker's confirms of
        all of them (pipelined), on a channel of this thread's own (py-amqp is not
        thread-safe)."""
        channel = self._amqp_channel()
        local = self._amqp
        for _ in range(count):
            channel.basic_publish(amqp.Message(FLOOR_PAYLOAD, delivery_mode=2), "", FLOOR_QUEUE)
        local.published += count
        while local.confirmed < local.published:
            channel.connection.drain_events(timeout=self.settings.redis_socket_timeout)

    def _amqp_channel(self) -> Any:
        channel: Any = getattr(self._amqp, "channel", None)  # py-amqp's: untyped events
        if channel is None:
            url = self.stock[False].connection_for_write()
            conn = amqp.Connection(
                f"{url.hostname}:{url.port}",
                userid=url.userid or "",
                password=url.password or "",
                virtual_host=url.virtual_host or "/",
            )
            conn.connect()
            channel = conn.channel()
            channel.queue_declare(
                FLOOR_QUEUE,
                durable=True,
                auto_delete=False,
                arguments={"x-queue-type": self.settings.celery_queue_type},
            )
            channel.confirm_select()
            local = self._amqp
            local.published = local.confirmed = 0

            def confirmed(delivery_tag: int, multiple: bool) -> None:
                local.confirmed = delivery_tag if multiple else max(local.confirmed, delivery_tag)

            channel.events["basic_ack"].add(confirmed)
            local.channel = channel
        return channel


_lock = threading.Lock()


def rig(request: Request) -> Rig:
    state = request.app.state
    with _lock:
        if getattr(state, "capacity_rig", None) is None:
            state.capacity_rig = Rig(state.settings)
    found: Rig = state.capacity_rig
    return found


def rung(name: str, description: str, *, can_fail: bool = False) -> Callable[[F], F]:
    return capacity_rung(router, name, description, can_fail=can_fail)


@rung("bare-def", "No task, in a plain def route: what the trip to AnyIO's thread pool costs.")
def capacity_bare_def(email: EmailPath) -> NotificationAccepted:
    return accepted(email, [])


@rung("floor", "The floor: the messages' bytes, raw, in one round trip to the broker.")
async def capacity_floor(email: EmailPath, request: Request) -> NotificationAccepted:
    r = rig(request)
    if r.redis is not None:
        pipe = r.redis.pipeline(transaction=False)
        pipe.lpush(FLOOR_QUEUE, FLOOR_PAYLOAD)
        pipe.lpush(FLOOR_QUEUE, FLOOR_PAYLOAD)
        await pipe.execute()
        return accepted(email, [])
    return await _floor_amqp(r, email)


async def _floor_amqp(r: Rig, email: str) -> NotificationAccepted:
    import anyio.to_thread  # blocking I/O: in a worker thread, as a def route's

    await anyio.to_thread.run_sync(r.amqp_publish, 2)
    return accepted(email, [])


def _stock(r: Rig, email: str, *, events: bool) -> NotificationAccepted:
    app = r.stock[events]
    sent = app.send_task(TASK_NAMES[TaskKind.notification], args=(email,))
    logged = app.send_task(TASK_NAMES[TaskKind.log], args=(f"notification scheduled for {email}",))
    return accepted(email, [str(sent.id), str(logged.id)])


@rung("stock", "A stock Celery app's send_task, twice, without the task-sent event.")
def capacity_stock(email: EmailPath, request: Request) -> NotificationAccepted:
    return _stock(rig(request), email, events=False)


@rung("stock-events", "A stock Celery app's send_task, twice, with the task-sent event.")
def capacity_stock_events(email: EmailPath, request: Request) -> NotificationAccepted:
    return _stock(rig(request), email, events=True)


def _publish(handover: Handover, email: str) -> NotificationAccepted:
    with handover.record(TaskKind.notification, TaskKind.log) as [notification_id, log_id]:
        message = f"notification scheduled for {email}"
        tasks.send_notification.apply_async((email,), task_id=notification_id)
        tasks.write_log.apply_async((message,), task_id=log_id)
    return accepted(email, [notification_id, log_id])


@rung("publish", "The project's publish, with the ledger off.", can_fail=True)
def capacity_publish(email: EmailPath, request: Request) -> NotificationAccepted:
    return _publish(rig(request).without_ledger, email)


@rung("publish-ledger", "The project's publish, with the ledger.", can_fail=True)
def capacity_publish_ledger(email: EmailPath, ledger: HandoverDep) -> NotificationAccepted:
    return _publish(ledger, email)


def purge(settings: Settings) -> None:
    """Empty every queue the rungs and the route fill (no worker takes from them)."""
    if settings.broker == "redis":
        client = redis.Redis.from_url(settings.broker_url)
        try:
            client.delete(*QUEUES)
        finally:
            client.close()
        return
    app = stock_app(settings, events=False)
    try:
        with app.connection_for_write() as conn:
            channel = conn.default_channel
            for name in QUEUES:
                try:
                    Queue(name, Exchange(name), channel=channel).purge()
                except Exception:  # not declared yet: nothing to empty
                    channel = conn.channel()
    finally:
        app.close()
