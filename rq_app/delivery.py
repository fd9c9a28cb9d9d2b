"""When an RQ job whose worker died comes back, if ever: the rule the verdict reads
for this implementation (declared in ``shared.services``). No RQ import: the verdict
is pure, and reading the rule must not open a queue.

RQ never hands a started job out again. A work horse killed under a live worker
fails its job at once; a whole worker killed leaves its job in the
StartedJobRegistry until its heartbeat expires (the monitoring interval plus
``RQ_ABANDONED_GRACE_SECONDS`` after the last renewal) and a live, idle worker's
maintenance pass (every ``RQ_MAINTENANCE_INTERVAL_SECONDS``) moves it to the
FailedJobRegistry, or, while its ``Retry`` has retries left, enqueues it again.
Either way the run's end is recorded then (``rq_app.tasks.record_dead_run``).
"""

from __future__ import annotations

from typing import Any

from shared.redelivery import Redelivery
from shared.settings import Settings


def redelivery(settings: Settings) -> Redelivery:
    """The registry cleanup as a redelivery: a dead run's heartbeat expires one
    monitoring interval and the grace after its last renewal, and a maintenance pass
    (every ``restore_interval``) finds it. What comes back is the job's end: abandoned
    (or its retry), recorded by the worker that cleans it up. RQ counts from the
    last heartbeat, that is from the death."""
    monitoring = settings.rq_job_monitoring_interval_seconds
    return Redelivery(
        "redis",
        visibility_timeout=float(monitoring + settings.rq_abandoned_grace_seconds),
        restore_interval=float(settings.rq_maintenance_interval_seconds),
        holds_retries=False,
        from_death=True,
        pending="its worker died; RQ's registry cleanup abandons it, or retries it",
    )


def horizon(seconds: float, scan: float) -> dict[str, Any]:
    """A dead worker's job found within about ``seconds`` of its heartbeat's last
    renewal: renewed every second, cleaned up by a maintenance pass every ``scan``
    seconds (whole seconds, at least one: RQ's)."""
    monitoring, maintenance = 1, max(round(scan), 1)
    return {
        "rq_job_monitoring_interval_seconds": monitoring,
        "rq_maintenance_interval_seconds": maintenance,
        "rq_abandoned_grace_seconds": max(round(seconds) - monitoring - maintenance, 1),
    }


def stock() -> dict[str, Any]:
    """RQ as it ships: a started job's heartbeat expires 60 s after its last renewal
    (every 30 s), and an idle worker cleans the registries every 10 minutes; no Retry."""
    return {
        "rq_job_monitoring_interval_seconds": 30,
        "rq_abandoned_grace_seconds": 60,
        "rq_maintenance_interval_seconds": 600,
        "rq_retry": False,
    }
