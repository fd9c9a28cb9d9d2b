"""The background tasks of the BackgroundTasks app: the work, each run recorded.

``BackgroundTasks`` runs them after the response body is sent, one after the
other, in this process: a plain ``def`` in AnyIO's thread pool, an ``async def``
on the event loop. An exception in one ends the loop, so the tasks after it
never run; and nothing retries. Both are left as they are: they are what is
compared.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request

from shared.ledger import Ledger
from shared.logs import task_context
from shared.models import TaskKind, TaskState
from shared.settings import Settings
from shared.work import perform

logger = logging.getLogger(__name__)


class Tasks:
    """The work, bound to this process's ledger and settings (the app's lifespan makes it)."""

    def __init__(self, ledger: Ledger, settings: Settings) -> None:
        self.ledger = ledger
        self.settings = settings

    def send_notification(self, email: str, *, task_id: str) -> None:
        self.run(TaskKind.notification, {"email": email}, task_id)

    def write_log(self, message: str, *, task_id: str) -> None:
        self.run(TaskKind.log, {"message": message}, task_id)

    def compute_heavy(self, rounds: int, *, task_id: str) -> None:
        self.run(TaskKind.heavy, {"rounds": str(rounds)}, task_id)

    async def compute_heavy_on_the_loop(self, rounds: int, *, task_id: str) -> None:
        """The same job as ``async def``: Starlette runs it on the event loop, and with
        no ``await`` inside, the loop is its for the whole job (every request waits)."""
        self.compute_heavy(rounds, task_id=task_id)

    def run(self, kind: TaskKind, payload: dict[str, str], task_id: str) -> None:
        """Run one job and record it. Sync: Starlette runs it in the thread pool.
        Everything logged meanwhile names the task (on the JSON lines)."""
        with task_context(task_id):
            attempt = self.ledger.record_running(task_id, kind)
            try:
                perform(kind, payload, task_id=task_id, attempt=attempt, settings=self.settings)
            except Exception as exc:
                # Never let it vanish: the client got its answer long ago, so the log
                # and the ledger are the only places this failure can be seen.
                logger.exception("background task %s (%s) failed", task_id, kind.value)
                self.ledger.record_finished(
                    task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}"
                )
                raise  # Starlette's semantics: the remaining tasks are skipped
            self.ledger.record_finished(task_id, attempt, TaskState.succeeded)
            # The worker's "Task ... succeeded", at DEBUG: the API's log at its
            # default level stays as it was.
            logger.debug("background task %s (%s) succeeded", task_id, kind.value)


async def get_tasks(request: Request) -> Tasks:
    tasks: Tasks = request.app.state.tasks
    return tasks


TasksDep = Annotated[Tasks, Depends(get_tasks)]
