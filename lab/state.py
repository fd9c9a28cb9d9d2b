"""The lab's state: one target, the implementations it runs (a column each), the
actions the page may take, and the poll that turns what the target shows into the
snapshot the page renders.

Every implementation, its services and what the lab may do to them come from the
declaration (``shared.services``): nothing here names one.

Blocking code: the actions and the poll run in worker threads (the web app hands
them to ``asyncio.to_thread``); ``_lock`` guards what both touch. What becomes of
each task is ``shared.verdict``'s decision, the same rule the crash experiment
counts with; how the page shows it is ``lab.views``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from harness.observe import rules_for
from harness.target import ServiceState, Target
from lab.views import about, count, redelivery_view, task_view
from shared.models import RunnerRecord, TaskRecord
from shared.redelivery import Redelivery
from shared.services import (
    DEFAULT_IMPLEMENTATIONS,
    IMPLEMENTATIONS,
    Delivery,
    Implementation,
    services_of,
)
from shared.services import SERVICES as SERVICE_TABLE
from shared.verdict import Observation, judge

logger = logging.getLogger(__name__)

# The services of no implementation (Redis: every ledger, and a broker): each
# column shows them, and takes their controls, since each depends on them.
SHARED_SERVICES: tuple[str, ...] = tuple(
    name for name, s in SERVICE_TABLE.items() if s.implementation is None
)
# The process actions, in the order the page shows them.
PROCESS_ACTIONS = ("kill", "stop", "restart")


def column_services(impl: Implementation) -> tuple[str, ...]:
    """What a column shows the state of: its implementation's services, then the shared ones."""
    return (*services_of(impl), *SHARED_SERVICES)


def controls_of(impl: Implementation) -> dict[str, tuple[str, ...]]:
    """What the page may do to which service from this column (the table's controls);
    the lab touches nothing else."""
    return {
        name: tuple(a for a in PROCESS_ACTIONS if a in SERVICE_TABLE[name].controls)
        for name in column_services(impl)
        if SERVICE_TABLE[name].controls
    }


ACTIONS = frozenset({"item", "send", "fail", "kill", "stop", "restart"})

TABLE_ROWS = 150  # per column; the counters always count every task of the round
EVENTS_KEPT = 200


@dataclass(frozen=True)
class LabSettings:
    """How the lab behaves (the stack's own settings come from the target)."""

    # The implementations it runs, a column each, in this order.
    implementations: tuple[Implementation, ...] = DEFAULT_IMPLEMENTATIONS
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
    implementation: Implementation
    action: str
    label: str
    service: str | None = None
    status: Literal["pending", "ok", "error"] = "pending"
    result: str = ""
    duration: float | None = None
    # The column's tasks in flight when a process action began: id -> shown state then.
    in_flight: dict[str, str] = field(default_factory=dict)

    def as_dict(self, states_now: dict[str, str]) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "implementation": self.implementation.value,
            "action": self.action,
            "service": self.service,
            # A shared service's action concerns every column (its timeline marks it).
            "shared": self.service in SHARED_SERVICES,
            "label": self.label,
            "status": self.status,
            "result": self.result,
            "duration": self.duration,
            "in_flight": [
                {"id": tid, "then": then, "now": states_now.get(tid, "gone")}
                for tid, then in self.in_flight.items()
            ],
        }


class Lab:
    """One target, the implementations it runs, the actions on them, and the snapshot
    of what it shows."""

    def __init__(self, target: Target, settings: LabSettings) -> None:
        self.target = target
        self.settings = settings
        self.implementations = tuple(dict.fromkeys(settings.implementations))
        if not self.implementations:
            raise ValueError("the lab needs at least one implementation")
        # Per column, what the page may do to which service: the declared controls of
        # the services this target has.
        self.controls: dict[Implementation, dict[str, tuple[str, ...]]] = {
            impl: {
                name: actions
                for name, actions in controls_of(impl).items()
                if name in target.services
            }
            for impl in self.implementations
        }
        self.since = time.time()
        self._lock = threading.RLock()
        # Serializes actions on the same service (two restarts of one worker).
        self._service_locks = {
            name: threading.Lock()
            for name in (
                *(name for controls in self.controls.values() for name in controls),
                *(IMPLEMENTATIONS[impl].runs_the_work for impl in self.implementations),
            )
        }
        self._ids = itertools.count(1)
        self._items = itertools.count(1)
        self.events: list[LabEvent] = []
        self.fail: dict[Implementation, int] = {
            impl: target.settings_for(
                IMPLEMENTATIONS[impl].runs_the_work
            ).notification_fail_first_attempts
            for impl in self.implementations
        }
        self.broker_up_since = float("-inf")
        self._status: dict[str, ServiceState] = {}
        self._records: list[TaskRecord] = []
        self._states: dict[str, str] = {}
        self._views: dict[Implementation, list[dict[str, Any]]] = self._empty_views()
        self.ledger_note = ""
        # Called when an action changed something (the web app polls at once).
        self.on_change: Any = lambda: None

    def _empty_views(self) -> dict[Implementation, list[dict[str, Any]]]:
        return {impl: [] for impl in self.implementations}

    # --- actions ------------------------------------------------------------------------

    def act(
        self, implementation: str, action: str, service: str | None = None, count: int = 5
    ) -> LabEvent:
        """Run one action to the end (blocking: call it from a thread); confirm it in the log."""
        if implementation not in self.implementations:
            raise ActionRefused(f"this lab runs no {implementation!r}")
        impl = Implementation(implementation)
        if action not in ACTIONS:
            raise ActionRefused(f"unknown action {action!r}")
        if action in PROCESS_ACTIONS:
            if service not in SERVICE_TABLE or not SERVICE_TABLE[service].controls:
                raise ActionRefused(f"the lab does not control {service!r}")
            if action not in controls_of(impl).get(service, ()):
                raise ActionRefused(
                    f"{action} {service} is not an action of the {impl.value} column"
                )
            if service not in self.controls[impl]:
                raise ActionRefused(f"this stack runs no {service}")
        else:
            service = None
        if not 1 <= count <= 100:
            raise ActionRefused("count must be between 1 and 100")
        event = self._begin(impl, action, service, count)
        started = time.monotonic()
        try:
            if action == "item":
                event.result = self._create_item(impl)
            elif action == "send":
                event.result = self._send(impl, count)
            elif action == "fail":
                event.result = self._toggle_fail(impl)
            else:
                assert service is not None
                with self._service_locks[service]:
                    event.result = getattr(self, f"_{action}")(service)
            event.status = "ok"
        except Exception as exc:
            logger.warning("%s %s failed: %s", action, service or impl.value, exc)
            event.status = "error"
            event.result = event.result or f"{type(exc).__name__}: {exc}"
        finally:
            event.duration = time.monotonic() - started
            self.on_change()
        return event

    def _begin(
        self, impl: Implementation, action: str, service: str | None, count: int
    ) -> LabEvent:
        labels = {
            "item": "create an item",
            "send": f"send {count} notification{'s' if count != 1 else ''}",
            "fail": "make the next notifications fail"
            if not self.fail[impl]
            else "make notifications succeed again",
            "kill": f"kill {service} (SIGKILL)",
            "stop": f"stop {service} (SIGTERM)",
            "restart": f"restart {service}",
        }
        with self._lock:
            event = LabEvent(next(self._ids), time.time(), impl, action, labels[action], service)
            if action in (*PROCESS_ACTIONS, "fail"):
                event.in_flight = {t["id"]: t["state"] for t in self._views[impl] if t["in_flight"]}
            self.events.append(event)
            del self.events[:-EVENTS_KEPT]
        self.on_change()
        return event

    def _post(
        self, impl: Implementation, path: str, body: dict[str, Any] | None = None
    ) -> list[str]:
        r = httpx.post(self.target.url(impl.value) + path, json=body, timeout=10)
        if r.status_code >= 300:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
        ids: list[str] = r.json()["task_ids"]
        return ids

    def _create_item(self, impl: Implementation) -> str:
        n = next(self._items)
        ids = self._post(impl, "/items/", {"name": f"lab item {n}", "price": 1000 + n})
        return f"item created; task {ids[0][:8]} queued"

    def _send(self, impl: Implementation, n: int) -> str:
        accepted = 0
        errors: list[str] = []
        for i in range(n):
            try:
                self._post(impl, f"/send-notification/lab-{i + 1}@example.com")
                accepted += 1
            except (httpx.HTTPError, RuntimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
        summary = f"{accepted} of {n} accepted"
        if errors:
            raise RuntimeError(f"{summary}; refused: {errors[0]}")
        return summary + " (each: a notification, then its log line)"

    def _toggle_fail(self, impl: Implementation) -> str:
        value = 0 if self.fail[impl] else self.settings.fail_attempts
        service = IMPLEMENTATIONS[impl].runs_the_work
        with self._service_locks[service]:
            # The setting is read at process start: a graceful restart with it changed.
            self.target.reconfigure(
                service, timeout=self.settings.stop_timeout, notification_fail_first_attempts=value
            )
            self.fail[impl] = value
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
                "SIGTERM (uvicorn waits for its background tasks, a worker for its "
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
            self._views = self._empty_views()
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
            # Only the columns' tasks: another implementation may share the ledger.
            records = [
                r
                for r in records
                if (r.queued_at or now) >= since and r.implementation in self.implementations
            ]
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
            views = self._empty_views()
            for record in sorted(records, key=lambda r: r.queued_at or 0):
                t = judgement.tasks[record.task_id]
                views[record.implementation].append(task_view(t, by_runner))
            self._views = views
            self._states = {t["id"]: t["state"] for tasks in views.values() for t in tasks}
            events = [e.as_dict(self._states) for e in self.events]
            return self._snapshot(now, status, views, events, rules["redeliveries"])

    def _links(self, impl: Implementation, status: dict[str, ServiceState]) -> list[dict[str, Any]]:
        """Where to look at a column from outside the lab: its API's Swagger UI, and the
        web UIs of its services the target runs (a URL of None: not running here)."""
        spec = IMPLEMENTATIONS[impl]
        links: list[dict[str, Any]] = [
            {"label": f"{spec.api} /docs", "url": self.target.url(impl.value) + "/docs"}
        ]
        # The target knows where each web UI answers; a service of this column that
        # publishes a port and is not running here is named, without a link.
        uis = {"flower": self.target.flower_url, "rabbitmq": self.target.rabbitmq_ui}
        for service in services_of(impl):
            if service == spec.api or not SERVICE_TABLE[service].port:
                continue
            url = uis.get(service) if service in status else None
            if url:
                links.append({"label": service, "url": url})
            elif SERVICE_TABLE[service].python:
                links.append({"label": service, "url": None, "note": "not run by this target"})
        return links

    def _snapshot(
        self,
        now: float,
        status: dict[str, ServiceState],
        views: dict[Implementation, list[dict[str, Any]]],
        events: list[dict[str, Any]],
        redeliveries: dict[Implementation, Redelivery],
    ) -> dict[str, Any]:
        columns: dict[str, Any] = {}
        for impl in self.implementations:
            spec = IMPLEMENTATIONS[impl]
            procs = []
            for service in column_services(impl):
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
            rule = redeliveries.get(impl) if spec.delivery == Delivery.broker else None
            tasks = views[impl]
            columns[impl.value] = {
                "title": spec.title,
                "about": about(impl, rule),
                "shown_by_default": impl in DEFAULT_IMPLEMENTATIONS,
                "api": spec.api,
                "runs_the_work": spec.runs_the_work,
                "delivery": spec.delivery.value,
                "redelivery": redelivery_view(rule),
                "links": self._links(impl, status),
                "controls": {name: list(a) for name, a in self.controls[impl].items()},
                "processes": procs,
                "fail_first": self.fail[impl],
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
            "settings": {
                "notification_delay": s.notification_delay_seconds,
                "lost_after": rules_for(self.target)["slack"],
                "compose": self.target.name == "compose",
            },
            # A column each, in the order the lab was given them.
            "implementations": columns,
            "events": events,
        }
