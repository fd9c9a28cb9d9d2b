"""The worker: RQ's ``Worker`` with this project's settings and records, started by
``rq worker -w rq_app.worker.RecordingWorker`` (the ``rq-worker`` service).

What it adds to RQ's forking worker, and why:

- its intervals from the settings (``RQ_JOB_MONITORING_INTERVAL_SECONDS``,
  ``RQ_MAINTENANCE_INTERVAL_SECONDS``), not from command-line flags, so that the
  settings that decide when a dead worker's job is abandoned are the ones the
  verdict reads; and a ``worker_ttl`` short enough that an idle worker's blocking
  dequeue (``worker_ttl - 15`` s) returns in time for each maintenance pass;
- the grace after a started job's last heartbeat before it counts as abandoned,
  ``RQ_ABANDONED_GRACE_SECONDS`` (RQ: 60, fixed in ``get_heartbeat_ttl``);
- heartbeats in the ledger, from the main process (a worker, free or busy) and
  from each work horse (the process that runs the job, and that a kill may hit);
- ``work_horse_killed_handler``: a dead horse's run recorded (``tasks.horse_killed``);
- the periodic task's next run, made sure of at start and at each maintenance pass.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import Queue, Worker
from rq.defaults import DEFAULT_WORKER_TTL
from rq.executions import Execution
from rq.job import Job

from rq_app import beat, tasks
from shared.heartbeat import Heartbeat, runner_id
from shared.logs import configure_logging
from shared.models import Implementation
from shared.settings import get_settings

logger = logging.getLogger(__name__)

ROLE = "rq-worker"


class RecordingWorker(Worker):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        maintenance = settings.rq_maintenance_interval_seconds
        kwargs.update(
            maintenance_interval=maintenance,
            job_monitoring_interval=settings.rq_job_monitoring_interval_seconds,
            worker_ttl=min(kwargs.get("worker_ttl") or DEFAULT_WORKER_TTL, maintenance + 15),
            work_horse_killed_handler=tasks.horse_killed,
        )
        super().__init__(*args, **kwargs)
        self.grace = settings.rq_abandoned_grace_seconds
        self._heartbeat: Heartbeat | None = None
        self._free_since = time.time()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's rule (the time left of the job's timeout, at most the monitoring
        interval) plus the project's grace instead of RQ's fixed 60 s."""
        step = int(self.job_monitoring_interval)
        if job.timeout and job.timeout > 0:
            step = int(min(job.timeout - working_time, step))
        return max(step, 0) + self.grace

    def _activity(self) -> tuple[int, float]:
        """The main process is busy while a work horse runs (one job at a time)."""
        return (1 if self._horse_pid else 0), self._free_since

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        super().bootstrap(*args, **kwargs)
        settings = get_settings()
        ledger = tasks.worker_ledger()
        if ledger.client is not None:
            self._heartbeat = Heartbeat(
                ledger.client,
                Implementation.rq,
                ROLE,
                interval=settings.runner_heartbeat_seconds,
                activity=self._activity,
            ).start()
        beat.schedule_next(self.connection, settings)
        # What the harness waits for (shared.services): this worker takes jobs now.
        logger.info(
            "rq worker %s ready (maintenance every %ss, abandoned %ss past a heartbeat)",
            runner_id(),
            self.maintenance_interval,
            self.job_monitoring_interval + self.grace,
        )

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]
        beat.schedule_next(self.connection, get_settings())

    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            super().execute_job(job, queue)
        finally:
            self._free_since = time.time()

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """In the work horse (a forked process): its own ledger client and heartbeat,
        for as long as it runs the job."""
        tasks.worker_ledger.cache_clear()  # the parent's client is not this process's
        ledger = tasks.worker_ledger()
        heartbeat = None
        if ledger.client is not None:
            heartbeat = Heartbeat(
                ledger.client,
                Implementation.rq,
                ROLE,
                interval=get_settings().runner_heartbeat_seconds,
                activity=ledger.activity,
                flush=ledger.flush,
            ).start()
        try:
            return super().perform_job(job, queue, execution)
        finally:
            if heartbeat is not None:
                heartbeat.stop()

    def teardown(self) -> None:
        if self._heartbeat is not None and not self.is_horse:
            self._heartbeat.stop()
        super().teardown()  # type: ignore[no-untyped-call]
