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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import httpx
import psutil

from experiments.crash.broker_faults import cut_while_running, fail_over
from experiments.crash.outcome import Outcome, Say
from experiments.crash.scenarios import Params, Scenario
from experiments.traffic import submit
from harness.local import LocalStack
from harness.observe import expected_of, observe, settle
from harness.procs import Timeout, wait_until
from harness.stacks import Where, open_stack
from harness.target import Target, Unsupported, read_records
from shared.models import IN_FLIGHT, Implementation, TaskRecord, TaskState
from shared.redelivery import Redelivery, declared_redeliveries
from shared.services import IMPLEMENTATIONS, Delivery
from shared.verdict import Judgement, Verdict, judge

# What a loaded machine (CI, 4x slower) adds to a windowed watch before it gives up:
# each respawned worker process imports its app again, seconds apiece there.
LOADED_SLACK = 60.0


def received_counts(target: Target, impl: Implementation, ids: Sequence[str], since: float) -> int:
    """How many times the worker was handed these tasks' messages: its log lines, where
    the implementation declares one (``ImplementationSpec.received``), else the runs
    the ledger holds."""
    spec = IMPLEMENTATIONS[impl]
    if not spec.received:
        return sum(len(r.runs) for r in read_records(target, ids, since))
    found = re.findall(spec.received, target.output(spec.runs_the_work))
    return sum(1 for task_id in found if task_id in set(ids))


logger = logging.getLogger(__name__)


def spread(
    target: Target,
    implementation: Implementation,
    pairs: list[list[str]],
    processes: int,
    *,
    limit: int,
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
        extra += submit(target, implementation, 1)
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
    impl: Implementation,
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
        now = time.time()
        seen = tuple(received_counts(target, impl, [n], since) for n in notifications)
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
        scenario.key,
        scenario.title,
        scenario.implementation,
        scenario.expected,
        broker=broker if scenario.on_brokers else "",
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


@dataclass
class _Run:
    """One scenario in progress: what was submitted, and when the fault struck."""

    sc: Scenario
    p: Params
    target: Target
    out: Outcome
    say: Say
    # The ledger index is scored by wall-clock time; a second of slack for clock
    # differences between this process and a container.
    since: float = field(default_factory=lambda: time.time() - 1)
    t_submit: float = field(default_factory=time.time)
    submitted: float = field(default_factory=time.monotonic)
    pairs: list[list[str]] = field(default_factory=list)
    # A failover's tasks accepted after the kill (they came through the new leader).
    after_kill: list[str] = field(default_factory=list)
    t0: float = 0.0  # the fault's moment (none: the first submission)

    @property
    def impl(self) -> Implementation:
        return self.sc.implementation

    @property
    def worker(self) -> str:
        return IMPLEMENTATIONS[self.impl].runs_the_work

    @property
    def ids(self) -> list[str]:
        return [task_id for pair in self.pairs for task_id in pair]

    @property
    def notifications(self) -> list[str]:
        return [pair[0] for pair in self.pairs]

    def rule(self) -> Redelivery | None:
        """When a run whose process died is back in the queue (None: nothing brings it)."""
        return declared_redeliveries(self.target.settings).get(self.impl)


def _no_fault(run: _Run) -> None:
    """Nothing is killed; a worker that exits by itself is started again (as a restart
    policy would), and the time counts from the submission."""
    sc, say = run.sc, run.say
    run.t0 = run.t_submit
    say(f"{len(run.ids)} tasks submitted ({len(run.pairs)} notifications); nothing is killed")
    if sc.watch.revive_worker:
        _revive(run)


def _revive(run: _Run) -> None:
    """Wait for the work runner to exit by itself (a crash loop's bound, or a supervisor
    that goes down with one of its processes), then start it again, as a restart policy
    would; the times count from ``run.t0``."""
    target, out, say = run.target, run.out, run.say
    # It exits within the scenario's window on a quiet machine (a respawn per crash).
    window = run.sc.watch.window(run.p) or 3 * target.settings.notification_delay_seconds
    try:
        wait_until(
            lambda: not target.is_up(run.worker), window + LOADED_SLACK, f"{run.worker} to exit",
            0.2,
        )  # fmt: skip
    except Timeout:
        say(f"{run.worker} did not exit")
        return
    out.stopped_after = time.time() - run.t0
    say(f"{run.worker} exited by itself {out.stopped_after:.1f}s in; starting it again")
    target.start(run.worker)
    out.restarted_after = time.time() - run.t0


def _signal(run: _Run) -> None:
    """SIGKILL or SIGTERM one service (or one process of it) once the ledger shows the
    notifications running; start it again unless the scenario says not to."""
    sc, p, target, out, say = run.sc, run.p, run.target, run.out, run.say
    assert sc.fault.service is not None
    delay = target.settings.notification_delay_seconds
    requests = len(run.pairs)
    # Tasks held in process memory all run at once (a thread pool); a worker runs as
    # many as its concurrency, the rest wait in the broker.
    held = IMPLEMENTATIONS[run.impl].delivery == Delivery.in_process
    want = requests if held else min(requests, target.worker_processes)
    before = wait_running(
        target,
        run.since,
        run.ids,
        run.notifications,
        want,
        timeout=15 + 2 * delay,
        not_before=run.submitted + (target.fsync_lag if sc.fault.wait_for_fsync else 0.0),
    )
    states = [r.state for r in before]
    out.running_at_kill = states.count(TaskState.running)
    out.queued_at_kill = states.count(TaskState.queued)
    out.done_at_kill = sum(s in (TaskState.succeeded, TaskState.failed) for s in states)
    out.running_ids_at_kill = [r.task_id for r in before if r.state == TaskState.running]
    service = target.broker_service if sc.fault.service == "broker" else sc.fault.service
    first = next((r.runner for r in before if r.task_id == run.notifications[0]), None)
    victim: str | None = None  # one process, by its runner id (not a whole service)
    if sc.stack.bg_workers > 1 or sc.fault.kill_its_process:
        victim = first
        out.held_by_killed = [
            r.task_id for r in before if r.runner == victim and r.state in IN_FLIGHT
        ]
    if sc.fault.kill_its_worker:
        # The worker that runs the first notification: the others survive it.
        service = (target.service_of(first) if first else None) or service
    verb = "SIGKILL" if sc.fault.action == "kill" else "SIGTERM"
    say(
        f"{len(run.ids)} tasks submitted; ledger: {out.running_at_kill} running, "
        f"{out.queued_at_kill} queued, {out.done_at_kill} done → {verb} {service}"
    )
    run.t0 = time.time()
    if victim is not None and sc.watch.revive_worker:
        target.kill_runner(victim)
        _revive(run)  # its supervisor may go down with it (dramatiq's does)
        if out.restarted_after is not None:
            # One request once it is back, so that it has work to take even if the dead
            # process held every task (those come back by redelivery, later).
            probe = submit(target, run.impl, 1)
            run.pairs += probe
            run.after_kill = [task_id for pair in probe for task_id in pair]
        return
    if victim is not None:
        target.kill_runner(victim)
    elif sc.fault.action == "kill":
        survivor = _local_process(target, first) if sc.fault.and_its_process else None
        target.kill(service)
        if survivor is not None and survivor.is_running():
            # It outlived its service's group kill: a machine's death takes it too.
            survivor.kill()
            say(f"{first} had outlived {service}'s process group: SIGKILLed too")
    else:
        stop_timeout = sc.fault.stop_timeout(p)
        target.terminate(service, timeout=stop_timeout)
        wait_until(
            lambda: not target.is_up(service),
            stop_timeout + 30,
            f"{service} to exit after SIGTERM",
            interval=0.1,
        )
    out.stopped_after = time.time() - run.t0
    if sc.fault.restart:
        say(f"{service} down after {out.stopped_after:.1f}s; starting it again")
        target.start(service)
        out.restarted_after = time.time() - run.t0
    else:
        say(f"{service} down after {out.stopped_after:.1f}s; left down")
    rule = run.rule()
    if rule is not None and not rule.acks_late:
        say(f"settling: nothing brings a running task back ({rule.why_lost})")
    elif rule is not None and rule.broker == "redis":
        say(
            f"settling: redelivery is due {rule.visibility_timeout:g}s after delivery, "
            f"found by a scan every {rule.restore_interval:g}s"
        )
    elif rule is not None:
        say("settling: the broker requeues a dead consumer's unacked messages at once")


def _local_process(target: Target, runner: str | None) -> psutil.Process | None:
    """The local process ``runner`` names, if it is one of this stack's (None in a
    compose stack: the container's death takes every process in it)."""
    if runner is None or not isinstance(target, LocalStack) or target.service_of(runner) is None:
        return None
    try:
        return psutil.Process(int(runner.split(":")[1]))
    except (psutil.NoSuchProcess, ValueError, IndexError):
        return None


def _partition(run: _Run) -> None:
    run.t0 = cut_while_running(run.sc, run.p, run.target, run.since, run.pairs, run.out, run.say)


def _failover(run: _Run) -> None:
    run.t0, accepted, run.after_kill = fail_over(run.sc, run.p, run.target, run.out, run.say)
    run.pairs = [accepted[i : i + 2] for i in range(0, len(accepted), 2)]


# One function per fault action (None: no fault).
FAULTS: dict[str | None, Callable[[_Run], None]] = {
    None: _no_fault,
    "kill": _signal,
    "terminate": _signal,
    "partition": _partition,
    "failover": _failover,
}


def _drive(sc: Scenario, p: Params, target: Target, out: Outcome, say: Say) -> None:
    run = _Run(sc, p, target, out, say)
    # A failover sends steady traffic of its own instead.
    if sc.fault.action != "failover":
        run.pairs = submit(target, run.impl, sc.requests_of(p))
        if sc.stack.bg_workers > 1:
            run.pairs += spread(
                target, run.impl, run.pairs, sc.stack.bg_workers, limit=3 * sc.requests_of(p)
            )
    run.submitted = time.monotonic()
    FAULTS[sc.fault.action](run)
    out.submitted = len(run.ids)
    final = _watch(run)
    _count(run, final)


def _watch(run: _Run) -> Judgement:
    """Until every task settles (bounded), or over the scenario's fixed window."""
    sc, p, target, out = run.sc, run.p, run.target, run.out
    expected = expected_of(run.ids, run.impl)
    window = sc.watch.window(p)
    if window is None:
        # Bounded: what is queued behind the fault still has to run, a round at a time.
        delay = target.settings.notification_delay_seconds
        rounds = -(-len(run.ids) // max(target.worker_processes, 1))
        rule = run.rule()
        horizon = rule.due(0.0, 0.0) + rule.restore_interval if rule and rule.acks_late else 0.0
        cap = time.monotonic() + horizon + rounds * delay * 3 + 60
        # A failover: the workers may still be reconnecting while the verdict, which
        # sees a live, free worker, already calls the queued tasks lost; a longer
        # quiet lets a late reconnect show (``Scenario.quiet``).
        quiet = max(p.margin, sc.watch.quiet)
        final, out.settle = settle(target, run.since, expected, quiet=quiet, cap=cap + quiet)
        return final
    # A fixed window, the scenario's measure (a task that loops for ever never
    # settles): then one reading, whatever it shows.
    out.window = window
    if sc.watch.ends_with is None:
        time.sleep(max(0.0, run.t_submit + window - time.time()))
        final = judge(observe(target, since=run.since, expected=expected))
        out.settle = f"a fixed window of {window:g}s, then one reading"
    else:
        final, out.settle = _until(target, run.since, expected, run.notifications,
                                   sc.watch.ends_with, impl=run.impl, quiet=p.margin,
                                   deadline=run.t_submit + window + LOADED_SLACK)  # fmt: skip
    out.handed_out = received_counts(target, run.impl, run.notifications, run.since)
    out.most_runs = max((len(r.runs) for r in read_records(target, run.notifications,
                                                           run.since)), default=0)  # fmt: skip
    return final


def _count(run: _Run, final: Judgement) -> None:
    """The verdicts' counts, and the times of what happened after the fault."""
    sc, target, out, say, t0 = run.sc, run.target, run.out, run.say, run.t0
    counts = final.of(run.impl)
    out.summary = counts.to_dict()
    out.completed, out.failed, out.lost, out.skipped = (
        counts.completed,
        counts.failed,
        counts.lost,
        counts.skipped,
    )
    out.gave_up, out.abandoned, out.dead_lettered = (
        counts.gave_up,
        counts.abandoned,
        counts.dead_lettered,
    )
    out.lost_ids = sorted(final.ids(Verdict.lost))
    out.lost_notifications = len(set(run.notifications) & set(out.lost_ids))
    out.missing_from_ledger = counts.missing_from_ledger
    out.executed_more_than_once = counts.executed_more_than_once
    out.retried = counts.retried
    out.duplicate_effects, out.extra_effect_lines = counts.duplicate_effects, counts.extra_writes
    out.skipped_writes = counts.skipped_writes
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
        attempt
        for t in final.tasks.values()
        if t.executions > 1 and t.record is not None
        for attempt in t.record.runs[1:]
    ]
    reruns = [attempt.started_at - t0 for attempt in later_runs if attempt.started_at is not None]
    out.rerun_by = sorted(
        {target.service_of(attempt.runner) or "?" for attempt in later_runs if attempt.runner}
    )
    if sc.fault.action == "failover" and run.after_kill:
        # A task accepted after the kill came through the new leader: its first run
        # is the workers consuming again (a task they held from before is not).
        new = set(run.after_kill)
        started = [
            attempt.started_at
            for r in records
            if r.task_id in new
            for attempt in r.runs
            if attempt.started_at is not None
        ]
        out.consumed_again_after = min(started) - t0 if started else None
    if sc.fault.action == "kill" and run.after_kill:
        # The restarted service's first run of anything: what waited in the queue, the
        # request sent once it was back (there is always that one: the dead process may
        # have held every task before), or a redelivered task if that comes first.
        down = t0 + (out.stopped_after or 0.0)
        again = [
            attempt.started_at
            for r in records
            for attempt in r.runs
            if attempt.started_at is not None and attempt.started_at > down
        ]
        out.consumed_again_after = min(again) - t0 if again else None
    if sc.fault.action == "partition" and out.healed_after is not None and sc.fault.service:
        # When the cut worker ran a task again after the heal (its processes' runs).
        healed = t0 + out.healed_after
        again = [
            attempt.started_at
            for r in records
            for attempt in r.runs
            if attempt.started_at is not None
            and attempt.started_at >= healed
            and attempt.runner
            and target.service_of(attempt.runner) == sc.fault.service
        ]
        out.consumed_again_after = min(again) - healed if again else None
    if reruns and sc.fault.action is not None:
        out.redelivered_after = (min(reruns), max(reruns))
    if out.lost == 0 and ends:
        out.last_completed_after = max(ends) - t0
    say(
        f"{out.completed} completed, {out.lost} lost, "
        f"{out.executed_more_than_once} ran more than once, "
        f"{out.skipped_writes} repeat writes skipped, "
        f"{out.duplicate_effects} made ({out.settle})"
    )


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
