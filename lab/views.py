"""How the lab's page shows a task, a column's counters and a broker's redelivery
rule: the verdict (``shared.verdict``) decides what became of a task; this only
turns it into what the page renders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.models import RunnerRecord
from shared.redelivery import Redelivery
from shared.services import IMPLEMENTATIONS, Delivery, Implementation
from shared.verdict import FINAL, TaskVerdict, Verdict

# How the page shows a verdict: a task in flight shows the ledger's own state.
SHOWN = {
    Verdict.completed: "succeeded",
    Verdict.failed: "failed",
    Verdict.lost: "lost",
    Verdict.skipped: "skipped",
    Verdict.awaiting_redelivery: "redelivery",
    Verdict.abandoned: "abandoned",
    Verdict.dead_lettered: "dead-lettered",
}
COUNTERS = (
    "submitted",
    "queued",
    "running",
    "retrying",
    "redelivery",
    "succeeded",
    "failed",
    "lost",
    "skipped",
    "abandoned",
    "dead-lettered",
)


def shown(t: TaskVerdict) -> str:
    """The state the page shows for a verdict."""
    if t.verdict == Verdict.in_flight:
        return t.record.state.value if t.record is not None else "queued"
    return SHOWN[t.verdict]


def task_view(t: TaskVerdict, runners: dict[str, RunnerRecord]) -> dict[str, Any]:
    record = t.record
    assert record is not None
    ended = record.finished_at
    if t.verdict == Verdict.lost and record.runner in runners:
        r = runners[record.runner]
        ended = r.stopped_at or r.seen_at  # where a lost task's bar ends: its process's end
    history = []
    if t.retries:
        history.append(f"retried {t.retries}x after transient errors")
    if t.executions > 1:
        history.append(f"delivered {t.executions}x: redelivered after its worker died")
    note = "; ".join(x for x in [t.why if t.verdict != Verdict.completed else "", *history] if x)
    return {
        "id": t.task_id,
        "short": t.task_id[:8],
        "kind": t.kind,
        "state": shown(t),
        "verdict": t.verdict.value,
        "in_flight": t.verdict not in FINAL,
        "ledger_state": record.state.value,
        "attempts": record.attempts,
        "retries": record.retries,
        "executions": t.executions,
        "queued_at": record.queued_at,
        "started_at": record.started_at,
        "ended_at": ended,
        "note": note,
        "runner": record.runner,
        "error": record.error,
    }


def count(tasks: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(COUNTERS, 0)
    counts["submitted"] = len(tasks)
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    return counts


def redelivery_view(rule: Redelivery | None) -> dict[str, Any] | None:
    """When a task whose worker died comes back, as the page shows it (None: nothing
    holds the task but the process that runs it)."""
    if rule is None:
        return None
    if not rule.acks_late:
        when = f"never: {rule.why_lost}"
    elif rule.broker != "redis":
        when = "requeued by the broker when its worker's connection drops"
    elif rule.visibility_timeout == float("inf"):
        when = "never: nothing hands it back"
    else:
        when = (
            f"handed back {rule.visibility_timeout:g} s after it started, "
            f"at a live worker's scan (every {rule.restore_interval:g} s)"
        )
    return {
        "broker": rule.broker,
        "visibility_timeout": rule.visibility_timeout,
        "restore_interval": rule.restore_interval,
        "acks_late": rule.acks_late,
        "when": when,
    }


BROKER_TITLES = {"redis": "Redis", "rabbitmq": "RabbitMQ"}


def about(impl: Implementation, rule: Redelivery | None) -> str:
    """Where a column's tasks go and what runs them (its subtitle is how they are delivered)."""
    spec = IMPLEMENTATIONS[impl]
    if spec.delivery == Delivery.in_process or rule is None:
        return f"run by {spec.runs_the_work} itself, after the response"
    broker = BROKER_TITLES.get(rule.broker, rule.broker)
    return f"published to {broker}, run by {spec.runs_the_work}"
