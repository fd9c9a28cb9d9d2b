"""Throughput: N short tasks (``POST /items/``, one ``write_log`` each), from the
first request sent to the last task finished, as the ledger records it.

Each implementation declared in ``shared.services`` (``--implementations``) runs as
this project sets it; one whose library ships other settings (``stock_settings``)
runs a second time with those: its ``reliable`` and ``stock`` phases, whose ratio is
the price of this project's settings (for Celery, ``acks_late`` and prefetch 1
against ack on receipt and prefetch 4: not losing a task when a worker dies).

Each phase runs on a fresh stack. The requests go through the API with a closed
loop of ``--concurrency`` clients, so the end-to-end span of an implementation
whose worker runs apart from its API is bounded below by how fast the API hands
over; a second measurement of such an implementation, ``drain``, isolates the
worker: N tasks are queued while the worker is stopped, then it is started and the
span runs from the first task started to the last finished.

``write_log`` keeps its effect idempotent (an index lookup per task, the same for
every implementation).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.common import add_implementations_argument, say
from experiments.perf import base
from experiments.perf.load import submit, wait_finished
from experiments.reporting.throughput import RELIABLE, STOCK, chart, render
from experiments.stats import ratio
from harness.stacks import StackSpec, Where, open_stack
from harness.target import Target
from shared.services import (
    IMPLEMENTATIONS,
    Delivery,
    Implementation,
    delivery_of,
    stock_settings,
)

NAME = "throughput"
# This project's settings may cost at most this much throughput against its
# library's stock ones (≥ 0.8: at most 25 % slower).
TARGET_RATIO = 0.8


@dataclass(frozen=True)
class Phase:
    """One measurement: an implementation, as this project sets it or as it ships."""

    implementation: Implementation
    variant: str  # "" (no stock settings to compare with), RELIABLE or STOCK

    @property
    def key(self) -> str:
        return (
            f"{self.implementation} {self.variant}" if self.variant else self.implementation.value
        )

    @property
    def settings(self) -> dict[str, Any]:
        return stock_settings(self.implementation) if self.variant == STOCK else {}

    @property
    def drains(self) -> bool:
        """Is its worker also measured alone, draining a queue filled while it was stopped?"""
        return base.works_apart(self.implementation)


def phases_for(selected: Sequence[Implementation]) -> list[Phase]:
    """Each selected implementation as this project sets it, then as it ships (where
    that differs), in the order given."""
    phases = []
    for impl in selected:
        if stock_settings(impl):
            phases += [Phase(impl, RELIABLE), Phase(impl, STOCK)]
        else:
            phases.append(Phase(impl, ""))
    return phases


def add_arguments(parser: argparse.ArgumentParser) -> None:
    base.add_arguments(parser)
    add_implementations_argument(parser, tuple(IMPLEMENTATIONS), "whose tasks to measure")
    parser.add_argument("--tasks", type=int, help="tasks per measurement (1000)")
    parser.add_argument("--concurrency", type=int, help="concurrent HTTP clients (8)")
    parser.add_argument(
        "--worker-concurrency",
        type=int,
        default=2,
        help="each worker's concurrency, where a worker runs the tasks (2)",
    )


async def _dispatch(base: str, n: int, concurrency: int, label: str) -> tuple[list[str], int]:
    return await submit(
        base,
        lambda i: "/items/",
        n=n,
        concurrency=concurrency,
        label=label,
        json_for=lambda i: {"name": f"item {i}", "price": i},
    )


def span(target: Target, side: str, n: int, concurrency: int, label: str) -> dict[str, Any]:
    """N `POST /items/` to ``side``'s API (closed loop): first request to last task done."""
    t_first = time.time()
    task_ids, errors = asyncio.run(_dispatch(target.url(side), n, concurrency, label))
    t_sent = time.time()
    done = wait_finished(target, task_ids, timeout=60 + n * 0.2, label=label)
    starts = [d[1] for d in done.values()]
    ends = [d[2] for d in done.values()]
    last = max(ends) if ends else float("nan")
    return {
        "tasks": n,
        "finished": len(done),
        "failed": sum(1 for d in done.values() if d[0] != "succeeded"),
        "http_errors": errors,
        "dispatch_s": t_sent - t_first,
        "span_s": last - t_first,
        "worker_span_s": (last - min(starts)) if starts else float("nan"),
        "tasks_per_s": len(done) / (last - t_first) if ends else float("nan"),
    }


def _drain(
    stack: Target, impl: Implementation, n: int, concurrency: int, label: str
) -> dict[str, Any]:
    """Queue N tasks with the worker stopped; start it; first start to last finish."""
    worker = IMPLEMENTATIONS[impl].runs_the_work
    stack.terminate(worker, timeout=30)
    task_ids, errors = asyncio.run(_dispatch(stack.url(impl), n, concurrency, label + " queue"))
    stack.start(worker, timeout=60)
    done = wait_finished(stack, task_ids, timeout=60 + n * 0.2, label=label + " drain")
    starts = [d[1] for d in done.values()]
    ends = [d[2] for d in done.values()]
    span = (max(ends) - min(starts)) if ends else float("nan")
    return {
        "tasks": n,
        "finished": len(done),
        "http_errors": errors,
        "span_s": span,
        "tasks_per_s": len(done) / span if ends else float("nan"),
    }


@dataclass
class ThroughputResult:
    config: dict[str, Any]
    results: dict[str, dict[str, Any]]
    drain: dict[str, dict[str, Any]]
    ratios: dict[str, float]
    targets: list[dict[str, Any]]
    target: str

    @property
    def ok(self) -> bool:
        runs = [*self.results.values(), *self.drain.values()]
        return all(r["finished"] == r["tasks"] for r in runs)


def measure(args: argparse.Namespace, where: Where) -> ThroughputResult:
    n = args.tasks or (60 if args.quick else 1000)
    concurrency = args.concurrency or (4 if args.quick else 8)
    phases = phases_for(args.implementations)
    results: dict[str, dict[str, Any]] = {}
    drains: dict[str, dict[str, Any]] = {}
    for phase in phases:
        impl = phase.implementation
        say(f"throughput: {phase.key}, {n} tasks, {concurrency} clients")
        # --worker-concurrency is a worker's; an API that runs its tasks keeps one process.
        processes = args.worker_concurrency if phase.drains else None
        spec = StackSpec.for_implementation(impl, processes=processes, settings=phase.settings)
        with open_stack(where, spec, label=f"throughput-{impl}") as target:
            described = {"implementation": impl.value, "variant": phase.variant}
            results[phase.key] = {**described, **span(target, impl, n, concurrency, phase.key)}
            if phase.drains:
                drained = _drain(target, impl, n, concurrency, phase.key)
                drains[phase.key] = {**described, **drained}
    data = analyse(phases, results, drains)
    config = {
        "implementations": [i.value for i in args.implementations],
        "tasks": n,
        "http_concurrency": concurrency,
        "worker_concurrency": args.worker_concurrency,
        "worker_pools": {
            p.implementation.value: base.pool_of(p.implementation) for p in phases if p.drains
        },
        "stock": {p.implementation.value: p.settings for p in phases if p.variant == STOCK},
    }
    return ThroughputResult(config=config, **data, target=where.kind)


def analyse(
    phases: Sequence[Phase],
    results: dict[str, dict[str, Any]],
    drains: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Each implementation's reliable/stock ratio (through the API, and its worker
    alone) with its target, and each one's throughput against the first measured
    implementation that runs its tasks in its API process."""
    ratios: dict[str, float] = {}
    targets = []
    by_key = {p.key: p for p in phases}
    for impl in dict.fromkeys(p.implementation for p in phases):
        reliable, stock = Phase(impl, RELIABLE).key, Phase(impl, STOCK).key
        if reliable in results and stock in results:
            # The stock span over this project's: throughput's ratio, this project's over stock.
            r = ratio(results[stock]["span_s"], results[reliable]["span_s"])
            ratios[f"{reliable}/stock throughput"] = r
            targets.append(
                {
                    "target": f"{reliable} ≥ {TARGET_RATIO}× stock throughput",
                    "measured": r,
                    "met": r >= TARGET_RATIO,
                }
            )
        if reliable in drains and stock in drains:
            ratios[f"{reliable}/stock throughput, worker drain"] = ratio(
                drains[stock]["span_s"], drains[reliable]["span_s"]
            )
    baseline = next(
        (
            k
            for k in results
            if k in by_key and delivery_of(by_key[k].implementation) == Delivery.in_process
        ),
        None,
    )
    if baseline is not None:
        for key in results:
            if key != baseline and by_key[key].variant != STOCK:
                ratios[f"{key}/{baseline} throughput"] = ratio(
                    results[baseline]["span_s"], results[key]["span_s"]
                )
    return {"results": results, "drain": drains, "ratios": ratios, "targets": targets}


EXPERIMENT = base.Experiment(NAME, measure, render, chart)
run = EXPERIMENT.run
