"""The taskiq broker every process of this implementation shares (the API hands
over through it, the worker reads from it), and the scheduler.

    taskiq worker taskiq_app.worker:broker taskiq_app.tasks
    taskiq scheduler taskiq_app.worker:scheduler taskiq_app.tasks

Module-level, as taskiq's CLI finds them (``module:variable``): importing this
module reads the settings (a refused setting stops every process here).
"""

from __future__ import annotations

from taskiq import SmartRetryMiddleware, TaskiqScheduler
from taskiq.schedule_sources import LabelScheduleSource
from taskiq_redis import ListRedisScheduleSource

from shared.settings import get_settings
from shared.work import TransientNotificationError
from taskiq_app.broker import create_broker
from taskiq_app.handover import HandoverMiddleware

settings = get_settings()

# The retries' delays wait here, in Redis, until the scheduler sends them: without
# a schedule source, taskiq-redis ignores SmartRetryMiddleware's delay (it retries
# at once).
retries = ListRedisScheduleSource(
    settings.taskiq_url,
    prefix="taskiq-retries",
    socket_connect_timeout=settings.redis_socket_timeout,
)

# A transient failure only (a mail server that timed out): anything else fails for good.
retry = SmartRetryMiddleware(
    default_retry_count=settings.notification_max_retries + 1,  # attempts, the first included
    default_delay=settings.retry_backoff_seconds,
    use_jitter=settings.retry_jitter,
    use_delay_exponent=True,
    max_delay_exponent=settings.retry_backoff_max_seconds,
    schedule_source=retries,
    types_of_exceptions=[TransientNotificationError],
)

broker = create_broker(settings).with_middlewares(HandoverMiddleware(), retry)

# Exactly one scheduler: two would send every periodic task twice.
scheduler = TaskiqScheduler(broker, [LabelScheduleSource(broker), retries])
