"""Footprint: the resident memory each side needs, at idle and under load.

- BackgroundTasks: one process, the API (the work runs inside it). It records to
  the ledger in Redis when Redis is there, but does not need it.
- Celery: the API, the worker (its main process and its prefork children), beat,
  Redis (the broker) and Flower (monitoring).

Local: every process is started here (Flower too), and measured with psutil:
RSS, and PSS where the OS gives it (Linux): prefork children share pages with
their parent, which RSS counts once per process and PSS splits between them.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from experiments.common import say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.reporting.tables import markdown_table
from harness.stacks import BROKERS, StackSpec, Where, open_stack
from harness.target import Target, Unsupported

NAME = "footprint"
# What each side needs running (a process a side does not need is not counted:
# the ledger's Redis is the experiments' instrument, not RabbitMQ's side's broker).
SIDES = {
    "bg": ["bg-api"],
    "celery": ["celery-api", "worker", "beat", "redis", "flower"],
    "celery on rabbitmq": ["celery-api", "worker", "beat", "rabbitmq", "epmd", "flower"],
}
# Which side each broker's stack measures (its load goes to the Celery API).
BROKER_SIDES = {"redis": ("bg", "celery"), "rabbitmq": ("celery on rabbitmq",)}
MiB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    parser.add_argument("--requests", type=int, help="notification requests per side (600)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument(
        "--broker",
        choices=(*BROKERS, "both"),
        default="both",
        help="the Celery side's broker(s) to measure (default both)",
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
    say(f"footprint: idle, then {n} notification requests per side")
    services = ("redis", "broker", "bg-api", "celery-api", "worker", "beat", "flower")
    brokers = list(BROKERS) if args.broker == "both" else [args.broker]
    idle: dict[str, dict[str, dict[str, float]]] = {}
    loaded: dict[str, dict[str, dict[str, float]]] = {}
    errors = 0
    for broker in brokers:
        spec = StackSpec(services, settings={"notification_delay_seconds": 0.02}, broker=broker)
        try:
            with open_stack(where, spec, label=f"footprint-{broker}") as target:
                sample = sampler(target)
                time.sleep(2)  # let every process finish starting up
                now = sample()
                for side in BROKER_SIDES[broker]:
                    idle[side] = {k: v for k, v in now.items() if k in SIDES[side]}
                    api = "bg" if side == "bg" else "celery"
                    with PeakSampler(sample) as peak:
                        ids, errs = asyncio.run(_load(target.url(api), n, args.concurrency, side))
                        wait_finished(target, ids, timeout=60 + n * 0.1, label=f"{side} tasks")
                    errors += errs
                    loaded[side] = {k: v for k, v in peak.peak.items() if k in SIDES[side]}
        except Unsupported as exc:  # a compose stack runs one broker
            say(f"footprint: skipping Celery on {broker}: {exc}")
    data = _analyse(idle, loaded, where.kind)
    return FootprintResult(
        **data,
        config={"requests": n, "concurrency": args.concurrency, "NOTIFICATION_DELAY_SECONDS": 0.02},
        http_errors=errors,
    )


def _analyse(
    idle: dict[str, dict[str, Any]], loaded: dict[str, dict[str, Any]], target: str
) -> dict[str, Any]:
    sides: dict[str, dict[str, Any]] = {}
    for side, services in SIDES.items():
        if side not in idle:
            continue
        rows: dict[str, dict[str, Any]] = {
            s: {"idle": idle[side][s], "load": loaded.get(side, {}).get(s) or idle[side][s]}
            for s in services
            if s in idle[side]
        }
        sides[side] = {
            "processes": rows,
            "idle_rss_mib": sum(r["idle"]["rss"] for r in rows.values()),
            "load_rss_mib": sum(r["load"]["rss"] for r in rows.values()),
            "idle_pss_mib": sum(r["idle"]["pss"] for r in rows.values()),
            "load_pss_mib": sum(r["load"]["pss"] for r in rows.values()),
        }
    ratios: dict[str, float] = {}
    bg = sides.get("bg")
    for side, d in sides.items():
        if side == "bg" or bg is None:
            continue
        for phase in ("idle", "load"):
            for metric in ("rss", "pss"):
                key = f"{side}/bg {phase} {metric.upper()}"
                ratios[key] = d[f"{phase}_{metric}_mib"] / bg[f"{phase}_{metric}_mib"]
    return {"sides": sides, "target": target, "ratios": ratios}


def render(data: dict[str, Any]) -> str:
    rows = []
    for side, d in data["sides"].items():
        for service, r in d["processes"].items():
            rows.append(
                [
                    side,
                    service,
                    r["idle"]["processes"],
                    r["idle"]["rss"],
                    r["load"]["rss"],
                    r["idle"]["pss"],
                    r["load"]["pss"],
                ]
            )
        rows.append(
            [
                f"**{side} total**",
                "",
                "",
                d["idle_rss_mib"],
                d["load_rss_mib"],
                d["idle_pss_mib"],
                d["load_pss_mib"],
            ]
        )
    table = markdown_table(
        [
            "side",
            "process",
            "processes",
            "idle RSS MiB",
            "peak RSS MiB under load",
            "idle PSS MiB",
            "PSS MiB under load",
        ],
        rows,
    )
    table += "\n\n" + markdown_table(
        ["ratio", "value"], [[k, v] for k, v in data["ratios"].items()]
    )
    cfg = data["config"]
    notes = (
        f"Load: {cfg['requests']} notification requests per side, {cfg['concurrency']} "
        f"clients, NOTIFICATION_DELAY_SECONDS={cfg['NOTIFICATION_DELAY_SECONDS']}. The "
        "worker row is its main process plus its prefork children (2). PSS splits pages "
        "shared between processes (forked children) among them; RSS counts them in each. "
        "Redis is listed on the Celery side when it is the broker; on RabbitMQ the broker is "
        "RabbitMQ (with its epmd), and the ledger's Redis is counted on neither side: it is the "
        "comparison's instrument (the BackgroundTasks app writes its ledger there when it is "
        "configured, but runs without it)."
    )
    if data["target"] == "compose":
        notes += " Compose: `docker stats` memory per container (RSS and PSS columns equal)."
    return f"{table}\n\n{notes}"


def chart(data: dict[str, Any], path: Path) -> None:
    from experiments.reporting import charts

    fig, (ax1, ax2) = charts.figure(1, 2, size=(11, 4.8))
    for ax, metric in ((ax1, "rss"), (ax2, "pss")):
        labels: list[str] = []
        for side, d in data["sides"].items():
            for phase in ("idle", "load"):
                x = len(labels)
                name = {"bg": "BackgroundTasks", "celery": "Celery, Redis"}.get(
                    side, "Celery, RabbitMQ"
                )
                labels.append(f"{name}\n{phase}")
                bottom = 0.0
                for service, r in d["processes"].items():
                    value = r[phase][metric]
                    color = charts.PALETTE[(list(d["processes"]).index(service) + 1) % 7]
                    if side == "bg":
                        color = charts.COLORS["bg"]
                    ax.bar(
                        x,
                        value,
                        bottom=bottom,
                        color=color,
                        edgecolor="white",
                        label=service if phase == "idle" else None,
                    )
                    bottom += value
                ax.annotate(f"{bottom:.0f}", (x, bottom), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel(f"{metric.upper()}, MiB")
        ax.grid(axis="y", alpha=0.3)
        ax.set_title(f"{metric.upper()} per side, stacked by process")
    ax1.legend(fontsize=7, loc="upper left")
    charts.save(fig, path, data)


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
