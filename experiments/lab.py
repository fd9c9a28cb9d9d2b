"""The lab: one page that runs the comparison live, BackgroundTasks | Celery.

``python -m experiments lab`` (``make lab``) serves http://127.0.0.1:8000 against
either target: local processes it starts itself (``LocalTarget``), or a running
``docker compose`` stack (``--target compose``, controlled by ``docker compose
kill/stop/start`` run here on the host).

How it works: one poll loop per lab (not per browser tab) reads the ledger
(``GET /tasks`` on either API), both ``/health`` endpoints and which processes are
up, every ``--poll-interval`` seconds. It classifies every task — this is where
*lost* is decided, see ``classify`` — and pushes the snapshot to every open page
over server-sent events when anything changed. Actions (send, kill, restart, ...)
are POSTs; each one is confirmed in the page's event log with its result, and the
process actions record the tasks that were in flight at that moment, so the page
can show what became of them.

Safety: binds 127.0.0.1 unless told otherwise; controls only the services in
``CONTROLS``, of the target it was given; stops the processes it started by PID
or process group when it exits (Ctrl-C included).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import webbrowser
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from experiments.processes import SERVICES, LocalStack
from experiments.targets import ComposeTarget, LocalTarget, Target, health, read_ledger
from shared.ledger import Ledger, LedgerUnavailable, connect
from shared.models import Implementation, TaskRecord, TaskState

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "lab_static"

Side = Literal["bg", "celery"]
SIDES: tuple[Side, ...] = ("bg", "celery")

# What the page may do to which service; the lab touches nothing else. Redis is
# the Celery side's broker (and both sides' ledger): its button lives there.
CONTROLS: dict[str, tuple[Side, frozenset[str]]] = {
    "bg-api": ("bg", frozenset({"kill", "stop", "restart"})),
    "celery-api": ("celery", frozenset({"kill", "stop", "restart"})),
    "worker": ("celery", frozenset({"kill", "stop", "restart"})),
    "redis": ("celery", frozenset({"restart"})),
}
# Which process picks up NOTIFICATION_FAIL_FIRST_ATTEMPTS on each side: the one
# that runs the work.
FAIL_SERVICE: dict[Side, str] = {"bg": "bg-api", "celery": "worker"}
# The status row of each side (redis shows on both: it holds both ledgers).
STATUS_SERVICES: dict[Side, tuple[str, ...]] = {
    "bg": ("bg-api", "redis"),
    "celery": ("celery-api", "worker", "beat", "redis", "flower"),
}
ACTIONS = frozenset({"item", "send", "fail", "kill", "stop", "restart"})

# Display states: the ledger's five, plus what only the lab can tell.
IN_FLIGHT_STATES = ("queued", "running", "retrying", "redelivery")
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
    """The demo settings: what the page states, and what the lost rule needs."""

    notification_delay: float = 5.0
    visibility_timeout: float = 10.0
    restore_interval: float = 0.5
    fail_attempts: int = 2
    acks_late: bool = True
    worker_concurrency: int = 2
    beat_interval: float = 60.0
    poll_interval: float = 0.4
    # How long "stop" (SIGTERM) waits for a process before reporting it still up.
    stop_timeout: float = 30.0
    start_timeout: float = 90.0
    # Slack on top of visibility timeout + restore interval before an orphaned
    # Celery task counts as lost: a loaded laptop is slow to poll.
    redelivery_slack: float = 5.0
    flower_url: str | None = None

    @property
    def redelivery_grace(self) -> float:
        return self.visibility_timeout + self.restore_interval + self.redelivery_slack


# --- the lost rule -------------------------------------------------------------------


@dataclass
class Liveness:
    """What the lab knows about the processes, for ``classify``."""

    now: float
    bg_api_up: bool = False
    # The live bg-api process ("host:pid:nonce" from /health); None when down.
    bg_runner: str | None = None
    # When each bg-api process was last seen alive: where a lost task's bar ends.
    runner_last_seen: dict[str, float] = field(default_factory=dict)
    worker_up: bool = False
    worker_down_at: list[float] = field(default_factory=list)
    # Since when a worker has been up and had nothing else to do (None: not idle).
    worker_idle_since: float | None = None
    acks_late: bool = True
    grace: float = 15.0
    # log task id -> the notification scheduled before it in the same request.
    predecessor: dict[str, str] = field(default_factory=dict)


def _orphaned(record: TaskRecord, live: Liveness) -> float | None:
    """A Celery task recorded as running on a worker that died since: when it died."""
    if record.state != TaskState.running or record.started_at is None:
        return None
    deaths = [t for t in live.worker_down_at if t >= record.started_at]
    return min(deaths) if deaths else None


def classify(record: TaskRecord, live: Liveness, done: dict[str, str]) -> tuple[str, str]:
    """The state the page shows, and why. ``done``: display states decided so far
    (tasks come oldest first, so a task's predecessor is already in there).

    The rule, as the page states it:

    - BackgroundTasks: a task queued or running is held in the memory of the API
      process that accepted it (the ledger's ``runner``). If that process is not the
      live bg-api, the task is **lost**: nothing will ever run or finish it. A task
      queued behind one that failed (same request) is **skipped**: Starlette ends
      the request's task list at the first exception.
    - Celery: a task running on a worker that died since is **awaiting
      redelivery** (``acks_late``: Redis hands the unacknowledged message back after
      the visibility timeout, once a worker polls). It is **lost** only if a worker
      has been up and idle for longer than visibility timeout + restore interval
      (+ slack) and the task still has not run again; with stock acks at once.
    """
    state = record.state.value
    if record.implementation == Implementation.bg:
        if record.state in (TaskState.queued, TaskState.running) and record.runner:
            if not live.bg_api_up or record.runner != live.bg_runner:
                return "lost", f"its process {record.runner} is gone"
            before = live.predecessor.get(record.task_id)
            if record.state == TaskState.queued and done.get(before or "") in (
                "failed",
                "lost",
                "skipped",
            ):
                return "skipped", "the task before it in the same request failed"
        return state, ""
    died = _orphaned(record, live)
    if died is None:
        return state, _history(record)
    if not live.acks_late:
        return "lost", "its worker died; stock acks acknowledged it at the start"
    if (
        live.worker_up
        and live.worker_idle_since is not None
        and live.now - max(live.worker_idle_since, died) > live.grace
    ):
        return "lost", f"not redelivered within {live.grace:.0f}s of an idle worker"
    return "redelivery", "its worker died; Redis hands it back after the visibility timeout"


def count(tasks: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(COUNTERS, 0)
    counts["submitted"] = len(tasks)
    for task in tasks:
        counts[task["state"]] = counts.get(task["state"], 0) + 1
    return counts


# --- the lab ---------------------------------------------------------------------------


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
    status: str = "pending"  # pending | ok | error
    result: str = ""
    duration: float | None = None
    # The side's tasks in flight when a process action began: id -> state then.
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


class Lab:
    """The state behind the page: one target, one poll loop, an event log."""

    def __init__(self, target: Target, settings: LabSettings) -> None:
        self.target = target
        self.settings = settings
        self.since = time.time()
        self._lock = threading.RLock()
        # Serializes actions on the same service (two restarts of one worker).
        self._service_locks = {name: threading.Lock() for name in CONTROLS}
        # LocalStack's env is one dict for every process: a start takes this lock
        # so that each side's process starts with that side's failure setting.
        self._env_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.events: list[LabEvent] = []
        self.fail: dict[Side, int] = {"bg": 0, "celery": 0}
        self.predecessor: dict[str, str] = {}
        self.runner_last_seen: dict[str, float] = {}
        self.bg_runner: str | None = None
        self.worker_down_at: list[float] = []
        self.worker_idle_since: float | None = None
        self._up: dict[str, bool] = {}
        self._gen: dict[str, int] = {}
        self._item_numbers = itertools.count(1)
        self._pids: dict[str, int | None] = {}
        self._compose_checked = 0.0
        self._ledger_note = ""
        self._records: list[TaskRecord] = []
        self._states: dict[str, str] = {}
        self._tasks_by_side: dict[str, list[dict[str, Any]]] = {"bg": [], "celery": []}
        self._direct: Ledger | None = None
        if isinstance(target, LocalStack):
            # Both APIs down: the lab still reads the ledger, straight from the
            # Redis it started (compose does not publish Redis: there it waits).
            self._direct = Ledger(connect(target.redis_url), Implementation.celery)
        # Published snapshot (JSON) and its version, for the SSE streams.
        self.snapshot_json = "{}"
        self.version = 0
        self._content = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Condition | None = None
        self._wake: asyncio.Event | None = None
        self._poll_lock: asyncio.Lock | None = None
        self.closing = False

    # --- processes -------------------------------------------------------------------

    def start_all(self) -> None:
        """Local target: start every service (a compose stack is already up)."""
        for service in SERVICES:
            logger.info("starting %s", service)
            self._start(service)

    def _side_of(self, service: str) -> Side:
        return "bg" if service == "bg-api" else "celery"

    def _start(self, service: str) -> None:
        if isinstance(self.target, LocalStack):
            with self._env_lock:
                fail = self.fail[self._side_of(service)]
                self.target.set_env(NOTIFICATION_FAIL_FIRST_ATTEMPTS=str(fail))
                self.target.start(service, timeout=self.settings.start_timeout)
        else:
            self.target.start(service, timeout=self.settings.start_timeout)
        self._seen_up(service, True)

    def _seen_up(self, service: str, up: bool, *, gen: int | None = None) -> None:
        """Record a process coming or going: from an action, or noticed by the poll.

        ``gen``: the poll passes the generation it read before looking, so that a
        status read before an action finished cannot undo what the action recorded.
        """
        now = time.time()
        with self._lock:
            if gen is not None and gen != self._gen.get(service, 0):
                return
            if gen is None:
                self._gen[service] = self._gen.get(service, 0) + 1
            was = self._up.get(service)
            self._up[service] = up
            if up:
                return
            if service == "bg-api":
                self.bg_runner = None
            if service == "worker" and was is not False:
                # Every task running on it from before now is orphaned.
                self.worker_down_at.append(now)
                self.worker_idle_since = None

    def process_status(self) -> dict[str, bool]:
        if isinstance(self.target, LocalStack):
            with self._lock:
                self._pids = {
                    name: proc.pid if proc.alive else None
                    for name, proc in self.target.procs.items()
                }
            return {name: self.target.is_up(name) for name in SERVICES}
        if isinstance(self.target, ComposeTarget):
            return self._compose_status()
        return {name: self.target.is_up(name) for name in SERVICES}

    def _compose_status(self) -> dict[str, bool]:
        # One `docker compose ps` for every service, at most every 1.5 s: a
        # subprocess per service per poll would be the polling storm.
        assert isinstance(self.target, ComposeTarget)
        now = time.monotonic()
        if now - self._compose_checked < 1.5 and self._up:
            return dict(self._up)
        self._compose_checked = now
        out = self.target.compose("ps", "--format", "json", check=False, timeout=20)
        rows: list[dict[str, Any]] = []
        for line in out.splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                parsed = json.loads(line)
                rows += parsed if isinstance(parsed, list) else [parsed]
        running = {row.get("Service") for row in rows if row.get("State") == "running"}
        return {name: name in running for name in (*SERVICES, "flower")}

    # --- actions -------------------------------------------------------------------

    def act(self, side: str, action: str, service: str | None = None, count: int = 5) -> LabEvent:
        """Run one action to the end (blocking: call it from a thread); confirm it in the log."""
        if side not in SIDES:
            raise ActionRefused(f"unknown side {side!r}")
        if action not in ACTIONS:
            raise ActionRefused(f"unknown action {action!r}")
        if action in ("kill", "stop", "restart"):
            if service not in CONTROLS:
                raise ActionRefused(f"the lab does not control {service!r}")
            owner, allowed = CONTROLS[service]
            if owner != side or action not in allowed:
                raise ActionRefused(f"{action} {service} is not an action of the {side} side")
        else:
            service = None
        if not 1 <= count <= 100:
            raise ActionRefused("count must be between 1 and 100")
        typed_side: Side = "bg" if side == "bg" else "celery"
        event = self._begin(typed_side, action, service, count)
        started = time.monotonic()
        try:
            if action == "item":
                event.result = self._create_item(typed_side)
            elif action == "send":
                event.result = self._send(typed_side, count)
            elif action == "fail":
                event.result = self._toggle_fail(typed_side)
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
            self.wake()
        return event

    def _begin(self, side: Side, action: str, service: str | None, count: int) -> LabEvent:
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
                event.in_flight = {
                    t["id"]: t["state"]
                    for t in self._tasks_by_side[side]
                    if t["state"] in IN_FLIGHT_STATES
                }
            self.events.append(event)
            del self.events[:-EVENTS_KEPT]
        self.wake()
        return event

    def _post(self, side: Side, path: str, body: dict[str, Any] | None = None) -> list[str]:
        r = httpx.post(self.target.url(side) + path, json=body, timeout=10)
        if r.status_code != 200:
            raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:200]}")
        ids: list[str] = r.json()["task_ids"]
        return ids

    def _create_item(self, side: Side) -> str:
        n = next(self._item_numbers)
        ids = self._post(side, "/items/", {"name": f"lab item {n}", "price": 1000 + n})
        return f"item created; task {_short(ids[0])} queued"

    def _send(self, side: Side, n: int) -> str:
        accepted: list[str] = []
        errors: list[str] = []
        for i in range(n):
            try:
                ids = self._post(side, f"/send-notification/lab-{i + 1}@example.com")
            except (httpx.HTTPError, RuntimeError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                continue
            accepted.append(ids[0])
            if len(ids) > 1:
                with self._lock:
                    self.predecessor[ids[1]] = ids[0]
        summary = f"{len(accepted)} of {n} accepted"
        if errors:
            raise RuntimeError(f"{summary}; refused: {errors[0]}")
        return summary + " (each: a notification, then its log line)"

    def _toggle_fail(self, side: Side) -> str:
        value = 0 if self.fail[side] else self.settings.fail_attempts
        service = FAIL_SERVICE[side]
        with self._service_locks[service]:
            before, self.fail[side] = self.fail[side], value
            what = (
                f"the first {value} attempts of every notification fail"
                if value
                else "notifications succeed again"
            )
            try:
                if isinstance(self.target, ComposeTarget):
                    self._compose_recreate(service, value)
                else:
                    # The setting is read at process start: restart gracefully.
                    if self.target.is_up(service):
                        self._stop(service)
                    self._start(service)
            except Exception:
                self.fail[side] = before  # the page must not claim a setting not in force
                raise
        return f"{service} restarted with NOTIFICATION_FAIL_FIRST_ATTEMPTS={value}: {what}"

    def _compose_recreate(self, service: str, value: int) -> None:
        # docker compose interpolates ${NOTIFICATION_FAIL_FIRST_ATTEMPTS} from this
        # process's environment into the service it re-creates.
        assert isinstance(self.target, ComposeTarget)
        argv = ["docker", "compose", *self.target.extra_args]
        if self.target.project:
            argv += ["-p", self.target.project]
        argv += ["up", "-d", "--no-deps", "--force-recreate", service]
        env = {**os.environ, "NOTIFICATION_FAIL_FIRST_ATTEMPTS": str(value)}
        self._seen_up(service, False)
        done = subprocess.run(
            argv,
            cwd=self.target.project_dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=self.settings.start_timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-500:]}")
        self.target.start(service, timeout=self.settings.start_timeout)
        self._seen_up(service, True)

    def _kill(self, service: str) -> str:
        pid = self._pids.get(service)
        self.target.kill(service)
        self._seen_up(service, False)
        return f"{service}{f' (pid {pid})' if pid else ''} killed: gone at once"

    def _stop(self, service: str) -> str:
        pid = self._pids.get(service)
        started = time.monotonic()
        code = self.target.terminate(service, timeout=self.settings.stop_timeout)
        took = time.monotonic() - started
        if self.target.is_up(service):
            raise RuntimeError(
                f"{service} still running {took:.0f}s after SIGTERM (uvicorn waits for its "
                "background tasks, a Celery worker for its running tasks): kill it to stop it now"
            )
        self._seen_up(service, False)
        how = f"exit code {code}" if code is not None else "stopped"
        return f"{service}{f' (pid {pid})' if pid else ''} exited after {took:.1f}s ({how})"

    def _restart(self, service: str) -> str:
        stopped = ""
        if self.target.is_up(service):
            stopped = self._stop(service) + "; "
        started = time.monotonic()
        self._start(service)
        pid = self._pids_now().get(service)
        return (
            f"{stopped}{service} up again{f' as pid {pid}' if pid else ''} "
            f"after {time.monotonic() - started:.1f}s"
        )

    def _pids_now(self) -> dict[str, int | None]:
        if isinstance(self.target, LocalStack):
            return {n: p.pid if p.alive else None for n, p in self.target.procs.items()}
        return {}

    def event_dict(self, event: LabEvent) -> dict[str, Any]:
        with self._lock:
            return event.as_dict(self._states)

    def reset(self) -> None:
        """A new round: count and show only the tasks from now on, clear the log."""
        with self._lock:
            self.since = time.time()
            self.events.clear()
            self.predecessor.clear()
            self._records = []
            self._tasks_by_side = {"bg": [], "celery": []}
        self.wake()

    # --- the poll loop ------------------------------------------------------------

    def _read_ledger(self) -> list[TaskRecord]:
        try:
            records = read_ledger(self.target, since=self.since)
            self._ledger_note = ""
            return records
        except RuntimeError as exc:
            if self._direct is None:
                self._ledger_note = f"ledger unreachable, showing the last snapshot ({exc})"
                return self._records
        try:
            records = self._direct.list(since=self.since, limit=5000)
            self._ledger_note = "both APIs are down: the lab reads the ledger from Redis itself"
            return records
        except LedgerUnavailable as exc:
            self._ledger_note = f"ledger unreachable, showing the last snapshot ({exc})"
            return self._records

    def poll_once(self) -> dict[str, Any]:
        """Read everything once and build the snapshot (blocking: runs in a thread)."""
        with self._lock:
            gens = dict(self._gen)
        status = self.process_status()
        healths: dict[str, dict[str, str] | None] = {
            side: health(self.target, side) for side in SIDES
        }
        now = time.time()
        for service, up in status.items():
            self._seen_up(service, up, gen=gens.get(service, 0))
        bg = healths["bg"]
        with self._lock:
            if self._gen.get("bg-api", 0) == gens.get("bg-api", 0):
                if bg and bg.get("runner") and status.get("bg-api"):
                    self.bg_runner = bg["runner"]
                elif not status.get("bg-api"):
                    self.bg_runner = None
            if self.bg_runner:
                self.runner_last_seen[self.bg_runner] = now
            status = {name: self._up.get(name, up) for name, up in status.items()}
        records = self._read_ledger()
        with self._lock:
            # A reset may have come while the ledger was being read.
            records = [r for r in records if (r.queued_at or now) >= self.since]
            self._records = records
            live = Liveness(
                now=now,
                bg_api_up=status.get("bg-api", False),
                bg_runner=self.bg_runner,
                runner_last_seen=dict(self.runner_last_seen),
                worker_up=status.get("worker", False),
                worker_down_at=list(self.worker_down_at),
                worker_idle_since=self.worker_idle_since,
                acks_late=self.settings.acks_late,
                grace=self.settings.redelivery_grace,
                predecessor=dict(self.predecessor),
            )
            states: dict[str, str] = {}
            by_side: dict[str, list[dict[str, Any]]] = {"bg": [], "celery": []}
            busy = False
            for record in sorted(records, key=lambda r: r.queued_at or 0):
                shown, note = classify(record, live, states)
                states[record.task_id] = shown
                if record.implementation == Implementation.celery and shown in (
                    "queued",
                    "running",
                    "retrying",
                ):
                    busy = True
                by_side[record.implementation.value].append(_task_view(record, shown, note, live))
            # The worker is idle once it is up and no other Celery task is in flight:
            # from then on, an orphan has had every chance to be redelivered.
            if not live.worker_up or busy:
                self.worker_idle_since = None
            elif self.worker_idle_since is None:
                self.worker_idle_since = now
            self._states = states
            self._tasks_by_side = by_side
            events = [e.as_dict(states) for e in self.events]
            return self._snapshot(now, status, healths, by_side, events)

    def _snapshot(
        self,
        now: float,
        status: dict[str, bool],
        healths: dict[str, dict[str, str] | None],
        by_side: dict[str, list[dict[str, Any]]],
        events: list[dict[str, Any]],
    ) -> dict[str, Any]:
        sides: dict[str, Any] = {}
        for side in SIDES:
            tasks = by_side[side]
            notes = [t for t in tasks if t["kind"] == "notification"]
            procs = []
            for service in STATUS_SERVICES[side]:
                if service == "flower" and not isinstance(self.target, ComposeTarget):
                    continue
                detail = ""
                if service.endswith("-api") and healths[side] and status.get(service):
                    detail = f"runner {healths[side]['runner']}"  # type: ignore[index]
                elif self._pids.get(service) and status.get(service):
                    detail = f"pid {self._pids[service]}"
                up = status.get(service, False)
                pid = self._pids.get(service) if up else None
                procs.append({"service": service, "up": up, "detail": detail, "pid": pid})
            sides[side] = {
                "processes": procs,
                "fail_first": self.fail["bg" if side == "bg" else "celery"],
                "counters": count(notes),
                "all": count(tasks),
                "tasks": tasks[-TABLE_ROWS:],
            }
        s = self.settings
        compose = isinstance(self.target, ComposeTarget)
        return {
            "now": now,
            "since": self.since,
            "target": self.target.name,
            "ledger_note": self._ledger_note,
            "links": {
                "bg_docs": self.target.url("bg") + "/docs",
                "celery_docs": self.target.url("celery") + "/docs",
                "flower": s.flower_url if compose else None,
            },
            "settings": {
                "notification_delay": s.notification_delay,
                "visibility_timeout": s.visibility_timeout,
                "restore_interval": s.restore_interval,
                "redelivery_grace": s.redelivery_grace,
                "fail_attempts": s.fail_attempts,
                "acks_late": s.acks_late,
                "worker_concurrency": s.worker_concurrency,
                "compose": compose,
            },
            "sides": sides,
            "events": events,
        }

    # --- publishing (the event loop's side) ------------------------------------------

    def wake(self) -> None:
        """Poll now (an action changed something): callable from any thread."""
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(self._wake.set)

    def bind_loop(self) -> None:
        """Called on the server's event loop before it serves."""
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._poll_lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Poll once and publish. One poll at a time: snapshots go out in order."""
        assert self._poll_lock is not None
        async with self._poll_lock:
            await self._publish(await asyncio.to_thread(self.poll_once))

    async def run_poller(self) -> None:
        assert self._wake is not None
        while not self.closing:
            try:
                await self.refresh()
            except Exception:  # one bad poll must not end the page's updates
                logger.exception("lab poll failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_interval)
            self._wake.clear()

    async def _publish(self, snapshot: dict[str, Any]) -> None:
        content = json.dumps({k: v for k, v in snapshot.items() if k != "now"}, sort_keys=True)
        if content == self._content:
            return  # nothing changed: ages are computed in the page
        self._content = content
        self.snapshot_json = json.dumps(snapshot)
        assert self._changed is not None
        async with self._changed:
            self.version += 1
            self._changed.notify_all()

    async def stream(self, keepalive: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events: every new snapshot, and a comment now and then."""
        seen = -1
        while not self.closing:
            if self.version != seen:
                seen = self.version
                yield f"event: snapshot\nid: {seen}\ndata: {self.snapshot_json}\n\n"
                continue
            assert self._changed is not None
            async with self._changed:
                if self.version == seen and not self.closing:  # checked under the lock
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), keepalive)
            if self.version == seen and not self.closing:
                yield ": keepalive\n\n"

    async def close_streams(self) -> None:
        self.closing = True
        if self._changed is not None:
            async with self._changed:
                self._changed.notify_all()


def _history(record: TaskRecord) -> str:
    notes = []
    if record.retries:
        notes.append(f"retried {record.retries}x after transient errors")
    runs = record.attempts - record.retries  # a retry is a run too: take them off
    if runs > 1:
        notes.append(f"delivered {runs}x: redelivered after its worker died")
    return "; ".join(notes)


def _short(task_id: str) -> str:
    return task_id[:8]


def _task_view(record: TaskRecord, shown: str, note: str, live: Liveness) -> dict[str, Any]:
    ended = record.finished_at
    if shown == "lost" and record.implementation == Implementation.bg and record.runner:
        ended = live.runner_last_seen.get(record.runner, record.updated_at)
    return {
        "id": record.task_id,
        "short": _short(record.task_id),
        "kind": record.kind,
        "state": shown,
        "ledger_state": record.state.value,
        "attempts": record.attempts,
        "retries": record.retries,
        "queued_at": record.queued_at,
        "started_at": record.started_at,
        "ended_at": ended,
        "note": note,
        "runner": record.runner,
        "error": record.error,
    }


# --- the web app ----------------------------------------------------------------------


class ActionRequest(BaseModel):
    side: Literal["bg", "celery"]
    action: str
    service: str | None = None
    count: int = Field(default=5, ge=1, le=100)


def create_app(lab: Lab) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lab.bind_loop()
        poller = asyncio.create_task(lab.run_poller())
        yield
        await lab.close_streams()
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller

    app = FastAPI(title="BackgroundTasks vs Celery: the lab", lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
        return html.replace("{{target}}", lab.target.name)

    @app.get("/api/state")
    async def state() -> JSONResponse:
        if lab.version == 0:  # before the first poll: read once now
            await lab.refresh()
        return JSONResponse(json.loads(lab.snapshot_json))

    @app.get("/api/events")
    async def events(request: Request) -> StreamingResponse:
        return StreamingResponse(
            lab.stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.post("/api/actions")
    async def act(body: ActionRequest) -> dict[str, Any]:
        try:
            event = await asyncio.to_thread(
                lab.act, body.side, body.action, body.service, body.count
            )
        except ActionRefused as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        # Answer once the snapshot shows the result: a client that reads the
        # state (or the page) right after sees what the action did.
        await lab.refresh()
        return lab.event_dict(event)

    @app.post("/api/reset")
    async def reset() -> dict[str, str]:
        lab.reset()
        await lab.refresh()
        return {"status": "ok"}

    return app


# --- the command ----------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="the page's port (default 8000)")
    parser.add_argument(
        "--target", choices=("local", "compose"), default="local", help="what to run against"
    )
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    local = parser.add_argument_group("local target (the lab starts every process)")
    local.add_argument("--workdir", type=Path, help="where logs and Redis data go (default: temp)")
    local.add_argument("--notification-delay", type=float, default=5.0, metavar="S")
    local.add_argument("--visibility-timeout", type=float, default=10.0, metavar="S")
    local.add_argument("--restore-interval", type=float, default=0.5, metavar="S")
    local.add_argument("--fail-attempts", type=int, default=2, metavar="N")
    local.add_argument("--beat-interval", type=float, default=60.0, metavar="S")
    local.add_argument("--worker-concurrency", type=int, default=2, metavar="N")
    compose = parser.add_argument_group(
        "compose target (a running `docker compose` stack; its ports and settings are "
        "read from `docker compose config`)"
    )
    compose.add_argument("--compose-project", help="docker compose -p (default: compose's own)")
    compose.add_argument("--compose-file", action="append", default=[], help="docker compose -f")
    compose.add_argument("--bg-url", help="default: from the published port (8001)")
    compose.add_argument("--celery-url", help="default: from the published port (8002)")
    compose.add_argument("--flower-url", help="default: from the published port (5555)")
    parser.add_argument("--poll-interval", type=float, default=0.4, metavar="S")


def compose_config(target: ComposeTarget) -> dict[str, Any]:
    """The stack as compose resolves it from here (``docker compose config``): the
    host ports it publishes and the worker's settings, which the lost rule needs.

    Compose interpolates the same environment (and .env) it used for ``up``, so
    this is what the running stack got unless ``up`` ran with another environment.
    """
    config = json.loads(target.compose("config", "--format", "json", timeout=60))
    services: dict[str, Any] = config.get("services", {})
    urls: dict[str, str] = {}
    for name, port in (("bg-api", 8001), ("celery-api", 8002), ("flower", 5555)):
        for mapping in services.get(name, {}).get("ports", []):
            if int(mapping.get("target", 0)) == port and mapping.get("published"):
                host = mapping.get("host_ip") or "127.0.0.1"
                host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                urls[name] = f"http://{host}:{mapping['published']}"

    def env(service: str, name: str, default: str) -> str:
        value = (services.get(service, {}).get("environment") or {}).get(name)
        return str(value) if value is not None else default

    concurrency = 2
    for arg in services.get("worker", {}).get("command") or []:
        if str(arg).startswith("--concurrency="):
            concurrency = int(str(arg).split("=", 1)[1])
    grace = services.get("bg-api", {}).get("stop_grace_period", "30s")
    return {
        "urls": urls,
        "settings": {
            "notification_delay": float(env("worker", "NOTIFICATION_DELAY_SECONDS", "3")),
            "visibility_timeout": float(env("worker", "CELERY_VISIBILITY_TIMEOUT", "60")),
            "restore_interval": float(env("worker", "CELERY_RESTORE_INTERVAL", "5")),
            "acks_late": env("worker", "CELERY_ACKS_LATE", "true").lower()
            in ("1", "true", "yes", "on"),
            "worker_concurrency": concurrency,
            "beat_interval": float(env("beat", "BEAT_INTERVAL_SECONDS", "30")),
        },
        "fail": {
            "bg": int(env("bg-api", "NOTIFICATION_FAIL_FIRST_ATTEMPTS", "0")),
            "celery": int(env("worker", "NOTIFICATION_FAIL_FIRST_ATTEMPTS", "0")),
        },
        # `docker compose stop -t`: the services' own grace period, as `docker stop`.
        "stop_timeout": _duration(str(grace), default=30.0),
    }


def _duration(text: str, *, default: float) -> float:
    """A compose duration ("30s", "1m30s", "500ms") in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return default
    return sum(float(n) * units[u] for n, u in parts)


def build_lab(args: argparse.Namespace, workdir: Path) -> Lab:
    target: Target
    if args.target == "compose":
        extra: list[str] = []
        for f in args.compose_file:
            extra += ["-f", f]
        probe = ComposeTarget(project=args.compose_project, extra_args=extra)
        found = compose_config(probe)
        urls = found["urls"]
        target = ComposeTarget(
            project=args.compose_project,
            bg_url=args.bg_url or urls.get("bg-api", "http://127.0.0.1:8001"),
            celery_url=args.celery_url or urls.get("celery-api", "http://127.0.0.1:8002"),
            extra_args=extra,
        )
        settings = LabSettings(
            **found["settings"],
            fail_attempts=args.fail_attempts,
            flower_url=args.flower_url or urls.get("flower", "http://127.0.0.1:5555"),
            poll_interval=args.poll_interval,
            stop_timeout=found["stop_timeout"],
        )
        lab = Lab(target, settings)
        lab.fail.update(found["fail"])
        return lab
    settings = LabSettings(
        notification_delay=args.notification_delay,
        visibility_timeout=args.visibility_timeout,
        restore_interval=args.restore_interval,
        fail_attempts=args.fail_attempts,
        beat_interval=args.beat_interval,
        worker_concurrency=args.worker_concurrency,
        poll_interval=args.poll_interval,
    )
    env = {
        "NOTIFICATION_DELAY_SECONDS": f"{settings.notification_delay:g}",
        "CELERY_VISIBILITY_TIMEOUT": f"{settings.visibility_timeout:g}",
        "CELERY_RESTORE_INTERVAL": f"{settings.restore_interval:g}",
        "BEAT_INTERVAL_SECONDS": f"{settings.beat_interval:g}",
        "NOTIFICATION_FAIL_FIRST_ATTEMPTS": "0",
    }
    # AOF on, as in compose: restarting Redis keeps the queue and the ledger.
    local = LocalTarget(
        workdir, env, appendonly=True, worker_concurrency=settings.worker_concurrency
    )
    return Lab(local, settings)


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    # SIGTERM's default ends the process on the spot, skipping the cleanup that
    # stops the children; raise SystemExit instead (uvicorn re-raises the signal
    # it caught once it has shut down).
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(args: argparse.Namespace) -> int:
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("the lab binds %s: anyone who reaches it can kill processes", args.host)
    try:  # fail before starting five processes, not after
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        print(f"lab: cannot serve on {args.host}:{args.port}: {exc} (try --port)", file=sys.stderr)
        return 2
    made_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="lab-")) if made_workdir else args.workdir
    with _sigterm_as_exit():
        lab = build_lab(args, workdir)
        try:
            if isinstance(lab.target, LocalStack):
                print(f"lab: starting the local stack in {workdir} ...", file=sys.stderr)
                lab.start_all()
            url = f"http://{args.host}:{args.port}"
            stops = (
                "the lab and what it started"
                if isinstance(lab.target, LocalStack)
                else "the lab; the compose stack keeps running"
            )
            print(f"lab: open {url}  (Ctrl-C stops {stops})", file=sys.stderr)
            config = uvicorn.Config(
                create_app(lab),
                host=args.host,
                port=args.port,
                log_level="warning",
                # Open event streams would hold a graceful shutdown forever.
                timeout_graceful_shutdown=2,
            )
            server = uvicorn.Server(config)
            if args.open:
                threading.Timer(1.0, webbrowser.open, args=(url,)).start()
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            print("lab: stopping ...", file=sys.stderr)
            lab.target.close()
            if made_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
    return 0
