"""What RabbitMQ's quorum queue dead-letters: a worker step that records it.

A message redelivered past the queue's delivery limit (``CELERY_DELIVERY_LIMIT``)
is a task that killed its pool process on every delivery. RabbitMQ moves it to
the dead-letter queue, at least once; this consumer, in the worker's main process,
records each one in the ledger as given up, then acknowledges it: nothing vanishes
silently, and nothing runs it again. (Its message stays readable in the log line.)
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps
from kombu import Consumer, Exchange, Message, Queue

from celery_app.config import DEAD_LETTERS, TASK_NAMES
from shared.settings import get_settings

logger = logging.getLogger(__name__)

KINDS = {name: kind for kind, name in TASK_NAMES.items()}


def dead_letter_queue() -> Queue:
    return Queue(
        DEAD_LETTERS,
        Exchange(DEAD_LETTERS, type="direct", durable=True),
        routing_key=DEAD_LETTERS,
        queue_arguments={"x-queue-type": "quorum"},
    )


class DeadLetters(bootsteps.ConsumerStep):
    def get_consumers(self, channel: Any) -> list[Consumer]:
        return [
            Consumer(
                channel, queues=[dead_letter_queue()], callbacks=[self.on_message], accept=["json"]
            )
        ]

    def on_message(self, body: Any, message: Message) -> None:
        from celery_app.tasks import worker_ledger  # worker-only code, loaded by then

        headers = message.headers or {}
        task_id, name = headers.get("id"), str(headers.get("task", ""))
        if not task_id:
            logger.error("a dead letter without a task id, dropped: %r", headers)
            message.ack()
            return
        limit = get_settings().celery_delivery_limit
        reason = (
            f"gave up after {limit + 1} deliveries: RabbitMQ dead-lettered it "
            f"(the quorum queue's delivery limit, {limit} redeliveries)"
        )
        logger.error("task %s (%s): %s", task_id, name, reason)
        # Recorded before the ack: should the record fail, the message comes back.
        worker_ledger().record_gave_up(str(task_id), str(KINDS.get(name, name)), reason)
        message.ack()
