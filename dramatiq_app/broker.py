"""dramatiq's broker, as the settings pick it: ``RedisBroker`` for ``redis://``,
``RabbitmqBroker`` for ``amqp://`` (``DRAMATIQ_BROKER_URL``, else ``REDIS_URL``).

No module-level broker here (``dramatiq_app.worker`` makes the one the processes
share): the verdict's rule and the purge read this module without starting one.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from dramatiq import Broker, Middleware
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage, default_middleware

from shared.services import IMPLEMENTATIONS, Implementation
from shared.settings import Settings

# The actors' queue: dramatiq's own default name. Redis keys: ``dramatiq:default``
# (waiting ids), ``dramatiq:default.msgs`` (the messages), ``dramatiq:default.XQ``
# (dead letters); RabbitMQ queues: ``default``, ``default.DQ``, ``default.XQ``.
QUEUE = IMPLEMENTATIONS[Implementation.dramatiq].queue
NAMESPACE = "dramatiq"  # RedisBroker's key prefix (its default)


def broker_kind(settings: Settings) -> str:
    """ "redis" or "rabbitmq", as the URL's scheme says."""
    scheme = settings.dramatiq_url.split("://", 1)[0].lower()
    return "redis" if scheme in ("redis", "rediss", "unix") else "rabbitmq"


def amqp_url(url: str, timeout: float) -> str:
    """The URL with pika's connect options, unless it sets them: one attempt, a
    socket timeout, so that a dead broker is a quick 503 rather than pika's retries."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("connection_attempts", "1")
    query.setdefault("socket_timeout", f"{timeout:g}")
    query.setdefault("blocked_connection_timeout", f"{max(timeout, 5.0):g}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_broker(settings: Settings, *extra: Middleware) -> Broker:
    """The broker the settings name, with dramatiq's default middleware,
    ``CurrentMessage`` (an actor reads its message id: the ledger's task id) and
    ``extra``."""
    middleware: list[Any] = [m() for m in default_middleware]
    middleware += [CurrentMessage(), *extra]
    timeout = settings.redis_socket_timeout
    if broker_kind(settings) == "rabbitmq":
        # Confirmed publishes: a message the broker refused is an error, not a 202.
        return RabbitmqBroker(
            url=amqp_url(settings.dramatiq_url, timeout),
            middleware=middleware,
            confirm_delivery=True,
        )
    # A dead Redis is a quick error; every command dramatiq sends is a short Lua
    # script, so the read timeout holds for a worker too.
    client = redis.Redis.from_url(
        settings.dramatiq_url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 5.0)
    )
    return RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq's own, untyped
        client=client,
        middleware=middleware,
        namespace=NAMESPACE,
        heartbeat_timeout=round(settings.dramatiq_heartbeat_timeout_seconds * 1000),
        maintenance_chance=settings.dramatiq_maintenance_chance,
    )
