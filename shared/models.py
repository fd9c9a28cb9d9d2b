"""Request and response models shared by both APIs (identical HTTP contract)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, EmailStr, Field


class Implementation(StrEnum):
    bg = "bg"
    celery = "celery"


class TaskKind(StrEnum):
    notification = "notification"
    log = "log"
    beat = "beat"
    mechanics = "mechanics"


class TaskState(StrEnum):
    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"


IN_FLIGHT = frozenset({TaskState.queued, TaskState.running, TaskState.retrying})


class Item(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["노트북"])
    price: float = Field(ge=0, examples=[1500000])


class ItemAccepted(BaseModel):
    item: Item
    message: str
    task_ids: list[str]


class NotificationAccepted(BaseModel):
    email: EmailStr
    message: str
    task_ids: list[str]


class Run(BaseModel):
    """One attempt at a task: every run counts, a redelivery after a crash included."""

    attempt: int
    runner: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    # succeeded | failed | retrying | abandoned (its process died mid-run); None: not ended.
    outcome: str | None = None


class TaskRecord(BaseModel):
    task_id: str
    implementation: Implementation
    kind: str
    state: TaskState
    attempts: int = 0
    retries: int = 0
    # Runs of this task still going (a double delivery: the first run may still be
    # going when the second ends). The state is final only when this is 0.
    running: int = 0
    queued_at: float | None = None
    first_started_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    # The process ("host:pid:nonce") that holds the task (BackgroundTasks: the API
    # process that accepted it) or ran its latest attempt: a task in flight on a
    # process that is gone is a lost task.
    runner: str | None = None
    # The task scheduled just before this one by the same request (BackgroundTasks
    # runs them in order and skips the rest after a failure).
    after: str | None = None
    error: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)
    runs: list[Run] = Field(default_factory=list)


class RunnerRecord(BaseModel):
    """A process that runs tasks, as its heartbeat in the ledger shows it."""

    runner: str
    implementation: Implementation
    role: str
    started_at: float
    seen_at: float
    # Set when it shut down cleanly; a killed process just stops being seen.
    stopped_at: float | None = None


class Health(BaseModel):
    status: str
    implementation: Implementation
    ledger: str
    # This API process ("host:pid:nonce"): a restart shows as a new runner.
    runner: str
