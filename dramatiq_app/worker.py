"""The dramatiq broker every process of this implementation shares (the API enqueues
through it, the worker consumes from it, the scheduler sends through it):

    dramatiq dramatiq_app.tasks --skip-logging --processes 1 --threads 2

dramatiq's CLI imports ``dramatiq_app.tasks``, which imports this module: the
global broker (``dramatiq.set_broker``) is what its actors are declared on, as
dramatiq's docs set it up. Importing it reads the settings (a refused setting
stops the process) but connects to nothing: both brokers connect on first use.
"""

from __future__ import annotations

import logging
from typing import Any

import dramatiq
from dramatiq import Middleware

from dramatiq_app.broker import create_broker
from dramatiq_app.handover import HandoverMiddleware
from shared.heartbeat import Heartbeat, runner_id
from shared.logs import configure_logging
from shared.models import Implementation
from shared.settings import get_settings

logger = logging.getLogger(__name__)

settings = get_settings()


class WorkerProcess(Middleware):
    """Each worker process: the project's logging (the CLI's is off, --skip-logging),
    the line the harness waits for, and a heartbeat that tells the ledger it is alive."""

    heartbeat: Heartbeat | None = None

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        configure_logging(settings.log_level, settings.log_format)

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        # Imported here: tasks imports this module (the actors need the broker first).
        from dramatiq_app.tasks import worker_ledger

        ledger = worker_ledger()
        if ledger.client is not None:
            self.heartbeat = Heartbeat(
                ledger.client,
                Implementation.dramatiq,
                "dramatiq-worker",
                interval=settings.runner_heartbeat_seconds,
                activity=ledger.activity,
                flush=ledger.flush,
            ).start()
        # After the boot: its consumers poll the queue now (shared.services waits for it).
        logger.info("dramatiq worker process %s ready", runner_id())

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()


broker = create_broker(settings, HandoverMiddleware(), WorkerProcess())
dramatiq.set_broker(broker)
