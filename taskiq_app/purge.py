"""Drop taskiq's waiting messages: ``python -m taskiq_app.purge`` (its declared
``purge``, ``shared.services``), run where its worker runs, between measurements.

The stream broker's messages are the stream's entries: they are trimmed away, and
the stream itself stays, for its consumer group is what the workers read through
(a stream deleted takes the group with it, and a worker's next read fails). A
message a worker is running stays its own: it acknowledges it when done. The list
broker's messages are the list: it is deleted. Nothing here imports the broker's
module-level objects (``taskiq_app.worker``): purging starts no broker.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import redis

from shared.settings import Settings, get_settings
from taskiq_app.broker import QUEUE

logger = logging.getLogger(__name__)


def purge(settings: Settings, *, streams: Sequence[str] = ()) -> int:
    """Empty taskiq's queue on ``settings.taskiq_url`` (and these further streams,
    trimmed the same way); how many messages were dropped."""
    client = redis.Redis.from_url(
        settings.taskiq_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
    )
    try:
        if settings.taskiq_broker == "list":
            dropped = int(client.llen(QUEUE))
            client.delete(QUEUE)
            keys: Sequence[str] = streams
        else:
            keys = (QUEUE, *streams)
            dropped = 0
        for key in keys:
            # MAXLEN 0 on a key that is no stream (yet): nothing to drop.
            if client.type(key) in (b"stream", "stream"):
                dropped += int(client.xtrim(key, maxlen=0, approximate=False))
        return dropped
    finally:
        client.close()


def main(argv: Sequence[str] = ()) -> int:
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=logging.INFO)
    if argv:
        logger.error("usage: python -m taskiq_app.purge (the settings say where)")
        return 2
    dropped = purge(get_settings())
    logger.info("taskiq: dropped %d waiting message(s) from %r", dropped, QUEUE)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
