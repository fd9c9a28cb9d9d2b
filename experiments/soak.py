"""``python -m experiments soak``: continuous traffic to every implementation while
faults come every few seconds; at the end, one accounting per implementation from
the verdict.

Which implementations: ``--implementations`` (default: every declared one). What
each fault hits comes from their declaration (``shared.services``): each one's
API, what runs its work (``runs_the_work``) and how its tasks are delivered
(``delivery``); nothing here names an implementation.

Traffic: ``--rate`` notification requests per second to each implementation's API,
for ``--duration`` seconds, or until the last fault is back (each request schedules
two tasks: the notification, then its log line). Faults, one at every multiple of
``--fault-every`` seconds inside the duration (late, never dropped, when a restart
takes longer; each is bounded), in turn (``faults_for``), each hitting every
implementation at the same moment: SIGKILL and restart of every API; of what runs
every implementation's work (one copy in turn where the stack runs several); of the
broker (Redis with its append-only file on; or RabbitMQ, and then Redis, the ledger,
too); and a partition: the work runner of every implementation whose broker
redelivers, cut off its broker (and, on Redis, its ledger: the same server) for
``--cut`` seconds, its connections left open, then healed (``harness.proxy``). Each
fault records the tasks in flight at that moment, and those held by the processes
it hit.

At the end the traffic stops, every service is up again, and the stack is watched
until every accepted task has a final verdict (``shared.verdict``); then, per
implementation: accepted, completed, lost (held by a process of its when that
process was killed, never started, otherwise), executed more than once, effects
written more than once, and the faults that hit it.

Local only: a compose stack would need one worker container killed at a time,
and a proxy to freeze.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from experiments.common import add_implementations_argument, add_target_arguments, say, where_from
from experiments.reporting.report import publish
from experiments.reporting.soak import API, BROKER, LEDGER, PARTITION, WORK, render
from experiments.soak_plan import (
    Role,
    copies,
    faults_for,
    hits,
    partitioned,
    plan_for,
    planned_faults,
    stack_services,
    worker_concurrency,
)
from experiments.traffic import Traffic
from harness.observe import expected_of, observe, settle
from harness.procs import Timeout
from harness.stacks import StackSpec, open_stack
from harness.target import Target, Unsupported
from shared.models import Implementation
from shared.redelivery import declared_redeliveries
from shared.services import IMPLEMENTATIONS, horizon_settings, service
from shared.verdict import Judgement, Verdict, judge

NAME = "soak"
KILL = "kill"
TARGETS = {"faults": 20, "accepted": 2000}
# Copies of a work runner, where the stack can run several: a kill takes one at a
# time, and the other goes on taking tasks.
WORKERS = 2
# Settle: how long the ledger must stay still, and the bound on the whole watch.
QUIET_S, SETTLE_CAP_S = 5.0, 240.0


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "the implementations to soak")
    parser.add_argument("--duration", type=positive, default=180, help="seconds of traffic (180)")
    parser.add_argument(
        "--fault-every", type=positive, default=6, help="seconds between faults (6)"
    )
    parser.add_argument(
        "--rate", type=float, default=6, help="requests per second to each implementation (6)"
    )
    parser.add_argument("--delay", type=float, default=0.5, help="NOTIFICATION_DELAY_SECONDS")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument(
        "--cut",
        type=float,
        default=None,
        help="seconds a partition lasts (default: past every redelivery horizon and a "
        "scan, so that another worker takes what the cut one held)",
    )
    parser.add_argument("--quick", action="store_true", help="30 s, a fault every 5 s")


# --- the run -----------------------------------------------------------------------------


class Rotation:
    """Which services each fault kind hits next: copies of a work runner in turn."""

    def __init__(self, plan: Mapping[Implementation, Role], target: Target) -> None:
        self.plan = plan
        self.target = target
        running = target.services
        self.work: dict[Implementation, Iterator[str]] = {
            impl: itertools.cycle(copies(r.work, running) or [r.work]) for impl, r in plan.items()
        }

    def services(self, kind: str) -> list[str]:
        if kind == API:
            found = [r.api for r in self.plan.values()]
        elif kind == WORK:
            found = [next(self.work[impl]) for impl in self.plan]
        elif kind == BROKER:
            found = [self.target.broker_service]
        elif kind == LEDGER:
            found = [LEDGER]
        elif kind == PARTITION:
            found = list(partitioned(self.plan))
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return list(dict.fromkeys(found))


def check_horizons(target: Target, plan: Mapping[Implementation, Role], horizon: float) -> float:
    """When the last broker implementation hands a dead worker's task back, counted
    from its delivery (its declared rule, with the stack's settings); Unsupported if
    any one comes back later than ``horizon`` (a setting the soak does not set)."""
    rules = declared_redeliveries(target.settings)
    latest = 0.0
    for impl, role in plan.items():
        rule = rules.get(impl)
        if not role.cut or rule is None or not rule.acks_late:
            continue
        due = rule.due(0.0, 0.0)
        if not due <= horizon:
            raise Unsupported(
                f"{role.title} hands a dead worker's task back {due:g} s after its delivery "
                f"with these settings, past the soak's {horizon:g} s: "
                "its declared horizon (ImplementationSpec.horizon) must set its timeout"
            )
        latest = max(latest, due)
    return latest


def expected(traffic: Mapping[Implementation, Traffic]) -> dict[str, Implementation]:
    out: dict[str, Implementation] = {}
    for impl, tr in traffic.items():
        out |= expected_of(list(tr.accepted), impl)  # a copy: its thread may still append
    return out


def look(
    target: Target, since: float, traffic: Mapping[Implementation, Traffic], services: list[str]
) -> tuple[Judgement, set[str]] | None:
    """What is in flight now, and the live processes (runners) of ``services``; None
    while the ledger does not answer (the fault before took it down)."""
    try:
        now = judge(
            observe(
                target, since=since, expected=expected(traffic), effects=False,
                skipped_writes=False,
            )
        )  # fmt: skip
        runners = {
            r.runner
            for r in target.ledger().runners()
            if r.stopped_at is None and target.service_of(r.runner) in services
        }
    except (RuntimeError, OSError):
        return None
    return now, runners


@dataclass
class Fault:
    at: float
    kind: str
    services: list[str]
    # Per implementation: its tasks in flight at that moment, and those of them held
    # by a process of the services hit (in its memory, or running there).
    in_flight: dict[str, int]
    held: dict[str, int]
    down_s: float = 0.0
    up_at: float = 0.0
    # Not reported: the processes killed, and the tasks they held.
    runners: frozenset[str] = frozenset()
    held_ids: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["runners"], out["held_ids"]
        return out


def inject(
    target: Target,
    kind: str,
    services: list[str],
    since: float,
    traffic: Mapping[Implementation, Traffic],
    cut: float,
) -> Fault:
    """One fault: SIGKILL every one of ``services``, then start each again; or (a
    partition) cut each off its broker for ``cut`` seconds, then heal them. With what
    was in flight at that moment."""
    seen = look(target, since, traffic, services)
    fault = Fault(time.time(), kind, services, {}, {})
    if seen is not None:
        now, runners = seen
        held: set[str] = set()
        for impl in traffic:
            going = now.ids(Verdict.in_flight, Verdict.awaiting_redelivery, implementation=impl)
            mine = {
                t for t in going if (r := now.tasks[t].record) is not None and r.runner in runners
            }
            fault.in_flight[impl.value] = len(going)
            fault.held[impl.value] = len(mine)
            held |= mine
        fault.held_ids = frozenset(held)
        if kind != PARTITION:
            fault.runners = frozenset(runners)
    t = time.monotonic()
    if kind == PARTITION:
        for s in services:
            target.cut(s)
        try:
            time.sleep(cut)  # the partition's length is the fault
        finally:
            for s in services:
                target.heal(s)
    else:
        for s in services:
            target.kill(s)
        # Started side by side: each implementation is down about as long as the others,
        # not for the restarts of the ones before it as well.
        with ThreadPoolExecutor(max_workers=len(services)) as pool:
            for done in [pool.submit(target.start, s, 90) for s in services]:
                done.result()
    fault.down_s = time.monotonic() - t
    fault.up_at = time.time()
    return fault


@dataclass
class SoakResult:
    config: dict[str, Any]
    implementations: dict[str, dict[str, Any]]
    faults: list[dict[str, Any]]
    settle: str
    target: str
    targets: list[dict[str, Any]]


def soak(args: argparse.Namespace) -> SoakResult:
    duration = 30.0 if args.quick else args.duration
    every = 5.0 if args.quick else args.fault_every
    where = where_from(args)
    if where.kind != "local":
        raise Unsupported("soak kills one of two worker containers at a time: local target only")
    plan = plan_for(args.implementations)
    visibility, scan = max(5.0, 4 * args.delay), 0.5
    concurrency = worker_concurrency(args.rate, args.delay)
    spec = StackSpec(
        stack_services(args.implementations),
        settings={
            "notification_delay_seconds": args.delay,
            **horizon_settings(visibility, scan),
        },
        appendonly=True,
        workers=WORKERS,
        worker_concurrency=concurrency,
        broker=args.broker,
        partitioned=partitioned(plan),
    )
    with open_stack(where, spec, label="soak") as target:
        # Past the horizon, then a scan (on RabbitMQ the cut may end before its
        # heartbeat notices; the cut worker's tasks then wait for it).
        due = check_horizons(target, plan, visibility + scan)
        cut_s = args.cut if args.cut is not None else max(due, visibility) + scan + 1
        rotation = Rotation(plan, target)
        since = time.time() - 1
        traffic = {impl: Traffic(impl, target.url(impl), args.rate) for impl in plan}
        threads = [t.start() for t in traffic.values()]
        faults: list[Fault] = []
        cycle = itertools.cycle(faults_for(args.broker))
        started = time.monotonic()
        say(
            f"soak: {duration:g} s of traffic ({args.rate:g} requests/s to each of "
            f"{', '.join(r.title for r in plan.values())}), a fault every {every:g} s, "
            f"on {args.broker}"
        )
        planned = planned_faults(duration, every)
        while len(faults) < planned:
            time.sleep(max(0.0, started + (len(faults) + 1) * every - time.monotonic()))
            kind = next(cycle)
            while not (services := rotation.services(kind)):
                kind = next(cycle)  # nothing of the selected ones to cut: the next kind
            fault = inject(target, kind, services, since, traffic, cut_s)
            faults.append(fault)
            names = ", ".join(services)
            what = f"{names} cut off for {cut_s:g}s" if kind == PARTITION else f"SIGKILL {names}"
            going = ", ".join(f"{impl} {n}" for impl, n in fault.in_flight.items())
            say(
                f"  [{time.monotonic() - started:5.0f}s] fault {len(faults)}: {what}; "
                f"in flight: {going or 'not known (the ledger was down)'}; "
                f"back after {fault.down_s:.1f}s"
            )
        time.sleep(max(0.0, started + duration - time.monotonic()))
        for tr in traffic.values():
            tr.stop.set()
        traffic_s = time.monotonic() - started
        for thread in threads:
            thread.join(10)
        for s in target.services:
            if not target.is_up(s):
                target.start(s, timeout=90)
        counts = ", ".join(f"{len(tr.accepted)} {plan[i].title}" for i, tr in traffic.items())
        say(f"soak: traffic stopped; accepted {counts} tasks; settling")
        # Since when the servers have been up: a worker held unacknowledged messages
        # when one went, and gets them back only as the broker redelivers them.
        servers_up = max(
            (f.up_at for f in faults if any(not service(s).python for s in f.services)),
            default=float("-inf"),
        )
        final, why = settle(
            target,
            since,
            expected(traffic),
            quiet=QUIET_S,
            cap=time.monotonic() + SETTLE_CAP_S,
            interval=1.0,
            broker_up_since=servers_up,
        )
        target_name = target.name
    implementations = {
        impl.value: account(final, impl, faults, traffic[impl].refused) for impl in plan
    }
    return SoakResult(
        config={
            "duration_s": duration,
            "traffic_s": round(traffic_s, 1),
            "fault_every_s": every,
            "rate_per_implementation": args.rate,
            "delay": args.delay,
            "broker": args.broker,
            "workers": WORKERS,
            "worker_concurrency": concurrency,
            "redelivery_horizon_s": visibility,
            "plan": {impl.value: role.to_dict() for impl, role in plan.items()},
            "fault_cycle": faults_for(args.broker),
            "cut_s": cut_s,
        },
        implementations=implementations,
        faults=[f.to_dict() for f in faults],
        settle=why,
        target=target_name,
        targets=targets_of(plan, implementations, len(faults)),
    )


def account(
    final: Judgement, impl: Implementation, faults: Sequence[Fault], refused: int
) -> dict[str, Any]:
    """One implementation's accounting, and the faults that hit it."""
    summary = final.of(impl).to_dict()
    mine = [f for f in faults if hits(impl, f.services)]
    killed = {r for f in faults for r in f.runners}
    lost = set(final.ids(Verdict.lost, implementation=impl))
    records = {t: final.tasks[t].record for t in lost}
    # Lost with a process that held it (its owner, or the run's) among those killed;
    # lost before any run began (handed to no worker that recorded a run: a broker
    # that hands a message over before it holds it unacknowledged loses it to a kill
    # in between); lost otherwise.
    held = {t for t, r in records.items() if r is not None and r.runner in killed}
    never = {t for t, r in records.items() if t not in held and r is not None and r.attempts == 0}
    return {
        "accepted": summary["accepted"],
        "completed": summary["completed"],
        "lost": summary["lost"],
        "failed": summary["failed"],
        "skipped": summary["skipped"],
        "in_flight_at_the_end": summary["in_flight"] + summary["awaiting_redelivery"],
        "executed_more_than_once": summary["executed_more_than_once"],
        "duplicate_effects": summary["duplicate_effects"] or 0,
        "extra_writes": summary["extra_writes"] or 0,
        "skipped_writes": summary["skipped_writes"],
        "missing_from_ledger": summary["missing_from_ledger"],
        "refused_requests": refused,
        "balanced": summary["balanced"],
        "lost_held_by_a_killed_process": len(held),
        "lost_never_started": len(never),
        "lost_otherwise": len(lost - held - never),
        "in_flight_just_before_its_kills": len(
            {t for f in mine if f.kind != PARTITION for t in f.held_ids}
            & set(final.ids(*Verdict, implementation=impl))
        ),
        "kills": sum(1 for f in mine if f.kind != PARTITION),
        "faults": [f.to_dict() for f in mine],
    }


def targets_of(
    plan: Mapping[Implementation, Role], implementations: Mapping[str, Mapping[str, Any]], n: int
) -> list[dict[str, Any]]:
    """The run's size; and, for every implementation whose broker redelivers, nothing
    lost and nothing written twice."""
    accepted = sum(s["accepted"] for s in implementations.values())
    out: list[dict[str, Any]] = [
        {
            "target": f"at least {TARGETS['faults']} faults and "
            f"{TARGETS['accepted']:,} accepted tasks",
            "measured": f"{n} faults, {accepted:,} tasks",
            "met": n >= TARGETS["faults"] and accepted >= TARGETS["accepted"],
        }
    ]
    for impl, role in plan.items():
        if not role.cut:
            continue
        s = implementations[impl.value]
        out += [
            {"target": f"{role.title} lost = 0", "measured": s["lost"], "met": s["lost"] == 0},
            {
                "target": f"{role.title} duplicate effects = 0",
                "measured": s["duplicate_effects"],
                "met": s["duplicate_effects"] == 0,
            },
        ]
    return out


def run(args: argparse.Namespace) -> int:
    try:
        result = soak(args)
    except (Unsupported, Timeout) as exc:
        say(f"soak: {exc}")
        return 2 if isinstance(exc, Unsupported) else 1
    data = asdict(result)
    publish(NAME, data, render(data), directory=args.reports_dir)
    return 0 if all(s["balanced"] for s in data["implementations"].values()) else 1
