"""The BackgroundTasks app's routes for the experiments, beside its contract: the
same jobs done before answering (``inline``), the heavy job as an ``async def``
task, the mechanics of where a task runs, the shared baseline (``bare``), and the
rungs of the hand-over's cost ladder (``/capacity/<rung>/{email}``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, BackgroundTasks, HTTPException

from fastapi_bg import mechanics
from fastapi_bg.tasks import Tasks, TasksDep
from shared import experiment_routes
from shared.http import TOO_LARGE, AsyncLedgerDep, EmailPath, LedgerDep, SettingsDep, problem
from shared.ledger import Ledger
from shared.models import HeavyAccepted, Implementation, NotificationAccepted, TaskKind

F = TypeVar("F", bound=Callable[..., Any])

router = APIRouter(tags=["experiments"])
router.include_router(experiment_routes.router)
router.include_router(mechanics.router)


@router.post(
    "/send-notification/{email}/inline",
    response_model=NotificationAccepted,
    responses={**TOO_LARGE, **problem(502, "The work itself failed (it ran inline).")},
    description="Does both jobs before answering: the response-time comparison with "
    "the background variants.",
)
def send_notification_inline(
    email: EmailPath, ledger: LedgerDep, tasks: TasksDep
) -> NotificationAccepted:
    notification_id, log_id = ledger.record_new(TaskKind.notification, TaskKind.log)
    try:
        tasks.send_notification(email, task_id=notification_id)
        tasks.write_log(f"notification scheduled for {email}", task_id=log_id)
    except Exception as exc:
        raise HTTPException(status_code=502, detail=f"the work failed: {exc}") from exc
    return NotificationAccepted(
        email=email, message="notification sent", task_ids=[notification_id, log_id]
    )


@router.post(
    "/heavy/async",
    status_code=202,
    response_model=HeavyAccepted,
    responses=TOO_LARGE,
    description="The same CPU-bound job as an `async def` background task: it runs on "
    "the event loop and holds it for the whole computation (every request waits).",
)
async def schedule_heavy_async(
    settings: SettingsDep,
    background_tasks: BackgroundTasks,
    ledger: AsyncLedgerDep,
    tasks: TasksDep,
) -> HeavyAccepted:
    [heavy_id] = await ledger.record_new(TaskKind.heavy)
    rounds = settings.heavy_task_rounds
    background_tasks.add_task(tasks.compute_heavy_on_the_loop, rounds, task_id=heavy_id)
    return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])


# --- the hand-over's cost ladder (python -m experiments capacity) ---------------------------
#
# Each rung schedules the request's two tasks (the notification, then its log
# line) one step closer to what POST /send-notification/{email} does: a no-op
# added twice; the work, with the ledger off; the work with the ledger.


def noop() -> None:
    """A ``def`` that does nothing: what BackgroundTasks itself costs (a thread-pool trip)."""


def _rung(name: str, description: str) -> Callable[[F], F]:
    return router.post(
        f"/capacity/{name}/{{email}}",
        status_code=202,
        response_model=NotificationAccepted,
        responses=TOO_LARGE,
        description=description,
    )


@_rung("noop", "add_task of a no-op, twice: BackgroundTasks' own cost.")
async def capacity_noop(
    email: EmailPath, background_tasks: BackgroundTasks
) -> NotificationAccepted:
    background_tasks.add_task(noop)
    background_tasks.add_task(noop)
    return NotificationAccepted(email=email, message="handed over", task_ids=[])


def _without_ledger(tasks: Tasks) -> Tasks:
    off = Ledger(None, Implementation.bg, best_effort=True, off="a capacity rung")
    return Tasks(off, tasks.settings)


@_rung("work", "The route's two tasks, with the ledger off.")
async def capacity_work(
    email: EmailPath, background_tasks: BackgroundTasks, tasks: TasksDep
) -> NotificationAccepted:
    work = _without_ledger(tasks)
    notification_id, log_id = str(uuid.uuid4()), str(uuid.uuid4())
    background_tasks.add_task(work.send_notification, email, task_id=notification_id)
    background_tasks.add_task(work.write_log, f"notification scheduled for {email}", task_id=log_id)
    return NotificationAccepted(
        email=email, message="handed over", task_ids=[notification_id, log_id]
    )


@_rung("work-ledger", "The route's two tasks, with the ledger.")
async def capacity_work_ledger(
    email: EmailPath, background_tasks: BackgroundTasks, ledger: AsyncLedgerDep, tasks: TasksDep
) -> NotificationAccepted:
    notification_id, log_id = await ledger.record_new(TaskKind.notification, TaskKind.log)
    background_tasks.add_task(tasks.send_notification, email, task_id=notification_id)
    background_tasks.add_task(
        tasks.write_log, f"notification scheduled for {email}", task_id=log_id
    )
    return NotificationAccepted(
        email=email, message="handed over", task_ids=[notification_id, log_id]
    )
