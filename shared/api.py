"""The HTTP contract, written once. Each app supplies only its ``Scheduler``:
how a job is handed over (BackgroundTasks in-process, or a Celery publish).

Every status an operation can return is declared here, with its schema, so
that the published OpenAPI document says what the apps do (a test fuzzes both
running apps against it).
"""

from __future__ import annotations

import contextlib
import logging
import math
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import metadata
from pathlib import Path as FilePath
from typing import Annotated, Any, NamedTuple, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from shared.heartbeat import Heartbeat, runner_id
from shared.ledger import (
    AsyncLedger,
    Ledger,
    LedgerUnavailable,
    NewTask,
    async_ledger_for,
    ledger_for,
)
from shared.limits import BodyLimit
from shared.logs import configure_logging
from shared.models import (
    EMAIL_MAX,
    EMAIL_PATTERN,
    Health,
    HeavyAccepted,
    Implementation,
    Item,
    ItemAccepted,
    NotificationAccepted,
    Problem,
    RunnerRecord,
    TaskKind,
    TaskRecord,
)
from shared.settings import Settings, get_settings

logger = logging.getLogger(__name__)


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
EmailPath = Annotated[
    str,
    Path(
        pattern=EMAIL_PATTERN,
        max_length=EMAIL_MAX,
        description="An email address: the WHATWG (HTML) syntax rule without '/' and '%', "
        "at most 254 characters. No DNS lookup, no reserved-domain list.",
        examples=["user@example.com"],
    ),
]

# What an operation can answer besides its success; every one with a schema.
Responses = dict[int | str, dict[str, Any]]
TOO_LARGE: Responses = {
    413: {
        "model": Problem,
        "description": "The request body is over MAX_BODY_BYTES: refused before it is read.",
    }
}
MALFORMED: Responses = {
    400: {
        "model": Problem,
        "description": "The request body could not be read (the client stopped sending it).",
    }
}
UNAVAILABLE: Responses = {
    503: {
        "model": Problem,
        "description": "The broker or the ledger (Redis) cannot be reached; nothing was queued.",
    }
}
NOT_FOUND: Responses = {404: {"model": Problem, "description": "No such task in the ledger."}}
LEDGER_DOWN: Responses = {
    503: {
        "model": Problem,
        "description": "The ledger (Redis) is off or cannot be reached.",
    }
}


def notification_jobs(email: str) -> list[Job]:
    """The notification endpoint's two jobs, in order: the slow send, then a log line."""
    return [
        Job(TaskKind.notification, {"email": email}),
        Job(TaskKind.log, {"message": f"notification scheduled for {email}"}),
    ]


def heavy_jobs(settings: Settings) -> list[Job]:
    return [Job(TaskKind.heavy, {"rounds": str(settings.heavy_task_rounds)})]


def item_jobs(item: Item) -> list[Job]:
    return [Job(TaskKind.log, {"message": f"item created: {item.name} ({item.price:,.2f})"})]


def build_router(
    get_scheduler: Callable[..., Awaitable[Scheduler]],
    *,
    delivery_note: str,
    can_be_unavailable: bool,
) -> APIRouter:
    """The endpoints both apps share. ``delivery_note`` documents what happens to a
    failing task on this side (it differs: that is the comparison);
    ``can_be_unavailable``: publishing may fail (a broker) and answer 503."""
    router = APIRouter()
    # ``get_scheduler`` is a closure variable, which string annotations (PEP 563)
    # cannot reach: hence ``= Depends(...)`` rather than ``Annotated`` in here.
    scheduler_dep = Depends(get_scheduler)
    body_errors: Responses = {**TOO_LARGE, **MALFORMED}
    if can_be_unavailable:
        body_errors.update(UNAVAILABLE)
    path_errors: Responses = dict(UNAVAILABLE if can_be_unavailable else {})

    @router.post(
        "/items/",
        tags=["items"],
        status_code=202,
        response_model=ItemAccepted,
        responses=body_errors,
        description=f"Creates the item and schedules a log line. {delivery_note}",
    )
    async def create_item(item: Item, scheduler: Scheduler = scheduler_dep) -> ItemAccepted:
        task_ids = await scheduler.schedule(item_jobs(item))
        return ItemAccepted(item=item, message="item created", task_ids=task_ids)

    @router.post(
        "/send-notification/{email}",
        tags=["notifications"],
        status_code=202,
        response_model=NotificationAccepted,
        responses={**path_errors, **TOO_LARGE},
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
        "/heavy",
        tags=["heavy"],
        status_code=202,
        response_model=HeavyAccepted,
        responses={**path_errors, **TOO_LARGE},
        description="Schedules one CPU-bound job (HEAVY_TASK_ROUNDS of pure-Python "
        f"arithmetic, its result written to the log). {delivery_note}",
    )
    async def schedule_heavy(
        request: Request, scheduler: Scheduler = scheduler_dep
    ) -> HeavyAccepted:
        settings: Settings = request.app.state.settings
        task_ids = await scheduler.schedule(heavy_jobs(settings))
        return HeavyAccepted(
            rounds=settings.heavy_task_rounds, message="heavy job scheduled", task_ids=task_ids
        )

    @router.post(
        "/send-notification/{email}/bare",
        tags=["notifications"],
        response_model=NotificationAccepted,
        responses=TOO_LARGE,
        description="The same validation and answer with no task at all: the latency baseline.",
    )
    async def send_notification_bare(email: EmailPath) -> NotificationAccepted:
        return NotificationAccepted(email=email, message="nothing scheduled", task_ids=[])

    return router


def build_common_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/tasks/{task_id}",
        tags=["tasks"],
        response_model=TaskRecord,
        responses={**NOT_FOUND, **LEDGER_DOWN},
    )
    def get_task(task_id: str, ledger: LedgerDep) -> TaskRecord:
        """One task's record: its state, every run, its timestamps."""
        record = ledger.get(task_id)
        if record is None:
            raise HTTPException(status_code=404, detail=f"no task {task_id!r} in the ledger")
        return record

    @router.get("/tasks", tags=["tasks"], response_model=list[TaskRecord], responses=LEDGER_DOWN)
    def list_tasks(
        ledger: LedgerDep,
        implementation: Implementation | None = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[TaskRecord]:
        """Every task of both sides (or one), oldest first: what the experiments count."""
        return ledger.tasks(implementation, since=since, limit=limit)

    @router.get(
        "/runners", tags=["tasks"], response_model=list[RunnerRecord], responses=LEDGER_DOWN
    )
    def list_runners(ledger: LedgerDep) -> list[RunnerRecord]:
        """The processes that run tasks, from their heartbeats: which are alive, since when."""
        return ledger.runners()

    @router.get("/health", tags=["health"], response_model=Health)
    async def health(request: Request) -> Health:
        """Liveness. ``async`` on purpose: it runs on the event loop, so it shows a blocked loop."""
        ledger: Ledger = request.app.state.ledger
        return Health(
            status="ok",
            implementation=ledger.implementation,
            ledger="on" if ledger.enabled else "off",
            runner=runner_id(),
        )

    return router


@contextlib.asynccontextmanager
async def open_ledger(
    app: FastAPI,
    implementation: Implementation,
    *,
    best_effort: bool,
    heartbeat_role: str | None,
) -> AsyncIterator[Settings]:
    """An API's lifespan part: the settings (``get_settings``, or the app's override
    of it), logging, the ledger's clients on ``app.state`` (a sync one for reads
    and for tasks, an async one for the request path) and, where this process
    runs tasks (``heartbeat_role``), its heartbeat. Yields the settings."""
    settings: Settings = app.dependency_overrides.get(get_settings, get_settings)()
    configure_logging(settings.log_level)
    app.state.settings = settings
    # With the ledger switched off everything is best effort: writes do nothing.
    ledger = ledger_for(settings, implementation, best_effort=best_effort)
    queue = async_ledger_for(settings, implementation, best_effort=best_effort)
    app.state.ledger, app.state.async_ledger = ledger, queue
    logger.info(
        "%s API starting: ledger %s, body limit %d bytes, log level %s",
        implementation.value,
        "on" if settings.ledger_on else "off",
        settings.max_body_bytes,
        settings.log_level,
    )
    heartbeat = None
    if ledger.client is not None and heartbeat_role is not None:
        heartbeat = Heartbeat(
            ledger.client,
            implementation,
            heartbeat_role,
            interval=settings.runner_heartbeat_seconds,
        ).start()
    try:
        yield settings
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        if queue.client is not None:
            await queue.client.aclose()
        if ledger.client is not None:
            ledger.client.close()


def version() -> str:
    """The package's version: installed metadata, else the pyproject.toml beside the
    source (the image runs the source without installing the project)."""
    try:
        return metadata.version("bgtasks-vs-celery")
    except metadata.PackageNotFoundError:
        pyproject = FilePath(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            return str(data["project"]["version"])
        except (OSError, KeyError, tomllib.TOMLDecodeError):
            return "0+unknown"


def operation_id(route: APIRoute) -> str:
    """Readable operation ids: the endpoint function's name (``create_item``)."""
    return route.name


def _json_safe(value: Any) -> Any:
    """A refused input, as JSON can carry it (NaN and Infinity cannot be)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def create_api(title: str, description: str, lifespan: Any) -> FastAPI:
    """The FastAPI app both sides build on: version, operation ids, the body limit,
    and the error handlers that keep every refusal a documented 4xx (or 503).

    ``lifespan`` must put the resolved ``Settings`` on ``app.state.settings``."""
    app = FastAPI(
        title=title,
        description=description,
        version=version(),
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )

    # One mechanism for both apps: bodies over the limit never reach the endpoint.
    def max_bytes() -> int:
        settings: Settings = app.state.settings
        return settings.max_body_bytes

    app.add_middleware(BodyLimit, max_bytes=max_bytes)

    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # FastAPI's own handler echoes the refused input; json.dumps cannot write a
        # NaN or an Infinity, which turned a 422 into a 500.
        assert isinstance(exc, RequestValidationError)
        errors = _json_safe(jsonable_encoder(exc.errors()))
        return JSONResponse(status_code=422, content={"detail": errors})

    handler: Any = unavailable
    app.add_exception_handler(LedgerUnavailable, handler)
    app.add_exception_handler(SchedulerUnavailable, handler)
    validation: Any = invalid
    app.add_exception_handler(RequestValidationError, validation)
    return app
