"""taskiq's brokers on Redis, as the settings pick them.

``RedisStreamBroker`` (stream) reads with XREADGROUP and acknowledges a message
after its task ran: a worker killed mid-task leaves it pending, and another
consumer claims it (XAUTOCLAIM) once it has been idle ``idle_timeout``. But
taskiq-redis claims only after a read returned new messages: on a stream with no
new traffic, a dead worker's task waits for the next request, however long that
is. ``ClaimingStreamBroker`` also claims after a read that timed out (every
``TASKIQ_READ_BLOCK_SECONDS``), so the wait is bounded by the idle timeout alone.
Copy it, or put a periodic task on the stream, if you run taskiq-redis 1.2.

``ListQueueBroker`` (list, the quick start's) pops a message with BRPOP: once a
worker has it, nothing else does, and a worker killed mid-task loses it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, cast

from redis.asyncio import Redis
from redis.exceptions import LockNotOwnedError
from taskiq import AckableMessage, AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from shared.services import IMPLEMENTATIONS, Implementation
from shared.settings import Settings

logger = logging.getLogger(__name__)

QUEUE = IMPLEMENTATIONS[Implementation.taskiq].queue


class ClaimingStreamBroker(RedisStreamBroker):
    """``RedisStreamBroker`` that also claims a dead consumer's messages while no new
    message arrives (the claim runs after every read), and keeps the stream bounded:
    an acknowledged message is deleted (XACK leaves it in the stream for good), and a
    consumer gone with nothing pending is removed from the group (each worker process
    joins under a new name)."""

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        async def ack() -> None:
            async with Redis(connection_pool=self.connection_pool) as redis:
                pipe = redis.pipeline(transaction=True)
                pipe.xack(queue_name, self.consumer_group_name, id)
                pipe.xdel(queue_name, id)
                await pipe.execute()

        return ack

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        async with Redis(connection_pool=self.connection_pool) as redis:
            while True:
                fetched = await redis.xreadgroup(
                    self.consumer_group_name,
                    self.consumer_name,
                    {self.queue_name: ">"},
                    block=self.block,
                    noack=False,
                    count=self.count,
                )
                for stream, messages in cast("list[tuple[Any, Any]]", fetched or []):
                    for message_id, message in messages:
                        yield self._ackable(message_id, message, stream)
                async for claimed in self._claim(redis):
                    yield claimed

    def _ackable(self, message_id: Any, message: Any, stream: Any) -> AckableMessage:
        return AckableMessage(
            data=message[b"data"], ack=self._ack_generator(id=message_id, queue_name=stream)
        )

    async def _claim(self, redis: Redis) -> AsyncGenerator[AckableMessage, None]:
        # One claimer at a time; the lock expires, so a claimer killed holding it
        # does not stop every other one for good (taskiq-redis #131).
        lock = redis.lock(
            f"autoclaim:{self.consumer_group_name}:{self.queue_name}",
            timeout=self.unacknowledged_lock_timeout,
        )
        if not await lock.acquire(blocking=False):
            return
        try:
            # As many as this worker takes at a time: the rest stay for a free one.
            _, claimed, *_ = await redis.xautoclaim(
                name=self.queue_name,
                groupname=self.consumer_group_name,
                consumername=self.consumer_name,
                min_idle_time=self.idle_timeout,
                count=self.count or 1,
            )
            await self._forget_gone_consumers(redis)
        finally:
            with contextlib.suppress(LockNotOwnedError):  # it expired meanwhile
                await lock.release()
        for message_id, message in claimed:
            if message is None:  # deleted from the stream meanwhile (Redis 6.2)
                continue
            logger.info("claimed message %s, idle past the idle timeout", message_id)
            yield self._ackable(message_id, message, self.queue_name)

    async def _forget_gone_consumers(self, redis: Redis) -> None:
        """Remove consumers with nothing pending, idle past the idle timeout: a dead
        worker process's name (a live one reads every TASKIQ_READ_BLOCK_SECONDS)."""
        consumers = await redis.xinfo_consumers(self.queue_name, self.consumer_group_name)
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] > self.idle_timeout:
                name = consumer["name"]
                await redis.xgroup_delconsumer(self.queue_name, self.consumer_group_name, name)


def create_broker(settings: Settings) -> AsyncBroker:
    """The broker the settings name, on ``settings.taskiq_url``."""
    # A dead Redis is a quick 503 in the API, not a hang.
    connect_timeout = settings.redis_socket_timeout
    if settings.taskiq_broker == "list":
        return ListQueueBroker(
            settings.taskiq_url, queue_name=QUEUE, socket_connect_timeout=connect_timeout
        )
    cls = ClaimingStreamBroker if settings.taskiq_claim_when_idle else RedisStreamBroker
    return cls(
        settings.taskiq_url,
        queue_name=QUEUE,
        # The group reads the stream from its start, not from "now" ("$"): messages kicked
        # before any worker (or API) made the group are read too.
        consumer_id="0",
        idle_timeout=round(settings.taskiq_idle_timeout_seconds * 1000),
        xread_block=round(settings.taskiq_read_block_seconds * 1000),
        # One message at a time per read: a killed worker strands no prefetched backlog.
        xread_count=1,
        unacknowledged_lock_timeout=max(settings.taskiq_read_block_seconds * 5, 10.0),
        socket_connect_timeout=connect_timeout,
    )
