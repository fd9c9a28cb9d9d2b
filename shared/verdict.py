"""What became of each task: one rule, one vocabulary, for every implementation.

Everything that counts tasks (the crash experiment, the soak, the lab, the compose
smoke's probe) hands what it observed to ``judge`` and uses nothing else. Pure:
no process, no clock, no Redis; what was seen goes in, verdicts come out.

What goes in (``Observation``): the ledger's records, the processes that run
tasks as their heartbeats show them (alive, since when, gone since when), the
lines each task wrote to ``LOG_FILE``, and the broker's redelivery rules.

What comes out, per task (``Verdict``):

- **completed**: it succeeded (or the ledger forgot it but its effect is written);
- **failed**: it ran and failed for good (BackgroundTasks: the first exception;
  Celery: once the bounded retries are spent, or a time limit ended it);
- **gave up** (Celery): it killed its process on every delivery, and after a bound
  on its deliveries (the project's own on Redis, the broker's delivery limit on
  RabbitMQ's quorum queues) it is not run again: neither lost nor completed;
- **abandoned**: the queue recorded it as failed without finishing it (RQ's failed
  job registry, after its worker died) and nothing runs it again; the reason says
  where it is and how to requeue it by hand;
- **dead-lettered**: the broker parked it after a delivery limit (a dead-letter
  queue); the reason says which, and how to get it back;
- **in flight**: queued, running or retrying, and whatever holds it is alive;
- **awaiting redelivery** (Celery): its worker died mid-run, the message is
  unacknowledged, and the broker will hand it out again;
- **lost**: nothing will ever run or finish it;
- **skipped** (BackgroundTasks): queued behind a task of the same request that
  failed: Starlette runs no more of that request's tasks;
- **forgotten**: handed over long enough ago that the ledger may have expired its
  record (``LEDGER_RETENTION_SECONDS`` after it finished), and its effect is not
  written: its fate is not known any more, and it is not counted as lost;

with how many times it was delivered and started (``executions``: runs that were
not retries) and how many effect lines it wrote (``writes``).

The rule for *lost* follows each implementation's delivery model
(``shared.services``):

- held in process memory (BackgroundTasks): a queued or running task lives
  only in the memory of the API process that accepted it. Once that process is
  gone (no heartbeat for ``stale_after`` seconds, or a clean exit recorded), the
  task is lost at once: nothing else holds it and nothing redelivers it.
- the broker redelivers (Celery): a run whose worker process is gone is
  *awaiting redelivery* until the broker hands the message back
  (``Redelivery.due``): on Redis, kombu restores an unacknowledged message once
  its delivery is older than the visibility timeout, at the next scan of a live
  worker; on RabbitMQ, the moment the dead worker's connection closes. From then
  on, as for a task still queued, it is **lost only when a live worker process
  has been free, with the broker up, for ``slack`` seconds past that moment**
  and the task still has not started again. With stock acknowledgement
  (``acks_late`` off) the message was acknowledged when the run began: a dead
  run is lost at once.

The visibility timeout counts from the message's delivery (the run's start), as
kombu's restore does, not from the death or a restart; and a worker is free when
neither the records (an open run on it) nor its own heartbeat (``busy``) say it
is busy. Deciding when to stop watching belongs to whoever watches (``settle``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, TypedDict

from shared.models import PARKED_FATES, RunnerRecord, TaskRecord, TaskState
from shared.redelivery import Redelivery, declared_redeliveries
from shared.services import Delivery, Implementation, delivery_of
from shared.settings import Settings, explicit_settings


class Verdict(StrEnum):
    completed = "completed"
    failed = "failed"
    gave_up = "gave up"
    abandoned = "abandoned"
    dead_lettered = "dead-lettered"
    in_flight = "in flight"
    awaiting_redelivery = "awaiting redelivery"
    lost = "lost"
    skipped = "skipped"
    forgotten = "forgotten"


# Nothing will change these any more (barring a task the ledger forgot coming back).
FINAL = frozenset(
    {
        Verdict.completed,
        Verdict.failed,
        Verdict.gave_up,
        Verdict.abandoned,
        Verdict.dead_lettered,
        Verdict.lost,
        Verdict.skipped,
        Verdict.forgotten,
    }
)


class Rules(TypedDict):
    """What ``judge`` must know of a stack besides what it saw (``Observation``'s fields)."""

    redelivery: Redelivery
    redeliveries: dict[Implementation, Redelivery]
    stale_after: float
    slack: float
    forget_after: float | None


def rules(settings: Settings) -> Rules:
    """The rules a stack running with ``settings`` has: when the broker hands a
    message back, when a silent process is gone (three missed heartbeats), and how
    long a free worker may take to pick up a due task (a few heartbeats and scans)."""
    beat = settings.runner_heartbeat_seconds
    return Rules(
        redelivery=Redelivery.of(settings),
        redeliveries=declared_redeliveries(settings),
        stale_after=3 * beat,
        slack=max(3.0, 3 * beat, 2 * settings.celery_restore_interval),
        forget_after=settings.retention.forgets_after,
    )


@dataclass(frozen=True)
class Observation:
    now: float
    records: Sequence[TaskRecord]
    runners: Sequence[RunnerRecord] = ()
    # The tasks the observer handed over and their implementation: one the ledger does not
    # hold at all was forgotten (Redis restarted without persistence).
    expected: Mapping[str, Implementation] | None = None
    # Lines per task id in LOG_FILE, the work's only effect (None: not looked at).
    effects: Mapping[str, int] | None = None
    # Per task id, runs that found their effect already written and skipped it.
    skipped_writes: Mapping[str, int] | None = None
    redelivery: Redelivery = field(default_factory=lambda: Redelivery.of(explicit_settings()))
    # An implementation's own rule, where it has one (else ``redelivery``).
    redeliveries: Mapping[Implementation, Redelivery] = field(default_factory=dict)
    # Since when the Celery broker has been up (-inf: all along; None: down now).
    broker_up_since: float | None = -math.inf
    # A process not seen for this long is gone (three missed heartbeats).
    stale_after: float = 3.0
    # How long a free worker may take to pick up a task that is due.
    slack: float = 3.0
    # The soonest the ledger may expire a task's record, counted from its hand-over
    # (None: it keeps every record); and when the expected tasks were handed over, at
    # the earliest (None: not known).
    forget_after: float | None = None
    expected_since: float | None = None


@dataclass(frozen=True)
class TaskVerdict:
    task_id: str
    implementation: Implementation
    kind: str
    verdict: Verdict
    why: str
    # Deliveries that started a run (retries not counted): 2 means it ran twice.
    executions: int
    retries: int
    # Effect lines it wrote; None when the effects were not looked at.
    writes: int | None
    skipped_writes: int = 0
    record: TaskRecord | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Summary:
    implementation: Implementation
    accepted: int = 0
    completed: int = 0
    failed: int = 0
    gave_up: int = 0
    abandoned: int = 0
    dead_lettered: int = 0
    in_flight: int = 0
    awaiting_redelivery: int = 0
    lost: int = 0
    skipped: int = 0
    forgotten: int = 0
    # Tasks delivered and started more than once (a redelivery, or a visibility
    # timeout shorter than the task), and tasks retried after a transient error.
    executed_more_than_once: int = 0
    retried: int = 0
    # Tasks with more than one effect line, and the lines beyond the first (None:
    # effects not looked at). Idempotency keeps both at 0 however often a task ran.
    duplicate_effects: int | None = None
    extra_writes: int | None = None
    # Runs that found their effect already written (the idempotency check at work).
    skipped_writes: int = 0
    # Handed over, then gone from the ledger itself.
    missing_from_ledger: int = 0

    @property
    def settled(self) -> bool:
        """Nothing left that may still change."""
        return self.in_flight == 0 and self.awaiting_redelivery == 0

    @property
    def balanced(self) -> bool:
        """Every accepted task has exactly one verdict."""
        return self.accepted == (
            self.completed
            + self.failed
            + self.gave_up
            + self.abandoned
            + self.dead_lettered
            + self.in_flight
            + self.awaiting_redelivery
            + self.lost
            + self.skipped
            + self.forgotten
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "settled": self.settled, "balanced": self.balanced}


@dataclass(frozen=True)
class Judgement:
    tasks: dict[str, TaskVerdict]
    summaries: dict[Implementation, Summary]

    def ids(self, *verdicts: Verdict, implementation: Implementation | None = None) -> list[str]:
        return [
            t.task_id
            for t in self.tasks.values()
            if t.verdict in verdicts and implementation in (None, t.implementation)
        ]

    def of(self, implementation: Implementation | str) -> Summary:
        """One implementation's counts (all zero if it had no task)."""
        impl = Implementation(implementation)
        return self.summaries.get(impl, Summary(impl))

    @property
    def settled(self) -> bool:
        return all(s.settled for s in self.summaries.values())


# --- the rule ---------------------------------------------------------------------------


class _Processes:
    """Which runners are alive, and since when each worker process has been free."""

    def __init__(self, obs: Observation) -> None:
        self.obs = obs
        self.by_id = {r.runner: r for r in obs.runners}

    def alive(self, runner: str | None, last_heard: float | None) -> bool:
        if runner is None:
            return False
        r = self.by_id.get(runner)
        if r is None:
            # Never heard of: give it the benefit of the doubt for one stale period
            # after the record last changed (it beats as soon as it starts).
            return last_heard is not None and self.obs.now - last_heard <= self.obs.stale_after
        return r.stopped_at is None and self.obs.now - r.seen_at <= self.obs.stale_after

    def died_at(self, runner: str | None, fallback: float) -> float:
        r = self.by_id.get(runner or "")
        if r is None:
            return fallback
        return r.stopped_at if r.stopped_at is not None else r.seen_at

    def deaths_since(self, impl: Implementation, t: float) -> list[float]:
        """When the worker processes of ``impl`` that may have been alive at ``t`` died.

        A process is last seen up to one heartbeat before it dies: one seen
        within ``stale_after`` before ``t`` may still have been alive at ``t``."""
        return [
            d
            for r in self.obs.runners
            if r.implementation == impl
            and not self.alive(r.runner, None)
            and (d := self.died_at(r.runner, r.seen_at)) >= t - self.obs.stale_after
        ]

    def free_workers(
        self, impl: Implementation, records: Iterable[TaskRecord]
    ) -> list[tuple[float, float]]:
        """Each live worker process of ``impl`` that has nothing to run: since when, and
        when it was last seen. Busy: an open run on it in the records, or its heartbeat
        says so (a run it started that these records do not show)."""
        live = [
            r for r in self.obs.runners if r.implementation == impl and self.alive(r.runner, None)
        ]
        busy: set[str] = set()
        last_end: dict[str, float] = {}
        for record in records:
            for run in record.runs:
                if run.runner is None:
                    continue
                if run.ended_at is None and record.state == TaskState.running:
                    busy.add(run.runner)
                elif run.ended_at is not None:
                    last_end[run.runner] = max(last_end.get(run.runner, 0.0), run.ended_at)
        return [
            (max(r.started_at, last_end.get(r.runner, 0.0), r.free_since or 0.0), r.seen_at)
            for r in live
            if r.runner not in busy and not r.busy
        ]


def judge(obs: Observation) -> Judgement:
    """Every task's verdict, and each implementation's summary."""
    procs = _Processes(obs)
    by_id = {r.task_id: r for r in obs.records}
    free: dict[Implementation, list[tuple[float, float]]] = {}
    verdicts: dict[str, TaskVerdict] = {}

    def waited_too_long(impl: Implementation, ready_at: float) -> bool:
        """A free worker and a live broker have had ``slack`` seconds to start it: a
        worker seen that long after it was free and the task due. Not merely "alive"
        now: a killed worker's idle process counts as alive for a heartbeat or two
        after its last beat, and had no time to take the task it died with."""
        if impl not in free:
            free[impl] = procs.free_workers(
                impl, (r for r in obs.records if r.implementation == impl)
            )
        if obs.broker_up_since is None:
            return False
        up = obs.broker_up_since
        return any(seen - max(ready_at, since, up) > obs.slack for since, seen in free[impl])

    def decide(record: TaskRecord) -> tuple[Verdict, str]:
        if record.state == TaskState.succeeded:
            return Verdict.completed, ""
        if record.state == TaskState.failed:
            if record.detail.get("gave_up"):
                return Verdict.gave_up, record.detail["gave_up"]
            if (fate := record.detail.get("fate")) in PARKED_FATES:
                return Verdict(fate), record.detail.get("parked", "")
            return Verdict.failed, record.error or ""
        recorded_success = any(run.outcome == "succeeded" for run in record.runs)
        if obs.effects and obs.effects.get(record.task_id, 0) > 0 and not recorded_success:
            # The effect is the task's last step: it ran to the end though the ledger
            # never heard so (Redis was down when the run finished, say). (A success
            # on record with the state still in flight is another case: a duplicate
            # run still going, judged below.)
            return Verdict.completed, "its effect is written; the ledger missed the end"
        heard = record.updated_at or record.queued_at
        impl = record.implementation
        if delivery_of(impl) == Delivery.in_process:
            before = verdicts.get(record.after or "")
            failed_before = before is not None and before.verdict in (
                Verdict.failed,
                Verdict.skipped,
            )
            if record.state == TaskState.queued and failed_before:
                return Verdict.skipped, "the task before it in the same request failed"
            if procs.alive(record.runner, heard):
                return Verdict.in_flight, f"held by {record.runner}"
            return Verdict.lost, f"its process {record.runner} is gone, and the task with it"
        # The broker redelivers.
        redelivery = obs.redeliveries.get(impl, obs.redelivery)
        open_runs = [run for run in record.runs if run.ended_at is None]
        if any(procs.alive(run.runner, heard) for run in open_runs):
            return Verdict.in_flight, f"running on {record.runner}"
        if record.state == TaskState.running:
            run = open_runs[-1] if open_runs else None
            started = (run.started_at if run else None) or record.started_at or obs.now
            died = procs.died_at(run.runner if run else record.runner, started)
            if not redelivery.acks_late:
                return Verdict.lost, redelivery.why_lost
            due = redelivery.due(started, died)
            if waited_too_long(impl, due):
                return Verdict.lost, "its worker died and no worker took it again"
            return Verdict.awaiting_redelivery, redelivery.pending
        if record.state == TaskState.retrying:
            retry_in = float(record.detail.get("retry_in", "0") or 0)
            ready = (record.updated_at or obs.now) + retry_in
            # The retry's message is held unacknowledged by a worker until its ETA;
            # if that worker died, it comes back when the broker hands it back (Redis:
            # after the visibility timeout; RabbitMQ: at once, so the ETA decides).
            if redelivery.holds_retries:
                ready = max(ready, redelivery.due(record.updated_at or obs.now, 0.0))
            if waited_too_long(impl, ready):
                return Verdict.lost, "its retry never started"
            return Verdict.in_flight, f"retrying in {retry_in:.1f}s"
        ready = record.queued_at or obs.now
        # A worker that died after the task was queued may have held it unacknowledged
        # (prefetched, not started): it comes back when the broker redelivers it.
        deaths = procs.deaths_since(impl, ready)
        if deaths:
            ready = max(ready, redelivery.due(max(deaths), max(deaths)))
        # So may one whose connection the broker's restart cut (its process lives on):
        # the message waits unacknowledged, as it would for a dead worker.
        up = obs.broker_up_since
        if up is not None and math.isfinite(up) and up > ready:
            ready = max(ready, redelivery.due(up, up))
        if waited_too_long(impl, ready):
            return Verdict.lost, "a worker was free and it never started"
        return Verdict.in_flight, "waiting in the broker"

    def verdict_for(record: TaskRecord) -> TaskVerdict:
        done = verdicts.get(record.task_id)
        if done is not None:
            return done
        before = by_id.get(record.after or "")
        if before is not None and before.task_id != record.task_id:
            # Its predecessor in the request first: a skip follows from that one's fate.
            verdict_for(before)
        verdict, why = decide(record)
        verdicts[record.task_id] = TaskVerdict(
            task_id=record.task_id,
            implementation=record.implementation,
            kind=record.kind,
            verdict=verdict,
            why=why,
            executions=max(record.attempts - record.retries, 0),
            retries=record.retries,
            writes=obs.effects.get(record.task_id, 0) if obs.effects is not None else None,
            skipped_writes=(obs.skipped_writes or {}).get(record.task_id, 0),
            record=record,
        )
        return verdicts[record.task_id]

    for record in obs.records:
        verdict_for(record)
    if obs.expected is not None:
        # Judged for their successors' sake only: not part of what was asked.
        verdicts = {k: v for k, v in verdicts.items() if k in obs.expected}
    missing = set()
    # A record the ledger expired is not a lost task: one gone before its retention
    # could have run out is (Redis restarted without its data, say).
    may_be_expired = obs.forget_after is not None and (
        obs.expected_since is None or obs.now - obs.expected_since >= obs.forget_after
    )
    for task_id, impl in (obs.expected or {}).items():
        if task_id in by_id:
            continue
        missing.add(task_id)
        writes = obs.effects.get(task_id, 0) if obs.effects is not None else None
        verdict, why = Verdict.lost, "gone from the ledger, and its effect never written"
        if writes:
            verdict, why = Verdict.completed, "gone from the ledger, its effect written"
        elif may_be_expired:
            verdict, why = Verdict.forgotten, "gone from the ledger past its retention"
        verdicts[task_id] = TaskVerdict(
            task_id=task_id,
            implementation=Implementation(impl),
            kind="?",
            verdict=verdict,
            why=why,
            executions=1 if writes else 0,
            retries=0,
            writes=writes,
            skipped_writes=(obs.skipped_writes or {}).get(task_id, 0),
        )
    return Judgement(verdicts, summarize(verdicts.values(), missing=missing, effects=obs.effects))


def summarize(
    verdicts: Iterable[TaskVerdict],
    *,
    missing: Collection[str] = (),
    effects: Mapping[str, int] | None = None,
) -> dict[Implementation, Summary]:
    counts: dict[Implementation, dict[str, int]] = {}
    for t in verdicts:
        c = counts.setdefault(t.implementation, {})

        def add(name: str, n: int = 1, c: dict[str, int] = c) -> None:
            c[name] = c.get(name, 0) + n

        add("accepted")
        add(t.verdict.name)
        add("executed_more_than_once", int(t.executions > 1))
        add("retried", int(t.retries > 0))
        add("skipped_writes", t.skipped_writes)
        add("missing_from_ledger", int(t.task_id in missing))
        if t.writes is not None:
            add("duplicate_effects", int(t.writes > 1))
            add("extra_writes", max(t.writes - 1, 0))
    summaries = {}
    for impl, c in counts.items():
        known = effects is not None
        summaries[impl] = Summary(
            implementation=impl,
            accepted=c.get("accepted", 0),
            completed=c.get("completed", 0),
            failed=c.get("failed", 0),
            gave_up=c.get("gave_up", 0),
            abandoned=c.get("abandoned", 0),
            dead_lettered=c.get("dead_lettered", 0),
            in_flight=c.get("in_flight", 0),
            awaiting_redelivery=c.get("awaiting_redelivery", 0),
            lost=c.get("lost", 0),
            skipped=c.get("skipped", 0),
            forgotten=c.get("forgotten", 0),
            executed_more_than_once=c.get("executed_more_than_once", 0),
            retried=c.get("retried", 0),
            duplicate_effects=c.get("duplicate_effects", 0) if known else None,
            extra_writes=c.get("extra_writes", 0) if known else None,
            skipped_writes=c.get("skipped_writes", 0),
            missing_from_ledger=c.get("missing_from_ledger", 0),
        )
    return summaries
