"""Drop dramatiq's waiting messages: ``python -m dramatiq_app.purge`` (its declared
``purge``, ``shared.services``), run where its worker runs, between measurements.

Redis: the ids waiting in the queue's list (and its delay queue's) and their
messages; a message a worker has fetched stays its own (it acknowledges it when
done, or it comes back if that worker dies). RabbitMQ: the queue and its delay
queue are purged (what a consumer holds unacknowledged is not in the queue). The
dead letters stay: they are an operator's to look at. No broker object is made:
purging starts no consumer and declares no actor.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import pika
import redis

from dramatiq_app.broker import NAMESPACE, QUEUE, amqp_url, broker_kind
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)

QUEUES = (QUEUE, f"{QUEUE}.DQ")


def purge(settings: Settings) -> int:
    """Empty dramatiq's queues on ``settings.dramatiq_url``; how many were dropped."""
    timeout = settings.redis_socket_timeout
    if broker_kind(settings) == "rabbitmq":
        connection = pika.BlockingConnection(
            pika.URLParameters(amqp_url(settings.dramatiq_url, timeout))
        )
        try:
            channel = connection.channel()
            dropped = 0
            for name in QUEUES:
                # passive: a queue no process declared yet holds nothing.
                try:
                    channel.queue_declare(queue=name, passive=True)
                except pika.exceptions.ChannelClosedByBroker:
                    channel = connection.channel()
                    continue
                dropped += int(channel.queue_purge(name).method.message_count)
            return dropped
        finally:
            connection.close()
    client = redis.Redis.from_url(
        settings.dramatiq_url, socket_timeout=timeout, socket_connect_timeout=timeout
    )
    try:
        dropped = 0
        for name in QUEUES:
            key = f"{NAMESPACE}:{name}"
            pipe = client.pipeline(transaction=True)
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            ids, _ = pipe.execute()
            if ids:
                client.hdel(f"{key}.msgs", *ids)
            dropped += len(ids)
        return dropped
    finally:
        client.close()


def main(argv: Sequence[str] = ()) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=logging.INFO)
    if argv:
        logger.error("usage: python -m dramatiq_app.purge (the settings say where)")
        return 2
    dropped = purge(get_settings())
    logger.info("dramatiq: dropped %d waiting message(s) from %s", dropped, ", ".join(QUEUES))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
