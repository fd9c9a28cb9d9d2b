"""The HTTP contract, written once. Each app supplies only its ``Scheduler``:
how a job is handed over (BackgroundTasks in-process, or a Celery publish)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any, NamedTuple, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import EmailStr

from shared.ledger import AsyncLedger, Ledger, LedgerUnavailable, NewTask, runner_id
from shared.models import (
    Health,
    Implementation,
    Item,
    ItemAccepted,
    NotificationAccepted,
    RunnerRecord,
    TaskKind,
    TaskRecord,
)


class SchedulerUnavailable(RuntimeError):
    """The job could not be handed over (the broker is down)."""


class Job(NamedTuple):
    kind: TaskKind
    payload: dict[str, str]


class Scheduler(Protocol):
    implementation: Implementation

    async def schedule(self, jobs: Sequence[Job]) -> list[str]:
        """Hand a request's jobs over, in order; return their task ids.

        The ledger records them all in one round trip before this returns."""
        ...


def new_tasks(ids: Sequence[str], jobs: Sequence[Job]) -> list[NewTask]:
    """The ledger's first record of each job; each names the job scheduled before it."""
    return [
        NewTask(task_id, job.kind.value, after=ids[i - 1] if i else None)
        for i, (task_id, job) in enumerate(zip(ids, jobs, strict=True))
    ]


async def get_ledger(request: Request) -> Ledger:
    # async on purpose, here and in the schedulers: a sync dependency costs a trip
    # through AnyIO's thread pool (and one of its 40 tokens) on every request.
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_async_ledger(request: Request) -> AsyncLedger:
    ledger: AsyncLedger = request.app.state.async_ledger
    return ledger


LedgerDep = Annotated[Ledger, Depends(get_ledger)]
AsyncLedgerDep = Annotated[AsyncLedger, Depends(get_async_ledger)]
EmailPath = Annotated[EmailStr, Path(examples=["user@example.com"])]


def notification_jobs(email: str) -> list[Job]:
    """The notification endpoint's two jobs, in order: the slow send, then a log line."""
    return [
        Job(TaskKind.notification, {"email": email}),
        Job(TaskKind.log, {"message": f"notification scheduled for {email}"}),
    ]


def item_jobs(item: Item) -> list[Job]:
    return [Job(TaskKind.log, {"message": f"item created: {item.name} ({item.price:,.2f})"})]


def build_router(
    get_scheduler: Callable[..., Awaitable[Scheduler]], *, delivery_note: str
) -> APIRouter:
    """The endpoints both apps share. ``delivery_note`` documents what happens
    to a failing task on this side (it differs: that is the comparison)."""
    router = APIRouter()
    # ``get_scheduler`` is a closure variable, which string annotations (PEP 563)
    # cannot reach: hence ``= Depends(...)`` rather than ``Annotated`` in here.
    scheduler_dep = Depends(get_scheduler)

    @router.post("/items/", response_model=ItemAccepted, description=delivery_note)
    async def create_item(item: Item, scheduler: Scheduler = scheduler_dep) -> ItemAccepted:
        task_ids = await scheduler.schedule(item_jobs(item))
        return ItemAccepted(item=item, message="item created", task_ids=task_ids)

    @router.post(
        "/send-notification/{email}",
        response_model=NotificationAccepted,
        description=f"Schedules the slow notification, then a log line. {delivery_note}",
    )
    async def send_notification(
        email: EmailPath, scheduler: Scheduler = scheduler_dep
    ) -> NotificationAccepted:
        task_ids = await scheduler.schedule(notification_jobs(email))
        return NotificationAccepted(
            email=email, message="notification will be sent in the background", task_ids=task_ids
        )

    @router.post(
        "/send-notification/{email}/bare",
        response_model=NotificationAccepted,
        description="The same validation and answer with no task at all: the latency baseline.",
    )
    async def send_notification_bare(email: EmailPath) -> NotificationAccepted:
        return NotificationAccepted(email=email, message="nothing scheduled", task_ids=[])

    return router


def build_common_router() -> APIRouter:
    router = APIRouter()

    @router.get("/tasks/{task_id}", response_model=TaskRecord, responses={404: {}, 503: {}})
    def get_task(task_id: str, ledger: LedgerDep) -> TaskRecord:
        record = ledger.get(task_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no task {task_id!r} in the ledger")
        return record

    @router.get("/tasks", response_model=list[TaskRecord], responses={503: {}})
    def list_tasks(
        ledger: LedgerDep,
        implementation: Implementation | None = None,
        since: float | None = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[TaskRecord]:
        """Every task of both sides (or one), oldest first: what the experiments count."""
        return ledger.tasks(implementation, since=since, limit=limit)

    @router.get("/runners", response_model=list[RunnerRecord], responses={503: {}})
    def list_runners(ledger: LedgerDep) -> list[RunnerRecord]:
        """The processes that run tasks, from their heartbeats: which are alive, since when."""
        return ledger.runners()

    @router.get("/health", response_model=Health)
    async def health(request: Request) -> Health:
        # async on purpose: it runs on the event loop, so it shows when the loop is blocked.
        ledger: Ledger = request.app.state.ledger
        return Health(
            status="ok",
            implementation=ledger.implementation,
            ledger="on" if ledger.enabled else "off",
            runner=runner_id(),
        )

    return router


def install_error_handlers(app: FastAPI) -> None:
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    handler: Any = unavailable
    app.add_exception_handler(LedgerUnavailable, handler)
    app.add_exception_handler(SchedulerUnavailable, handler)
