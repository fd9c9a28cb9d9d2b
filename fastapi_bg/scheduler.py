"""How the BackgroundTasks side hands a job over: append it to the response's tasks.

Starlette runs them after the response body is sent, one after the other, in
this process: a sync function in AnyIO's thread pool, a coroutine on the event
loop. An exception in one ends the loop, so the tasks after it never run; and
nothing retries. Both facts are left as they are: they are what is compared.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence

from fastapi import BackgroundTasks

from shared.api import Job, new_tasks
from shared.heartbeat import runner_id
from shared.ledger import AsyncLedger, Ledger
from shared.models import Implementation, TaskState
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
        # Never let it vanish: the client got its answer long ago, so the log and
        # the ledger are the only places this failure can be seen.
        logger.exception("background task %s (%s) failed", task_id, kind)
        ledger.finished(task_id, attempt, TaskState.failed, error=f"{type(exc).__name__}: {exc}")
        raise  # keep Starlette's semantics: the remaining tasks are skipped
    ledger.finished(task_id, attempt, TaskState.succeeded)


# A job's runner, as BackgroundTasks calls it: sync or async.
RunJob = Callable[[Ledger, Settings, str, dict[str, str], str], Awaitable[None] | None]


class BackgroundScheduler:
    implementation = Implementation.bg

    def __init__(
        self, tasks: BackgroundTasks, ledger: Ledger, queue_ledger: AsyncLedger, settings: Settings
    ) -> None:
        self.tasks = tasks
        self.ledger = ledger
        self.queue_ledger = queue_ledger
        self.settings = settings

    async def schedule(self, jobs: Sequence[Job], *, run: RunJob = run_job) -> list[str]:
        """``run``: how each job runs (``run_job``, a ``def``: in the thread pool; an
        ``async def`` one runs on the event loop)."""
        ids = [str(uuid.uuid4()) for _ in jobs]
        # The tasks live in this process's memory until they run: if the process
        # dies first, the ledger shows who lost them.
        await self.queue_ledger.queued(new_tasks(ids, jobs), owner=runner_id())
        for task_id, job in zip(ids, jobs, strict=True):
            self.tasks.add_task(
                run, self.ledger, self.settings, job.kind.value, job.payload, task_id
            )
        return ids
