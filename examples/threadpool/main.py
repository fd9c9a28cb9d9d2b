"""Where a background task runs: a ``def`` in AnyIO's thread pool, an ``async def``
on the event loop, where a blocking call stalls every request, and the fix.

    uvicorn main:app --reload
"""

import asyncio
import threading
import time
from typing import Annotated, Literal

from fastapi import BackgroundTasks, FastAPI, Query

app = FastAPI()


def record(task: str) -> None:
    with open("log.txt", mode="a", encoding="utf-8") as log:
        log.write(f"{task} ran in {threading.current_thread().name}\n")


def sync_task(seconds: float) -> None:  # def: AnyIO's thread pool, the loop stays free
    time.sleep(seconds)
    record("sync_task")


async def async_task(seconds: float) -> None:  # async def + time.sleep: every request waits
    time.sleep(seconds)
    record("async_task")


async def fixed_task(seconds: float) -> None:  # the fix: the blocking call off the loop
    await asyncio.to_thread(time.sleep, seconds)
    record("fixed_task")


TASKS = {task.__name__: task for task in (sync_task, async_task, fixed_task)}
Name = Literal["sync_task", "async_task", "fixed_task"]
Seconds = Annotated[float, Query(ge=0, le=10)]


@app.post("/tasks/{name}")
async def schedule(name: Name, background_tasks: BackgroundTasks, seconds: Seconds = 2) -> dict:
    background_tasks.add_task(TASKS[name], seconds)
    return {"scheduled": name}  # while a task blocks the loop, no request is answered
