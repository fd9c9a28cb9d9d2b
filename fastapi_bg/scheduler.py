"""How the BackgroundTasks side hands a job over: append it to the response's tasks.

Starlette runs them after the response body is sent, one after the other, in
this process: a sync function in AnyIO's thread pool, a coroutine on the event
loop. An exception in one ends the loop, so the tasks after it never run; and
nothing retries. Both facts are left as they are: they are what is compared.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import BackgroundTasks

from shared.ledger import Ledger, runner_id
from shared.models import Implementation, TaskKind
from shared.settings import Settings
from shared.work import perform

logger = logging.getLogger(__name__)


def run_job(
    ledger: Ledger, settings: Settings, kind: str, payload: dict[str, str], task_id: str
) -> None:
    """Run one job and record it. Sync: Starlette runs it in the thread pool."""
    attempt = ledger.running(task_id, kind)
    try:
        perform(kind, payload, task_id=task_id, attempt=attempt, settings=settings)
    except Exception as exc:
        # Never let it vanish: the client got its 200 long ago, so the log and the
        # ledger are the only places this failure can be seen.
        logger.exception("background task %s (%s) failed", task_id, kind)
        ledger.failed(task_id, f"{type(exc).__name__}: {exc}")
        raise  # keep Starlette's semantics: the remaining tasks are skipped
    ledger.succeeded(task_id)


class BackgroundScheduler:
    implementation = Implementation.bg

    def __init__(self, tasks: BackgroundTasks, ledger: Ledger, settings: Settings) -> None:
        self.tasks = tasks
        self.ledger = ledger
        self.settings = settings

    def schedule(self, kind: TaskKind, payload: dict[str, str]) -> str:
        task_id = str(uuid.uuid4())
        # The task lives in this process's memory until it runs: if the process
        # dies first, the ledger shows who lost it.
        self.ledger.queued(task_id, kind.value, owner=runner_id())
        self.tasks.add_task(run_job, self.ledger, self.settings, kind.value, payload, task_id)
        return task_id
