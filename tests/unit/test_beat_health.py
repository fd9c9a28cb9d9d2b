"""Beat's healthcheck (``celery_app.beat_health``): the schedule's age, against the interval."""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery_app.beat_health import age, alive_file, healthy


def test_a_schedule_written_lately_is_healthy_and_a_stale_or_missing_one_is_not(
    tmp_path: Path,
) -> None:
    schedule = tmp_path / "celerybeat-schedule"
    assert age(schedule) is None
    assert "has not started" in (healthy(schedule, 30, None) or "")
    schedule.with_suffix(".db").write_bytes(b"")  # the shelve itself is no signal
    assert age(schedule) is None
    alive_file(schedule).touch()
    assert (found := age(schedule)) is not None and found < 5
    assert healthy(schedule, 30, found) is None
    old = time.time() - 200
    os.utime(alive_file(schedule), (old, old))
    assert "more than twice the interval" in (healthy(schedule, 30, age(schedule)) or "")
