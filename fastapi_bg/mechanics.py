"""Where a background task runs, and how to stall a server: Starlette runs a
``def`` task in AnyIO's thread pool and an ``async def`` one on the event loop.

Each endpoint schedules one task that sleeps ``seconds`` and records, in the
ledger, which thread ran it and whether that was the event loop's thread:

- ``sync-task``: a plain ``def``; Starlette runs it in AnyIO's thread pool.
- ``async-task``: ``async def`` with ``await asyncio.sleep``; runs on the loop, yields.
- ``blocking-async-task``: ``async def`` calling ``time.sleep``; runs on the loop and
  blocks it, so every other request (``/health`` included) waits. The anti-pattern.
- ``to-thread-task``: the same blocking call moved off the loop with ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Query, Request
from pydantic import BaseModel

from shared.http import TOO_LARGE, AsyncLedgerDep
from shared.ledger import Ledger
from shared.models import TaskKind, TaskState

router = APIRouter(prefix="/mechanics", tags=["mechanics"])

Seconds = Annotated[float, Query(ge=0, le=30, allow_inf_nan=False)]


class MechanicsAccepted(BaseModel):
    variant: str
    seconds: float
    task_ids: list[str]


def _where(loop_thread: int) -> dict[str, str]:
    me = threading.current_thread()
    return {
        "thread": me.name,
        "on_loop_thread": str(me.ident == loop_thread).lower(),
    }


def sync_task(ledger: Ledger, task_id: str, seconds: float, loop_thread: int) -> None:
    """A plain def: Starlette runs it in AnyIO's thread pool; the loop stays free."""
    attempt = ledger.record_running(task_id, TaskKind.mechanics)
    where = _where(loop_thread)
    time.sleep(seconds)
    ledger.record_finished(task_id, attempt, TaskState.succeeded, detail=where)


async def async_task(ledger: Ledger, task_id: str, seconds: float, loop_thread: int) -> None:
    """async def with await asyncio.sleep: runs on the event loop and yields to it."""
    # The ledger calls are quick sync Redis round trips on loopback; they are not
    # what this endpoint is about.
    attempt = ledger.record_running(task_id, TaskKind.mechanics)
    where = _where(loop_thread)
    await asyncio.sleep(seconds)
    ledger.record_finished(task_id, attempt, TaskState.succeeded, detail=where)


async def blocking_async_task(
    ledger: Ledger, task_id: str, seconds: float, loop_thread: int
) -> None:
    """The anti-pattern: time.sleep inside async def blocks the loop; every request waits."""
    attempt = ledger.record_running(task_id, TaskKind.mechanics)
    where = _where(loop_thread)
    time.sleep(seconds)  # blocks the event loop: the whole server stalls
    ledger.record_finished(task_id, attempt, TaskState.succeeded, detail=where)


async def to_thread_task(ledger: Ledger, task_id: str, seconds: float, loop_thread: int) -> None:
    """The fix: the same blocking call moved off the loop with asyncio.to_thread."""
    attempt = ledger.record_running(task_id, TaskKind.mechanics)
    where = _where(loop_thread)
    await asyncio.to_thread(time.sleep, seconds)  # the fix: the loop stays free
    ledger.record_finished(task_id, attempt, TaskState.succeeded, detail=where)


VARIANTS = {
    "sync-task": sync_task,
    "async-task": async_task,
    "blocking-async-task": blocking_async_task,
    "to-thread-task": to_thread_task,
}


def _endpoint(variant: str) -> Callable[..., Awaitable[MechanicsAccepted]]:
    async def schedule(
        request: Request, tasks: BackgroundTasks, queue: AsyncLedgerDep, seconds: Seconds = 1.0
    ) -> MechanicsAccepted:
        [task_id] = await queue.record_new(TaskKind.mechanics, detail={"variant": variant})
        ledger: Ledger = request.app.state.ledger
        tasks.add_task(VARIANTS[variant], ledger, task_id, seconds, request.app.state.loop_thread)
        return MechanicsAccepted(variant=variant, seconds=seconds, task_ids=[task_id])

    schedule.__name__ = f"schedule_{variant.replace('-', '_')}"
    return schedule


for _variant, _task in VARIANTS.items():
    router.add_api_route(
        f"/{_variant}",
        _endpoint(_variant),
        methods=["POST"],
        status_code=202,
        response_model=MechanicsAccepted,
        responses=TOO_LARGE,
        summary=f"Schedule {_task.__name__}",
        description=(_task.__doc__ or "").strip(),
    )
