"""What one crash scenario measured: the record ``run_scenario`` fills and the report
reads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Say = Callable[[str], None]


@dataclass
class Outcome:
    key: str
    title: str
    implementation: str
    expected: str
    # The broker variant it ran on ("" for an implementation that needs no "broker"
    # service: BackgroundTasks, or taskiq on the ledger's Redis).
    broker: str = ""
    status: Literal["ok", "skipped", "error"] = "ok"
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    submitted: int = 0
    # The ledger just before the kill (verified, not assumed).
    running_at_kill: int = 0
    queued_at_kill: int = 0
    done_at_kill: int = 0
    # The verdicts, at the end.
    completed: int = 0
    failed: int = 0
    lost: int = 0
    skipped: int = 0
    lost_notifications: int = 0
    gave_up: int = 0
    # Parked, not lost: recorded failed by the queue (RQ's failed registry), or put
    # aside by the broker after a delivery limit (a dead-letter queue).
    abandoned: int = 0
    dead_lettered: int = 0
    # A scenario with a fixed window: how often the broker handed each notification
    # out in it (the worker's "received" lines), and the most runs one had.
    window: float | None = None
    handed_out: int | None = None
    most_runs: int | None = None
    missing_from_ledger: int = 0
    executed_more_than_once: int = 0
    retried: int = 0
    duplicate_effects: int | None = None
    extra_effect_lines: int | None = None
    # Runs that found their effect already written and did not write it again.
    skipped_writes: int = 0
    # Seconds from the kill (or, without one, the first submission).
    stopped_after: float | None = None  # the service was down
    restarted_after: float | None = None  # ...and answering again
    finished_while_stopping: int = 0  # tasks that completed between the signal and the exit
    finished_after_stop: int = 0  # ...and after it was down (run by the restarted one)
    redelivered_after: tuple[float, float] | None = None  # min, max start of a rerun
    rerun_by: list[str] = field(default_factory=list)  # which services ran the reruns
    # One of several processes killed: the tasks it held at the kill.
    held_by_killed: list[str] = field(default_factory=list)
    # A partition: how long the cut lasted, when it healed (from the cut), and how
    # long after the heal the cut worker started a task again (None: it did not).
    cut_seconds: float | None = None
    healed_after: float | None = None
    consumed_again_after: float | None = None
    # A failover (the broker's leading process killed for good, under steady traffic):
    # seconds from the kill until a new leader, until the API publishes again, until a
    # worker starts a task again; the requests refused meanwhile (503s).
    killed: str | None = None
    promoted_after: float | None = None
    publishing_again_after: float | None = None
    refused: int = 0
    # Seconds from the kill at which a worker was found exited by itself (and was
    # started again, as a restart policy would).
    worker_exits: list[float] = field(default_factory=list)
    last_completed_after: float | None = None  # None: never (something was lost)
    settle: str = ""
    running_ids_at_kill: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    # Every task's verdict and runs, for drill-down in the JSON report.
    tasks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
