"""The Celery app the worker, beat and Flower run: ``celery -A celery_app.worker worker``.

Its configuration is ``celery_app.config``'s, from the settings this process
reads (the environment, then ``.env``); its tasks are ``celery_app.tasks``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import celeryd_after_setup, setup_logging, task_postrun, task_prerun

from celery_app.config import create_celery
from celery_app.dead_letters import DeadLetters
from shared.logs import configure_logging, set_task_id
from shared.settings import get_settings

logger = logging.getLogger(__name__)


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Celery's own logging setup is replaced by the one both APIs use (LOG_LEVEL,
    LOG_FORMAT)."""
    s = get_settings()
    configure_logging(s.log_level, s.log_format)


# Every task, in one place: what a task logs, and Celery's own lines about it
# ("Task ... succeeded", a retry, a failure: logged before task_postrun), carry
# its id on the JSON lines.
@task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    set_task_id(task_id)


@task_postrun.connect
def _task_ended(**_: Any) -> None:
    set_task_id(None)


# After logging is set up (worker_init comes before it: the warning would go out
# bare, neither in the log's format nor at its level).
@celeryd_after_setup.connect
def _check_limits(**_: Any) -> None:
    """A hard time limit past the visibility timeout (Redis) is a task handed out
    again while it runs: said at start, not forbidden (scenario 8 shows it on purpose)."""
    s = get_settings()
    if s.broker == "redis" and s.task_time_limit:
        latest = s.task_time_limit + s.celery_restore_interval
        if latest >= s.celery_visibility_timeout:
            logger.warning(
                "TASK_TIME_LIMIT (%gs) plus CELERY_RESTORE_INTERVAL (%gs) is not below "
                "CELERY_VISIBILITY_TIMEOUT (%gs): a task still running when the timeout "
                "passes is handed out again before the limit ends it",
                s.task_time_limit,
                s.celery_restore_interval,
                s.celery_visibility_timeout,
            )


app = create_celery(get_settings())
if get_settings().broker_bounds_deliveries:
    # What the quorum queue dead-letters, recorded as given up.
    app.steps["consumer"].add(DeadLetters)
