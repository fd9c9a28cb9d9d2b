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

import logging
from collections.abc import AsyncGenerator
from typing import Any, cast

from redis.asyncio import Redis
from taskiq import AckableMessage, AsyncBroker
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from shared.settings import Settings

logger = logging.getLogger(__name__)

QUEUE = "taskiq"


class ClaimingStreamBroker(RedisStreamBroker):
    """``RedisStreamBroker`` that also claims a dead consumer's messages while no new
    message arrives (the one change: the claim runs after every read)."""

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
            _, claimed, *_ = await redis.xautoclaim(
                name=self.queue_name,
                groupname=self.consumer_group_name,
                consumername=self.consumer_name,
                min_idle_time=self.idle_timeout,
                count=self.unacknowledged_batch_size,
            )
        finally:
            await lock.release()
        for message_id, message in claimed:
            logger.info("claimed message %s, idle past the idle timeout", message_id)
            yield self._ackable(message_id, message, self.queue_name)


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
        idle_timeout=round(settings.taskiq_idle_timeout_seconds * 1000),
        xread_block=round(settings.taskiq_read_block_seconds * 1000),
        # One message at a time per read: a killed worker strands no prefetched backlog.
        xread_count=1,
        unacknowledged_lock_timeout=max(settings.taskiq_read_block_seconds * 5, 10.0),
        socket_connect_timeout=connect_timeout,
    )
