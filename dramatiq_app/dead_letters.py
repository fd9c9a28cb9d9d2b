"""dramatiq's dead letters, by hand: ``python -m dramatiq_app.dead_letters list`` and
``python -m dramatiq_app.dead_letters requeue <task_id>`` (the command the ledger
names for a dead-lettered task).

dramatiq moves every message that fails for good (retries spent, a time limit, the
worker's delivery bound) to the queue's dead-letter queue and keeps it 7 days; it
has no command to send one back. This one puts it back on its queue, marked with
the deliveries it had (``REQUEUED_AFTER``), so the worker's bound counts afresh.
Run it once the cause is fixed: a task that still kills its process is parked again.
"""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Sequence
from typing import cast

import pika
import redis
from dramatiq import Message

from dramatiq_app.broker import NAMESPACE, QUEUE, amqp_url, broker_kind
from dramatiq_app.tasks import REQUEUED_AFTER
from shared.ledger import Ledger, connect
from shared.models import Implementation
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

XQ = f"{QUEUE}.XQ"


def deliveries(settings: Settings, task_id: str) -> int:
    """The task's deliveries that started a run so far (retries not counted)."""
    record = Ledger(connect(settings.redis_url), Implementation.dramatiq).get(task_id)
    return record.attempts - record.retries if record is not None else 0


def _redis_dead(client: redis.Redis) -> dict[str, tuple[str, Message[object]]]:
    found: dict[str, tuple[str, Message[object]]] = {}
    raw = cast("dict[bytes, bytes]", client.hgetall(f"{NAMESPACE}:{XQ}.msgs"))
    for key, data in raw.items():
        message = Message.decode(data)
        found[message.message_id] = (key.decode(), message)
    return found


def listing(settings: Settings) -> list[str]:
    """The task ids of the dead letters (Redis; RabbitMQ: its management UI shows them)."""
    if broker_kind(settings) != "redis":
        raise SystemExit(f"see the queue {XQ} in RabbitMQ's management UI")
    return sorted(_redis_dead(redis.Redis.from_url(settings.dramatiq_url)))


def requeue(settings: Settings, task_id: str) -> bool:
    """Put the dead letter of ``task_id`` back on its queue; False: none was found."""
    mark = {REQUEUED_AFTER: deliveries(settings, task_id)}
    if broker_kind(settings) == "redis":
        client = redis.Redis.from_url(settings.dramatiq_url)
        found = _redis_dead(client).get(task_id)
        if found is None:
            return False
        old_id, message = found
        new_id = str(uuid.uuid4())  # each enqueue has its own id in Redis, as dramatiq's
        data = message.copy(options={**mark, "redis_message_id": new_id}).encode()
        pipe = client.pipeline(transaction=True)
        pipe.zrem(f"{NAMESPACE}:{XQ}", old_id)
        pipe.hdel(f"{NAMESPACE}:{XQ}.msgs", old_id)
        pipe.hset(f"{NAMESPACE}:{QUEUE}.msgs", new_id, data)
        pipe.rpush(f"{NAMESPACE}:{QUEUE}", new_id)
        pipe.execute()
        return True
    params = pika.URLParameters(amqp_url(settings.dramatiq_url, settings.redis_socket_timeout))
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        # Every dead letter is taken, unacknowledged; the others go back when the
        # channel closes.
        while True:
            method, properties, body = channel.basic_get(XQ, auto_ack=False)
            if method is None:
                return False
            message = Message.decode(body)
            if message.message_id == task_id:
                again = message.copy(options=mark).encode()
                channel.basic_publish("", QUEUE, again, properties)
                channel.basic_ack(method.delivery_tag)
                return True
    finally:
        connection.close()


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=logging.INFO)
    settings = get_settings()
    if list(argv) == ["list"]:
        for task_id in listing(settings):
            sys.stdout.write(task_id + "\n")  # the command's output, for a pipe
        return 0
    if len(argv) == 2 and argv[0] == "requeue":
        if requeue(settings, argv[1]):
            logger.info("requeued %s on %s", argv[1], QUEUE)
            return 0
        logger.error("no dead letter for %s in %s", argv[1], XQ)
        return 1
    logger.error("usage: python -m dramatiq_app.dead_letters list | requeue <task_id>")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
