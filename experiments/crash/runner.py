"""One crash scenario end to end, on any target, counted by ``shared.verdict``.

Submit N notification requests (each schedules two tasks: the slow notification,
then a log line), wait until the ledger shows the notifications *running* (the
kill is verified, not timed by a sleep), kill or stop one service, start it
again, and watch until every task has a final verdict and the ledger has been
still for a moment; then count.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import httpx

from experiments.crash.scenarios import Params, Scenario
from experiments.traffic import Traffic
from harness.observe import expected_of, observe, settle
from harness.procs import Timeout, wait_until
from harness.stacks import Where, open_stack
from harness.target import Target, Unsupported, read_records
from shared.models import IN_FLIGHT, Implementation, TaskRecord, TaskState
from shared.verdict import Judgement, Verdict, judge

# The worker's line for a message it was handed ("Task <name>[<id>] received").
RECEIVED = re.compile(r"Task \S+\[([0-9a-f-]{36})\] received")


def received_counts(output: str) -> dict[str, int]:
    """Per task id, how many times a worker was handed its message (its output)."""
    counts: dict[str, int] = {}
    for task_id in RECEIVED.findall(output):
        counts[task_id] = counts.get(task_id, 0) + 1
    return counts


logger = logging.getLogger(__name__)

Say = Callable[[str], None]


@dataclass
class Outcome:
    number: str
    key: str
    title: str
    side: str
    expected: str
    # The Celery side's broker ("" for BackgroundTasks, which has none).
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


def submit(target: Target, side: str, n: int) -> list[list[str]]:
    """POST n notification requests; return each one's task ids (notification, log).

    A new connection per request: with several API processes sharing a socket, each
    request lands on whichever one accepts it."""
    out: list[list[str]] = []
    no_keepalive = httpx.Limits(max_keepalive_connections=0)
    base = target.url(side)
    with httpx.Client(base_url=base, timeout=10, limits=no_keepalive) as c:
        for i in range(n):
            r = c.post(f"/send-notification/crash{i}@example.com")
            r.raise_for_status()
            out.append(list(r.json()["task_ids"]))
    return out


def spread(
    target: Target, pairs: list[list[str]], processes: int, *, limit: int
) -> list[list[str]]:
    """More requests, one at a time, until the tasks are held by ``processes`` API
    processes (at most ``limit`` more); the extra requests' task ids.

    Which process accepts a connection on a shared socket is the kernel's choice,
    and not an even one: a run of requests can all land on one process, and a
    scenario about losing one process's tasks only needs each to hold some."""
    extra: list[list[str]] = []

    def holders() -> int:
        records = target.ledger().records_of([pair[0] for pair in (*pairs, *extra)])
        return len({r.runner for r in records.values() if r.runner})

    while holders() < processes and len(extra) < limit:
        extra += submit(target, "bg", 1)
    return extra


def wait_running(
    target: Target,
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
        snapshot = read_records(target, ids, since)
        running = sum(
            1 for r in snapshot if r.task_id in notifications and r.state == TaskState.running
        )
        return running >= want

    wait_until(enough, timeout, f"{want} notification(s) running", interval=0.05)
    return snapshot


def _until(
    target: Target,
    since: float,
    expected: dict[str, Implementation],
    notifications: list[str],
    verdict: str,
    *,
    quiet: float,
    deadline: float,
) -> tuple[Judgement, str]:
    """Poll until every notification has ``verdict`` and its deliveries have not
    changed for ``quiet`` seconds, or until ``deadline`` (wall clock): the last
    reading, and how the watch ended."""
    start = time.time()
    steady_since: float | None = None
    last: tuple[int, ...] = ()
    while True:
        final = judge(observe(target, since=since, expected=expected))
        received = received_counts(target.output("worker"))
        now = time.time()
        seen = tuple(received.get(n, 0) for n in notifications)
        done = all(
            (v := final.tasks.get(n)) is not None and v.verdict.value == verdict
            for n in notifications
        )
        logger.debug("until %s: reached %s, deliveries %s", verdict, done, seen)
        if not done:
            steady_since = None
        elif steady_since is None or seen != last:
            steady_since = now
        elif now - steady_since >= quiet:
            return final, f"until {verdict} ({now - start:.1f}s), {quiet:g}s without a delivery"
        last = seen
        if now >= deadline:
            return final, f"not {verdict} by the deadline ({now - start:.1f}s), then one reading"
        time.sleep(0.5)


def run_scenario(
    scenario: Scenario,
    params: Params,
    where: Where,
    say: Say = logger.info,
    broker: str = "redis",
) -> Outcome:
    """One scenario end to end, from a clean state; never raises for a scenario failure."""
    spec = scenario.spec(params, broker)
    outcome = Outcome(
        scenario.number,
        scenario.key,
        scenario.title,
        scenario.side,
        scenario.expected,
        broker=broker if scenario.side == "celery" else "",
        params={**asdict(params), "settings": dict(spec.settings)},
    )
    started = time.monotonic()
    try:
        with open_stack(where, spec, base=params.settings(), label=f"crash-{scenario.key}") as t:
            _drive(scenario, params, t, outcome, say)
    except Unsupported as exc:
        outcome.status, outcome.reason = "skipped", str(exc)
        say(f"skipped: {exc}")
    except (Timeout, RuntimeError, httpx.HTTPError, OSError, subprocess.SubprocessError) as exc:
        outcome.status, outcome.reason = "error", f"{type(exc).__name__}: {exc}"
        logger.exception("scenario %s failed", scenario.key)
        say(f"error: {outcome.reason}")
    outcome.seconds = time.monotonic() - started
    return outcome


def _drive(sc: Scenario, p: Params, target: Target, out: Outcome, say: Say) -> None:
    # The ledger index is scored by wall-clock time; a second of slack for clock
    # differences between this process and a container.
    since = time.time() - 1
    t_submit = time.time()
    requests = sc.requests(p)
    # A failover sends steady traffic of its own instead.
    pairs = submit(target, sc.side, requests) if sc.action != "failover" else []
    after_kill: list[str] = []
    if sc.bg_workers > 1:
        pairs += spread(target, pairs, sc.bg_workers, limit=3 * requests)
    submitted = time.monotonic()
    ids = [task_id for pair in pairs for task_id in pair]
    notifications = [pair[0] for pair in pairs]
    expected = expected_of(ids, sc.side)
    out.submitted = len(ids)
    delay = target.settings.notification_delay_seconds

    if sc.action is None or sc.service is None:
        t0 = t_submit
        say(f"{len(ids)} tasks submitted ({requests} notifications); nothing is killed")
        if sc.revive_worker:
            try:
                wait_until(
                    lambda: not target.is_up("worker"), 3 * delay + 15, "the worker to exit", 0.2
                )
            except Timeout:
                say("the worker did not exit")
            else:
                out.stopped_after = time.time() - t0
                say(f"the worker exited by itself {out.stopped_after:.1f}s in; starting it again")
                target.start("worker")
                out.restarted_after = time.time() - t0
    elif sc.action == "failover":
        t0, accepted, after_kill = _failover(sc, p, target, out, say)
        pairs = [accepted[i : i + 2] for i in range(0, len(accepted), 2)]
        ids = accepted
        notifications = [pair[0] for pair in pairs]
        expected = expected_of(ids, sc.side)
        out.submitted = len(ids)
    elif sc.action == "partition":
        t0 = _partition(sc, p, target, since, pairs, out, say)
        ids = [task_id for pair in pairs for task_id in pair]
        notifications = [pair[0] for pair in pairs]
        expected = expected_of(ids, sc.side)
        out.submitted = len(ids)
    else:
        # Every BackgroundTasks request runs its tasks at once (thread pool); a
        # Celery worker runs as many as it has processes, the rest wait in the broker.
        want = requests if sc.side == "bg" else min(requests, target.worker_processes)
        before = wait_running(
            target,
            since,
            ids,
            notifications,
            want,
            timeout=15 + 2 * delay,
            not_before=submitted + (target.fsync_lag if sc.wait_for_fsync else 0.0),
        )
        states = [r.state for r in before]
        out.running_at_kill = states.count(TaskState.running)
        out.queued_at_kill = states.count(TaskState.queued)
        out.done_at_kill = sum(s in (TaskState.succeeded, TaskState.failed) for s in states)
        out.running_ids_at_kill = [r.task_id for r in before if r.state == TaskState.running]
        service = target.broker_service if sc.service == "broker" else sc.service
        victim: str | None = None  # one process, by its runner id (not a whole service)
        if sc.bg_workers > 1:
            victim = next(r.runner for r in before if r.task_id == notifications[0])
            out.held_by_killed = [
                r.task_id for r in before if r.runner == victim and r.state in IN_FLIGHT
            ]
        if sc.kill_its_worker:
            # The worker that runs the first notification: the others survive it.
            runner = next(r.runner for r in before if r.task_id == notifications[0])
            service = (target.service_of(runner) if runner else None) or service
        verb = "SIGKILL" if sc.action == "kill" else "SIGTERM"
        say(
            f"{len(ids)} tasks submitted; ledger: {out.running_at_kill} running, "
            f"{out.queued_at_kill} queued, {out.done_at_kill} done → {verb} {service}"
        )
        t0 = time.time()
        if victim is not None:
            target.kill_runner(victim)
        elif sc.action == "kill":
            target.kill(service)
        else:
            stop_timeout = sc.stop_timeout(p)
            target.terminate(service, timeout=stop_timeout)
            wait_until(
                lambda: not target.is_up(service),
                stop_timeout + 30,
                f"{service} to exit after SIGTERM",
                interval=0.1,
            )
        out.stopped_after = time.time() - t0
        if sc.restart:
            say(f"{service} down after {out.stopped_after:.1f}s; starting it again")
            target.start(service)
            out.restarted_after = time.time() - t0
        else:
            say(f"{service} down after {out.stopped_after:.1f}s; left down")
        if sc.side == "celery" and target.settings.broker == "redis":
            s = target.settings
            say(
                f"settling: redelivery is due {s.celery_visibility_timeout:g}s after delivery "
                f"(visibility timeout), found by a scan every {s.celery_restore_interval:g}s"
            )
        elif sc.side == "celery":
            say("settling: RabbitMQ requeues a dead consumer's unacked messages at once")

    window = sc.window(p)
    if window is not None:
        # A fixed window, the scenario's measure (a task that loops for ever never
        # settles): then one reading, whatever it shows.
        out.window = window
        if sc.ends_with is None:
            time.sleep(max(0.0, t_submit + window - time.time()))
            final = judge(observe(target, since=since, expected=expected))
            out.settle = f"a fixed window of {window:g}s, then one reading"
        else:
            final, out.settle = _until(target, since, expected, notifications, sc.ends_with,
                                       quiet=p.margin, deadline=t_submit + window + 60)  # fmt: skip
        received = received_counts(target.output("worker"))
        out.handed_out = sum(received.get(n, 0) for n in notifications)
        out.most_runs = max((len(r.runs) for r in read_records(target, notifications, since)),
                            default=0)  # fmt: skip
    else:
        # Bounded: what is queued behind the kill still has to run, a round at a time.
        rounds = -(-len(ids) // max(target.worker_processes, 1))
        horizon = (
            target.settings.celery_visibility_timeout + 2 * target.settings.celery_restore_interval
        )
        cap = time.monotonic() + horizon + rounds * delay * 3 + 60
        # A failover: the workers may still be reconnecting while the verdict, which
        # sees a live, free worker, already calls the queued tasks lost; a longer
        # quiet lets a late reconnect show (``Scenario.quiet``).
        quiet = max(p.margin, sc.quiet)
        final, out.settle = settle(target, since, expected, quiet=quiet, cap=cap + quiet)
    side = final.side(sc.side)
    out.summary = side.to_dict()
    out.completed, out.failed, out.lost, out.skipped, out.gave_up = (
        side.completed,
        side.failed,
        side.lost,
        side.skipped,
        side.gave_up,
    )
    out.lost_ids = sorted(final.ids(Verdict.lost))
    out.lost_notifications = len(set(notifications) & set(out.lost_ids))
    out.missing_from_ledger = side.missing_from_ledger
    out.executed_more_than_once = side.executed_more_than_once
    out.retried = side.retried
    out.duplicate_effects, out.extra_effect_lines = side.duplicate_effects, side.extra_writes
    out.skipped_writes = side.skipped_writes
    records = [t.record for t in final.tasks.values() if t.record is not None]
    ends = [r.finished_at for r in records if r.finished_at is not None]
    out.tasks = [
        {
            "task_id": t.task_id,
            "kind": t.kind,
            "verdict": t.verdict.value,
            "why": t.why,
            "executions": t.executions,
            "writes": t.writes,
            "runs": [r.model_dump(mode="json") for r in t.record.runs] if t.record else [],
        }
        for t in final.tasks.values()
    ]
    if out.stopped_after is not None:
        # The boundary is the exit, not "answering again": a restarted worker may
        # run a task before its "ready." line is seen.
        t_down = t0 + out.stopped_after
        out.finished_while_stopping = sum(1 for f in ends if t0 <= f <= t_down)
        out.finished_after_stop = sum(1 for f in ends if f > t_down)
    # The runs after the first of each task delivered more than once (a retry is not a rerun).
    later_runs = [
        run
        for t in final.tasks.values()
        if t.executions > 1 and t.record is not None
        for run in t.record.runs[1:]
    ]
    reruns = [run.started_at - t0 for run in later_runs if run.started_at is not None]
    out.rerun_by = sorted(
        {target.service_of(run.runner) or "?" for run in later_runs if run.runner}
    )
    if sc.action == "failover":
        # A task accepted after the kill came through the new leader: its first run
        # is the workers consuming again (a task they held from before is not).
        new = set(after_kill)
        started = [
            run.started_at
            for r in records
            if r.task_id in new
            for run in r.runs
            if run.started_at is not None
        ]
        out.consumed_again_after = min(started) - t0 if started else None
    if sc.action == "partition" and out.healed_after is not None and sc.service:
        # When the cut worker ran a task again after the heal (its processes' runs).
        healed = t0 + out.healed_after
        again = [
            run.started_at
            for r in records
            for run in r.runs
            if run.started_at is not None
            and run.started_at >= healed
            and run.runner
            and target.service_of(run.runner) == sc.service
        ]
        out.consumed_again_after = min(again) - healed if again else None
    if reruns and sc.action is not None:
        out.redelivered_after = (min(reruns), max(reruns))
    if out.lost == 0 and ends:
        out.last_completed_after = max(ends) - t0
    say(
        f"{out.completed} completed, {out.lost} lost, "
        f"{out.executed_more_than_once} ran more than once, "
        f"{out.skipped_writes} repeat writes skipped, "
        f"{out.duplicate_effects} made ({out.settle})"
    )


def _partition(
    sc: Scenario,
    p: Params,
    target: Target,
    since: float,
    pairs: list[list[str]],
    out: Outcome,
    say: Say,
) -> float:
    """Cut the service off its broker while it runs a notification; submit as many
    requests again during the cut and after the heal (into ``pairs``); the cut's time."""
    assert sc.service is not None
    service = sc.service
    notifications = [pair[0] for pair in pairs]

    def cut_one_runs() -> list[TaskRecord] | None:
        records = read_records(target, notifications, since)
        mine = [
            r
            for r in records
            if r.state == TaskState.running and r.runner and target.service_of(r.runner) == service
        ]
        return mine or None

    delay = target.settings.notification_delay_seconds
    running = wait_until(cut_one_runs, 15 + 3 * delay, f"{service} running a notification", 0.05)
    out.running_ids_at_kill = [r.task_id for r in running]
    out.running_at_kill = len(running)
    broker = target.settings.broker
    seconds = sc.cut(p, "redis" if broker == "redis" else "rabbitmq")
    out.cut_seconds = seconds
    say(f"{service} runs {len(running)} notification(s): cut off the broker for {seconds:g}s")
    t0 = time.time()
    target.cut(service)
    try:
        pairs += submit(target, sc.side, sc.requests(p))
        time.sleep(max(0.0, t0 + seconds - time.time()))  # the cut's length is the scenario
    finally:
        target.heal(service)
    out.healed_after = time.time() - t0
    say(f"healed after {out.healed_after:.1f}s; {sc.requests(p)} more requests")
    pairs += submit(target, sc.side, sc.requests(p))
    return t0


def _failover(
    sc: Scenario, p: Params, target: Target, out: Outcome, say: Say
) -> tuple[float, list[str], list[str]]:
    """Steady traffic; the broker's leading process SIGKILLed for good after
    ``p.steady`` seconds; ``p.steady`` seconds more of it after the new leader. The
    kill's time, every task the API accepted, and those it accepted after the kill."""
    traffic = Traffic("celery", target.url("celery"), p.rate, prefix="failover")
    thread = traffic.start()
    supervisor = Supervisor(target, [s for s in target.services if s.startswith("worker")])
    try:
        time.sleep(p.steady)  # the scenario's steady state, before the kill
        victim = target.broker_primary()
        out.killed = victim
        say(f"{len(traffic.accepted)} tasks accepted so far; SIGKILL {victim}, for good")
        t0 = time.time()
        target.kill(victim)
        out.stopped_after = time.time() - t0

        def promoted() -> str | None:
            try:
                found = target.broker_primary()
            except (RuntimeError, OSError):
                return None
            return found if found != victim else None

        supervisor.start()
        new = wait_until(promoted, 90, "a new leader", 0.1)
        out.promoted_after = time.time() - t0
        say(f"{new} leads {out.promoted_after:.1f}s after the kill; traffic goes on")
        time.sleep(p.steady)  # as long again, after the failover
    finally:
        traffic.stop.set()
        thread.join(15)
        supervisor.stop()
    out.worker_exits = [at - t0 for at in supervisor.exits]
    if supervisor.exits:
        say(
            f"a worker exited by itself {len(supervisor.exits)} time(s); "
            "the supervisor started it again"
        )
    answered = [(at, status) for sent, at, status in traffic.answers if sent >= t0]
    # Refused (a 503) or not answered in time: every request sent after the kill
    # that the API did not accept.
    out.refused = sum(1 for _, status in answered if status != 202)
    # From the kill until the API accepted a request again after it first failed one
    # (by the answers' times: a request that waits out the failover is accepted when
    # it is answered); none failed: publishing never stopped.
    first_failed = min((at for at, status in answered if status != 202), default=t0)
    ok = [at for at, status in answered if status == 202 and at >= first_failed]
    out.publishing_again_after = min(ok) - t0 if ok else None
    after_kill = [task_id for at, ids in traffic.log if at >= t0 for task_id in ids]
    return t0, list(traffic.accepted), after_kill


class Supervisor:
    """What a restart policy does (compose's ``restart: unless-stopped``, systemd's
    ``Restart=always``): a worker that exits by itself is started again. The times it
    found one gone (``exits``: once per exit, not per attempt to start it)."""

    def __init__(self, target: Target, services: list[str], every: float = 0.2) -> None:
        self.target, self.services, self.every = target, services, every
        self.exits: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        down: set[str] = set()
        while not self._stop.wait(self.every):
            for service in self.services:
                if self._stop.is_set():
                    return  # never a start after stop(): the stack is closing
                if self.target.is_up(service):
                    down.discard(service)
                    continue
                if service not in down:
                    down.add(service)
                    self.exits.append(time.time())
                try:
                    self.target.start(service, timeout=60)
                    down.discard(service)
                except (Timeout, RuntimeError, OSError) as exc:
                    logger.warning("the supervisor could not start %s: %s", service, exc)

    def stop(self) -> None:
        """Stop it, waiting out a start in progress (each is bounded: 60 s)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def adapt(params: Params, target: Target) -> Params:
    """The parameters a compose stack really runs with: its own settings apply."""
    s = target.settings
    return replace(
        params,
        delay=s.notification_delay_seconds,
        visibility=s.celery_visibility_timeout,
        restore_interval=s.celery_restore_interval,
        concurrency=target.worker_processes,
    )
