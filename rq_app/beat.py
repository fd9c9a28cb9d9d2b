"""The periodic task, as a job that schedules the next one (``queue.enqueue_at``),
for the worker's scheduler (``rq worker --with-scheduler``) to enqueue when due.

Not RQ 3.0's ``CronScheduler`` (``rq cron``): it enqueues through a ``Queue`` made
with RQ's default serializer, pickle, which this project's workers (JSON only,
``-S json``) cannot read, and it is one more process to run exactly once.

Each run is one slot of the clock (``BEAT_INTERVAL_SECONDS`` wide); whoever
schedules a slot first claims it in Redis (``SET NX``), so that the periodic job
itself, a starting worker and every worker's maintenance pass can all make sure
the next run is scheduled without ever scheduling it twice: a chain broken by a
dead worker is mended by the next worker that starts or cleans its registries.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from datetime import UTC, datetime

import redis

from rq_app import tasks
from rq_app.queue import QUEUE, open_queue
from shared.settings import Settings

logger = logging.getLogger(__name__)

SLOT_KEY = "rq_app:beat:{interval}:{slot}"


def schedule_next(connection: redis.Redis, settings: Settings, now: float | None = None) -> bool:
    """Schedule the run of the next slot unless someone has; True if this call did."""
    interval = settings.beat_interval_seconds
    slot = math.floor((time.time() if now is None else now) / interval) + 1
    claim = SLOT_KEY.format(interval=interval, slot=slot)
    # The claim outlives the slot's run by a few intervals: a late one is not run twice.
    if not connection.set(claim, "1", nx=True, ex=max(math.ceil(3 * interval), 10)):
        return False
    at = datetime.fromtimestamp(slot * interval, UTC)
    queue = open_queue(connection, settings)
    queue.enqueue_at(at, tasks.periodic_log, job_id=str(uuid.uuid4()), on_failure=tasks.ENDED)
    logger.debug("periodic run scheduled at %s on %s", at.isoformat(), QUEUE)
    return True
