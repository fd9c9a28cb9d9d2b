"""Beat's healthcheck: ``python -m celery_app.beat_health <schedule file>``.

Beat syncs its schedule after every task it sends (``beat_sync_every=1``), and
``celery_app.beat_schedule.AliveScheduler`` touches ``<schedule>.alive`` on every
sync: a file older than two intervals, and some slack for a slow start, is a Beat
that has stopped sending. The shelve's own file is no signal: ``dbm.ndbm`` has no
``sync`` and writes only on close. Exit 0: healthy; 1: not, with the reason on stderr.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from shared.settings import get_settings

logger = logging.getLogger(__name__)

SLACK = 30.0  # seconds: a start, a slow write


def alive_file(schedule: Path) -> Path:
    """The file Beat touches on every sync, beside its schedule."""
    return schedule.with_name(f"{schedule.name}.alive")


def age(schedule: Path) -> float | None:
    """Seconds since Beat last synced its schedule."""
    try:
        return time.time() - alive_file(schedule).stat().st_mtime
    except FileNotFoundError:
        return None


def healthy(schedule: Path, interval: float, now_age: float | None) -> str | None:
    """Why Beat is not healthy, or None."""
    if now_age is None:
        return f"no schedule at {schedule}: Beat has not started"
    if now_age > 2 * interval + SLACK:
        return (
            f"{schedule} last written {now_age:.0f}s ago, more than twice the interval "
            f"({interval:g}s)"
        )
    return None


def main(argv: list[str]) -> int:
    schedule = Path(argv[0]) if argv else Path("celerybeat-schedule")
    why = healthy(schedule, get_settings().beat_interval_seconds, age(schedule))
    if why:
        # The healthcheck's reason, on stderr, where docker keeps it.
        logging.basicConfig(format="%(message)s", stream=sys.stderr)
        logger.error(why)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
