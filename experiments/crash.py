"""``python -m experiments crash``: kill things mid-task and count what survives.

Each scenario starts from a clean state, submits N notification requests (each
schedules two tasks: the slow notification, then a log line), waits until the
ledger shows the notifications *running* (the kill is verified, not timed by a
sleep), kills or stops one service, starts it again, waits for the work to
settle and counts, from the ledger and the log file:

- completed, lost (still queued/running/retrying once nothing can bring it back,
  or gone from the ledger), executed more than once (a redelivery), retried;
- duplicate effects (more than one log line for a task: idempotency should keep
  it at zero however often a task ran);
- the redelivery delay, and the time from the kill until the last task completed.

The scenario logic is written once against ``experiments.targets.Target``; a
``Rig`` supplies the target for each scenario: fresh local processes on free
ports (``LocalRig``, the default) or the running ``docker compose`` stack
(``ComposeRig``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from experiments import report
from experiments.ledger_stats import (
    LedgerStats,
    count_effect_lines,
    count_skipped_writes,
    summarize,
)
from experiments.processes import REPO_ROOT, Timeout, wait_until
from experiments.targets import ComposeTarget, LocalTarget, Target, health, read_ledger
from shared.models import Implementation, TaskRecord, TaskState

logger = logging.getLogger(__name__)

Say = Callable[[str], None]
Action = Literal["kill", "terminate"]


# --- parameters -------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    """What a run is made of. The defaults finish in about two minutes on 2 cores."""

    tasks: int = 6  # notification requests per scenario (each schedules 2 tasks)
    delay: float = 2.0  # NOTIFICATION_DELAY_SECONDS: how long a notification runs
    visibility: float = 5.0  # CELERY_VISIBILITY_TIMEOUT: longer than a task, or it runs twice
    restore_interval: float = 0.5  # CELERY_RESTORE_INTERVAL: kombu's scan for expired unacked
    concurrency: int = 2  # Celery worker processes: only this many notifications run at once
    grace: int = 1  # the short graceful-shutdown timeout of scenario 2b (whole seconds: uvicorn)
    margin: float = 3.0  # slack on every settle deadline (a loaded machine is slow)

    def env(self) -> dict[str, str]:
        """The settings every process of a scenario gets (environment variables)."""
        return {
            "NOTIFICATION_DELAY_SECONDS": f"{self.delay:g}",
            "NOTIFICATION_FAIL_FIRST_ATTEMPTS": "0",
            "CELERY_VISIBILITY_TIMEOUT": f"{self.visibility:g}",
            "CELERY_RESTORE_INTERVAL": f"{self.restore_interval:g}",
            "CELERY_ACKS_LATE": "true",
            "CELERY_PREFETCH_MULTIPLIER": "1",
            # Beat is not part of any scenario; keep its heartbeats out of the way.
            "BEAT_INTERVAL_SECONDS": "3600",
        }

    def problems(self) -> list[str]:
        """Combinations that would make a scenario measure something else."""
        out = []
        if self.tasks < 1:
            out.append("--tasks must be at least 1")
        if self.delay <= self.grace:
            out.append(
                f"--delay ({self.delay:g}s) must be longer than --grace ({self.grace}s), "
                "or scenario 2b's shutdown timeout never cuts a task short"
            )
        if self.visibility <= self.delay + 1:
            out.append(
                f"--visibility-timeout ({self.visibility:g}s) must exceed --delay "
                f"({self.delay:g}s) by a second or more, or every notification runs twice "
                "even without a crash (that is scenario 8, on purpose)"
            )
        return out


@dataclass(frozen=True)
class StackSpec:
    """What a scenario needs running, and with which settings."""

    services: tuple[str, ...]
    env: Mapping[str, str]
    # Redis's append-only file: required on (True), required off (False), or
    # whatever the target has (None; local processes run without it).
    appendonly: bool | None = None
    graceful_timeout: int | None = None  # uvicorn's --timeout-graceful-shutdown (local only)


@dataclass(frozen=True)
class Scenario:
    number: str
    key: str
    title: str
    side: Literal["bg", "celery"]
    # The service hit and how; no action: nothing is killed (scenario 8).
    action: Action | None
    service: str | None
    expected: str
    spec: Callable[[Params], StackSpec]
    # terminate: how long the stop may take (for compose, `docker compose stop -t`).
    stop_timeout: Callable[[Params], float] = lambda p: 30.0
    # Redis kills: the question is whether *queued* tasks survive, not the last
    # second of writes, so the kill waits until the target's Redis has fsynced the
    # submissions (``Rig.fsync_lag``: 0 with appendfsync always, 1 s with everysec).
    wait_for_fsync: bool = False

    @property
    def label(self) -> str:
        return f"{self.number}. {self.title}"


BG_SERVICES = ("redis", "bg-api")
CELERY_SERVICES = ("redis", "celery-api", "worker")


def _bg(p: Params, **kwargs: Any) -> StackSpec:
    return StackSpec(BG_SERVICES, p.env(), **kwargs)


def _celery(p: Params, env: Mapping[str, str] | None = None, **kwargs: Any) -> StackSpec:
    return StackSpec(CELERY_SERVICES, {**p.env(), **(env or {})}, **kwargs)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        number="1",
        key="bg-kill",
        title="bg-api SIGKILL",
        side="bg",
        action="kill",
        service="bg-api",
        expected="every task in flight is lost: it lived only in the killed process",
        spec=_bg,
    ),
    Scenario(
        number="2a",
        key="bg-term",
        title="bg-api SIGTERM (graceful)",
        side="bg",
        action="terminate",
        service="bg-api",
        expected="nothing lost: uvicorn waits for running background tasks before it exits",
        spec=_bg,
        stop_timeout=lambda p: 2 * p.delay + 30,
    ),
    Scenario(
        number="2b",
        key="bg-term-timeout",
        title="bg-api SIGTERM, shutdown timeout < task",
        side="bg",
        action="terminate",
        service="bg-api",
        expected="every task in flight is lost once the shutdown timeout cuts it off",
        # Local: uvicorn's --timeout-graceful-shutdown. Compose: `docker compose
        # stop -t grace`, i.e. SIGKILL after the grace period.
        spec=lambda p: _bg(p, graceful_timeout=p.grace),
        stop_timeout=lambda p: float(p.grace),
    ),
    Scenario(
        number="3",
        key="celery-api-kill",
        title="celery-api SIGKILL",
        side="celery",
        action="kill",
        service="celery-api",
        expected="nothing lost: the tasks were already in Redis and the worker runs them",
        spec=_celery,
    ),
    Scenario(
        number="4",
        key="worker-kill",
        title="worker SIGKILL (acks_late)",
        side="celery",
        action="kill",
        service="worker",
        expected="nothing lost: the unacked tasks come back after the visibility timeout "
        "and run again, writing once",
        spec=_celery,
    ),
    Scenario(
        number="5",
        key="worker-kill-stock-acks",
        title="worker SIGKILL (stock acks)",
        side="celery",
        action="kill",
        service="worker",
        expected="the running tasks are lost: stock Celery acks a task as it starts",
        spec=lambda p: _celery(p, {"CELERY_ACKS_LATE": "false"}),
    ),
    Scenario(
        number="6",
        key="worker-term",
        title="worker SIGTERM (warm shutdown)",
        side="celery",
        action="terminate",
        service="worker",
        expected="nothing lost: running tasks finish, queued ones wait in Redis for the restart",
        spec=_celery,
        stop_timeout=lambda p: 2 * p.delay + 30,
    ),
    Scenario(
        number="7",
        key="redis-restart",
        title="redis SIGKILL + restart, AOF on",
        side="celery",
        action="kill",
        service="redis",
        expected="nothing lost: the queue and the ledger are replayed from the append-only file",
        spec=lambda p: _celery(p, appendonly=True),
        wait_for_fsync=True,
    ),
    Scenario(
        number="7b",
        key="redis-restart-no-aof",
        title="redis SIGKILL + restart, no persistence",
        side="celery",
        action="kill",
        service="redis",
        expected="everything not yet finished is lost, and the ledger forgets it too",
        spec=lambda p: _celery(p, appendonly=False),
        wait_for_fsync=True,
    ),
    Scenario(
        number="8",
        key="slow-task",
        title="no crash, task longer than visibility timeout",
        side="celery",
        action=None,
        service=None,
        expected="nothing lost, but every notification runs twice (idempotency writes it once)",
        spec=lambda p: _celery(p, {"CELERY_VISIBILITY_TIMEOUT": f"{p.delay / 2:g}"}),
    ),
)
BY_KEY = {s.key: s for s in SCENARIOS}
BY_NUMBER = {s.number: s for s in SCENARIOS}


def pick(names: str | Sequence[str] | None) -> list[Scenario]:
    """Scenarios by key or number ("1,2a,worker-kill"); None or "all": every one."""
    if names is None:
        return list(SCENARIOS)
    items = names.split(",") if isinstance(names, str) else list(names)
    chosen = []
    for raw in items:
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            return list(SCENARIOS)
        if name in BY_KEY:
            chosen.append(BY_KEY[name])
        elif name in BY_NUMBER:
            chosen.append(BY_NUMBER[name])
        elif name == "2":  # the scenario 2 is both SIGTERM variants
            chosen += [BY_NUMBER["2a"], BY_NUMBER["2b"]]
        else:
            raise ValueError(f"unknown scenario {name!r}; known: {', '.join(BY_KEY)}")
    return chosen


# --- where a scenario runs ------------------------------------------------------------


class Skip(Exception):
    """The target cannot run this scenario (the reason is the message)."""


class Rig(Protocol):
    name: str

    @property
    def concurrency(self) -> int:
        """Celery worker processes: how many notifications can be running at once."""
        ...

    @property
    def fsync_lag(self) -> float:
        """Seconds until a write to this target's Redis is on disk (AOF fsync policy)."""
        ...

    def params(self, requested: Params) -> Params:
        """The parameters the scenarios will really run with on this target."""
        ...

    def open(self, scenario: Scenario, spec: StackSpec) -> AbstractContextManager[Target]:
        """The target for one scenario, in a clean state, with ``spec.services`` up."""
        ...

    def effect_lines(self, target: Target) -> dict[str, int]:
        """Lines per task id in LOG_FILE (the work's only effect)."""
        ...

    def output(self, target: Target, service: str) -> str:
        """What ``service`` printed during this scenario (all its runs)."""
        ...


class LocalRig:
    """A fresh ``LocalTarget`` (redis-server, uvicorns, worker on free ports) per scenario."""

    name = "local"
    # LocalStack runs redis-server with appendfsync always.
    fsync_lag = 0.0

    def __init__(self, workdir: Path | None = None, *, concurrency: int = 2, keep: bool = False):
        self.workdir = workdir
        self.concurrency = concurrency
        self.keep = keep

    def params(self, requested: Params) -> Params:
        return replace(requested, concurrency=self.concurrency)

    @contextmanager
    def open(self, scenario: Scenario, spec: StackSpec) -> Iterator[Target]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"crash-{scenario.key}-", dir=self.workdir))
        stack = LocalTarget(
            path,
            spec.env,
            appendonly=bool(spec.appendonly),
            worker_concurrency=self.concurrency,
            graceful_timeout=spec.graceful_timeout,
        )
        failed = False
        try:
            for service in spec.services:
                stack.start(service)
            yield stack
        except BaseException:
            failed = True
            # What the processes printed is the only clue to a failed scenario.
            logger.error("scenario %s failed; process output:\n%s", scenario.key, stack.outputs())
            raise
        finally:
            stack.close()
            if self.keep or failed:
                logger.info("scenario %s: files kept in %s", scenario.key, path)
            else:
                shutil.rmtree(path, ignore_errors=True)

    def effect_lines(self, target: Target) -> dict[str, int]:
        assert isinstance(target, LocalTarget)
        if not target.log_file.exists():
            return {}
        with target.log_file.open(encoding="utf-8") as f:
            return dict(count_effect_lines(f))

    def output(self, target: Target, service: str) -> str:
        assert isinstance(target, LocalTarget)
        proc = target.procs.get(service)
        # One file per service, appended to by every restart.
        return proc.output() if proc is not None else ""


# --- the scenario, written once -----------------------------------------------------------


@dataclass
class Outcome:
    number: str
    key: str
    title: str
    side: str
    expected: str
    status: Literal["ok", "skipped", "error"] = "ok"
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    submitted: int = 0
    # The ledger just before the kill (verified, not assumed).
    running_at_kill: int = 0
    queued_at_kill: int = 0
    done_at_kill: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    lost_notifications: int = 0
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
    # ...and after it was down (so, for the worker: run by the restarted one).
    finished_after_stop: int = 0
    redelivered_after: tuple[float, float] | None = None  # min, max start of a rerun
    last_completed_after: float | None = None  # None: never (something was lost)
    settle: str = ""
    running_ids_at_kill: list[str] = field(default_factory=list)
    lost_ids: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    # The ledger's final word on each task, for drill-down in the JSON report.
    tasks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def never(self) -> bool:
        return self.status == "ok" and self.lost > 0


def submit(target: Target, side: str, n: int) -> list[list[str]]:
    """POST n notification requests; return each one's task ids (notification, log)."""
    out = []
    with httpx.Client(base_url=target.url(side), timeout=10) as client:
        for i in range(n):
            r = client.post(f"/send-notification/crash{i}@example.com")
            r.raise_for_status()
            out.append(list(r.json()["task_ids"]))
    return out


def _ledger(target: Target, side: str, since: float, ids: Sequence[str]) -> list[TaskRecord]:
    wanted = set(ids)
    records = read_ledger(target, Implementation(side), since=since)
    return [r for r in records if r.task_id in wanted]


def wait_running(
    target: Target,
    side: str,
    since: float,
    ids: Sequence[str],
    notification_ids: Sequence[str],
    want: int,
    timeout: float,
    not_before: float = 0.0,
) -> list[TaskRecord]:
    """Poll the ledger until ``want`` notifications are running (and the monotonic
    clock is past ``not_before``); return that snapshot."""
    notifications = set(notification_ids)
    snapshot: list[TaskRecord] = []

    def enough() -> bool:
        nonlocal snapshot
        if time.monotonic() < not_before:
            return False
        snapshot = _ledger(target, side, since, ids)
        running = sum(
            1 for r in snapshot if r.task_id in notifications and r.state == TaskState.running
        )
        return running >= want

    wait_until(enough, timeout, f"{want} notification(s) running", interval=0.05)
    return snapshot


def _fingerprint(records: Sequence[TaskRecord]) -> tuple[tuple[str, str, int, float | None], ...]:
    return tuple(sorted((r.task_id, r.state.value, r.attempts, r.updated_at) for r in records))


def settle(
    target: Target,
    side: str,
    since: float,
    ids: Sequence[str],
    *,
    horizon: float,
    quiet: float,
    cap: float,
) -> tuple[list[TaskRecord], str]:
    """Wait until the tasks are done or nothing can finish them any more.

    - every task succeeded or failed: done (if some ran twice, once the ledger
      has been still for ``quiet`` seconds: the second run may still be going);
    - BackgroundTasks: nothing redelivers their work, so a task in flight whose
      owner process is not the running bg-api can never finish: done at once;
    - Celery: a task in flight may still come back (redelivery), so it is lost
      only once ``horizon`` (monotonic) has passed *and* the ledger has not
      changed for ``quiet`` seconds; ``cap`` bounds the whole wait.
    """
    last_fp: object = None
    last_change = time.monotonic()
    records: list[TaskRecord] = []
    while True:
        now = time.monotonic()
        try:
            records = _ledger(target, side, since, ids)
        except RuntimeError as exc:  # the API or Redis is still coming back
            logger.info("ledger not readable yet: %s", exc)
            if now >= cap:
                return records, "gave up: the ledger did not answer before the deadline"
            time.sleep(0.2)
            continue
        stats = summarize(records, expected_ids=ids)
        fp = _fingerprint(records)
        if fp != last_fp:
            last_fp, last_change = fp, now
        if stats.unfinished == 0:
            if stats.executed_more_than_once == 0:
                return records, "every task finished"
            # A task delivered twice can have its second run still going after the
            # first one wrote "succeeded" (the ledger keeps the last transition):
            # wait until the ledger is still, or a late duplicate write is missed.
            if now - last_change >= quiet:
                return records, (
                    f"every task finished, and no change for {quiet:.0f}s "
                    "(a duplicate run may outlast the first)"
                )
        elif side == "bg":
            live = health(target, "bg")
            runner = live.get("runner") if live else None
            in_flight = [r for r in records if r.task_id in stats.in_flight_ids]
            if runner is not None and all(r.runner != runner for r in in_flight):
                return records, (
                    "the tasks still in flight belong to a process that is gone "
                    "(nothing redelivers BackgroundTasks work)"
                )
        if stats.unfinished and now >= horizon and now - last_change >= quiet:
            return records, (
                f"past the redelivery horizon and no change in the ledger for {quiet:.0f}s"
            )
        if now >= cap:
            return records, "gave up at the settle deadline"
        time.sleep(0.2)


def run_scenario(scenario: Scenario, params: Params, rig: Rig, say: Say = logger.info) -> Outcome:
    """One scenario end to end, from a clean state; never raises for a scenario failure."""
    p = rig.params(params)
    spec = scenario.spec(p)
    outcome = Outcome(
        scenario.number,
        scenario.key,
        scenario.title,
        scenario.side,
        scenario.expected,
        params={**asdict(p), "env": dict(spec.env)},
    )
    started = time.monotonic()
    try:
        with rig.open(scenario, spec) as target:
            _drive(scenario, p, spec, rig, target, outcome, say)
    except Skip as exc:
        outcome.status, outcome.reason = "skipped", str(exc)
        say(f"skipped: {exc}")
    except (Timeout, RuntimeError, httpx.HTTPError, OSError, subprocess.SubprocessError) as exc:
        outcome.status, outcome.reason = "error", f"{type(exc).__name__}: {exc}"
        logger.exception("scenario %s failed", scenario.key)
        say(f"error: {outcome.reason}")
    outcome.seconds = time.monotonic() - started
    return outcome


def _drive(
    sc: Scenario,
    p: Params,
    spec: StackSpec,
    rig: Rig,
    target: Target,
    out: Outcome,
    say: Say,
) -> None:
    # The ledger index is scored by wall-clock time; a second of slack for clock
    # differences between this process and a container.
    since = time.time() - 1
    t_submit = time.time()
    pairs = submit(target, sc.side, p.tasks)
    submitted = time.monotonic()
    ids = [task_id for pair in pairs for task_id in pair]
    notifications = [pair[0] for pair in pairs]
    out.submitted = len(ids)
    visibility = float(spec.env.get("CELERY_VISIBILITY_TIMEOUT", p.visibility))

    if sc.action is None or sc.service is None:
        t0 = t_submit
        say(f"{len(ids)} tasks submitted ({p.tasks} notifications); nothing is killed")
        t_ready = time.monotonic()
    else:
        # Every BackgroundTasks request runs its tasks at once (thread pool); a
        # Celery worker runs as many as it has processes, the rest wait in Redis.
        want = p.tasks if sc.side == "bg" else min(p.tasks, rig.concurrency)
        before = wait_running(
            target,
            sc.side,
            since,
            ids,
            notifications,
            want,
            timeout=15 + 2 * p.delay,
            not_before=submitted + (rig.fsync_lag if sc.wait_for_fsync else 0.0),
        )
        at_kill = summarize(before, expected_ids=ids)
        out.running_at_kill, out.queued_at_kill = at_kill.running, at_kill.queued
        out.done_at_kill = at_kill.succeeded + at_kill.failed
        out.running_ids_at_kill = [r.task_id for r in before if r.state == TaskState.running]
        verb = "SIGKILL" if sc.action == "kill" else "SIGTERM"
        say(
            f"{len(ids)} tasks submitted; ledger: {at_kill.running} running, "
            f"{at_kill.queued} queued, {out.done_at_kill} done → {verb} {sc.service}"
        )
        t0 = time.time()
        if sc.action == "kill":
            target.kill(sc.service)
        else:
            stop_timeout = sc.stop_timeout(p)
            target.terminate(sc.service, timeout=stop_timeout)
            wait_until(
                lambda: not target.is_up(sc.service or ""),
                stop_timeout + 30,
                f"{sc.service} to exit after SIGTERM",
                interval=0.1,
            )
        out.stopped_after = time.time() - t0
        say(f"{sc.service} down after {out.stopped_after:.1f}s; starting it again")
        target.start(sc.service)
        out.restarted_after = time.time() - t0
        t_ready = time.monotonic()

    # When may a task still in flight be called lost? Celery: not before the
    # killed worker's unacked messages are due (visibility timeout after their
    # delivery, found by the next scan), plus the time to run what is queued.
    rounds = math.ceil(2 * p.tasks / max(rig.concurrency, 1))
    if sc.side == "celery":
        horizon = t_ready + visibility + 2 * p.restore_interval + p.margin
        quiet = p.delay + p.margin
    else:
        horizon, quiet = t_ready, p.margin
    cap = horizon + rounds * p.delay * 3 + 60
    if sc.side == "celery" and sc.action is not None:
        say(
            f"settling: redelivery is due {visibility:g}s after delivery "
            f"(visibility timeout), found by a scan every {p.restore_interval:g}s"
        )
    records, why = settle(target, sc.side, since, ids, horizon=horizon, quiet=quiet, cap=cap)
    out.settle = why

    effects = rig.effect_lines(target)
    stats: LedgerStats = summarize(records, expected_ids=ids, effect_lines=effects)
    out.stats = stats.to_dict()
    out.completed, out.failed = stats.done, stats.failed
    runner = "bg-api" if sc.side == "bg" else "worker"
    skips = count_skipped_writes(rig.output(target, runner).splitlines())
    out.skipped_writes = sum(skips[t] for t in ids)
    out.lost = stats.unfinished
    out.lost_ids = sorted(stats.unfinished_ids)
    out.tasks = [
        r.model_dump(
            mode="json",
            include={
                "task_id",
                "kind",
                "state",
                "attempts",
                "retries",
                "started_at",
                "finished_at",
            },
        )
        for r in records
    ]
    out.lost_notifications = len(set(notifications) & set(stats.unfinished_ids))
    out.missing_from_ledger = stats.missing
    out.executed_more_than_once = stats.executed_more_than_once
    out.retried = stats.retried
    out.duplicate_effects, out.extra_effect_lines = (
        stats.duplicate_effects,
        stats.extra_effect_lines,
    )
    if out.stopped_after is not None and out.restarted_after is not None:
        # The boundary is the exit, not "answering again": a restarted worker may
        # run a task before its "ready." line is seen.
        t_down = t0 + out.stopped_after
        finished = [r.finished_at for r in records if r.finished_at is not None]
        out.finished_while_stopping = sum(1 for f in finished if t0 <= f <= t_down)
        out.finished_after_stop = sum(1 for f in finished if f > t_down)
    reruns = [
        r.started_at - t0
        for r in records
        if r.task_id in stats.redelivered_ids and r.started_at is not None
    ]
    if reruns and sc.action is not None:
        out.redelivered_after = (min(reruns), max(reruns))
    if out.lost == 0 and stats.last_finished_at is not None:
        out.last_completed_after = stats.last_finished_at - t0
    say(
        f"{out.completed} completed, {out.lost} lost, "
        f"{out.executed_more_than_once} ran more than once, "
        f"{out.skipped_writes} repeat writes skipped, "
        f"{out.duplicate_effects} made ({why})"
    )


# --- output -------------------------------------------------------------------------------

HEADERS = [
    "scenario",
    "tasks submitted",
    "at the kill: running / queued",
    "completed",
    "lost",
    "executed more than once",
    "repeat writes: skipped / made",
    "retried",
    "redelivered after",
    "last task completed after",
]


def _secs(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} s"


def _span(lo_hi: tuple[float, float]) -> str:
    lo, hi = lo_hi
    return f"{lo:.1f} s" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}–{hi:.1f} s"


def row(o: Outcome) -> list[str]:
    if o.status != "ok":
        return [f"{o.number}. {o.title}", f"{o.status}: {o.reason}"] + [""] * (len(HEADERS) - 2)
    redelivered = "—" if o.redelivered_after is None else _span(o.redelivered_after)
    at_kill = "—" if o.number == "8" else f"{o.running_at_kill} / {o.queued_at_kill}"
    return [
        f"{o.number}. {o.title}",
        str(o.submitted),
        at_kill,
        str(o.completed),
        str(o.lost),
        str(o.executed_more_than_once),
        f"{o.skipped_writes} / {'?' if o.duplicate_effects is None else o.duplicate_effects}",
        str(o.retried),
        redelivered,
        "never" if o.never else _secs(o.last_completed_after),
    ]


def table(outcomes: Sequence[Outcome]) -> str:
    return report.markdown_table(HEADERS, [row(o) for o in outcomes])


def notes(outcomes: Sequence[Outcome], params: Params, rig: Rig) -> str:
    lines = [
        f"Target: {rig.name}. {params.tasks} notification requests per scenario, each "
        f"scheduling 2 tasks (the {params.delay:g} s notification, then a log line); "
        f"Celery worker concurrency {params.concurrency}, visibility timeout "
        f"{params.visibility:g} s, unacked scan every {params.restore_interval:g} s.",
        "",
        "- *at the kill*: the ledger just before the signal (the kill waits until the "
        "notifications are `running`); a Celery worker runs as many as it has processes, "
        "the rest are queued in Redis.",
        "- *lost*: still queued/running/retrying when the run settled, or gone from the "
        "ledger. BackgroundTasks: at once when its owner process is gone (nothing "
        "redelivers it). Celery: only after the redelivery horizon (restart + visibility "
        f"timeout + two scans + {params.margin:g} s) and {params.delay + params.margin:g} s "
        "without any change in the ledger.",
        "- *executed more than once*: `attempts - retries > 1` in the ledger (a redelivery). "
        "*repeat writes*: runs that found the task's log line already written and skipped "
        "it (the idempotency check, from the process output) / tasks with more than one "
        "line in the log file.",
        "- times are from the signal (scenario 8: from the submission).",
        "",
    ]
    for o in outcomes:
        if o.status != "ok":
            lines.append(f"- **{o.number}. {o.title}**: {o.status}: {o.reason}")
            continue
        extra = []
        if o.finished_while_stopping:
            extra.append(f"{o.finished_while_stopping} finished during the shutdown")
        if o.missing_from_ledger:
            done = o.stats.get("missing_done", 0)
            extra.append(
                f"{o.missing_from_ledger} gone from the ledger itself"
                + (
                    f", {done} of them with their log line written (counted completed)"
                    if done
                    else ""
                )
            )
        if o.redelivered_after is not None:
            extra.append(
                f"the interrupted tasks started again {_span(o.redelivered_after)} after the signal"
            )
        if o.restarted_after is not None:
            extra.append(f"back up {o.restarted_after:.1f} s after the signal")
        detail = f" ({'; '.join(extra)})" if extra else ""
        lines.append(
            f"- **{o.number}. {o.title}**: expected: {o.expected}. "
            f"Measured: {o.lost} lost of {o.submitted}{detail}. Settled: {o.settle}."
        )
    return "\n".join(lines)


# --- CLI ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = Params()
    parser.add_argument(
        "--target",
        choices=("local", "compose"),
        default="local",
        help="local processes it starts itself (default), or the running docker compose "
        "stack (its own settings apply: --delay, --visibility-timeout, --restore-interval "
        "and --concurrency are read from its worker)",
    )
    parser.add_argument(
        "--scenarios",
        default="all",
        help="comma-separated keys or numbers (default all): "
        + ", ".join(f"{s.number}={s.key}" for s in SCENARIOS),
    )
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument(
        "--tasks",
        type=int,
        default=d.tasks,
        help=f"notification requests per scenario, 2 tasks each (default {d.tasks})",
    )
    parser.add_argument(
        "--delay",
        type=float,
        default=d.delay,
        help=f"NOTIFICATION_DELAY_SECONDS (default {d.delay:g})",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=float,
        default=d.visibility,
        help=f"CELERY_VISIBILITY_TIMEOUT (default {d.visibility:g})",
    )
    parser.add_argument(
        "--restore-interval",
        type=float,
        default=d.restore_interval,
        help=f"CELERY_RESTORE_INTERVAL, kombu's unacked scan (default {d.restore_interval:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=d.concurrency,
        help=f"Celery worker processes (default {d.concurrency})",
    )
    parser.add_argument(
        "--grace",
        type=int,
        default=d.grace,
        help=f"scenario 2b's graceful-shutdown timeout, whole seconds (default {d.grace})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="local target: where the runs' files go"
    )
    parser.add_argument(
        "--keep", action="store_true", help="local target: keep each scenario's files"
    )
    parser.add_argument(
        "--compose-project", default=None, help="compose target: the project name (-p)"
    )
    parser.add_argument(
        "--bg-url", default="http://127.0.0.1:8001", help="compose target: bg-api's URL"
    )
    parser.add_argument(
        "--celery-url",
        default="http://127.0.0.1:8002",
        help="compose target: celery-api's URL",
    )
    parser.add_argument(
        "--json", action="store_true", help="also print the results as JSON on stdout"
    )


def _progress(total: int) -> Callable[[int, Scenario], Say]:
    """Plain lines on stderr: one per step, prefixed with the scenario and the clock."""
    started = time.monotonic()

    def for_scenario(i: int, sc: Scenario) -> Say:
        def say(msg: str) -> None:
            elapsed = time.monotonic() - started
            print(f"[{i}/{total} {elapsed:5.0f}s] {sc.label}: {msg}", file=sys.stderr, flush=True)

        return say

    return for_scenario


def make_rig(args: argparse.Namespace) -> Rig:
    if args.target == "compose":
        return ComposeRig(
            project=args.compose_project,
            bg_url=args.bg_url,
            celery_url=args.celery_url,
        )
    return LocalRig(args.workdir, concurrency=args.concurrency, keep=args.keep)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for s in SCENARIOS:
            print(f"{s.number:>3}  {s.key:<24} {s.title}: {s.expected}")
        return 0
    params = Params(
        tasks=args.tasks,
        delay=args.delay,
        visibility=args.visibility_timeout,
        restore_interval=args.restore_interval,
        concurrency=args.concurrency,
        grace=args.grace,
    )
    if args.quick:
        params = replace(params, tasks=2, delay=1.5, visibility=3.0)
    try:
        scenarios = pick(args.scenarios)
    except ValueError as exc:
        print(f"crash: {exc}", file=sys.stderr)
        return 2
    rig = make_rig(args)
    try:
        params = rig.params(params)
    except (Skip, RuntimeError, subprocess.SubprocessError, OSError) as exc:
        print(f"crash: cannot read the {rig.name} target's settings: {exc}", file=sys.stderr)
        return 2
    if rig.name == "compose":
        print(
            f"crash: compose: the stack's own settings apply (delay {params.delay:g}s, "
            f"visibility timeout {params.visibility:g}s, scan every "
            f"{params.restore_interval:g}s, concurrency {params.concurrency}); "
            "set them when you bring the stack up (NOTIFICATION_DELAY_SECONDS, ...)",
            file=sys.stderr,
        )
    problems = params.problems()
    if problems:
        for problem in problems:
            print(f"crash: {problem}", file=sys.stderr)
        return 2

    progress = _progress(len(scenarios))
    outcomes = []
    for i, sc in enumerate(scenarios, 1):
        say = progress(i, sc)
        say(f"starting ({', '.join(sc.spec(params).services)}) — expected: {sc.expected}")
        outcomes.append(run_scenario(sc, params, rig, say))

    text = table(outcomes)
    extra = notes(outcomes, params, rig)
    print()
    print(text)
    print()
    print(extra)
    data = {
        "target": rig.name,
        "params": asdict(params),
        "scenarios": [asdict(o) for o in outcomes],
    }
    path = report.write("crash", data, text, notes=extra)
    print(f"\nwritten: {path} and {path.with_suffix('.json')}", file=sys.stderr)
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    return 1 if any(o.status == "error" for o in outcomes) else 0


# --- compose ------------------------------------------------------------------------------

# The settings a scenario may switch on the compose stack, by recreating the
# worker with an override (and recreating it as it was afterwards). Both are
# read by the worker only: the API publishes the same way either way.
SWITCHABLE = ("CELERY_ACKS_LATE", "CELERY_VISIBILITY_TIMEOUT")
# The stack's settings that the scenarios' timing depends on.
SETTINGS = (
    "NOTIFICATION_DELAY_SECONDS",
    "CELERY_VISIBILITY_TIMEOUT",
    "CELERY_RESTORE_INTERVAL",
    "CELERY_ACKS_LATE",
    "NOTIFICATION_FAIL_FIRST_ATTEMPTS",
    "LOG_FILE",
)


class ComposeRig:
    """The running ``docker compose`` stack, as it is.

    Its settings are read from the worker container (``docker inspect``), not
    imposed: ``--delay`` and friends do not apply, ``--tasks`` does. A scenario
    that needs a setting switched (stock acks, a short visibility timeout)
    recreates the worker with the override and puts it back afterwards; one that
    needs Redis without persistence is skipped (the stack's Redis has AOF on).
    "Clean state" here means: every service the scenario needs is running, and
    only this scenario's task ids are counted.
    """

    name = "compose"

    def __init__(
        self,
        *,
        project: str | None = None,
        bg_url: str = "http://127.0.0.1:8001",
        celery_url: str = "http://127.0.0.1:8002",
        project_dir: Path = REPO_ROOT,
    ) -> None:
        self.target = ComposeTarget(
            project_dir=project_dir, project=project, bg_url=bg_url, celery_url=celery_url
        )
        self.project = project
        self._env: dict[str, str] | None = None
        self._concurrency: int | None = None
        self._since = time.time()

    # --- what the stack runs with ------------------------------------------------

    def _inspect(self, service: str) -> dict[str, Any]:
        ids = self.target.compose("ps", "-a", "-q", service).split()
        if not ids:
            raise Skip(f"no {service} container in the compose project: is the stack up?")
        done = subprocess.run(
            ["docker", "inspect", ids[0]], capture_output=True, text=True, timeout=30, check=True
        )
        info: dict[str, Any] = json.loads(done.stdout)[0]
        return info

    def _load(self) -> None:
        if self._env is not None:
            return
        info = self._inspect("worker")
        env = dict(item.split("=", 1) for item in info["Config"]["Env"] if "=" in item)
        self._env = {k: env[k] for k in SETTINGS if k in env}
        self._concurrency = 2
        for arg in info["Config"]["Cmd"] or []:
            if str(arg).startswith("--concurrency="):
                self._concurrency = int(str(arg).split("=", 1)[1])

    @property
    def env(self) -> dict[str, str]:
        self._load()
        assert self._env is not None
        return self._env

    @property
    def concurrency(self) -> int:
        self._load()
        assert self._concurrency is not None
        return self._concurrency

    def params(self, requested: Params) -> Params:
        env = self.env
        return replace(
            requested,
            delay=float(env.get("NOTIFICATION_DELAY_SECONDS", requested.delay)),
            visibility=float(env.get("CELERY_VISIBILITY_TIMEOUT", requested.visibility)),
            restore_interval=float(env.get("CELERY_RESTORE_INTERVAL", requested.restore_interval)),
            concurrency=self.concurrency,
        )

    # --- per scenario --------------------------------------------------------------

    def _redis_option(self, name: str) -> str | None:
        cmd = [str(a) for a in self._inspect("redis")["Config"]["Cmd"] or []]
        return next((b for a, b in itertools.pairwise(cmd) if a == f"--{name}"), None)

    def _redis_persists(self) -> bool:
        return self._redis_option("appendonly") == "yes"

    @property
    def fsync_lag(self) -> float:
        # Redis's default with AOF on is everysec; "always" fsyncs every write.
        return 0.0 if self._redis_option("appendfsync") == "always" else 1.1

    def _recreate_worker(self, overrides: Mapping[str, str]) -> None:
        """``up --force-recreate`` the worker with the stack's settings plus ``overrides``."""
        env = {
            **os.environ,
            **self.env,
            "WORKER_CONCURRENCY": str(self.concurrency),
            **overrides,
        }
        if self.project:
            env["COMPOSE_PROJECT_NAME"] = self.project  # names the image in the compose file
        argv = ["docker", "compose", *self.target.extra_args]
        if self.project:
            argv += ["-p", self.project]
        argv += ["up", "-d", "--no-deps", "--no-build", "--force-recreate", "worker"]
        since = time.time()
        done = subprocess.run(
            argv, cwd=self.target.project_dir, env=env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr[-2000:]}")
        self._wait_worker_ready(since)

    def _wait_worker_ready(self, since: float, timeout: float = 90) -> None:
        wait_until(
            lambda: "ready." in self._logs("worker", since),
            timeout,
            "the worker to print ready.",
            interval=0.5,
        )

    def _logs(self, service: str, since: float) -> str:
        return self.target.compose(
            "logs", "--no-color", "--since", f"{since:.3f}", service, check=False
        )

    @contextmanager
    def open(self, scenario: Scenario, spec: StackSpec) -> Iterator[Target]:
        if spec.appendonly is not None and spec.appendonly != self._redis_persists():
            raise Skip(
                "needs Redis "
                + ("with" if spec.appendonly else "without")
                + " the append-only file; the compose stack's Redis is configured otherwise"
            )
        overrides = {
            k: spec.env[k] for k in SWITCHABLE if k in spec.env and spec.env[k] != self.env.get(k)
        }
        for service in spec.services:
            if not self.target.is_up(service):
                self.target.start(service)
        self._since = time.time()
        if overrides:
            logger.info("recreating the worker with %s", overrides)
            self._recreate_worker(overrides)
        try:
            yield self.target
        finally:
            if overrides:
                # As it was: the stack belongs to the user.
                self._recreate_worker({k: self.env[k] for k in overrides if k in self.env})

    def effect_lines(self, target: Target) -> dict[str, int]:
        # bg-api and the worker share the log file's volume; read it where it is up.
        for service in ("worker", "bg-api"):
            out = self.target.compose(
                "exec", "-T", service, "sh", "-c", 'cat "$LOG_FILE" 2>/dev/null || true',
                check=False,
            )  # fmt: skip
            if out:
                return dict(count_effect_lines(out.splitlines()))
        return {}

    def output(self, target: Target, service: str) -> str:
        return self._logs(service, self._since)
