"""``python -m experiments soak``: continuous traffic to both sides while faults
come every few seconds; at the end, one accounting per side from the verdict.

Traffic: ``--rate`` notification requests per second to each API, for ``--duration``
seconds, or until the last fault is back (each request schedules two tasks: the
notification, then its log line). Faults, one at every multiple of ``--fault-every``
seconds inside the duration (late, never dropped, when a restart takes longer; each
is bounded), in turn: SIGKILL and restart of bg-api, of one of the Celery workers
(two run), of celery-api, and of the broker (Redis with its append-only file on; or
RabbitMQ, and then Redis, the ledger, too), and a partition: one of the workers, in
turn, cut off its broker (and, on Redis, its ledger: the same server) for ``--cut``
seconds, its connections left open, then healed (``harness.proxy``). Each fault
records the tasks in flight at that moment.

At the end the traffic stops, every service is up again, and the stack is
watched until every accepted task has a final verdict (``shared.verdict``); then,
per side: accepted, completed, lost, executed more than once, effects written more
than once, and the faults. BackgroundTasks loses what its process held at each of
its kills; the report sets that against the loss it counts.

Local only: a compose stack would need one worker container killed at a time,
and a proxy to freeze.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import httpx

from experiments.common import add_target_arguments, say, where_from
from experiments.reporting.report import publish
from experiments.reporting.tables import markdown_table
from experiments.traffic import Traffic
from harness.observe import expected_of, observe, settle
from harness.procs import Timeout
from harness.stacks import StackSpec, open_stack
from harness.target import Target, Unsupported
from shared.models import Implementation
from shared.services import DEFAULT_IMPLEMENTATIONS, IMPLEMENTATIONS
from shared.verdict import Judgement, Verdict, judge

NAME = "soak"
PARTITION = "partition"  # the fault that cuts a worker off its broker, not a service
TARGETS = {"faults": 20, "accepted": 2000}


def positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: must be more than 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_target_arguments(parser)
    parser.add_argument("--duration", type=positive, default=180, help="seconds of traffic (180)")
    parser.add_argument(
        "--fault-every", type=positive, default=6, help="seconds between faults (6)"
    )
    parser.add_argument("--rate", type=float, default=6, help="requests per second to each API (6)")
    parser.add_argument("--delay", type=float, default=0.5, help="NOTIFICATION_DELAY_SECONDS")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument(
        "--cut",
        type=float,
        default=None,
        help="seconds a partition lasts (default: past the soak's visibility timeout and "
        "a scan, so that the other worker takes what the cut one held)",
    )
    parser.add_argument("--quick", action="store_true", help="30 s, a fault every 5 s")


def faults_for(broker: str) -> list[str]:
    """What the faults hit, in turn: each side's API and what runs its work (the
    table's), then the broker; on RabbitMQ, Redis too (the ledger's store); then a
    worker's way to its broker (a partition)."""
    cycle = list(
        dict.fromkeys(
            s
            for side in (IMPLEMENTATIONS[impl] for impl in DEFAULT_IMPLEMENTATIONS)
            for s in (side.api, side.runs_the_work)
        )
    )
    cycle.append("broker")
    if broker != "redis":
        cycle.append("redis")
    cycle.append(PARTITION)
    return cycle


def planned_faults(duration: float, every: float) -> int:
    """One fault at every multiple of ``every`` strictly inside the traffic. Each comes
    at its time or, on a loaded machine, as soon as the one before is back, so the
    count does not depend on how fast services restart; the traffic runs on until the
    last fault is back, and its real length is reported."""
    return max(0, math.ceil(duration / every) - 1)


def expected(traffic: dict[str, Traffic]) -> dict[str, Implementation]:
    out: dict[str, Implementation] = {}
    for side, tr in traffic.items():
        out |= expected_of(list(tr.accepted), side)  # a copy: its thread may still append
    return out


def in_flight_now(target: Target, since: float, traffic: dict[str, Traffic]) -> Judgement | None:
    try:
        return judge(
            observe(
                target, since=since, expected=expected(traffic), effects=False,
                skipped_writes=False,
            )
        )  # fmt: skip
    except (RuntimeError, OSError):  # the ledger is down (the fault before)
        return None


def inject(
    target: Target,
    service: str,
    since: float,
    traffic: dict[str, Traffic],
    cut: float | None = None,
) -> dict[str, Any]:
    """One fault: SIGKILL, then start again (or, with ``cut``, a partition of that
    long, then healed); with what was in flight at that moment."""
    now = in_flight_now(target, since, traffic)
    fault: dict[str, Any] = {
        "at": time.time(),
        "service": service,
        "kind": "kill" if cut is None else PARTITION,
        "in_flight": {},
    }
    held: list[str] = []
    if now is not None:
        for side in ("bg", "celery"):
            going = now.ids(
                Verdict.in_flight, Verdict.awaiting_redelivery, implementation=Implementation(side)
            )
            fault["in_flight"][side] = len(going)
            if side == "bg" and service == "bg-api":
                held = going  # one bg-api process: everything in flight is in its memory
    fault["held_by_killed"] = len(held)
    fault["held_ids"] = held
    if service == "bg-api":
        # The process about to die: every bg task it still holds at the kill is lost.
        try:
            fault["runner"] = httpx.get(target.url("bg") + "/health", timeout=2).json()["runner"]
        except (httpx.HTTPError, ValueError, KeyError):
            fault["runner"] = None
    t = time.monotonic()
    if cut is not None:
        target.cut(service)
        try:
            time.sleep(cut)  # the partition's length is the fault
        finally:
            target.heal(service)
    else:
        target.kill(service)
        target.start(service, timeout=90)
    fault["down_s"] = time.monotonic() - t
    fault["up_at"] = time.time()
    return fault


@dataclass
class SoakResult:
    config: dict[str, Any]
    bg: dict[str, Any]
    celery: dict[str, Any]
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
    visibility, scan = max(5.0, 4 * args.delay), 0.5
    # Past the horizon: the visibility timeout, then a scan (on RabbitMQ the cut may end
    # before its heartbeat notices; the cut worker's tasks then wait for it).
    cut_s = args.cut if args.cut is not None else visibility + 2 * scan + 1
    spec = StackSpec(
        ("redis", "broker", "bg-api", "celery-api", "worker"),
        settings={
            "notification_delay_seconds": args.delay,
            "celery_visibility_timeout": visibility,
            "celery_restore_interval": scan,
        },
        appendonly=True,
        workers=2,
        broker=args.broker,
        partitioned=("worker", "worker-2"),
    )
    with open_stack(where, spec, label="soak") as target:
        since = time.time() - 1
        traffic = {side: Traffic(side, target.url(side), args.rate) for side in ("bg", "celery")}
        threads = [t.start() for t in traffic.values()]
        faults: list[dict[str, Any]] = []
        cycle = itertools.cycle(faults_for(args.broker))
        workers = itertools.cycle(["worker", "worker-2"])
        cut_off = itertools.cycle(["worker-2", "worker"])
        started = time.monotonic()
        say(
            f"soak: {duration:g} s of traffic ({args.rate:g} requests/s to each side), "
            f"a fault every {every:g} s, Celery on {args.broker}"
        )
        planned = planned_faults(duration, every)
        while len(faults) < planned:
            time.sleep(max(0.0, started + (len(faults) + 1) * every - time.monotonic()))
            kind = next(cycle)
            cut = None
            if kind == "worker":
                service = next(workers)
            elif kind == "broker":
                service = target.broker_service
            elif kind == PARTITION:
                service, cut = next(cut_off), cut_s
            else:
                service = kind
            fault = inject(target, service, since, traffic, cut)
            faults.append(fault)
            what = f"SIGKILL {service}" if cut is None else f"{service} cut off for {cut:g}s"
            say(
                f"  [{time.monotonic() - started:5.0f}s] fault {len(faults)}: {what}; "
                f"in flight: {fault['in_flight']}; back after {fault['down_s']:.1f}s"
            )
        time.sleep(max(0.0, started + duration - time.monotonic()))
        for tr in traffic.values():
            tr.stop.set()
        traffic_s = time.monotonic() - started
        for thread in threads:
            thread.join(10)
        for service in target.services:
            if not target.is_up(service):
                target.start(service, timeout=90)
        say(
            f"soak: traffic stopped; accepted {len(traffic['bg'].accepted)} bg and "
            f"{len(traffic['celery'].accepted)} Celery tasks; settling"
        )
        ids = expected(traffic)
        # Since when the broker has been up: a worker held unacknowledged messages
        # when it went, and gets them back only as the broker redelivers them.
        broker_up = max(
            (f["up_at"] for f in faults if f["service"] == target.broker_service),
            default=float("-inf"),
        )
        final, why = settle(
            target,
            since,
            ids,
            quiet=5.0,
            cap=time.monotonic() + 240,
            interval=1.0,
            broker_up_since=broker_up,
        )
        target_name = target.name
    held = {t for f in faults for t in f["held_ids"]}
    killed = {f.get("runner") for f in faults if f["service"] == "bg-api"} - {None}
    sides: dict[str, dict[str, Any]] = {}
    for side in ("bg", "celery"):
        summary = final.of(side).to_dict()
        # BackgroundTasks is hit by its own process's kills and by Redis's (its
        # ledger); the Celery side by everything else and by Redis's too.
        hits = (lambda s: s in ("bg-api", "redis")) if side == "bg" else (lambda s: s != "bg-api")
        mine = [
            {k: v for k, v in f.items() if k != "held_ids"} for f in faults if hits(f["service"])
        ]
        lost = set(final.ids(Verdict.lost, implementation=Implementation(side)))
        sides[side] = {
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
            "refused_requests": traffic[side].refused,
            "balanced": summary["balanced"],
            # Lost before any run began: never handed to a worker that recorded it (on
            # Redis, kombu pops a message, then records it unacknowledged: a worker
            # killed in between loses it, celery/celery#7950).
            "lost_never_started": sum(
                1
                for t in final.tasks.values()
                if t.task_id in lost and t.record is not None and t.record.attempts == 0
            ),
            "faults": mine,
        }
        if side == "bg":
            owned = {
                t.task_id
                for t in final.tasks.values()
                if t.record is not None and t.record.runner in killed
            }
            sides[side]["in_flight_just_before_its_kills"] = len(held)
            sides[side]["lost_held_by_a_killed_process"] = len(lost & owned)
            sides[side]["lost_otherwise"] = len(lost - owned)
    celery = sides["celery"]
    accepted = sides["bg"]["accepted"] + celery["accepted"]
    targets = [
        {
            "target": f"at least {TARGETS['faults']} faults and "
            f"{TARGETS['accepted']:,} accepted tasks",
            "measured": f"{len(faults)} faults, {accepted:,} tasks",
            "met": len(faults) >= TARGETS["faults"] and accepted >= TARGETS["accepted"],
        },
        {"target": "Celery lost = 0", "measured": celery["lost"], "met": celery["lost"] == 0},
        {
            "target": "Celery duplicate effects = 0",
            "measured": celery["duplicate_effects"],
            "met": celery["duplicate_effects"] == 0,
        },
    ]
    return SoakResult(
        config={
            "duration_s": duration,
            "traffic_s": round(traffic_s, 1),
            "fault_every_s": every,
            "rate_per_side": args.rate,
            "delay": args.delay,
            "broker": args.broker,
            "workers": 2,
            "fault_cycle": faults_for(args.broker),
            "cut_s": cut_s,
        },
        bg=sides["bg"],
        celery=celery,
        faults=[{k: v for k, v in f.items() if k != "held_ids"} for f in faults],
        settle=why,
        target=target_name,
        targets=targets,
    )


def render(data: dict[str, Any]) -> str:
    keys = [
        "accepted",
        "completed",
        "lost",
        "failed",
        "skipped",
        "in_flight_at_the_end",
        "executed_more_than_once",
        "duplicate_effects",
        "skipped_writes",
        "refused_requests",
    ]
    table = markdown_table(
        ["side", *[k.replace("_", " ") for k in keys]],
        [
            [name, *[data[side][k] for k in keys]]
            for side, name in (("bg", "BackgroundTasks"), ("celery", "Celery"))
        ],
    )
    by_service: dict[str, list[dict[str, Any]]] = {}
    for f in data["faults"]:
        name = f["service"] if f.get("kind", "kill") == "kill" else f"{f['service']} cut off"
        by_service.setdefault(name, []).append(f)
    table += "\n\n" + markdown_table(
        [
            "fault (SIGKILL + restart; or cut off its broker, healed)",
            "times",
            "BackgroundTasks in flight then",
            "Celery in flight then",
            "back after, s (mean)",
        ],
        [
            [
                service,
                len(fs),
                sum(f["in_flight"].get("bg", 0) for f in fs),
                sum(f["in_flight"].get("celery", 0) for f in fs),
                sum(f["down_s"] for f in fs) / len(fs),
            ]
            for service, fs in by_service.items()
        ],
    )
    table += "\n\n" + markdown_table(
        ["target", "measured", "met"],
        [[t["target"], t["measured"], "yes" if t["met"] else "no"] for t in data["targets"]],
    )
    c, bg = data["config"], data["bg"]
    notes = (
        f"{c.get('traffic_s', c['duration_s']):g} s of traffic, {c['rate_per_side']:g} "
        "notification requests per "
        f"second to each side (each: the {c['delay']:g} s notification and a log line), a fault "
        f"every {c['fault_every_s']:g} s in turn ({', '.join(c['fault_cycle'])}); Celery on "
        f"{c['broker']} with two workers (each fault on a worker kills one, in turn; each "
        f"partition cuts one off its broker for {c.get('cut_s', 0):g} s, its connections "
        "open, then heals it), Redis "
        "with its append-only file on. Counted by `shared/verdict.py` once every task had a "
        f"final verdict ({data['settle']}). BackgroundTasks lost {bg['lost']}: "
        f"{bg['lost_held_by_a_killed_process']} held by a bg-api process at the moment it "
        f"was killed, {bg['lost_otherwise']} otherwise; the ledger showed "
        f"{bg['in_flight_just_before_its_kills']} in flight just before the kills (requests "
        "accepted in the instant between that look and the kill are lost too). Refused "
        "requests were "
        "answered 503 (the broker down) or found no API (it was being restarted): never "
        "accepted, so never counted."
    )
    return f"{table}\n\n{notes}"


def run(args: argparse.Namespace) -> int:
    try:
        result = soak(args)
    except Unsupported as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    except Timeout as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    data = asdict(result)
    publish(NAME, data, render(data), directory=args.reports_dir)
    balanced = data["bg"]["balanced"] and data["celery"]["balanced"]
    return 0 if balanced else 1
