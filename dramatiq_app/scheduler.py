"""The periodic task: ``python -m dramatiq_app.scheduler`` sends ``periodic_log``
every BEAT_INTERVAL_SECONDS, as Celery's beat and taskiq's scheduler do.

dramatiq has no scheduler; its docs point to APScheduler (its cookbook's
"Scheduling messages"): a ``BlockingScheduler`` whose job sends the actor. Exactly
one: two would send every periodic task twice. A send that fails (the broker down)
is logged and the next interval tries again; nothing is caught up
(``coalesce``: missed runs collapse into one).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger

from dramatiq_app.handover import ENQUEUE_ERRORS
from dramatiq_app.worker import broker, settings
from shared.logs import configure_logging

logger = logging.getLogger(__name__)


def send_periodic() -> None:
    from dramatiq_app.tasks import periodic_log

    try:
        message = periodic_log.send()
    except ENQUEUE_ERRORS as exc:
        logger.error("sending the periodic task failed (the next interval tries again): %r", exc)
        return
    logger.info("sent periodic task %s", message.message_id)


def main() -> int:
    configure_logging(settings.log_level, settings.log_format)
    # Imported for its actors: the periodic one is declared on the broker there.
    import dramatiq_app.tasks  # noqa: F401

    scheduler = BlockingScheduler()
    scheduler.add_job(
        send_periodic,
        IntervalTrigger(seconds=settings.beat_interval_seconds),
        id="periodic_log",
        max_instances=1,
        coalesce=True,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        logger.info("dramatiq scheduler stopping (signal %d)", signum)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # What the harness waits for (shared.services).
    logger.info("dramatiq scheduler started: every %gs", settings.beat_interval_seconds)
    try:
        scheduler.start()
    finally:
        broker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
