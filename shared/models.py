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


class TaskRecord(BaseModel):
    task_id: str
    implementation: Implementation
    kind: str
    state: TaskState
    attempts: int = 0
    retries: int = 0
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float | None = None
    # The process that ran the latest attempt ("host:pid"): a task in flight on a
    # process that is gone is a lost task.
    runner: str | None = None
    error: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)


class Health(BaseModel):
    status: str
    implementation: Implementation
    ledger: str
    # This API process ("host:pid:nonce"): a restart shows as a new runner.
    runner: str
