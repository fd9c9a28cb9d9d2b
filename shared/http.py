"""The HTTP pieces both apps declare their routes with: the responses an operation
can give besides its success (each with its schema, so that the published OpenAPI
document says what the apps do), the path parameters, the dependencies, and the
routes that read the ledger (the same for every implementation).

Each app declares its own task-scheduling routes in its ``main.py``, in its
framework's idiom; a unit test compares the two OpenAPI documents.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from shared.heartbeat import runner_id
from shared.ledger import AsyncLedger, Ledger
from shared.models import (
    EMAIL_MAX,
    EMAIL_PATTERN,
    Health,
    Implementation,
    Problem,
    Ready,
    RunnerRecord,
    TaskRecord,
    TaskView,
    Unavailable,
)
from shared.settings import Settings
from shared.verdict import Observation, judge, rules

# What an operation can answer besides its success; every one with a schema.
Responses = dict[int | str, dict[str, Any]]


def problem(code: int, description: str) -> Responses:
    return {code: {"model": Problem, "description": description}}


TOO_LARGE = problem(413, "The request body is over MAX_BODY_BYTES: refused before it is read.")
MALFORMED = problem(400, "The request body could not be read (the client stopped sending it).")
# A body's errors (the 422 is FastAPI's own, from the validation).
BODY_ERRORS: Responses = {**TOO_LARGE, **MALFORMED}


def unavailable(description: str) -> Responses:
    """A 503: the body names the dependency; ``Retry-After`` says when to try again."""
    return {
        503: {
            "model": Unavailable,
            "description": description,
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before trying again.",
                    "schema": {"type": "integer"},
                }
            },
        }
    }


UNAVAILABLE = unavailable(
    "The broker or the ledger (Redis) cannot be reached. The detail says which of the "
    "request's tasks were queued, may have been (the broker did not confirm in time), "
    "or were not; a task it does not name was not queued.",
)
NOT_FOUND = problem(
    404,
    "No such task in the ledger: never seen, or forgotten (a finished task's record "
    "expires LEDGER_RETENTION_SECONDS after it finished).",
)
LEDGER_DOWN = unavailable("The ledger (Redis) is off or cannot be reached.")
NOT_READY = unavailable("A dependency this API needs to accept work does not answer.")

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


# The dependencies are ``async`` on purpose: a sync dependency costs a trip through
# AnyIO's thread pool (and one of its 40 tokens) on every request.


async def get_settings_of(request: Request) -> Settings:
    """The settings the app's lifespan resolved (an override of ``get_settings`` included)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_ledger(request: Request) -> Ledger:
    """The ledger through a synchronous client: reads, and the tasks' own records."""
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_async_ledger(request: Request) -> AsyncLedger:
    """The ledger on the event loop: an API's ``queued`` records, one round trip each."""
    ledger: AsyncLedger = request.app.state.async_ledger
    return ledger


SettingsDep = Annotated[Settings, Depends(get_settings_of)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
AsyncLedgerDep = Annotated[AsyncLedger, Depends(get_async_ledger)]


def _views(ledger: Ledger, settings: Settings, records: list[TaskRecord]) -> list[TaskView]:
    """The records with their verdicts, judged as every count here judges them."""
    by_id = {r.task_id: r for r in records}
    # A task's fate can follow from the one scheduled before it (BackgroundTasks
    # skips the rest of a request's tasks after a failure): those too.
    before = [r.after for r in records if r.after and r.after not in by_id]
    if before:
        by_id |= ledger.records(before)
    judgement = judge(
        Observation(
            now=time.time(),
            records=list(by_id.values()),
            runners=ledger.runners(),
            **rules(settings),
        )
    )
    return [
        TaskView(
            **r.model_dump(),
            verdict=judgement.tasks[r.task_id].verdict.value,
            verdict_reason=judgement.tasks[r.task_id].why,
            executions=judgement.tasks[r.task_id].executions,
        )
        for r in records
    ]


def ledger_router() -> APIRouter:
    """The routes that read the ledger, and the health check: the same on both apps."""
    router = APIRouter()

    @router.get(
        "/tasks/{task_id}",
        tags=["tasks"],
        response_model=TaskView,
        responses={**NOT_FOUND, **LEDGER_DOWN},
    )
    def get_task(task_id: str, ledger: LedgerDep, settings: SettingsDep) -> TaskView:
        """One task's record (its state, every run, its timestamps) and its verdict:
        completed, failed, in flight, awaiting redelivery, lost or skipped."""
        record = ledger.get(task_id)
        if record is None:
            raise HTTPException(
                status_code=404,
                detail=f"no task {task_id!r} in the ledger: never seen, or forgotten "
                f"after the retention ({settings.ledger_retention_seconds:g} s after "
                "it finished)",
            )
        [view] = _views(ledger, settings, [record])
        return view

    @router.get("/tasks", tags=["tasks"], response_model=list[TaskView], responses=LEDGER_DOWN)
    def list_tasks(
        ledger: LedgerDep,
        settings: SettingsDep,
        implementation: Implementation | None = None,
        since: Annotated[float | None, Query(allow_inf_nan=False)] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[TaskView]:
        """Every task of every implementation (or one), oldest first, with its verdict."""
        return _views(ledger, settings, ledger.tasks(implementation, since=since, limit=limit))

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

    @router.get("/ready", tags=["health"], response_model=Ready, responses=NOT_READY)
    async def ready(request: Request) -> Ready:
        """Readiness, for a load balancer: every dependency this API needs to accept
        work answers (the ledger unless switched off; the broker, where there is one).
        503 otherwise, naming it. ``/health`` stays liveness: restarting an API whose
        broker is down helps nobody."""
        checks: dict[str, Callable[[], Any]] = request.app.state.readiness
        for check in checks.values():
            # Each raises DependencyUnavailable (the 503); a blocking one in the pool.
            if inspect.iscoroutinefunction(check):
                await check()
            else:
                await run_in_threadpool(check)
        ledger: Ledger = request.app.state.ledger
        return Ready(status="ready", implementation=ledger.implementation, checked=list(checks))

    return router
