"""What ``python -m experiments dispatch`` measures of Celery: one ``send_task``
against the cheapest write of a message as long as its own to the same broker.

The experiment (``experiments.perf.dispatch_measure``) finds this module from the
declaration (``<package>.dispatch_bench``) and times every variant a bench offers,
the floor first; nothing here times anything. Variants, for each broker:

- the floor: a raw ``LPUSH`` (Redis: redis-py, the client kombu uses) or a raw
  ``basic_publish`` with publisher confirms (RabbitMQ: py-amqp, as kombu's
  ``confirm_publish``), of a payload as long as the message Celery sends;
- ``send_task, no sent-event``: ``Celery.send_task`` with the project's settings
  except ``task_send_sent_event`` (the event Flower shows queued tasks by);
- ``send_task``: the project's settings, what the Celery API calls;
- ``API schedule()``: the API's whole hand-over: the ledger's write, then ``send_task``.

Messages go to a queue no worker reads (``dispatch-bench``), emptied between rounds
and deleted at the end. Heavy imports wait for a bench to be made: the report's
renderer reads only the names and ``describe``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ClassVar

QUEUE = "dispatch-bench"
TASK = "logs.write"
# The floor's variant on Redis, and the variant held to the target and profiled.
FLOOR = "lpush"
PROFILED = "send_task"
# The client class kombu's Redis transport builds for each command it sends.
CLIENT_CLASS = "redis.Redis"


class _Senders:
    """The Celery-side variants every broker is measured with: ``send_task``
    without and with the task-sent event, and what the API does per task (the
    ledger's write, then the publish: the route's hand-over minus HTTP and the
    handover's account)."""

    KWARGS: ClassVar[dict[str, str]] = {"message": "item created: 노트북 (1,500,000.00)"}

    def __init__(self, broker_url: str, ledger_url: str) -> None:
        from celery_app.config import create_celery
        from shared.ledger import Ledger, connect
        from shared.models import Implementation
        from shared.settings import explicit_settings

        settings = explicit_settings(redis_url=ledger_url, celery_broker_url=broker_url)
        # As the API makes it, with the task-sent event on and off (CELERY_SEND_SENT_EVENT).
        self.celery = create_celery(settings, publisher=True)
        self.celery.conf.task_send_sent_event = True
        self.quiet = create_celery(settings, publisher=True)
        self.quiet.conf.task_send_sent_event = False
        self.ledger_client = connect(ledger_url)
        self.ledger = Ledger(self.ledger_client, Implementation.celery)

    def send(self, app: Any, task_id: str | None = None) -> object:
        """One message through ``app``, as the API publishes one."""
        task_id = task_id or str(uuid.uuid4())
        return app.send_task(TASK, kwargs=self.KWARGS, task_id=task_id, queue=QUEUE)

    def send_one(self) -> object:
        return self.send(self.celery)

    def variants(self) -> dict[str, Callable[[], object]]:
        from shared.models import TaskKind

        def schedule() -> object:
            [task_id] = self.ledger.record_new(TaskKind.log)
            return self.send(self.celery, task_id)

        return {
            "send_task, no sent-event": lambda: self.send(self.quiet),
            PROFILED: self.send_one,
            "API schedule()": schedule,
        }

    def close(self) -> None:
        self.ledger_client.close()
        self.celery.close()
        self.quiet.close()


class RedisBench:
    """Celery on Redis, the ledger on the same Redis."""

    floor = FLOOR
    profiled = PROFILED

    def __init__(self, url: str) -> None:
        import redis

        self.senders = _Senders(url, url)
        self.raw = redis.Redis.from_url(url)
        # The raw LPUSH's payload is as long as the message Celery actually sends.
        self.senders.send_one()
        self.message_bytes = len(self.raw.lindex(QUEUE, 0) or b"")
        self.payload = b"x" * self.message_bytes

    def variants(self) -> dict[str, Callable[[], object]]:
        return {FLOOR: lambda: self.raw.lpush(QUEUE, self.payload), **self.senders.variants()}

    def between(self) -> None:
        self.raw.delete(QUEUE)

    def close(self) -> None:
        self.raw.delete(QUEUE)
        self.raw.close()
        self.senders.close()


class AmqpBench:
    """Celery on RabbitMQ (the ledger stays in Redis). The floor is a raw
    ``basic_publish`` of a persistent message as long as Celery's, with publisher
    confirms: what Celery does here too (``confirm_publish``), so both wait for the
    broker's "got it"."""

    floor = "basic_publish"
    profiled = PROFILED

    def __init__(self, broker_url: str, ledger_url: str) -> None:
        import amqp

        self.senders = _Senders(broker_url, ledger_url)
        rest = broker_url.split("://", 1)[1]
        creds, _, hostpart = rest.rpartition("@")
        user, _, password = creds.partition(":")
        host, _, vhost = hostpart.partition("/")
        self.raw = amqp.Connection(host, userid=user, password=password, virtual_host=vhost or "/")
        self.raw.connect()
        self.channel = self.raw.channel()
        self.channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        # A message as long as the one Celery publishes (headers and JSON body together).
        self.senders.send_one()
        message = self.channel.basic_get(QUEUE, no_ack=True)
        self.message_bytes = len(message.body) + len(str(message.properties)) if message else 600
        self.payload = b"x" * self.message_bytes
        self._message = amqp.Message

    def variants(self) -> dict[str, Callable[[], object]]:
        def publish() -> None:
            # Waits for the broker's ack, as Celery's publish does with confirm_publish.
            self.channel.basic_publish_confirm(
                self._message(self.payload, delivery_mode=2), routing_key=QUEUE
            )

        return {self.floor: publish, **self.senders.variants()}

    def between(self) -> None:
        self.channel.queue_purge(QUEUE)

    def close(self) -> None:
        try:
            self.channel.queue_delete(QUEUE)
        finally:
            self.raw.close()
            self.senders.close()


def redis_bench(url: str) -> RedisBench:
    return RedisBench(url)


def amqp_bench(broker_url: str, ledger_url: str) -> AmqpBench:
    return AmqpBench(broker_url, ledger_url)


def describe(entry: dict[str, Any]) -> str:
    """Where the profiled call's CPU goes, for the report (after "... per call: ")."""
    return (
        "building the message (headers, JSON, uuid), kombu's routing, the task-sent event "
        "(a second message: compare the row without it), and "
        f"{entry['redis_clients_per_call']:g} new redis.Redis client objects "
        f"(kombu makes one per command; {entry['redis_client_construction_us']:.0f} µs "
        "each, measured alone)."
    )
