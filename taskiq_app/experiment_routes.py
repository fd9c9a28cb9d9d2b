"""The taskiq app's routes for the experiments, beside its contract: the shared
baseline (``bare``), and the rungs of the hand-over's cost ladder
(``/capacity/<rung>/{email}``, ``python -m experiments capacity``). Each rung hands
the request's two messages (the notification, then its log line) over one step
closer to what ``POST /send-notification/{email}`` does:

- ``floor``: the two messages' bytes, raw, in one round trip to the broker (two
  XADDs, pipelined);
- ``stock``: taskiq-redis's ``RedisStreamBroker`` as its docs set it up (its
  defaults, no middleware), each task kicked by name (``.kiq``), twice;
- ``publish``: the project's kick (``Handover``, its middlewares, the account of a
  failure), with the ledger off; the route itself adds the ledger.

No worker reads the rungs' streams: the experiment empties them (``purge``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from fastapi import APIRouter, Request
from redis.asyncio import Redis
from taskiq import AsyncBroker, TaskiqMessage
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from shared import experiment_routes
from shared.experiment_routes import F, accepted, capacity_rung
from shared.http import EmailPath
from shared.ledger import AsyncLedger
from shared.models import Implementation, NotificationAccepted, TaskKind
from shared.settings import Settings
from taskiq_app import purge as purging
from taskiq_app import tasks
from taskiq_app.handover import Handover
from taskiq_app.worker import broker

router = APIRouter(tags=["experiments"])
router.include_router(experiment_routes.router)

# The rungs' own streams: no worker reads them, and the project's stream (and its
# consumer group) never sees their messages.
STOCK_STREAM = "taskiq-capacity-stock"
FLOOR_STREAM = "taskiq-capacity-floor"


def message_bytes(kicker_broker: AsyncBroker, task_name: str, arg: str) -> bytes:
    """What a kick of this task sends, as bytes: the floor writes the same."""
    message = TaskiqMessage(
        task_id=uuid.uuid4().hex, task_name=task_name, labels={}, args=[arg], kwargs={}
    )
    return kicker_broker.formatter.dumps(message).message


class Rig:
    """What the rungs hand over with, made on first use (experiment routes only)."""

    def __init__(self, settings: Settings) -> None:
        off = AsyncLedger(None, Implementation.taskiq, best_effort=True, off="a capacity rung")
        self.without_ledger = Handover(off)
        self.stock = RedisStreamBroker(settings.taskiq_url, queue_name=STOCK_STREAM)
        self.redis = Redis.from_url(settings.taskiq_url)
        email = "capacity@example.com"
        self.floor = (
            message_bytes(broker, tasks.send_notification.task_name, email),
            message_bytes(broker, tasks.write_log.task_name, f"notification scheduled for {email}"),
        )

    async def start(self) -> None:
        await self.stock.startup()


_lock = asyncio.Lock()


async def rig(request: Request) -> Rig:
    state = request.app.state
    async with _lock:
        if getattr(state, "capacity_rig", None) is None:
            made = Rig(state.settings)
            await made.start()
            state.capacity_rig = made
    found: Rig = state.capacity_rig
    return found


def rung(name: str, description: str, *, can_fail: bool = False) -> Callable[[F], F]:
    return capacity_rung(router, name, description, can_fail=can_fail)


@rung("floor", "The floor: the messages' bytes, raw, in one round trip to the broker.")
async def capacity_floor(email: EmailPath, request: Request) -> NotificationAccepted:
    r = await rig(request)
    pipe = r.redis.pipeline(transaction=False)
    for data in r.floor:
        pipe.xadd(FLOOR_STREAM, {b"data": data})
    await pipe.execute()
    return accepted(email, [])


@rung("stock", "taskiq-redis's stream broker as it ships, each task kicked by name, twice.")
async def capacity_stock(email: EmailPath, request: Request) -> NotificationAccepted:
    stock = (await rig(request)).stock
    # By name, as a client that does not import the tasks would (Celery's send_task).
    notify: AsyncKicker[[str], None] = AsyncKicker(tasks.send_notification.task_name, stock, {})
    log: AsyncKicker[[str], None] = AsyncKicker(tasks.write_log.task_name, stock, {})
    sent = await notify.kiq(email)
    logged = await log.kiq(f"notification scheduled for {email}")
    return accepted(email, [sent.task_id, logged.task_id])


@rung("publish", "The project's kick, with the ledger off.", can_fail=True)
async def capacity_publish(email: EmailPath, request: Request) -> NotificationAccepted:
    handover = (await rig(request)).without_ledger
    async with handover.record(TaskKind.notification, TaskKind.log) as ids:
        notification_id, log_id = ids
        message = f"notification scheduled for {email}"
        await tasks.send_notification.kicker().with_task_id(notification_id).kiq(email)
        await tasks.write_log.kicker().with_task_id(log_id).kiq(message)
    return accepted(email, [notification_id, log_id])


def purge(settings: Settings) -> None:
    """Empty every stream the rungs and the route fill (no worker reads them)."""
    purging.purge(settings, streams=(STOCK_STREAM, FLOOR_STREAM))
