"""The lab's state: one target, the actions the page may take, and the poll that
turns what the target shows into the snapshot the page renders.

Blocking code: the actions and the poll run in worker threads (the web app hands
them to ``asyncio.to_thread``); ``_lock`` guards what both touch. What becomes of
each task is ``shared.verdict``'s decision, the same rule the crash experiment
counts with; the lab only adds how to show it.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from harness.observe import rules_for
from harness.target import RUNS_THE_WORK, ServiceState, Target
from shared.models import RunnerRecord, TaskRecord
from shared.services import DEFAULT_IMPLEMENTATIONS, implementation_of, services_of
from shared.services import SERVICES as SERVICE_TABLE
from shared.verdict import FINAL, Observation, TaskVerdict, Verdict, judge

logger = logging.getLogger(__name__)

# What the page may do to which service (the table's controls); the lab touches
# nothing else. Redis is the Celery side's broker (and both sides' ledger): its
# button lives there.
# The implementations the lab shows, a column each.
COLUMNS: tuple[str, ...] = tuple(DEFAULT_IMPLEMENTATIONS)
CONTROLS: dict[str, tuple[str, frozenset[str]]] = {
    name: (implementation_of(name), s.controls) for name, s in SERVICE_TABLE.items() if s.controls
}
# The status row of each side: its own services, and Redis on every side (it
# holds both ledgers), beside the broker's place on the Celery side.
STATUS_SERVICES: dict[str, tuple[str, ...]] = {
    side: (*services_of(side), "redis") for side in COLUMNS
}
ACTIONS = frozenset({"item", "send", "fail", "kill", "stop", "restart"})

# How the page shows a verdict: a task in flight shows the ledger's own state.
SHOWN = {
    Verdict.completed: "succeeded",
    Verdict.failed: "failed",
    Verdict.lost: "lost",
    Verdict.skipped: "skipped",
    Verdict.awaiting_redelivery: "redelivery",
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
)
TABLE_ROWS = 150  # per side; the counters always count every task of the round
EVENTS_KEPT = 200


@dataclass(frozen=True)
class LabSettings:
    """How the lab behaves (the stack's own settings come from the target)."""

    fail_attempts: int = 2
    poll_interval: float = 0.4
    # How long "stop" (SIGTERM) waits for a process before it is killed.
    stop_timeout: float = 30.0
    start_timeout: float = 90.0


class ActionRefused(ValueError):
    """Not something this lab does (unknown action, or a service it does not control)."""


@dataclass
class LabEvent:
    id: int
    at: float
    side: str
    action: str
    label: str
    service: str | None = None
    status: Literal["pending", "ok", "error"] = "pending"
    result: str = ""
    duration: float | None = None
    # The side's tasks in flight when a process action began: id -> shown state then.
    in_flight: dict[str, str] = field(default_factory=dict)

    def as_dict(self, states_now: dict[str, str]) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "side": self.side,
            "action": self.action,
            "service": self.service,
            "label": self.label,
            "status": self.status,
            "result": self.result,
            "duration": self.duration,
            "in_flight": [
                {"id": tid, "then": then, "now": states_now.get(tid, "gone")}
                for tid, then in self.in_flight.items()
            ],
        }


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


class Lab:
    """One target, the actions on it, and the snapshot of what it shows."""

    def __init__(self, target: Target, settings: LabSettings) -> None:
        self.target = target
        self.settings = settings
        self.since = time.time()
        self._lock = threading.RLock()
        # Serializes actions on the same service (two restarts of one worker).
        self._service_locks = {name: threading.Lock() for name in CONTROLS}
        self._ids = itertools.count(1)
        self._items = itertools.count(1)
        self.events: list[LabEvent] = []
        self.fail: dict[str, int] = {
            side: target.settings_for(RUNS_THE_WORK[side]).notification_fail_first_attempts
            for side in COLUMNS
        }
        self.broker_up_since = float("-inf")
        self._status: dict[str, ServiceState] = {}
        self._records: list[TaskRecord] = []
        self._states: dict[str, str] = {}
        self._views: dict[str, list[dict[str, Any]]] = {side: [] for side in COLUMNS}
        self.ledger_note = ""
        # Called when an action changed something (the web app polls at once).
        self.on_change: Any = lambda: None

    # --- actions ------------------------------------------------------------------------

    def act(self, side: str, action: str, service: str | None = None, count: int = 5) -> LabEvent:
        """Run one action to the end (blocking: call it from a thread); confirm it in the log."""
        if side not in COLUMNS:
            raise ActionRefused(f"unknown side {side!r}")
        if action not in ACTIONS:
            raise ActionRefused(f"unknown action {action!r}")
        if action in ("kill", "stop", "restart"):
            if service not in CONTROLS:
                raise ActionRefused(f"the lab does not control {service!r}")
            owner, allowed = CONTROLS[service]
            if owner != side or action not in allowed:
                raise ActionRefused(f"{action} {service} is not an action of the {side} side")
            if service not in self.target.services:
                raise ActionRefused(f"this stack runs no {service}")
        else:
            service = None
        if not 1 <= count <= 100:
            raise ActionRefused("count must be between 1 and 100")
        typed: str = side
        event = self._begin(typed, action, service, count)
        started = time.monotonic()
        try:
            if action == "item":
                event.result = self._create_item(typed)
            elif action == "send":
                event.result = self._send(typed, count)
            elif action == "fail":
                event.result = self._toggle_fail(typed)
            else:
                assert service is not None
                with self._service_locks[service]:
                    event.result = getattr(self, f"_{action}")(service)
            event.status = "ok"
        except Exception as exc:
            logger.warning("%s %s failed: %s", action, service or side, exc)
            event.status = "error"
            event.result = event.result or f"{type(exc).__name__}: {exc}"
        finally:
            event.duration = time.monotonic() - started
            self.on_change()
        return event

    def _begin(self, side: str, action: str, service: str | None, count: int) -> LabEvent:
        labels = {
            "item": "create an item",
            "send": f"send {count} notification{'s' if count != 1 else ''}",
            "fail": "make the next notifications fail"
            if not self.fail[side]
            else "make notifications succeed again",
            "kill": f"kill {service} (SIGKILL)",
            "stop": f"stop {service} (SIGTERM)",
            "restart": f"restart {service}",
        }
        with self._lock:
            event = LabEvent(next(self._ids), time.time(), side, action, labels[action], service)
            if action in ("kill", "stop", "restart", "fail"):
                event.in_flight = {t["id"]: t["state"] for t in self._views[side] if t["in_flight"]}
            self.events.append(event)
            del self.events[:-EVENTS_KEPT]
        self.on_change()
        return event

    def _post(self, side: str, path: str, body: dict[str, Any] | None = None) -> list[str]:
        r = httpx.post(self.target.url(side) + path, json=body, timeout=10)
        if r.status_code >= 300:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
        ids: list[str] = r.json()["task_ids"]
        return ids

    def _create_item(self, side: str) -> str:
        n = next(self._items)
        ids = self._post(side, "/items/", {"name": f"lab item {n}", "price": 1000 + n})
        return f"item created; task {ids[0][:8]} queued"

    def _send(self, side: str, n: int) -> str:
        accepted = 0
        errors: list[str] = []
        for i in range(n):
            try:
                self._post(side, f"/send-notification/lab-{i + 1}@example.com")
                accepted += 1
            except (httpx.HTTPError, RuntimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        summary = f"{accepted} of {n} accepted"
        if errors:
            raise RuntimeError(f"{summary}; refused: {errors[0]}")
        return summary + " (each: a notification, then its log line)"

    def _toggle_fail(self, side: str) -> str:
        value = 0 if self.fail[side] else self.settings.fail_attempts
        service = RUNS_THE_WORK[side]
        with self._service_locks[service]:
            # The setting is read at process start: a graceful restart with it changed.
            self.target.reconfigure(
                service, timeout=self.settings.stop_timeout, notification_fail_first_attempts=value
            )
            self.fail[side] = value
        what = (
            f"the first {value} attempts of every notification fail"
            if value
            else "notifications succeed again"
        )
        return f"{service} restarted with NOTIFICATION_FAIL_FIRST_ATTEMPTS={value}: {what}"

    def _pid(self, service: str) -> str:
        state = self._status.get(service)
        return f" ({state.detail})" if state is not None and state.detail else ""

    def _kill(self, service: str) -> str:
        where = self._pid(service)
        self.target.kill(service)
        return f"{service}{where} killed: gone at once"

    def _stop(self, service: str) -> str:
        where = self._pid(service)
        started = time.monotonic()
        self.target.terminate(service, timeout=self.settings.stop_timeout)
        took = time.monotonic() - started
        if took >= self.settings.stop_timeout:
            return (
                f"{service}{where} did not exit within {self.settings.stop_timeout:.0f}s of "
                "SIGTERM (uvicorn waits for its background tasks, a Celery worker for its "
                "running tasks): killed"
            )
        return f"{service}{where} exited after {took:.1f}s"

    def _restart(self, service: str) -> str:
        stopped = self._stop(service) + "; " if self.target.is_up(service) else ""
        started = time.monotonic()
        self.target.start(service, timeout=self.settings.start_timeout)
        if service == self.target.broker_service:
            self.broker_up_since = time.time()
        state = self.target.status().get(service)
        now = f" ({state.detail})" if state is not None and state.detail else ""
        return f"{stopped}{service} up again{now} after {time.monotonic() - started:.1f}s"

    def reset(self) -> None:
        """A new round: count and show only the tasks from now on, clear the log."""
        with self._lock:
            self.since = time.time()
            self.events.clear()
            self._records = []
            self._views = {side: [] for side in COLUMNS}
        self.on_change()

    def event_dict(self, event: LabEvent) -> dict[str, Any]:
        with self._lock:
            return event.as_dict(self._states)

    # --- the poll -----------------------------------------------------------------------

    def _read_ledger(self) -> tuple[list[TaskRecord], list[RunnerRecord]]:
        ledger = self.target.ledger()
        try:
            records, runners = ledger.records(since=self.since), ledger.runners()
            self.ledger_note = ""
            return records, runners
        except (RuntimeError, OSError) as exc:
            self.ledger_note = f"ledger unreachable, showing the last snapshot ({exc})"
            return self._records, []

    def poll_once(self) -> dict[str, Any]:
        """Read everything once and build the snapshot (blocking: runs in a thread)."""
        status = self.target.status()
        records, runners = self._read_ledger()
        now = time.time()
        rules = rules_for(self.target)
        broker = status.get(self.target.broker_service)
        broker_up_since: float | None = max(
            self.broker_up_since, (broker.since if broker else None) or float("-inf")
        )
        if broker is not None and not broker.up:
            broker_up_since = None
        with self._lock:
            since = self.since
            records = [r for r in records if (r.queued_at or now) >= since]
            self._records = records
            self._status = status
            judgement = judge(
                Observation(
                    now=now,
                    records=records,
                    runners=runners,
                    broker_up_since=broker_up_since,
                    **rules,
                )
            )
            by_runner = {r.runner: r for r in runners}
            views: dict[str, list[dict[str, Any]]] = {side: [] for side in COLUMNS}
            for record in sorted(records, key=lambda r: r.queued_at or 0):
                t = judgement.tasks[record.task_id]
                views[record.implementation.value].append(task_view(t, by_runner))
            self._views = views
            self._states = {t["id"]: t["state"] for side in COLUMNS for t in views[side]}
            events = [e.as_dict(self._states) for e in self.events]
            return self._snapshot(now, status, views, events)

    def _snapshot(
        self,
        now: float,
        status: dict[str, ServiceState],
        views: dict[str, list[dict[str, Any]]],
        events: list[dict[str, Any]],
    ) -> dict[str, Any]:
        sides: dict[str, Any] = {}
        for side in COLUMNS:
            procs = []
            for service in STATUS_SERVICES[side]:
                state = status.get(service)
                if state is None:
                    continue  # not part of this target (local runs no Flower)
                procs.append(
                    {
                        "service": service,
                        "up": state.up,
                        "detail": state.detail if state.up else "",
                        "pid": state.pid,
                    }
                )
            tasks = views[side]
            sides[side] = {
                "processes": procs,
                "fail_first": self.fail[side],
                "counters": count([t for t in tasks if t["kind"] == "notification"]),
                "all": count(tasks),
                "tasks": tasks[-TABLE_ROWS:],
            }
        s = self.target.settings
        return {
            "now": now,
            "since": self.since,
            "target": self.target.name,
            "ledger_note": self.ledger_note,
            "links": {
                "bg_docs": self.target.url("bg") + "/docs",
                "celery_docs": self.target.url("celery") + "/docs",
                "flower": self.target.flower_url if status.get("flower") else None,
                "rabbitmq": self.target.rabbitmq_ui,
            },
            "settings": {
                "broker": s.broker,
                "notification_delay": s.notification_delay_seconds,
                "visibility_timeout": s.celery_visibility_timeout,
                "restore_interval": s.celery_restore_interval,
                "acks_late": s.celery_acks_late,
                "worker_concurrency": self.target.worker_processes,
                "lost_after": rules_for(self.target)["slack"],
                "compose": self.target.name == "compose",
            },
            "sides": sides,
            "events": events,
        }
