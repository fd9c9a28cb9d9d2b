"""Footprint: the resident memory each implementation needs, at idle and under load.

Each implementation declared in ``shared.services`` (``--implementations``) is a
side: its own Python services (its API, what runs its work, its scheduler, a
monitor), and its broker: the stack's (Redis or RabbitMQ, ``--broker``) where it
takes the stack's (``"broker"`` in its ``needs``), the ledger's Redis where it hands
its tasks to a broker of its own (its ``<QUEUE>_BROKER_URL`` is empty on a stack), and
none where it holds them in process memory: it records to the ledger in Redis when
Redis is there, but does not need it. Those that take the stack's broker are
measured on every broker's stack; the others on the first one only.

Local: every process is started here (a monitor too), and measured with psutil:
RSS, and PSS where the OS gives it (Linux): forked children share pages with their
parent, which RSS counts once per process and PSS splits between them. A process
a broker starts that the table does not declare (RabbitMQ's epmd) is the broker's.
Compose: ``docker stats`` per container (the cgroup's memory, page cache included).

Under load: notification requests to each side in turn (a closed loop of
``--concurrency`` clients), memory sampled every 0.25 s until the side's tasks
are done; the peak of each process is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.reporting.footprint import ON, chart, render
from harness.stacks import BROKERS, StackSpec, Where, open_stack
from harness.target import Target, Unsupported
from shared.services import (
    IMPLEMENTATIONS,
    SERVICES,
    Delivery,
    Implementation,
    delivery_of,
    services_of,
)

NAME = "footprint"
MiB = 1024 * 1024
# The Redis every stack runs: the ledger's, and the broker of those that take none
# from the stack but hand their tasks to one.
LEDGER_REDIS = "redis"


def uses_the_stack_broker(impl: Implementation) -> bool:
    return "broker" in IMPLEMENTATIONS[impl].needs


@dataclass(frozen=True)
class Side:
    """An implementation on one broker's stack."""

    implementation: Implementation
    broker: str  # the stack's
    first: bool  # the first broker measured (its sides' keys name no broker)

    @property
    def key(self) -> str:
        if self.first or not uses_the_stack_broker(self.implementation):
            return self.implementation.value
        return f"{self.implementation}{ON}{self.broker}"

    @property
    def services(self) -> tuple[str, ...]:
        """Its own Python services, as the stack starts them."""
        return tuple(s for s in services_of(self.implementation) if SERVICES[s].python)

    def broker_processes(self, broker_service: str, present: Iterable[str]) -> list[str]:
        """The processes of the broker it counts (the server and what it started)."""
        if uses_the_stack_broker(self.implementation):
            return [broker_service, *(p for p in present if p not in SERVICES)]
        if delivery_of(self.implementation) == Delivery.broker:
            return [LEDGER_REDIS]
        return []

    def counted_broker(self, broker_service: str) -> str | None:
        if uses_the_stack_broker(self.implementation):
            return broker_service
        return LEDGER_REDIS if delivery_of(self.implementation) == Delivery.broker else None

    def processes(self, broker_service: str, present: Iterable[str]) -> list[str]:
        present = list(present)
        wanted = [*self.services, *self.broker_processes(broker_service, present)]
        return [p for p in dict.fromkeys(wanted) if p in present]


def sides_for(selected: Sequence[Implementation], brokers: Sequence[str]) -> dict[str, list[Side]]:
    """Each broker's stack: the sides measured on it, in the order given."""
    return {
        broker: [
            Side(impl, broker, broker == brokers[0])
            for impl in selected
            if broker == brokers[0] or uses_the_stack_broker(impl)
        ]
        for broker in brokers
    }


def stack_services(sides: Sequence[Side]) -> tuple[str, ...]:
    needs_broker = any(uses_the_stack_broker(s.implementation) for s in sides)
    return (
        LEDGER_REDIS,
        *(("broker",) if needs_broker else ()),
        *dict.fromkeys(svc for side in sides for svc in side.services),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose processes to measure")
    parser.add_argument("--requests", type=int, help="notification requests per side (600)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument(
        "--broker",
        choices=(*BROKERS, "both"),
        default="both",
        help="the stack's broker(s), for the implementations that take it (default both)",
    )


# --- measuring ---------------------------------------------------------------------------

Sampler = Callable[[], dict[str, dict[str, float]]]


def sampler(target: Target) -> Sampler:
    """Each running service's memory, as the target measures it (MiB)."""

    def sample() -> dict[str, dict[str, float]]:
        return {name: asdict(mem) for name, mem in target.memory().items()}

    return sample


class PeakSampler:
    """Samples in a thread every ``interval`` s until stopped; keeps each process's peak."""

    def __init__(self, sample: Sampler, interval: float = 0.25) -> None:
        self.sample = sample
        self.interval = interval
        self.peak: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for name, mem in self.sample().items():
                old = self.peak.get(name)
                if old is None or mem["rss"] > old["rss"]:
                    self.peak[name] = mem
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)


# --- the run -------------------------------------------------------------------------------


async def _load(base: str, n: int, concurrency: int, label: str) -> tuple[list[str], int]:
    return await submit(
        base,
        lambda i: f"/send-notification/f{i}@example.com",
        n=n,
        concurrency=concurrency,
        label=label,
    )


@dataclass
class FootprintResult:
    sides: dict[str, dict[str, Any]]
    target: str
    ratios: dict[str, float]
    config: dict[str, Any]
    http_errors: int

    @property
    def ok(self) -> bool:
        return self.http_errors == 0


def measure(args: argparse.Namespace, where: Where) -> FootprintResult:
    n = args.requests or (40 if args.quick else 600)
    selected: tuple[Implementation, ...] = args.implementations
    say(f"footprint: {', '.join(selected)}; idle, then {n} notification requests per side")
    brokers = list(BROKERS) if args.broker == "both" else [args.broker]
    idle: dict[str, dict[str, dict[str, float]]] = {}
    loaded: dict[str, dict[str, dict[str, float]]] = {}
    measured: dict[str, tuple[Side, str | None]] = {}
    errors = 0
    for broker, sides in sides_for(selected, brokers).items():
        if not sides:
            continue
        spec = StackSpec(
            stack_services(sides), settings={"notification_delay_seconds": 0.02}, broker=broker
        )
        try:
            with open_stack(where, spec, label=f"footprint-{broker}") as target:
                sample = sampler(target)
                time.sleep(2)  # let every process finish starting up
                now = sample()
                for side in sides:
                    own = side.processes(target.broker_service, now)
                    measured[side.key] = (side, side.counted_broker(target.broker_service))
                    idle[side.key] = {k: now[k] for k in own}
                    url = target.url(side.implementation)
                    with PeakSampler(sample) as peak:
                        ids, errs = asyncio.run(_load(url, n, args.concurrency, side.key))
                        wait_finished(target, ids, timeout=60 + n * 0.1, label=f"{side.key} tasks")
                    errors += errs
                    loaded[side.key] = {k: v for k, v in peak.peak.items() if k in own}
        except Unsupported as exc:  # a compose stack runs one broker
            say(f"footprint: skipping the stack on {broker}: {exc}")
    data = analyse(measured, idle, loaded, where.kind)
    return FootprintResult(
        **data,
        config={
            "implementations": [i.value for i in selected],
            "requests": n,
            "concurrency": args.concurrency,
            "NOTIFICATION_DELAY_SECONDS": 0.02,
        },
        http_errors=errors,
    )


def analyse(
    measured: dict[str, tuple[Side, str | None]],
    idle: dict[str, dict[str, Any]],
    loaded: dict[str, dict[str, Any]],
    target: str,
) -> dict[str, Any]:
    """Each side's processes, idle and at their peak under load, and its totals; each
    side's totals against the first side that holds its tasks in process memory."""
    sides: dict[str, dict[str, Any]] = {}
    for key, (side, broker) in measured.items():
        rows: dict[str, dict[str, Any]] = {
            s: {"idle": mem, "load": loaded.get(key, {}).get(s) or mem}
            for s, mem in idle[key].items()
        }
        sides[key] = {
            "implementation": side.implementation.value,
            "broker": broker,
            "processes": rows,
            "idle_rss_mib": sum(r["idle"]["rss"] for r in rows.values()),
            "load_rss_mib": sum(r["load"]["rss"] for r in rows.values()),
            "idle_pss_mib": sum(r["idle"]["pss"] for r in rows.values()),
            "load_pss_mib": sum(r["load"]["pss"] for r in rows.values()),
        }
    ratios: dict[str, float] = {}
    baseline = next(
        (
            k
            for k, (s, _) in measured.items()
            if delivery_of(s.implementation) == Delivery.in_process
        ),
        None,
    )
    if baseline is not None:
        ref = sides[baseline]
        for key, d in sides.items():
            if key == baseline:
                continue
            for phase in ("idle", "load"):
                for metric in ("rss", "pss"):
                    name = f"{key}/{baseline} {phase} {metric.upper()}"
                    ratios[name] = d[f"{phase}_{metric}_mib"] / ref[f"{phase}_{metric}_mib"]
    return {"sides": sides, "target": target, "ratios": ratios}


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
