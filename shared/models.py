"""Request and response models shared by both APIs (identical HTTP contract)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.services import Implementation

__all__ = ["Implementation"]  # defined with the table of services, used with the models


class TaskKind(StrEnum):
    notification = "notification"
    log = "log"
    beat = "beat"
    mechanics = "mechanics"
    # CPU-bound: pure-Python computation (the chapter's "heavy work belongs in a worker").
    heavy = "heavy"


class TaskState(StrEnum):
    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"


IN_FLIGHT = frozenset({TaskState.queued, TaskState.running, TaskState.retrying})
# A failed task the queue parked where someone can get it back (``Ledger.record_parked``):
# recorded failed without finishing (abandoned), or set aside by the broker after a
# delivery limit (dead-lettered). The verdict names them so.
PARKED_FATES = frozenset({"abandoned", "dead-lettered"})


# An email address, as the schema documents it: the WHATWG (HTML) "valid email
# address" rule, without "/" and "%" (in a URL path one splits the segment, the
# other reads as an escape), at most 254 characters. A syntax check only: no DNS,
# no list of reserved domains, so an address is valid exactly when this pattern
# says so. The same pattern in Python and in the OpenAPI document (ECMA regex).
EMAIL_PATTERN = (
    r"^[a-zA-Z0-9.!#$&'*+=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$"
)
EMAIL_MAX = 254
Email = Annotated[str, Field(pattern=EMAIL_PATTERN, max_length=EMAIL_MAX)]

# A name is one printable line with no space at either end: it ends up in log.txt,
# where a line break would forge another task's line. Untrimmed names are refused,
# not trimmed: the server accepts exactly what the schema says it accepts.
NAME_PATTERN = r"^[^ \x00-\x1f\x7f](?:[^\x00-\x1f\x7f]*[^ \x00-\x1f\x7f])?$"


class Item(BaseModel):
    """What ``POST /items/`` takes: nothing else (unknown fields are refused)."""

    # strict: a price is a JSON number; true, "12" or a non-finite value
    # (NaN, Infinity, 1e400) are refused, not coerced.
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1, max_length=200, pattern=NAME_PATTERN, examples=["노트북"])
    price: float = Field(ge=0, allow_inf_nan=False, examples=[1500000])


class ItemAccepted(BaseModel):
    item: Item
    message: str
    task_ids: list[str]


class NotificationAccepted(BaseModel):
    email: Email
    message: str
    task_ids: list[str]


class HeavyAccepted(BaseModel):
    rounds: int
    message: str
    task_ids: list[str]


class Problem(BaseModel):
    """Every refusal that is not a validation error: what went wrong, in one sentence."""

    detail: str


class Unavailable(Problem):
    """A 503: the dependency that did not answer (its host, port and error stay in the
    server's log); ``Retry-After`` says when to try again."""

    dependency: Literal["broker", "ledger"]


class Ready(BaseModel):
    status: Literal["ready"]
    implementation: Implementation
    # The dependencies that answered: the ledger (unless switched off) and the broker.
    checked: list[str]


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
    running_count: int = 0
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


class TaskView(TaskRecord):
    """A task's record, and what became of it (``shared.verdict``, the rule every
    count here uses): the raw ``state`` says where the ledger left it, the
    ``verdict`` whether anything will still run it."""

    verdict: str
    verdict_reason: str = ""
    # Deliveries that started a run (retries not counted): 2 means it ran twice.
    executions: int = 0


class RunnerRecord(BaseModel):
    """A process that runs tasks, as its heartbeat in the ledger shows it."""

    runner: str
    implementation: Implementation
    role: str
    started_at: float
    seen_at: float
    # Set when it shut down cleanly; a killed process just stops being seen.
    stopped_at: float | None = None
    # Runs it had going at its last beat, and since when it has had none (None: not
    # reported, or busy): what tells a free worker from one whose run the
    # records at hand do not show.
    busy: int | None = None
    free_since: float | None = None


class Health(BaseModel):
    status: str
    implementation: Implementation
    ledger: str
    # This API process ("host:pid:nonce"): a restart shows as a new runner.
    runner: str
