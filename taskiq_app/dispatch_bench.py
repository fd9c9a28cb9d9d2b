"""What ``python -m experiments dispatch`` measures of taskiq: one kick (``.kiq``)
against the cheapest write of a message as long as its own to the same Redis.

The experiment (``experiments.perf.dispatch_measure``) finds this module from the
declaration (``<package>.dispatch_bench``) and times every variant a bench offers,
the floor first; nothing here times anything. Variants (Redis only: taskiq's broker
here is Redis):

- ``xadd``: a raw ``XADD`` (redis-py's asyncio client, as taskiq-redis) of a payload
  as long as the message a kick sends;
- ``kiq, stock broker``: taskiq-redis's ``RedisStreamBroker`` as it ships, the task
  kicked by name;
- ``kiq``: the project's broker (``create_broker`` with its ``HandoverMiddleware``),
  as the routes kick;
- ``API schedule()``: the API's whole hand-over (``Handover.record``: the ledger's
  write, then the kick).

A kick is a coroutine: each call runs one on this bench's own event loop
(``run_until_complete``), the floor too, so every variant pays the same for the
loop. Messages go to a stream no worker reads (``dispatch-bench``), deleted between
rounds and at the end. Heavy imports wait for a bench to be made: the report's
renderer reads only the names and ``describe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

STREAM = "dispatch-bench"
MESSAGE = "item created: 노트북 (1,500,000.00)"
FLOOR = "xadd"
PROFILED = "kiq"
# The client class taskiq-redis builds for each kick (``Redis(connection_pool=...)``).
CLIENT_CLASS = "redis.asyncio.Redis"


class RedisBench:
    """taskiq on Redis, the ledger on the same Redis."""

    floor = FLOOR
    profiled = PROFILED

    def __init__(self, url: str) -> None:
        import redis
        from taskiq.kicker import AsyncKicker
        from taskiq_redis import RedisStreamBroker

        from shared.ledger import AsyncLedger, connect_async
        from shared.models import Implementation
        from shared.settings import explicit_settings
        from taskiq_app import tasks
        from taskiq_app.broker import create_broker
        from taskiq_app.handover import Handover, HandoverMiddleware

        settings = explicit_settings(redis_url=url, taskiq_broker_url=url)
        self.loop = asyncio.new_event_loop()
        task = tasks.write_log
        project = create_broker(settings).with_middlewares(HandoverMiddleware())
        # Its own stream: the project's (and its consumer group) never sees these.
        project.queue_name = STREAM  # type: ignore[attr-defined]
        stock = RedisStreamBroker(url, queue_name=STREAM)
        self.brokers = (project, stock)
        self.kick: AsyncKicker[[str], None] = AsyncKicker(
            task.task_name, project, dict(task.labels)
        )
        self.stock_kick: AsyncKicker[[str], None] = AsyncKicker(task.task_name, stock, {})
        self.ledger_client = connect_async(url)
        self.handover = Handover(AsyncLedger(self.ledger_client, Implementation.taskiq))
        self.floor_client = redis.asyncio.Redis.from_url(url)
        self.raw = redis.Redis.from_url(url)
        # The raw XADD's payload is as long as the message a kick sends.
        self.run(self._kick)()
        entries: list[tuple[bytes, dict[bytes, bytes]]] = self.raw.xrange(STREAM, count=1)  # type: ignore[assignment]
        self.message_bytes = len(entries[0][1][b"data"]) if entries else 0
        self.payload = b"x" * self.message_bytes

    def run(self, make: Callable[[], Coroutine[Any, Any, object]]) -> Callable[[], object]:
        """A sync call of the coroutine ``make`` returns, on this bench's loop."""
        return lambda: self.loop.run_until_complete(make())

    async def _floor(self) -> object:
        return await self.floor_client.xadd(STREAM, {b"data": self.payload})

    async def _stock(self) -> object:
        return await self.stock_kick.kiq(MESSAGE)

    async def _kick(self) -> object:
        return await self.kick.kiq(MESSAGE)

    async def _schedule(self) -> object:
        from shared.models import TaskKind

        async with self.handover.record(TaskKind.log) as [task_id]:
            return await self.kick.with_task_id(task_id).kiq(MESSAGE)

    def variants(self) -> dict[str, Callable[[], object]]:
        return {
            FLOOR: self.run(self._floor),
            "kiq, stock broker": self.run(self._stock),
            PROFILED: self.run(self._kick),
            "API schedule()": self.run(self._schedule),
        }

    def between(self) -> None:
        self.raw.delete(STREAM)

    def close(self) -> None:
        async def shut() -> None:
            for broker in self.brokers:
                await broker.shutdown()
            await self.floor_client.aclose()
            await self.ledger_client.aclose()

        try:
            self.raw.delete(STREAM)
            self.loop.run_until_complete(shut())
        finally:
            self.loop.close()
            self.raw.close()


def redis_bench(url: str) -> RedisBench:
    return RedisBench(url)


def describe(entry: dict[str, Any]) -> str:
    """Where the profiled call's CPU goes, for the report (after "... per call: ")."""
    return (
        "running the coroutine on an event loop (the floor pays that too), building the "
        "message (taskiq's formatter: JSON, a uuid), the middlewares' hooks, and "
        f"{entry['redis_clients_per_call']:g} new redis.asyncio.Redis client objects "
        f"(taskiq-redis makes one per kick; {entry['redis_client_construction_us']:.0f} µs "
        "each, measured alone)."
    )
