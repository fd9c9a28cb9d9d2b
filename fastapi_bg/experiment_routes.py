"""The BackgroundTasks app's routes for the experiments, beside its contract: the
same jobs done before answering (``inline``), the heavy job as an ``async def``
task, the mechanics of where a task runs, and the shared baseline (``bare``)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, HTTPException

from fastapi_bg import mechanics
from fastapi_bg.tasks import TasksDep
from shared import experiment_routes
from shared.http import TOO_LARGE, AsyncLedgerDep, EmailPath, LedgerDep, SettingsDep, problem
from shared.models import HeavyAccepted, NotificationAccepted, TaskKind

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
    notification_id, log_id = ledger.queued(TaskKind.notification, TaskKind.log)
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
    [heavy_id] = await ledger.queued(TaskKind.heavy)
    rounds = settings.heavy_task_rounds
    background_tasks.add_task(tasks.compute_heavy_on_the_loop, rounds, task_id=heavy_id)
    return HeavyAccepted(rounds=rounds, message="heavy job scheduled", task_ids=[heavy_id])
